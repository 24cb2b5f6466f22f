"""A tiny AudioSet (music subset) in the published formats: segment CSVs, ``ontology.json``,
``class_labels_indices.csv`` under ``metadata/``, and ``youtube/<ytid>.wav``.

- Segment CSVs as published: three ``#`` comment lines (creation date, counts, column names),
  then ``YTID, start, end, "labels"`` rows separated by ``", "`` with the label field always
  quoted, LF line endings. ``unbalanced_train_segments.csv`` is there too (read only with
  ``include_unbalanced``).
- ``ontology.json``: a 53-class excerpt of the real ontology (real ids, names, restrictions,
  citation URIs, first sentence of the descriptions), keeping its multi-parent structure: Bell
  under Musical instrument and Sounds of things; Bicycle bell under Bell, Bicycle and Alarm;
  Cowbell under Percussion, Bell and Cattle; Choir under Singing and Musical instrument; Chant
  under Singing and Vocal music; Beatboxing under Hip hop music and Vocal music (both music);
  Music genre/role/mood abstract; Musical concepts abstract + blacklist with its blacklisted
  child Song; Singing and Speech outside Music.
- ``class_labels_indices.csv``: ``index,mid,display_name`` with the real indices, every display
  name quoted.

Planted segments: the MusicCaps videos (``tests.datasets.musiccaps.AUDIOSET_SEGMENTS``: train ids
in the balanced CSV, eval ids in the eval CSV, one at 11.100 s); ``--PJHxphWEs`` (the real
example row: Speech + Gush, excluded); Bicycle bell with a guitar in music (kept, fractional
start 40.4); a 9 s segment (0.000, 9.000); Bicycle bell alone, Bicycle bell + Bicycle, Cowbell +
Cattle, Choir + Singing, Church bell alone (all excluded: only ambiguous or non-music labels);
Beatboxing alone (kept); Song (blacklisted) and Music genre (abstract) next to real labels
(dropped); an unknown label (ignored); "Music" alone and Music + Speech (rejected: nothing to
describe); a two-field row, a non-numeric start and an end before its start (rejected). Every
kept segment has ``youtube/<ytid>.wav`` except ``BvQ3aBqdQvA`` (its download must fail).
"""

from __future__ import annotations

import json
import pathlib

from tests.datasets.musiccaps import AUDIOSET_SEGMENTS, WITHOUT_AUDIO, video_seconds, write_tone

