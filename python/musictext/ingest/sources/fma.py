"""FMA (Free Music Archive): ``fma_metadata.zip`` → records; audio from ``fma_{subset}.zip``.

Published files (https://github.com/mdeff/fma):

- ``fma_metadata.zip`` holds ``fma_metadata/tracks.csv`` and ``fma_metadata/genres.csv`` (and
  features we do not use). The parser takes the zip itself or its extracted files, found by name
  anywhere under the metadata directory.
- ``tracks.csv`` has two header rows (top-level group: ``album``/``artist``/``set``/``track``;
  column name) plus an index-name row (``track_id,,,...``): pandas reads it with
  ``read_csv(index_col=0, header=[0, 1])``. Quoted fields (artist bio, album information) hold
  raw newlines and HTML, so one record spans several physical lines: the csv module reads it,
  lines are never split by hand. List columns (``track.genres``, ``track.genres_all``,
  ``track.tags``) are Python literals (``[21, 38]``, ``['lo-fi']``, ``[]``).
- ``set.split`` is training/validation/test (the published split); ``set.subset`` names the
  smallest subset holding the track (small ⊂ medium ⊂ large; full holds every track).
- ``track.genre_top`` is empty when a track's genres span several roots, ``track.genres`` may be
  ``[]``; captions use ``genres_all`` (every genre with its ancestors) named through
  ``genres.csv`` (``genre_id,#tracks,parent,title,top_level``; roots have parent 0), top-level
  genres first, and the track's free tags.
- Licence strings are per track and vary (trailing spaces): stripped, kept per record.

Audio: member ``fma_{subset}/NNN/NNNNNN.mp3`` (id zero-padded to six digits, folder = its first
three) of ``https://os.unil.cloud.switch.ch/fma/fma_{subset}.zip``; the zips' sha1 values come from
the FMA README (each zip also holds a ``checksums`` file of per-member sha1s).
"""

from __future__ import annotations

import ast
import csv
import io
import posixpath
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, Literal

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

BASE_URL = "https://os.unil.cloud.switch.ch/fma"
SUBSETS = ("small", "medium", "large", "full")
# The set.subset values, smallest first (a track in "small" is in every larger subset too).
_NESTED = ("small", "medium", "large")
SPLITS = {"training": "train", "validation": "valid", "test": "test"}
# sha1 of the audio zips, from the FMA README (2017-05-09 release, https://github.com/mdeff/fma).
ARCHIVE_SHA1 = {
    "small": "ade154f733639d52e35e32f5593efe5be76c6d70",
    "medium": "c67b69ea232021025fca9231fc1c7c1a063ab50b",
    "large": "497109f4dd721066b5ce5e5f250ec604dc78939e",
    "full": "0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab",
}
METADATA_SHA1 = "f0df49ffe5f2a6008d7dc83c6915b31835dfe733"  # fma_metadata.zip (README)
# Columns the parser needs, as (group, name) of the two header rows.
REQUIRED_COLUMNS = (
    ("set", "split"), ("set", "subset"), ("track", "genres_all"), ("track", "tags"),
    ("track", "title"), ("track", "license"),
)
UNKNOWN_LICENCE = "unknown"  # a track published without a licence string


class FmaOptions(SourceOptions):
    # Which audio archive: keeps the tracks whose set.subset lies within it (nested subsets).
    subset: Literal["small", "medium", "large", "full"] = "small"
    # sha1 of fma_{subset}.zip; unset: the value the FMA README publishes (ARCHIVE_SHA1). A mirror
    # serving other bytes passes its own, or turns the check off with verify_archive=false.
    archive_sha1: str | None = None
    verify_archive: bool = True


