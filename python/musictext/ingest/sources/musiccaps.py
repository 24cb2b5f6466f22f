"""MusicCaps: 5,521 ten-second YouTube clips, each with one caption written by a musician.

Published file: ``musiccaps-public.csv`` (captions CC BY-SA 4.0; the audio stays on YouTube)::

    ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval
    -0Gj8-vB1q4,30,40,"/m/0140xf,/m/02cjck,/m/04rlf","['low quality', 'sustained strings melody', ...]","The low quality recording features a ballad ...",4,False,True

What the parser relies on (checked against the real file):

* Copies in circulation differ in line endings (CRLF between records with bare LF inside quoted
  captions; LF only; CRLF everywhere) and captions hold line breaks, ``"`` and non-ASCII: the
  file is read with the csv module over ``newline=""`` text, never split into lines by hand, and
  a caption's line breaks are kept (as ``\n`` whichever copy it came from).
* ``aspect_list`` is a Python literal whose items may be double-quoted (``"children's song"``):
  ``ast.literal_eval``, never ``json``. ``audioset_positive_labels`` is quoted only when it holds
  several labels. Booleans are ``True``/``False``.
* ``start_s``/``end_s`` are whole seconds, the clip exactly 10 s.

Records: ``musiccaps-<ytid>``; captions = the written caption, then (``aspect_caption``) one
sentence built by ``describe`` from the aspect list sorted into facets; tags = the aspect list;
audio = ``YouTubeAudio(ytid)`` over ``start_s``..``end_s``; group ``yt:<ytid>`` (the same
recording as the AudioSet segment with that id: every train row is in AudioSet's balanced CSV,
every eval row in its eval CSV).

Splits: ``is_audioset_eval=True`` rows are the standard MusicCaps test set (``test``). The
others are ``train`` except a deterministic ``valid_fraction`` of them (default 10 %), drawn by
``hashed_split`` on the group with ``split_seed`` (``youtube_options.segment_record``, shared
with AudioSet, so a video in both sources gets the same split when both run with the same
seed and fraction).

Rejected rows (``rejections``, the row kept out): a wrong number of fields, a bad ytid, a
non-numeric or empty span, ``end_s <= start_s``, an empty caption, an ``aspect_list`` that is
not a list literal, a boolean other than True/False, a ytid seen on an earlier row.
"""

from __future__ import annotations

import ast
import csv
import io
import logging
import re
from collections import Counter
from collections.abc import Iterator

from musictext import storage
from musictext.ingest.base import (
    PublishedFile,
    Source,
    find_published,
    published_text,
    seconds_field,
)
from musictext.ingest.describe import Facets, describe
from musictext.ingest.records import Record
from musictext.ingest.sources.youtube_options import (
    YouTubeOptions,
    segment_record,
    video_id,
)
from musictext.rejects import ItemError, Rejections

log = logging.getLogger(__name__)

CSV_NAME = "musiccaps-public.csv"
CSV_URL = "https://huggingface.co/datasets/google/MusicCaps/resolve/main/musiccaps-public.csv"
COLUMNS = ("ytid", "start_s", "end_s", "audioset_positive_labels", "aspect_list", "caption",
           "author_id", "is_balanced_subset", "is_audioset_eval")
LICENCE = "CC-BY-SA-4.0 (captions); audio: YouTube"

# Aspect phrases ("mellow piano melody", "medium tempo", "sad") sorted into describe() facets
# by the words they contain: tempo, then instrument, genre, mood; the rest (and negations such
# as "no voice") is "other".
_TEMPO = {"tempo", "bpm"}
_INSTRUMENT = {
    "piano", "guitar", "guitars", "drum", "drums", "drumming", "bass", "bassline", "violin",
    "violins", "viola", "cello", "strings", "string", "synth", "synths", "synthesizer", "keyboard",
    "keys", "organ", "flute", "saxophone", "sax", "trumpet", "trumpets", "trombone", "horn",
    "horns", "brass", "clarinet", "harp", "ukulele", "banjo", "mandolin", "accordion",
    "harmonica", "percussion", "percussions", "tabla", "sitar", "vocal", "vocals", "voice",
    "voices", "singer", "singing", "sings", "choir", "rap", "rapping", "beatbox", "beatboxing",
    "cymbal", "cymbals", "hi-hat", "hihat", "snare", "kick", "tambourine", "shaker", "bell",
    "bells", "marimba", "xylophone", "glockenspiel", "vibraphone", "orchestra", "sampler", "808",
    "pad", "pads", "whistle", "whistling", "bagpipes", "didgeridoo", "oud", "erhu", "koto",
    "steelpan", "theremin", "claps", "clapping", "handclaps", "turntable", "scratching",
}
_GENRE = {
    "rock", "pop", "jazz", "blues", "classical", "electronic", "edm", "techno", "house", "trance",
    "dubstep", "hip-hop", "hiphop", "metal", "punk", "folk", "country", "reggae", "reggaeton",
    "funk", "soul", "r&b", "disco", "ambient", "gospel", "latin", "salsa", "flamenco",
    "bollywood", "opera", "ballad", "lullaby", "ska", "grunge", "swing", "bluegrass", "trap",
    "electro", "indie", "orchestral", "carnatic", "hindustani", "afrobeat", "k-pop", "j-pop",
    "song", "soundtrack", "dance", "anthem", "hymn", "march", "waltz", "tango", "polka", "chiptune",
}
_GENRE_PHRASES = ("hip hop", "drum and bass", "new age", "children's song", "nursery rhyme")
_MOOD = {
    "sad", "happy", "mellow", "calm", "calming", "relaxing", "relaxed", "energetic", "upbeat",
    "emotional", "passionate", "soulful", "melancholic", "melancholy", "romantic", "dark",
    "aggressive", "uplifting", "cheerful", "joyful", "joyous", "peaceful", "soothing", "dreamy",
    "epic", "intense", "groovy", "fun", "playful", "chill", "sentimental", "nostalgic",
    "suspenseful", "scary", "spooky", "angry", "tender", "exciting", "hypnotic", "meditative",
    "triumphant", "ominous", "haunting", "gloomy", "serene", "lively", "heartfelt", "eerie",
    "mysterious", "tense", "funny", "sweet", "bouncy", "catchy", "dramatic", "powerful",
    "sorrowful", "spiritual", "festive", "danceable", "hopeful",
}
_WORD = re.compile(r"[a-z0-9&'-]+")