# (id, name, child_ids within the fixture, restrictions, citation_uri, description's first sentence)
CLASSES = [
    ('/m/0dgw9r', 'Human sounds', ['/m/09l8g'], ['abstract'],
     '',
     'Sounds produced by the human body through the actions of the individual.'),
    ('/m/09l8g', 'Human voice', ['/m/09x0r', '/m/015lz1'], ['abstract'],
     'http://en.wikipedia.org/wiki/Human_voice',
     'The human voice consists of sound made by a human being using the vocal folds for talking, singing, laughing, crying, screaming, etc.'),
    ('/m/09x0r', 'Speech', [], [],
     'http://en.wikipedia.org/wiki/Speech',
     'Speech is the vocalized form of human communication, created out of the phonetic combination of a limited set of vowel and consonant speech sound units.'),
    ('/m/015lz1', 'Singing', ['/m/0l14jd', '/m/02bk07', '/t/dd00003'], [],
     'http://en.wikipedia.org/wiki/Singing',
     'Musical sounds produced with the human voice, including sustained tonality, rhythm, and a variety of other vocal techniques.'),
    ('/t/dd00003', 'Male singing', [], [],
     '',
     'Singing produced by an adult human male.'),
    ('/m/0l14jd', 'Choir', [], [],
     'http://en.wikipedia.org/wiki/Choir',
     'A musical ensemble of singers.'),
    ('/m/02bk07', 'Chant', [], [],
     'http://en.wikipedia.org/wiki/Chant',
     'The rhythmic speaking or singing of words or sounds, often primarily on one or two main pitches called reciting tones.'),
    ('/m/0jbk', 'Animal', ['/m/068hy', '/m/0ch8v'], [],
     '',
     'All sound produced by the bodies and actions of nonhuman animals.'),
    ('/m/068hy', 'Domestic animals, pets', ['/m/0bt9lr'], [],
     'http://en.wikipedia.org/wiki/Pet',
     'Sounds of animals kept in close proximity to humans for company, protection, and entertainment.'),
    ('/m/0bt9lr', 'Dog', [], [],
     'http://en.wikipedia.org/wiki/Dog',
     'Any sounds coming from the familiar domesticated canid which has been selectively bred over millennia for companionship, protection, as well as for superior sensory capabilities, and other useful behaviors.'),
    ('/m/0ch8v', 'Livestock, farm animals, working animals', ['/m/01xq0k1'], [],
     'http://en.wikipedia.org/wiki/Livestock',
     'Sound made by animals associated with farms and agriculture.'),
    ('/m/01xq0k1', 'Cattle, bovinae', ['/m/0239kh'], [],
     'http://en.wikipedia.org/wiki/Cattle',
     'Sounds associated with the most common type of large domesticated ungulates.'),
    ('/m/0239kh', 'Cowbell', [], [],
     'http://en.wikipedia.org/wiki/Cowbell_(instrument)',
     'A simple metal bell historically tied around the necks of cattle to keep track of their whereabouts.'),
    ('/t/dd00041', 'Sounds of things', ['/m/07yv9', '/m/0395lw', '/m/07pp_mv', '/m/04k94'], ['blacklist'],
     '',
     'Set of sound classes referring to sounds that are immediately understood by listeners as arising from specific objects (rather than being heard more literally as "sounds").'),
    ('/m/07yv9', 'Vehicle', ['/t/dd00061'], [],
     'http://en.wikipedia.org/wiki/Vehicle',
     'Sounds of mobile machines that transport people or cargo.'),
    ('/t/dd00061', 'Non-motorized land vehicle', ['/m/0199g'], [],
     '',
     'Sounds of human-powered vehicles used on roads or elsewhere on land.'),
    ('/m/0199g', 'Bicycle', ['/m/0gy1t2s'], [],
     'http://en.wikipedia.org/wiki/Bicycle',
     'Sounds of a human-powered, pedal-driven vehicle, having two wheels attached to a frame, one behind the other.'),
    ('/m/0gy1t2s', 'Bicycle bell', [], [],
     'http://en.wikipedia.org/wiki/Bicycle_bell',
     'The sound of a percussive signaling instrument mounted on a bicycle for warning pedestrians and other cyclists.'),
    ('/m/0395lw', 'Bell', ['/m/03w41f', '/m/0239kh', '/m/0gy1t2s'], [],
     'http://en.wikipedia.org/wiki/Bell',
     'The sound of a simple instrument usually consisting of metal cast in the shape of a hollow cup, whose sides form a resonator which vibrates in a single tone upon being struck by a "clapper" suspended within, or by a separate mallet or hammer.'),
    ('/m/03w41f', 'Church bell', [], [],
     'http://en.wikipedia.org/wiki/Church_bell',
     'The sound of a large bell usually encountered in churches where it used either to signify the hour or the time for worshippers to go to church.'),
    ('/m/07pp_mv', 'Alarm', ['/m/0gy1t2s'], [],
     'http://wordnetweb.princeton.edu/perl/webwn?s=alarm',
     'The sound of an automatic signal warning of danger.'),
    ('/m/04k94', 'Liquid', ['/m/07prgkl'], [],
     'http://en.wikipedia.org/wiki/Liquid',
     'Sounds of a fluid that conforms to the shape of its container but retains a constant volume independent of pressure.'),
    ('/m/07prgkl', 'Pour', ['/t/dd00088'], [],
     'http://wordnetweb.princeton.edu/perl/webwn?s=pour',
     'The sound of liquid being transferred in a steady stream.'),
    ('/t/dd00088', 'Gush', [], [],
     '',
     'The sound of a liquid coming out of a pipe or other opening rapidly and in large volumes.'),
    ('/m/04rlf', 'Music', ['/m/04szw', '/m/0kpv1t', '/t/dd00027', '/t/dd00028', '/t/dd00030'], [],
     'http://en.wikipedia.org/wiki/Music',
     'Music is an art form and cultural activity whose medium is sound and silence.'),
    ('/m/04szw', 'Musical instrument', ['/m/0fx80y', '/m/05148p4', '/m/0l14md', '/m/0l14jd', '/m/0395lw'], [],
     'http://en.wikipedia.org/wiki/Musical_instrument',
     'Sounds specifically associated with instruments created, adapted or otherwise used to make musical sounds.'),
    ('/m/0fx80y', 'Plucked string instrument', ['/m/0342h'], [],
     'http://en.wikipedia.org/wiki/Plucked_string_instrument',
     'Sounds of a musical instrument using tensioned strings to produce tones, where the usual mode of playing is to pull and release the strings to cause them to vibrate.'),
    ('/m/0342h', 'Guitar', ['/m/02sgy'], [],
     'http://en.wikipedia.org/wiki/Guitar',
     'Sounds of a string instrument with between 4 and 18 strings (typically 6) running over a fretboard, typically played by strumming or plucking the strings with the right hand while fretting the strings with the fingers of the left hand.'),
    ('/m/02sgy', 'Electric guitar', [], [],
     'http://en.wikipedia.org/wiki/Electric_guitar',
     'Sounds of a guitar that uses a pickup to convert the vibration of its strings (which are typically made of metal, and which occurs when a guitarist strums, plucks, or fingerpicks the strings) into electrical impulses, which are then amplified and converted to sound.'),
    ('/m/05148p4', 'Keyboard (musical)', ['/m/05r5c'], [],
     'http://en.wikipedia.org/wiki/Keyboard_instrument',
     'Sounds of a musical instrument played using a keyboard, most commonly the piano, organ, and various electronic keyboards, including synthesizers and digital pianos.'),
    ('/m/05r5c', 'Piano', [], [],
     'http://en.wikipedia.org/wiki/Piano',
     'Sounds of a musical instrument played via a row of keys that the performer presses down or strikes with the fingers and thumbs of both hands, to trigger a decaying note whose loudness reflects the vigor of the press.'),
    ('/m/0l14md', 'Percussion', ['/m/02hnl', '/m/0239kh'], [],
     'http://en.wikipedia.org/wiki/Percussion_instrument',
     'The sound of a musical instrument that is sounded by being struck or scraped by a beater; struck, scraped or rubbed by hand; or struck against another similar instrument.'),
    ('/m/02hnl', 'Drum kit', [], [],
     'http://en.wikipedia.org/wiki/Drum_kit',
     'Sounds of a collection of drums and other percussion instruments, typically cymbals, which are set up on stands to be played by a single player with drumsticks held in both hands and the feet operating pedals that control the hi-hat cymbal and the beater for the bass drum.'),
    ('/m/0kpv1t', 'Music genre', ['/m/064t9', '/m/0glt670', '/m/06by7', '/m/03_d0', '/m/0155w', '/m/05fw6t', '/m/0y4f8'], ['abstract'],
     '',
     'Portmanteau class holding categories that represent styles or classifications of music, useful in identifying and organizing similar musical artists or recordings.'),
    ('/m/064t9', 'Pop music', [], [],
     'http://en.wikipedia.org/wiki/Pop_music',
     'A genre of popular music that originated in the West during the 1950s and 1960s.'),
    ('/m/0glt670', 'Hip hop music', ['/m/02cz_7'], [],
     'http://en.wikipedia.org/wiki/Hip_hop_music',
     'Hip hop or rap music formed in the United States in the 1970s and consists of stylized rhythmic music that commonly accompanies rhythmic and rhyming speech ("rapping").'),
    ('/m/02cz_7', 'Beatboxing', [], [],
     'http://en.wikipedia.org/wiki/Beatboxing',
     "A form of vocal percussion primarily involving the art of mimicking drum machines using one's mouth, lips, tongue, and voice."),
    ('/m/06by7', 'Rock music', ['/m/03lty'], [],
     'http://en.wikipedia.org/wiki/Rock_music',
     'A genre of popular music that originated as "rock and roll" in the United States in the 1950s, and developed into a range of different styles in the 1960s and later.'),
    ('/m/03lty', 'Heavy metal', [], [],
     'http://en.wikipedia.org/wiki/Heavy_metal_music',
     'A genre of rock music that developed in the late 1960s and early 1970s, consisting of a thick, massive sound, characterized by highly amplified distortion, extended guitar solos, emphatic beats, and overall loudness.'),
    ('/m/0155w', 'Blues', [], [],
     'http://en.wikipedia.org/wiki/Blues',
     'A genre and musical form developed by African Americans in the United States around the end of the 19th century from African-American work songs and European-American folk music.'),
    ('/m/03_d0', 'Jazz', [], [],
     'http://en.wikipedia.org/wiki/Jazz',
     'A music genre that originated from African American communities of New Orleans during the late 19th and early 20th centuries in the form of independent traditional and popular musical styles, all linked by the common bonds of African American and European American musical parentage with a performance orientation.'),
    ('/m/05fw6t', 'Music for children', [], [],
     "http://en.wikipedia.org/wiki/Children's_music",
     'Music performed for children, often designed to provide an entertaining means of teaching about cultures, good behavior, facts, and skills.'),
    ('/m/0y4f8', 'Vocal music', ['/m/0z9c', '/m/02bk07', '/m/02cz_7'], [],
     'http://en.wikipedia.org/wiki/Vocal_music',
     'Music performed by one or more singers, with or without instrumental accompaniment, in which singing provides the main focus of the piece.'),
    ('/m/0z9c', 'A capella', [], [],
     'http://en.wikipedia.org/wiki/A_cappella',
     'Group or solo singing without instrumental accompaniment.'),
    ('/t/dd00027', 'Musical concepts', ['/m/074ft'], ['abstract', 'blacklist'],
     '',
     'Portmanteau class for descriptions of music sounds that reflect their abstract music-theoretical properties rather than their physical realizations.'),
    ('/m/074ft', 'Song', [], ['blacklist'],
     'http://en.wikipedia.org/wiki/Song',
     'A musical work intended to be sung by the human voice with distinct and fixed pitches and patterns using sound and silence and a variety of forms that often include the repetition of sections.'),
    ('/t/dd00028', 'Music role', ['/m/025td0t', '/m/02cjck', '/m/0140xf'], ['abstract'],
     '',
     'Portmanteau class for categories that describe music according to its functional role.'),
    ('/m/025td0t', 'Background music', [], [],
     'http://en.wikipedia.org/wiki/Background_music',
     'Styles of music or soundscapes primarily intended to be listened to passively and not meant to be the main focus of an audience.'),
    ('/m/02cjck', 'Theme music', [], [],
     'http://en.wikipedia.org/wiki/Theme_music',
     'Music often written specifically for a radio program, television program, video game, or movie, and usually played during the intro, opening credits, and/or ending credits.'),
    ('/m/0140xf', 'Christmas music', [], [],
     'http://en.wikipedia.org/wiki/Christmas_music',
     'A variety of genres of music normally performed or heard around the Christmas season.'),
    ('/t/dd00030', 'Music mood', ['/t/dd00031', '/t/dd00033'], ['abstract'],
     '',
     'Portmanteau class for music categories that indicate the over emotional affect of music, regardless of genre or instrumentation.'),
    ('/t/dd00031', 'Happy music', [], [],
     '',
     'Music that evokes or conveys feelings of happiness.'),
    ('/t/dd00033', 'Sad music', [], [],
     '',
     'Music that evokes or conveys feelings of sadness.'),
]

