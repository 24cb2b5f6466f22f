"""A tiny MusicQA in the hub's layout: the three JSON arrays and ``audios.zip``.

Layout (``root`` is served at ``{base}``):

- ``metadata/EvalMusicQA.json``, ``FinetuneMusicQA.json``, ``PretrainMusicQA.json``: JSON arrays
  written as ``generate_dataset.py`` writes them (``json.dump(..., indent=2)``), one element per
  QA pair, nine per clip: the four fixed captioning prompts first, then five open questions.
  ``audio_name`` is the running counter (``012542.wav``). A missing answer is the bare ``NaN``
  ``json.dump`` writes for pandas' NaN.
- ``audio/audios.zip``: a real zip (``zipfile``) of the ``audios/`` folder, members
  ``audios/<audio_name>`` (12 s, 16 kHz mono wav).

Planted cases: a clip whose four captioning answers are empty or NaN while its open answers are
not (rejected: no usable description), an element whose conversation has no answer (rejected),
and an eval clip missing from the zip (its download must fail).
"""

from __future__ import annotations

import json
import pathlib
import zipfile

from tests.datasets import listed_with_splits, sine_wav

SR = 16000
SECONDS = 12.0

PROMPTS = ["Describe the audio", "Describe the audio in detail", "What do you hear in the audio?",
           "What can be inferred from the audio?"]

CLIP_42 = [
    "The audio is an alternative rock post-rock electronic experimental track.",
    ("The audio is a blend of post-rock and electronic experimental sounds, with a heavy emphasis on drums "
    "and bass. The track features a variety of instrumentation, including guitar, synthesizers, and samples."),
    "The audio is a mix of distorted guitar riffs, electronic samples, and experimental sounds.",
    ("From the audio, it can be inferred that the track is a blend of post-rock and electronic experimental "
    "sounds."),
]
OPEN_42 = [
    ("What is the alternative genre of music in the audio?", "The alternative genre of music in the audio is postrock."),
    ("What is the electronic element in the audio?", "The electronic element in the audio is experimental."),
    ("What is the experimental element in the audio?", "The experimental element in the audio is postrock."),
    ("What is the rock element in the audio?", "The rock element in the audio is alternative and postrock."),
    ("What is the overall genre of the audio?", "The overall genre of the audio is postrock electronic experimental rock."),
]
CLIP_43 = [
    "The audio is an alternative, electronic, experimental, postrock, and rock music.",
    "The audio is a mix of various genres such as alternative, electronic, experimental, postrock, and rock.",
    "In the audio, you can hear various instruments such as drums, bass, guitar, keys, and synths.",
    "From the audio, we can infer that the music is experimental and unconventional.",
]
OPEN_43 = [
    ("What is the alternative rock genre known for?", "The alternative rock genre is known for its edgy tone."),
    ("What is electronic music known for?", "Electronic music is known for its use of synthesizers."),
    ("What is experimental music known for?", "Experimental music is known for its willingness to take risks."),
    ("What is postrock known for?", "Postrock is known for its complex and intricate musical structures."),
    ("What is rock music known for?", "Rock music is known for its catchy melodies and energetic rhythms."),
]
OPEN_44 = [
    ("What genre of music is the audio tagged as?", "The audio is tagged as dance music."),
    ("What instrument can you hear in the background?", "The accordion."),
    ("Is there any melodic element in the audio?", "Yes, there is a melodic element in the audio."),
    ("What kind of electronic sound can you hear in the audio?", "Synthesized electronic beats."),
    ("What is the mood of the audio?", "The mood is upbeat."),
]
CLIP_MTT = [
    "The audio is a classical piece played on a harpsichord.",
    "The audio is a slow, quiet baroque piece with a solo harpsichord and no vocals.",
    "I hear a harpsichord playing a gentle melody with ornamented notes.",
    "It can be inferred that this is an early music recording, probably of a baroque composer.",
]
CLIP_MC = [
    "The audio is a low quality recording of a rock song with a male vocalist.",
    "The audio features a passionate male vocal over a wide electric guitar melody, groovy bass and punchy drums.",
    "I hear harmonizing male vocals, an electric guitar, bass guitar, kick and snare hits and shimmering cymbals.",
    "It can be inferred that the song is from the 2000s and would be played on the radio.",
]
OPEN_GENERIC = [
    ("What is the tempo of the music?", "The tempo of the music is moderate."),
    ("What is the mood of the music?", "The mood of the music is calm."),
    ("What instruments are used?", "A single keyboard instrument is used."),
    ("Is there a vocalist?", "No, the piece is instrumental."),
    ("Where could this music be played?", "In a concert hall."),
]


def _qa(name: str, question: str, answer) -> dict:
    return {"audio_name": name,
            "conversation": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


def _clip(name: str, captions: list, open_pairs: list[tuple[str, str]]) -> list[dict]:
    return [_qa(name, q, a) for q, a in zip(PROMPTS, captions)] + [_qa(name, q, a) for q, a in open_pairs]


def make_fixture(root: pathlib.Path) -> dict:
    from musictext.ingest.base import hashed_split

    meta = root / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    evaluation = (
        _clip("012542.wav", CLIP_42, OPEN_42)
        + _clip("012543.wav", CLIP_43, OPEN_43)
        + _clip("012544.wav", ["", float("nan"), "  ", float("nan")], OPEN_44)
        # A pair whose conversation lost its answer turn.
        + [{"audio_name": "012545.wav", "conversation": [{"from": "human", "value": "Describe the audio"}]}]
    )
    files = {
        "EvalMusicQA.json": evaluation,
        "FinetuneMusicQA.json": _clip("005012.wav", CLIP_MTT, OPEN_GENERIC),
        "PretrainMusicQA.json": _clip("000003.wav", CLIP_MC, OPEN_GENERIC),
    }
    for name, elements in files.items():
        with open(meta / name, "w") as fh:
            json.dump(elements, fh, indent=2)  # as generate_dataset.py writes it (NaN included)

    audio = root / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(audio / "audios.zip", "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("audios/"), b"")
        for i, name in enumerate(["000003.wav", "005012.wav", "012542.wav", "012544.wav"]):  # not 012543.wav
            zf.writestr(f"audios/{name}", sine_wav(330.0 + 110.0 * i, SECONDS, SR))

    fractions = {"train": 0.9, "valid": 0.1}
    splits = {
        "musicqa-012542": "test",
        "musicqa-012543": "test",
        "musicqa-005012": hashed_split("musicqa:005012", 0, fractions),
        "musicqa-000003": hashed_split("musicqa:000003", 0, fractions),
    }
    return listed_with_splits(
        meta, splits,
        rejected={"musicqa-012544": "no caption",
                  "EvalMusicQA.json[27]": "lacks a human question or a gpt answer"},
        audio_fail={"musicqa-012543": "audios/012543.wav"},
    )