class FmaSource(Source):
    name = "fma"
    description = "Free Music Archive: 30 s clips (or full tracks) with genres and tags; per-track CC licences"
    phase = 1
    Options: ClassVar[type[SourceOptions]] = FmaOptions
    published = (PublishedFile("fma_metadata.zip", f"{BASE_URL}/fma_metadata.zip"),)
    licence = "CC-BY-4.0"  # the metadata; each track's audio carries its own licence

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        if not isinstance(opts, FmaOptions):  # plain options: this source's defaults for the rest
            opts = FmaOptions(**opts.model_dump())
        with _metadata(meta_dir) as open_text:
            with open_text("genres.csv") as fh:
                genres = read_genres(fh)
            with open_text("tracks.csv") as fh:
                yield from self._tracks(fh, genres, opts, rejections)

    def _tracks(self, fh, genres: dict[int, tuple[str, int]], opts: FmaOptions,
                rejections: Rejections) -> Iterator[Record]:
        csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))  # long artist bios
        reader = csv.reader(fh)
        columns = _header(reader)
        index = {key: i for i, key in enumerate(columns)}
        missing = [".".join(c) for c in REQUIRED_COLUMNS if c not in index]
        if missing:
            raise ValueError(f"tracks.csv: no column(s) {missing} in its two header rows")
        base = opts.audio_base(BASE_URL)
        ctx = _Context(
            opts=opts,
            index=index,
            width=len(columns),
            genres=genres,
            genre_titles={t.lower() for t, _ in genres.values() if t},
            keep=_subsets_within(opts.subset),
            url=f"{base}/fma_{opts.subset}.zip",
            sha1=(opts.archive_sha1 or ARCHIVE_SHA1[opts.subset]) if opts.verify_archive else None,
        )
        for row in _rows(reader, rejections):
            where = f"tracks.csv:{reader.line_num}"  # the record's last physical line
            if not any(cell.strip() for cell in row) or _is_index_name_row(row):
                continue
            with rejecting(rejections):
                record = self._record(row, ctx, where)
                if record is not None:  # None: in a larger subset than the one chosen
                    yield record

    def _record(self, row: list[str], ctx: _Context, where: str) -> Record | None:
        opts, index, genres = ctx.opts, ctx.index, ctx.genres
        raw_id = row[0].strip()
        try:
            tid = int(raw_id)
            if tid < 0:
                raise ValueError
        except ValueError:
            raise ItemError(where, f"track id {raw_id[:40]!r} is not a non-negative integer") from None
        item = f"fma-{tid}"
        if len(row) != ctx.width:
            raise ItemError(item, f"{len(row)} fields, the header has {ctx.width}")
        if tid in ctx.seen:
            raise ItemError(item, f"duplicate track id ({where})")
        ctx.seen.add(tid)

        def col(group: str, name: str) -> str:
            i = index.get((group, name))
            return row[i].strip() if i is not None else ""

        subset = col("set", "subset")
        if opts.subset != "full":
            if subset not in _NESTED:
                raise ItemError(item, f"set.subset {subset!r} is none of {list(_NESTED)}")
            if subset not in ctx.keep:
                return None  # in a larger subset than the one chosen: not an error
        split = SPLITS.get(col("set", "split"))
        if split is None:
            raise ItemError(item, f"set.split {col('set', 'split')!r} is none of {list(SPLITS)}")

        genre_ids = _int_list(col("track", "genres_all"), item, "track.genres_all")
        if not genre_ids:  # genres_all is genres plus ancestors; fall back if it is blank
            genre_ids = _int_list(col("track", "genres"), item, "track.genres")
        genre_titles = genre_names(genre_ids, genres)
        user_tags = _str_list(col("track", "tags"), item, "track.tags")
        # A free tag that names an FMA genre ("folk") is said as a genre, the rest as other.
        titles = ctx.genre_titles
        genre_words = list(dict.fromkeys([g.lower() for g in genre_titles]
                                         + [t.lower() for t in user_tags if t.lower() in titles]))
        facets = Facets(genre=genre_words, other=[t for t in user_tags if t.lower() not in titles])
        captions = describe(facets, item, n=2)
        if not captions:
            raise ItemError(item, "no genre and no tags to describe it")

        padded = f"{tid:06d}"
        meta = {
            "artist": col("artist", "name"),
            "title": col("track", "title"),
            "album": col("album", "title"),
            "genre_top": col("track", "genre_top"),
            "subset": subset,
        }
        duration = _number(col("track", "duration"))
        if duration is not None:
            meta["duration_s"] = duration
        # 30 s windows: one per 30 s clip (small, medium), up to three for large/full (full tracks).
        full = opts.subset in ("large", "full")
        return make_record(
            item,
            track_id=item,
            source=self.name,
            split=split,
            captions=captions,
            tags=genre_titles + user_tags,
            licence=col("track", "license") or UNKNOWN_LICENCE,
            audio=ArchiveAudio(
                urls=(ctx.url,),
                member=f"fma_{opts.subset}/{padded[:3]}/{padded}.mp3",
                format="zip",
                sha1=ctx.sha1,
            ),
            group=f"fma:{tid}",
            clip_seconds=30.0,
            max_clips=3 if full else 1,
            meta={k: v for k, v in meta.items() if v not in ("", None)},
        )


@dataclass
class _Context:
    """What every row of one parse shares."""

    opts: FmaOptions
    index: dict[tuple[str, str], int]
    width: int
    genres: dict[int, tuple[str, int]]
    genre_titles: set[str]
    keep: set[str]
    url: str
    sha1: str | None
    seen: set[int] = field(default_factory=set)