# The real class_labels_indices.csv index of every fixture class that is one of the 527 labels.
INDICES = {
    "/m/09x0r": 0, "/m/015lz1": 27, "/m/0l14jd": 28, "/m/02bk07": 30, "/t/dd00003": 32, "/m/0jbk": 72,
    "/m/068hy": 73, "/m/0bt9lr": 74, "/m/0ch8v": 86, "/m/01xq0k1": 90, "/m/0239kh": 92, "/m/04rlf": 137,
    "/m/04szw": 138, "/m/0fx80y": 139, "/m/0342h": 140, "/m/02sgy": 141, "/m/05148p4": 152,
    "/m/05r5c": 153, "/m/0l14md": 161, "/m/02hnl": 162, "/m/0395lw": 200, "/m/03w41f": 201,
    "/m/0gy1t2s": 203, "/m/064t9": 216, "/m/0glt670": 217, "/m/02cz_7": 218, "/m/06by7": 219,
    "/m/03lty": 220, "/m/03_d0": 235, "/m/0155w": 251, "/m/05fw6t": 252, "/m/0y4f8": 254,
    "/m/0z9c": 255, "/m/074ft": 266, "/m/025td0t": 267, "/m/02cjck": 268, "/m/0140xf": 273,
    "/t/dd00031": 276, "/t/dd00033": 278, "/m/07yv9": 300, "/m/0199g": 341, "/m/07pp_mv": 388,
    "/m/04k94": 444, "/m/07prgkl": 449, "/t/dd00088": 451,
}