class MusicCapsOptions(YouTubeOptions):
    # Add one describe() sentence built from the aspect list as a second caption.
    aspect_caption: bool = True


def aspect_facets(aspects: list[str]) -> Facets:
    """The aspect phrases sorted into facets (tempo, instrument, genre, mood; else other)."""
    facets = Facets()
    for aspect in aspects:
        text = aspect.strip().lower()
        words = set(_WORD.findall(text))
        if text.startswith(("no ", "without ", "not ")):  # "no voice" names no instrument
            facets.other.append(text)
        elif words & _TEMPO:
            facets.tempo.append(text)
        elif words & _INSTRUMENT:
            facets.instrument.append(text)
        elif words & _GENRE or any(p in text for p in _GENRE_PHRASES):
            facets.genre.append(text)
        elif words & _MOOD:
            facets.mood.append(text)
        elif text:
            facets.other.append(text)
    return facets


def _bool(value: str, column: str, item: str) -> bool:
    text = (value or "").strip()
    if text in ("True", "true", "1"):
        return True
    if text in ("False", "false", "0"):
        return False
    raise ItemError(item, f"{column} {value!r} is not True or False")


def _aspects(value: str, item: str) -> list[str]:
    text = (value or "").strip()
    if not text:
        return []
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ItemError(item, f"aspect_list is not a Python list literal: {text[:60]!r}") from None
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(a, str) for a in parsed):
        raise ItemError(item, f"aspect_list is not a list of strings: {text[:60]!r}")
    return [a.strip() for a in parsed if a.strip()]


def read_rows(uri: str, rejections: Rejections | None = None) -> Iterator[tuple[int, dict]]:
    """(first line number, row) for every record of the CSV; ValueError if columns are missing."""
    text = published_text(storage.read_bytes(uri), CSV_NAME, rejections)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{uri}: no column(s) {missing} in header {reader.fieldnames}")
    line = reader.line_num + 1
    for row in reader:
        yield line, row
        line = reader.line_num + 1


class MusicCapsSource(Source):
    name = "musiccaps"
    description = "MusicCaps: 5.5k 10-second YouTube clips with captions written by musicians"
    phase = 1
    Options = MusicCapsOptions
    published = (PublishedFile(CSV_NAME, CSV_URL),)
    licence = LICENCE

    def parse(self, meta_dir: str, opts: MusicCapsOptions, rejections: Rejections) -> Iterator[Record]:
        uri = find_published(meta_dir, CSV_NAME)
        seen: dict[str, int] = {}
        splits: Counter[str] = Counter()
        rejected = 0
        for line, row in read_rows(uri, rejections):
            try:
                record = self._record(row, line, seen, opts)
            except ItemError as err:
                rejections.add(err.item, err.reason)
                rejected += 1
                continue
            splits[record.split] += 1
            yield record
        log.info("musiccaps: %d records (%s), %d rows rejected", sum(splits.values()),
                 ", ".join(f"{k} {v}" for k, v in sorted(splits.items())), rejected)

    def _record(self, row: dict, line: int, seen: dict[str, int], opts: MusicCapsOptions) -> Record:
        where = f"{CSV_NAME}:{line}"
        if None in row or any(row.get(c) is None for c in COLUMNS):  # too many / too few fields
            count = len(COLUMNS) + len(row.get(None) or []) - sum(row.get(c) is None for c in COLUMNS)
            raise ItemError(where, f"row has {count} fields, expected {len(COLUMNS)}")
        ytid = video_id(row["ytid"], where)
        item = f"{self.name}-{ytid}"
        if ytid in seen:
            raise ItemError(item, f"duplicate ytid (first on line {seen[ytid]})")
        seen[ytid] = line
        start = seconds_field(row["start_s"], "start_s", item)
        end = seconds_field(row["end_s"], "end_s", item)
        if end <= start:
            raise ItemError(item, f"end_s {row['end_s']} is not after start_s {row['start_s']}")
        # Line breaks inside a caption are kept, as "\n" whatever the copy's line endings.
        caption = row["caption"].replace("\r\n", "\n").replace("\r", "\n").strip()
        if not caption:
            raise ItemError(item, "empty caption")
        aspects = _aspects(row["aspect_list"], item)
        is_eval = _bool(row["is_audioset_eval"], "is_audioset_eval", item)
        balanced = _bool(row["is_balanced_subset"], "is_balanced_subset", item)
        captions = [caption]
        if opts.aspect_caption and aspects:
            captions += describe(aspect_facets(aspects), item, 1)
        labels = [x.strip() for x in row["audioset_positive_labels"].split(",") if x.strip()]
        author = row["author_id"].strip()
        return segment_record(
            item, ytid, (start, end), is_eval, opts,
            source=self.name,
            captions=captions,
            tags=aspects,
            licence=LICENCE,
            meta={
                "author_id": int(author) if author.isdigit() else author,
                "audioset_labels": labels,
                "is_balanced_subset": balanced,
                "is_audioset_eval": is_eval,
            },
        )