def _rows(reader, rejections: Rejections) -> Iterator[list[str]]:
    """The reader's rows; a record the csv module cannot read is rejected, not fatal."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            rejections.add(f"tracks.csv:{reader.line_num}", f"unreadable CSV record ({err})")
            continue
        yield row


def _is_index_name_row(row: list[str]) -> bool:
    """pandas' index-name row under the two header rows: ``track_id,,,...``."""
    return row[0].strip() == "track_id" and not any(c.strip() for c in row[1:])


def _subsets_within(subset: str) -> set[str]:
    if subset == "full":
        return set(_NESTED)
    return set(_NESTED[: _NESTED.index(subset) + 1])


def _header(reader) -> list[tuple[str, str]]:
    """(group, name) per column from the two header rows; skips the ``track_id,,,`` row."""
    try:
        top = next(reader)
        names = next(reader)
    except StopIteration:
        raise ValueError("tracks.csv: fewer than two header rows") from None
    if len(top) != len(names):
        raise ValueError(f"tracks.csv: header rows have {len(top)} and {len(names)} fields")
    columns = [(g.strip(), n.strip()) for g, n in zip(top, names)]
    columns[0] = ("", "track_id")
    return columns


def read_genres(fh) -> dict[int, tuple[str, int]]:
    """genre_id -> (title, parent) from ``genres.csv``."""
    reader = csv.DictReader(fh)
    need = {"genre_id", "parent", "title"}
    if not reader.fieldnames or not need <= {f.strip() for f in reader.fieldnames}:
        raise ValueError(f"genres.csv: header {reader.fieldnames} lacks {sorted(need)}")
    out: dict[int, tuple[str, int]] = {}
    for row in reader:
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        try:
            out[int(row["genre_id"])] = (row["title"], int(row["parent"] or 0))
        except ValueError:
            continue  # a broken genre row only loses that genre's name
    return out


def genre_names(ids: list[int], genres: dict[int, tuple[str, int]]) -> list[str]:
    """Titles of ``ids`` known to genres.csv: top-level (parent 0) genres first, then the others,
    each in the order given; unknown ids are left out."""
    known = [g for g in dict.fromkeys(ids) if g in genres]
    roots = [genres[g][0] for g in known if genres[g][1] == 0]
    rest = [genres[g][0] for g in known if genres[g][1] != 0]
    return list(dict.fromkeys(t for t in roots + rest if t))


def _literal_list(text: str, item: str, column: str) -> list:
    if not text:
        return []
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ItemError(item, f"{column} {text[:60]!r} is not a list literal") from None
    if not isinstance(value, (list, tuple)):
        raise ItemError(item, f"{column} {text[:60]!r} is not a list literal")
    return list(value)


def _int_list(text: str, item: str, column: str) -> list[int]:
    values = _literal_list(text, item, column)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ItemError(item, f"{column} {text[:60]!r} holds non-integer genre ids")
    return values


def _str_list(text: str, item: str, column: str) -> list[str]:
    values = _literal_list(text, item, column)
    return list(dict.fromkeys(str(v).strip() for v in values if str(v).strip()))


def _number(text: str) -> float | int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


@contextmanager
def _metadata(meta_dir: str):
    """Yield ``open_text(name)``: a context manager giving a text stream of a published table,
    from the extracted files when present, else from the members of ``fma_metadata.zip``."""
    tracks = find_published(meta_dir, "tracks.csv", required=False)
    if tracks is not None:
        genres = find_published(meta_dir, "genres.csv", required=False)
        if genres is None:
            raise FileNotFoundError(f"no genres.csv under {meta_dir} (tracks.csv is there)")
        paths = {"tracks.csv": tracks, "genres.csv": genres}

        @contextmanager
        def open_file(name: str):
            fs, path = storage.fs_for(paths[name])
            with fs.open(path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as text:
                yield text

        yield open_file
        return
    archive = find_published(meta_dir, "fma_metadata.zip", required=False)
    if archive is None:
        raise FileNotFoundError(f"no tracks.csv or fma_metadata.zip under {meta_dir}")
    fs, path = storage.fs_for(archive)
    with fs.open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
        members = {}
        for info in zf.infolist():
            base = posixpath.basename(info.filename)
            if base in ("tracks.csv", "genres.csv") and not info.is_dir():
                # the shallowest copy, as find_published does for files
                if base not in members or info.filename.count("/") < members[base].count("/"):
                    members[base] = info.filename
        for name in ("tracks.csv", "genres.csv"):
            if name not in members:
                raise FileNotFoundError(f"no {name} in {archive}")

        @contextmanager
        def open_member(name: str):
            with zf.open(members[name]) as member, io.TextIOWrapper(member, encoding="utf-8", newline="") as text:
                yield text

        yield open_member