# (file, ytid, start, end, labels); the MusicCaps videos come first.
SEGMENTS = [(f, y, s, e, lab) for f, y, s, e, lab in AUDIOSET_SEGMENTS] + [
    ("eval", "--PJHxphWEs", "30.000", "40.000", "/m/09x0r,/t/dd00088"),
    ("eval", "-1nilez17Dg", "40.400", "50.400", "/m/04rlf,/m/0342h,/m/0gy1t2s"),
    ("balanced", "0Bc7Gz2kAqY", "0.000", "9.000", "/m/04rlf,/m/0342h,/m/02sgy,/m/05r5c,/t/dd00033"),
    ("balanced", "1xQm4aPzT3E", "30.000", "40.000", "/m/0gy1t2s,/m/0199g"),
    ("balanced", "2Wd9TnBvY0s", "30.000", "40.000", "/m/0gy1t2s"),
    ("balanced", "3Kp8RrLe2Hw", "10.000", "20.000", "/m/0239kh,/m/01xq0k1"),
    ("balanced", "4Tn5Yz0aCcM", "30.000", "40.000", "/m/0l14jd,/m/015lz1"),
    ("balanced", "5Rf2Hj7kLmN", "30.000", "40.000", "/m/03w41f"),
    ("balanced", "6Gh3Jk8lPqR", "30.000", "40.000", "/m/02cz_7"),
    ("balanced", "7Jk4Lm9nQrS", "20.000", "30.000", "/m/04rlf,/m/074ft,/m/06by7,/m/03lty,/t/dd00031,/m/0kpv1t"),
    ("balanced", "8Lm5Np0qRsT", "30.000", "40.000", "/m/04rlf"),
    ("balanced", "9Np6Qr1sTuV", "30.000", "40.000", "/m/04rlf,/m/09x0r"),
    ("balanced", "A0Qr7St2UvW", "30.000", "40.000", "/m/04rlf,/m/0l14jd,/t/dd00003,/m/09x0r,/m/0bt9lr"),
    ("balanced", "C2Uv9Wx4YzA", "abc", "40.000", "/m/04rlf,/m/064t9"),
    ("balanced", "D3Wx0Yz5AbB", "40.000", "30.000", "/m/04rlf,/m/064t9"),
    ("balanced", "E4Yz1Ab6BcC", "30.000", "40.000", "/m/04rlf,/m/0ggq0m,/m/064t9"),
    ("unbalanced", "F5Ab2Bc7CdD", "30.000", "40.000", "/m/04rlf,/m/05r5c,/t/dd00031"),
    ("unbalanced", "G6Bc3Cd8DeE", "0.000", "10.000", "/m/0bt9lr"),
]
# A row with two fields, written after this ytid's row (balanced CSV).
MALFORMED_AFTER = ("A0Qr7St2UvW", "B1St8Uv3WxY, 30.000")
FILES = {"eval": "eval_segments.csv", "balanced": "balanced_train_segments.csv",
         "unbalanced": "unbalanced_train_segments.csv"}
