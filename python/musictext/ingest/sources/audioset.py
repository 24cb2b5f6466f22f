"""AudioSet, music subset: YouTube segments (mostly 10 s) labelled with ontology classes.

Published files (segment CSVs CC BY 4.0, ``ontology.json`` CC BY-SA 4.0; the audio stays on
YouTube): ``eval_segments.csv`` (20,371 segments), ``balanced_train_segments.csv`` (22,160),
``unbalanced_train_segments.csv`` (2,041,789; read only with ``include_unbalanced``),
``class_labels_indices.csv`` (the 527 labels) and ``ontology.json`` (632 classes)::

    # Segments csv created Sun Mar  5 10:54:31 2017
    # num_ytids=22160, num_segs=22160, num_unique_labels=527, num_positive_labels=52882
    # YTID, start_seconds, end_seconds, positive_labels
    --PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"

Read with the csv module (``skipinitialspace``: fields are separated by ``", "``; the label
field is always quoted); ``#`` lines are comments. Segments are not always 10 s (``0.000,
9.000``), some starts are fractional, and ytids may start with ``-``.

**The music subset.** ``ontology.json`` is a multi-parent graph: Bell, Bicycle bell, Cowbell,
Choir, Chant... lie under Music (``/m/04rlf``) *and* under non-music parents (Sounds of things,
Bicycle, Alarm, Cattle, Singing), so "any label under Music" would admit bicycle bells. Rule:

* a label *qualifies* when every path from a root of the ontology to it passes through Music:
  it is Music, or it has parents and every parent qualifies. Bicycle bell (parents Bell, Bicycle,
  Alarm) does not; nor Bell (Sounds of things), nor Church bell (only parent: Bell), nor Choir
  (Singing); Guitar, Jazz, Happy music and Beatboxing (Hip hop music, Vocal music) do.
* a segment is music when at least one of its labels qualifies. Other segments are *excluded*,
  not rejected (they are simply not music): their number is logged.
* a kept segment's tags are all its labels' names, the ambiguous and non-music ones included
  ("Bicycle bell", "Speech"): they describe what is heard.

``restrictions``: "abstract" classes (Music genre, Music mood...) are not labels and
"blacklist" classes (Musical concepts and its children such as Song) are not rated reliably:
both are ignored wherever they appear on a segment (never tags, captions, nor a reason to keep
a segment). Singing (``/m/015lz1``) and Speech are not under Music.

Captions: ``describe`` sentences from the labels sorted into facets by their ancestors:
under Musical instrument or Singing -> instrument ("with electric guitar and male singing"),
under Music genre -> genre, under Music mood -> mood, the rest of the Music subtree (Music role:
"christmas music") -> other. Non-music labels stay tags only; the bare "Music" label and any label
that is an ancestor of another label on the segment (Guitar next to Electric guitar) are left
out. A music segment with nothing left to describe (only "Music", or Music + Speech) is rejected:
it has no usable caption.

Records: ``audioset-<ytid>``, ``YouTubeAudio(ytid)`` over the segment, group ``yt:<ytid>`` (the
same recording as the MusicCaps clip with that id). Splits: ``eval_segments.csv`` -> test; the
train CSVs -> train, except a ``valid_fraction`` drawn by ``hashed_split`` on the group with
``split_seed`` (``youtube_options.segment_record``, as MusicCaps does, so a video in both sources
gets one split).

Rejected rows: a wrong number of fields, a bad ytid, a non-numeric span or ``end <= start``, no
labels, a ytid already seen in an earlier row or file, a music segment without a caption.
Labels missing from the ontology are ignored (and counted in the log).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import posixpath
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

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

CSV_BASE = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv"
ONTOLOGY_URL = "https://raw.githubusercontent.com/audioset/ontology/master/ontology.json"
EVAL = "eval_segments.csv"
BALANCED = "balanced_train_segments.csv"
UNBALANCED = "unbalanced_train_segments.csv"
CLASS_LABELS = "class_labels_indices.csv"
ONTOLOGY = "ontology.json"
LICENCE = "CC-BY-4.0 (labels); audio: YouTube"

MUSIC = "/m/04rlf"
MUSICAL_INSTRUMENT = "/m/04szw"
MUSIC_GENRE = "/m/0kpv1t"
MUSIC_MOOD = "/t/dd00030"
SINGING = "/m/015lz1"  # not under Music; its labels name the voice ("with male singing")
IGNORED_RESTRICTIONS = {"abstract", "blacklist"}


class AudioSetOptions(YouTubeOptions):
    # Also read unbalanced_train_segments.csv (2,041,789 segments; about 100 MB of CSV).
    include_unbalanced: bool = False


@dataclass
class Ontology:
    """The AudioSet class graph, with what the music subset needs precomputed."""

    names: dict[str, str]
    parents: dict[str, list[str]]
    restrictions: dict[str, set[str]]
    ancestors: dict[str, set[str]] = field(default_factory=dict)
    music: set[str] = field(default_factory=set)  # Music and every descendant
    qualifying: set[str] = field(default_factory=set)  # labels that alone make a segment music

    def usable(self, mid: str) -> bool:
        """A class a segment may carry: known, neither abstract nor blacklisted."""
        return mid in self.names and not (self.restrictions.get(mid, set()) & IGNORED_RESTRICTIONS)

    def facet(self, mid: str) -> str | None:
        """The describe() facet of a label; None for a non-music label (and Music itself)."""
        up = self.ancestors.get(mid, set()) | {mid}
        if MUSICAL_INSTRUMENT in up or SINGING in up:
            return "instrument"
        if MUSIC_GENRE in up:
            return "genre"
        if MUSIC_MOOD in up:
            return "mood"
        if mid in self.music and mid != MUSIC:
            return "other"
        return None


def load_ontology(data: bytes, where: str = ONTOLOGY) -> Ontology:
    """The ontology from ``ontology.json``; ValueError when it is not the published format."""
    try:
        nodes = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where}: not JSON ({err})") from None
    if not isinstance(nodes, list) or not all(isinstance(n, dict) and "id" in n and "name" in n for n in nodes):
        raise ValueError(f"{where}: not a JSON array of classes with id and name")
    names = {n["id"]: str(n["name"]) for n in nodes}
    restrictions = {n["id"]: set(n.get("restrictions") or []) for n in nodes}
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for n in nodes:
        for child in n.get("child_ids") or []:
            parents.setdefault(child, []).append(n["id"])
            children.setdefault(n["id"], []).append(child)
    if MUSIC not in names:
        raise ValueError(f"{where}: no Music class {MUSIC}")
    onto = Ontology(names, parents, restrictions)

    for mid in names:  # ancestors through every parent (a DAG; a cycle would just stop)
        seen: set[str] = set()
        stack = list(parents.get(mid, []))
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(parents.get(p, []))
        onto.ancestors[mid] = seen
    onto.music = {mid for mid, up in onto.ancestors.items() if MUSIC in up} | {MUSIC}

    memo: dict[str, bool] = {MUSIC: True}

    def only_under_music(mid: str, path: frozenset[str] = frozenset()) -> bool:
        if mid not in memo:
            ps = parents.get(mid, [])
            memo[mid] = bool(ps) and mid not in path and all(only_under_music(p, path | {mid}) for p in ps)
        return memo[mid]

    onto.qualifying = {mid for mid in onto.music if onto.usable(mid) and only_under_music(mid)}
    return onto


def load_class_labels(data: bytes, where: str = CLASS_LABELS) -> dict[str, str]:
    """{mid: display_name} from ``class_labels_indices.csv`` (``index,mid,display_name``)."""
    names: dict[str, str] = {}
    reader = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    for fields in reader:
        if not fields or fields == ["index", "mid", "display_name"]:
            continue
        if len(fields) != 3 or not fields[0].strip().isdigit():
            raise ValueError(f"{where}:{reader.line_num}: not an index,mid,display_name row: {fields}")
        names[fields[1].strip()] = fields[2].strip()
    return names


def read_segments(uri: str, rejections: Rejections | None = None) -> Iterator[tuple[int, list[str]]]:
    """(line, fields) of every non-comment row of a segment CSV."""
    text = published_text(storage.read_bytes(uri), posixpath.basename(uri), rejections)
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True)
    for fields in reader:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if fields[0].lstrip().startswith("#"):
            continue
        yield reader.line_num, fields


_PAREN = re.compile(r"\s*\([^)]*\)")
# Genre names that read badly once "music" is appended by a sentence ("Music for children music").
_GENRE_WORDS = {
    "Music for children": "children's", "Music of Africa": "African", "Music of Asia": "Asian",
    "Music of Latin America": "Latin American", "Music of Bollywood": "Bollywood",
    "Middle Eastern music": "Middle Eastern", "Christian music": "Christian",
    "New-age music": "new-age", "Traditional music": "traditional", "Independent music": "independent",
}
_PROPER = {"christmas": "Christmas", "african": "African", "asian": "Asian", "latin": "Latin",
           "american": "American", "bollywood": "Bollywood", "christian": "Christian",
           "carnatic": "Carnatic", "middle": "Middle", "eastern": "Eastern"}


def caption_word(name: str, facet: str) -> str:
    """How a label reads in a sentence: "Pop music" -> "pop", "Keyboard (musical)" -> "keyboard",
    "Violin, fiddle" -> "violin", "Happy music" -> "happy", "Music for children" -> "children's"."""
    if facet == "genre" and name in _GENRE_WORDS:
        return _GENRE_WORDS[name]
    text = _PAREN.sub("", name).split(",")[0].strip()
    words = [w if (len(w) > 1 and w.isupper()) else _PROPER.get(w.lower(), w.lower()) for w in text.split()]
    if facet in ("genre", "mood") and len(words) > 1 and words[-1] == "music":
        words = words[:-1]
    return " ".join(words)


@dataclass
class _Counts:
    kept: Counter = field(default_factory=Counter)
    excluded: int = 0
    rejected: int = 0
    unknown: Counter = field(default_factory=Counter)


class AudioSetSource(Source):
    name = "audioset"
    description = "AudioSet music subset: 10-second YouTube segments captioned from their ontology labels"
    phase = 1
    Options = AudioSetOptions
    published = (
        PublishedFile(EVAL, f"{CSV_BASE}/{EVAL}"),
        PublishedFile(BALANCED, f"{CSV_BASE}/{BALANCED}"),
        PublishedFile(UNBALANCED, f"{CSV_BASE}/{UNBALANCED}", required=False),
        PublishedFile(CLASS_LABELS, f"{CSV_BASE}/{CLASS_LABELS}", required=False),
        PublishedFile(ONTOLOGY, ONTOLOGY_URL),
    )
    licence = LICENCE

    def parse(self, meta_dir: str, opts: AudioSetOptions, rejections: Rejections) -> Iterator[Record]:
        onto_uri = find_published(meta_dir, ONTOLOGY)
        onto = load_ontology(storage.read_bytes(onto_uri), onto_uri)
        labels_uri = find_published(meta_dir, CLASS_LABELS, required=False)
        display = load_class_labels(storage.read_bytes(labels_uri), labels_uri) if labels_uri else {}
        files = [(EVAL, True), (BALANCED, False)] + ([(UNBALANCED, False)] if opts.include_unbalanced else [])
        seen: dict[str, str] = {}
        counts = _Counts()
        for file_name, is_eval in files:
            uri = find_published(meta_dir, file_name)
            for line, fields in read_segments(uri, rejections):
                try:
                    record = self._record(fields, f"{file_name}:{line}", is_eval, onto, display, seen,
                                          counts, opts)
                except ItemError as err:
                    rejections.add(err.item, err.reason)
                    counts.rejected += 1
                    continue
                if record is None:
                    counts.excluded += 1
                    continue
                counts.kept[record.split] += 1
                yield record
        log.info("audioset: %d music segments kept (%s); %d excluded as not music; %d rejected; "
                 "%d unknown label(s) ignored%s", sum(counts.kept.values()),
                 ", ".join(f"{k} {v}" for k, v in sorted(counts.kept.items())), counts.excluded,
                 counts.rejected, sum(counts.unknown.values()),
                 f" ({', '.join(sorted(counts.unknown)[:10])})" if counts.unknown else "")

    def _record(self, fields: list[str], where: str, is_eval: bool, onto: Ontology,
                display: dict[str, str], seen: dict[str, str], counts: _Counts,
                opts: AudioSetOptions) -> Record | None:
        """The segment's record; None when it is not music; ItemError when it is unusable."""
        if len(fields) != 4:
            raise ItemError(where, f"row has {len(fields)} fields, expected 4 "
                                   "(YTID, start_seconds, end_seconds, positive_labels)")
        ytid = video_id(fields[0], where)
        item = f"{self.name}-{ytid}"
        if ytid in seen:
            raise ItemError(item, f"duplicate ytid at {where} (first at {seen[ytid]})")
        seen[ytid] = where
        start = seconds_field(fields[1], "start_seconds", item)
        end = seconds_field(fields[2], "end_seconds", item)
        if end <= start:
            raise ItemError(item, f"end_seconds {fields[2].strip()} is not after start_seconds {fields[1].strip()}")
        mids = list(dict.fromkeys(m.strip() for m in fields[3].split(",") if m.strip()))
        if not mids:
            raise ItemError(item, "no labels")
        for mid in mids:
            if mid not in onto.names:
                counts.unknown[mid] += 1
        usable = [m for m in mids if onto.usable(m)]
        if not any(m in onto.qualifying for m in usable):
            return None

        def name(mid: str) -> str:
            return display.get(mid) or onto.names[mid]

        facets = Facets()
        for mid in usable:
            facet = onto.facet(mid)
            if facet is None or any(mid in onto.ancestors.get(other, ()) for other in usable):
                continue  # non-music, Music itself, or a more general label than another one here
            getattr(facets, facet).append(caption_word(name(mid), facet))
        captions = describe(facets, item, 2)
        if not captions:
            raise ItemError(item, "no label describes the music beyond the generic 'Music' "
                                  f"(labels: {', '.join(name(m) for m in usable)})")
        return segment_record(
            item, ytid, (start, end), is_eval, opts,
            source=self.name,
            captions=captions,
            tags=[name(m) for m in usable],
            licence=LICENCE,
            meta={"labels": mids, "segments_file": where.split(":")[0]},
        )
