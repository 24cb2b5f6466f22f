"""MagnaTagATune (MTAT): 25,863 clips of ~29 s from Magnatune, 188 binary tags each.

Published files (https://mirg.city.ac.uk/datasets/magnatagatune/):

- ``annotations_final.csv``: TAB-separated despite its name; ``clip_id``, the 188 tag columns
  (0/1), then ``mp3_path`` (``f/american_bach_soloists-...-30-59.mp3``). Copies in circulation
  quote every field (``"clip_id"\\t"no voice"...``) or none: the csv module reads both.
- ``clip_info_final.csv`` (optional here): tab-separated ``clip_id, track_number, title, artist,
  album, url, segmentStart, segmentEnd, original_url, mp3_path``.
- Audio ``mp3.zip.001..003``: byte-split parts of one zip (concatenate, then unzip); the member is
  ``mp3_path``. Some MP3s are empty or broken (e.g. clip 35644): their download fails per item.

There are no captions: the positive tags are sorted into facets through ``TAG_FACETS`` (typos
and synonyms merged, e.g. "harpsicord" → harpsichord, "no voice"/"no vocals"/"no singer" →
instrumental; negations such as "no piano" say nothing and are left out of the captions) and
written as sentences by ``describe``. ``tags`` keeps the raw positive tag names.

Split: the common one by folder (first character of ``mp3_path``): 0–b train, c valid, d–f test.
Clips of one track share a folder, so the split never separates them.

Group: ``mtat:<clip_id>``. A group and a span name one item, and every MTAT clip is its own file
with a null span, so a per-track group would merge a track's different clips as duplicates; the
track is kept in ``meta["track"]`` (the mp3 name without its ``-start-end`` suffix).

Clip policy: each ~29 s clip is cut into at most two 10 s windows (``clip_seconds=10``,
``max_clips=2``), like the other 10 s phase-1 sources.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import ClassVar

from musictext import storage
from musictext.ingest.base import (
    PublishedFile,
    Source,
    SourceOptions,
    find_published,
    rejecting,
)
from musictext.ingest.describe import Facets, describe
from musictext.ingest.records import ArchiveAudio, Record, make_record
from musictext.rejects import ItemError, Rejections

BASE_URL = "https://mirg.city.ac.uk/datasets/magnatagatune"
ANNOTATIONS = "annotations_final.csv"
CLIP_INFO = "clip_info_final.csv"
AUDIO_PARTS = ("mp3.zip.001", "mp3.zip.002", "mp3.zip.003")
LICENCE = "CC-BY-NC-SA-3.0"
SPLIT_BY_FOLDER = {**{f: "train" for f in "0123456789ab"}, "c": "valid", **{f: "test" for f in "def"}}

_G, _M, _I, _T, _O = "genre", "mood", "instrument", "tempo", "other"
# Every one of the 188 tag columns: (facet, phrase used in captions), or None for tags that say
# nothing a listener would search for (negations, "lol", "different"). Synonyms and the dataset's
# typos ("clasical", "harpsicord") share one phrase, so a clip tagged with several says it once.
TAG_FACETS: dict[str, tuple[str, str] | None] = {
    # genres
    "classical": (_G, "classical"), "clasical": (_G, "classical"), "classic": (_G, "classical"),
    "baroque": (_G, "baroque"), "medieval": (_G, "medieval"), "opera": (_G, "opera"),
    "operatic": (_G, "opera"), "rock": (_G, "rock"), "hard rock": (_G, "hard rock"),
    "soft rock": (_G, "soft rock"), "metal": (_G, "metal"), "heavy metal": (_G, "heavy metal"),
    "punk": (_G, "punk"), "pop": (_G, "pop"), "jazz": (_G, "jazz"), "jazzy": (_G, "jazz"),
    "blues": (_G, "blues"), "country": (_G, "country"), "folk": (_G, "folk"), "funk": (_G, "funk"),
    "funky": (_G, "funk"), "reggae": (_G, "reggae"), "disco": (_G, "disco"), "dance": (_G, "dance"),
    "electronic": (_G, "electronic"), "electro": (_G, "electronic"), "electronica": (_G, "electronic"),
    "techno": (_G, "techno"), "trance": (_G, "trance"), "house": (_G, "house"),
    "industrial": (_G, "industrial"), "jungle": (_G, "jungle"), "ambient": (_G, "ambient"),
    "new age": (_G, "new age"), "hip hop": (_G, "hip hop"), "rap": (_G, "rap"), "world": (_G, "world"),
    "celtic": (_G, "celtic"), "irish": (_G, "irish"), "spanish": (_G, "spanish"),
    "indian": (_G, "indian"), "india": (_G, "indian"), "eastern": (_G, "eastern"),
    "oriental": (_G, "eastern"), "middle eastern": (_G, "middle eastern"), "arabic": (_G, "arabic"),
    "tribal": (_G, "tribal"),
    # instruments and voices
    "guitar": (_I, "guitar"), "guitars": (_I, "guitar"), "acoustic guitar": (_I, "acoustic guitar"),
    "electric guitar": (_I, "electric guitar"), "classical guitar": (_I, "classical guitar"),
    "banjo": (_I, "banjo"), "sitar": (_I, "sitar"), "lute": (_I, "lute"), "harp": (_I, "harp"),
    "plucking": (_I, "plucked strings"), "violin": (_I, "violin"), "violins": (_I, "violin"),
    "fiddle": (_I, "fiddle"), "viola": (_I, "viola"), "cello": (_I, "cello"), "strings": (_I, "strings"),
    "string": (_I, "strings"), "bass": (_I, "bass"), "piano": (_I, "piano"),
    "piano solo": (_I, "solo piano"), "harpsichord": (_I, "harpsichord"), "harpsicord": (_I, "harpsichord"),
    "organ": (_I, "organ"), "keyboard": (_I, "keyboard"), "synth": (_I, "synthesizer"),
    "synthesizer": (_I, "synthesizer"), "flute": (_I, "flute"), "flutes": (_I, "flute"),
    "oboe": (_I, "oboe"), "clarinet": (_I, "clarinet"), "sax": (_I, "saxophone"),
    "woodwind": (_I, "woodwinds"), "wind": (_I, "wind instruments"), "trumpet": (_I, "trumpet"),
    "horn": (_I, "horns"), "horns": (_I, "horns"), "drums": (_I, "drums"), "drum": (_I, "drums"),
    "percussion": (_I, "percussion"), "bongos": (_I, "bongos"), "clapping": (_I, "hand claps"),
    "beat": (_I, "beats"), "beats": (_I, "beats"), "bells": (_I, "bells"), "chimes": (_I, "chimes"),
    "orchestra": (_I, "orchestra"), "orchestral": (_I, "orchestra"),
    "vocals": (_I, "vocals"), "vocal": (_I, "vocals"), "voice": (_I, "vocals"), "voices": (_I, "vocals"),
    "singer": (_I, "vocals"), "singing": (_I, "vocals"),
    "male vocal": (_I, "male vocals"), "male vocals": (_I, "male vocals"), "male voice": (_I, "male vocals"),
    "male singer": (_I, "male vocals"), "man singing": (_I, "male vocals"), "man": (_I, "male vocals"),
    "male": (_I, "male vocals"), "men": (_I, "male vocals"),
    "female vocal": (_I, "female vocals"), "female vocals": (_I, "female vocals"),
    "female voice": (_I, "female vocals"), "female singer": (_I, "female vocals"),
    "female singing": (_I, "female vocals"), "woman": (_I, "female vocals"),
    "woman singing": (_I, "female vocals"), "women": (_I, "female vocals"), "female": (_I, "female vocals"),
    "girl": (_I, "female vocals"),
    "choir": (_I, "choir"), "chorus": (_I, "choir"), "choral": (_I, "choir"),
    "soprano": (_I, "soprano"), "female opera": (_I, "female opera singer"),
    "male opera": (_I, "male opera singer"), "chant": (_I, "chanting"), "chanting": (_I, "chanting"),
    "monks": (_I, "chanting monks"),
    # moods
    "quiet": (_M, "quiet"), "soft": (_M, "soft"), "calm": (_M, "calm"), "mellow": (_M, "mellow"),
    "light": (_M, "light"), "airy": (_M, "airy"), "happy": (_M, "happy"), "upbeat": (_M, "upbeat"),
    "sad": (_M, "sad"), "dark": (_M, "dark"), "eerie": (_M, "eerie"), "scary": (_M, "scary"),
    "weird": (_M, "weird"), "strange": (_M, "weird"), "spacey": (_M, "spacey"), "space": (_M, "spacey"),
    "loud": (_M, "loud"), "heavy": (_M, "heavy"), "hard": (_M, "hard"), "deep": (_M, "deep"),
    # tempo
    "fast": (_T, "fast"), "quick": (_T, "fast"), "fast beat": (_T, "fast"), "slow": (_T, "slow"),
    # other attributes
    "instrumental": (_O, "instrumental"), "no voice": (_O, "instrumental"),
    "no voices": (_O, "instrumental"), "no vocal": (_O, "instrumental"), "no vocals": (_O, "instrumental"),
    "no singer": (_O, "instrumental"), "no singing": (_O, "instrumental"),
    "solo": (_O, "solo"), "duet": (_O, "duet"), "acoustic": (_O, "acoustic"), "electric": (_O, "electric"),
    "repetitive": (_O, "repetitive"), "drone": (_O, "drone"), "echo": (_O, "echo"), "noise": (_O, "noisy"),
    "low": (_O, "low-pitched"), "old": (_O, "old"), "modern": (_O, "modern"), "talking": (_O, "talking"),
    "birds": (_O, "bird sounds"), "water": (_O, "water sounds"), "english": (_O, "english lyrics"),
    # say nothing useful in a caption (still kept in ``tags``)
    "no piano": None, "no guitar": None, "no violin": None, "no strings": None, "no flute": None,
    "no drums": None, "no beat": None, "not classical": None, "not rock": None, "not opera": None,
    "not english": None, "foreign": None, "lol": None, "different": None, "silence": None,
}
_GENERIC_VOCALS = "vocals"  # dropped from a caption that already names male/female vocals
_SEGMENT = re.compile(r"-\d+-\d+\.mp3$")


class MagnaTagATuneSource(Source):
    name = "magnatagatune"
    description = "MagnaTagATune: 25,863 clips of ~29 s (Magnatune) with 188 crowd-sourced binary tags"
    phase = 1
    Options: ClassVar[type[SourceOptions]] = SourceOptions
    published = (
        PublishedFile(ANNOTATIONS, f"{BASE_URL}/{ANNOTATIONS}"),
        PublishedFile(CLIP_INFO, f"{BASE_URL}/{CLIP_INFO}", required=False),
    )
    licence = LICENCE

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        annotations = find_published(meta_dir, ANNOTATIONS)
        info_path = find_published(meta_dir, CLIP_INFO, required=False)
        clip_info = read_clip_info(_text(info_path)) if info_path else {}
        base = opts.audio_base(BASE_URL)
        urls = tuple(f"{base}/{part}" for part in AUDIO_PARTS)

        reader = csv.reader(io.StringIO(_text(annotations), newline=""), delimiter="\t")
        header = [h.strip() for h in next(reader, [])]
        if len(header) < 3 or header[0] != "clip_id" or header[-1] != "mp3_path":
            raise ValueError(f"{ANNOTATIONS}: header {header[:2]}...{header[-1:]} is not "
                             "clip_id, <tags>, mp3_path")
        tags = header[1:-1]
        seen: set[str] = set()
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            with rejecting(rejections):
                yield self._record(row, tags, clip_info, urls, seen, f"{ANNOTATIONS}:{reader.line_num}")

    def _record(self, row: list[str], tags: list[str], clip_info: dict[str, dict[str, str]],
                urls: tuple[str, ...], seen: set[str], where: str) -> Record:
        clip_id = row[0].strip()
        if not clip_id.isdigit():
            raise ItemError(where, f"clip_id {clip_id[:40]!r} is not a number")
        item = f"{self.name}-{clip_id}"
        if len(row) != len(tags) + 2:
            raise ItemError(item, f"{len(row)} fields, the header has {len(tags) + 2} ({where})")
        if clip_id in seen:
            raise ItemError(item, f"duplicate clip_id ({where})")
        seen.add(clip_id)
        values = [v.strip() for v in row[1:-1]]
        bad = [(t, v) for t, v in zip(tags, values) if v not in ("0", "1")]
        if bad:
            raise ItemError(item, f"tag {bad[0][0]!r} is {bad[0][1]!r}, not 0 or 1")
        mp3_path = row[-1].strip()
        folder = mp3_path.split("/", 1)[0] if "/" in mp3_path else ""
        if folder not in SPLIT_BY_FOLDER or not mp3_path.endswith(".mp3"):
            raise ItemError(item, f"mp3_path {mp3_path[:80]!r} is not <folder 0-f>/<name>.mp3")
        positive = [t for t, v in zip(tags, values) if v == "1"]
        if not positive:
            raise ItemError(item, "no positive tags")
        captions = describe(tag_facets(positive), item, n=2)
        if not captions:
            raise ItemError(item, f"no describable tags (only {positive})")

        info = clip_info.get(clip_id, {})
        meta = {
            "artist": info.get("artist", ""),
            "title": info.get("title", ""),
            "album": info.get("album", ""),
            "track_number": _int(info.get("track_number", "")),
            "segment_start_s": _int(info.get("segmentStart", "")),
            "segment_end_s": _int(info.get("segmentEnd", "")),
            "track": _SEGMENT.sub("", mp3_path.split("/", 1)[1]),
        }
        return make_record(
            item,
            track_id=item,
            source=self.name,
            split=SPLIT_BY_FOLDER[folder],
            captions=captions,
            tags=positive,
            licence=LICENCE,
            audio=ArchiveAudio(urls=urls, member=mp3_path, format="zip"),
            group=f"mtat:{clip_id}",
            clip_seconds=10.0,
            max_clips=2,
            meta={k: v for k, v in meta.items() if v not in ("", None)},
        )


def tag_facets(positive: list[str]) -> Facets:
    """Facets of a clip's positive tags (phrases deduplicated, in the order of the columns)."""
    facets = Facets()
    for tag in positive:
        entry = TAG_FACETS.get(tag, (_O, tag))  # a column this table does not know: said as is
        if entry is None:
            continue
        facet, phrase = entry
        words = getattr(facets, facet)
        if phrase not in words:
            words.append(phrase)
    if _GENERIC_VOCALS in facets.instrument and any(p.endswith(" vocals") and p != _GENERIC_VOCALS
                                                    for p in facets.instrument):
        facets.instrument.remove(_GENERIC_VOCALS)
    return facets


def read_clip_info(text: str) -> dict[str, dict[str, str]]:
    """clip_id -> the row of ``clip_info_final.csv`` (tab-separated, quoted or not)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t")
    header = [h.strip() for h in next(reader, [])]
    if "clip_id" not in header:
        raise ValueError(f"{CLIP_INFO}: no clip_id column in its header {header[:4]}")
    out: dict[str, dict[str, str]] = {}
    for row in reader:
        if len(row) != len(header):
            continue  # the clip only loses its artist/title/album
        values = dict(zip(header, (v.strip() for v in row)))
        out[values["clip_id"]] = values
    return out


def _text(uri: str) -> str:
    data = storage.read_bytes(uri)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:  # an older copy in Latin-1: names keep their accents
        return data.decode("latin-1")


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