CREATED = {"eval": "Sun Mar  5 10:54:25 2017", "balanced": "Sun Mar  5 10:54:31 2017",
           "unbalanced": "Sun Mar  5 10:54:41 2017"}
EXCLUDED = ["--PJHxphWEs", "1xQm4aPzT3E", "2Wd9TnBvY0s", "3Kp8RrLe2Hw", "4Tn5Yz0aCcM", "5Rf2Hj7kLmN"]
EXCLUDED_UNBALANCED = ["G6Bc3Cd8DeE"]
REJECTED = {
    "audioset-8Lm5Np0qRsT": "no label describes the music beyond the generic 'Music'",
    "audioset-9Np6Qr1sTuV": "no label describes the music beyond the generic 'Music' (labels: Music, Speech)",
    "balanced_train_segments.csv:19": "row has 2 fields, expected 4",
    "audioset-C2Uv9Wx4YzA": "start_seconds 'abc' is not a number",
    "audioset-D3Wx0Yz5AbB": "end_seconds 30.000 is not after start_seconds 40.000",
}
UNREADABLE = {"C2Uv9Wx4YzA", "D3Wx0Yz5AbB", "8Lm5Np0qRsT", "9Np6Qr1sTuV"}


def ontology() -> list[dict]:
    """The classes as ``ontology.json`` has them (every key, in the published order)."""
    return [{"id": mid, "name": name, "description": description, "citation_uri": uri,
             "positive_examples": [], "child_ids": children, "restrictions": restrictions}
            for mid, name, children, restrictions, uri, description in CLASSES]


def segments_csv(kind: str) -> str:
    rows = [s for s in SEGMENTS if s[0] == kind]
    good = [s for s in rows if s[1] not in UNREADABLE]
    labels = [lab for s in good for lab in s[4].split(",")]
    lines = [
        f"# Segments csv created {CREATED[kind]}",
        f"# num_ytids={len(rows)}, num_segs={len(rows)}, num_unique_labels={len(set(labels))}, "
        f"num_positive_labels={len(labels)}",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    for _, ytid, start, end, labs in rows:
        lines.append(f'{ytid}, {start}, {end}, "{labs}"')
        if ytid == MALFORMED_AFTER[0]:
            lines.append(MALFORMED_AFTER[1])
    return "\n".join(lines) + "\n"


def class_labels_csv() -> str:
    names = {mid: name for mid, name, *_ in CLASSES}
    rows = sorted((index, mid) for mid, index in INDICES.items())
    return "index,mid,display_name\n" + "".join(f'{i},{mid},"{names[mid]}"\n' for i, mid in rows)


def make_fixture(root: pathlib.Path) -> dict:
    root = pathlib.Path(root)
    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    for kind, name in FILES.items():
        (meta / name).write_text(segments_csv(kind), newline="")
    (meta / "class_labels_indices.csv").write_text(class_labels_csv(), newline="")
    (meta / "ontology.json").write_text(json.dumps(ontology(), indent=2, ensure_ascii=False) + "\n")
    not_kept = UNREADABLE | set(EXCLUDED) | set(EXCLUDED_UNBALANCED)
    kept = [s for s in SEGMENTS if s[1] not in not_kept]
    for i, (_, ytid, _start, end, *_rest) in enumerate(kept):
        if ytid != WITHOUT_AUDIO:
            write_tone(root / "youtube" / f"{ytid}.wav", 196.0 * (1 + i / 6), video_seconds(end))
    return {
        "options": {"metadata": str(meta), "youtube_url": "{base}/youtube/{ytid}.wav"},
        "expected": {
            "records": 12,
            "rejected": REJECTED,
            "splits": {"train": 7, "valid": 2, "test": 3},
            "audio_fail": {f"audioset-{WITHOUT_AUDIO}": "404"},
        },
    }
