"""MusicBench (``amaai-lab/MusicBench`` on the Hugging Face hub): MusicCaps clips, their pitch/tempo/
volume augmentations, and captions enriched with chords, beats, tempo and key (CC BY-SA 3.0).

Published files (checked against the hub and code that downloads them):

- ``MusicBench_train.json`` (52,768 rows), ``MusicBench_test_A.json`` and ``MusicBench_test_B.json``
  (400 rows each, the same audio; B adds the control sentences to ``main_caption``). They are
  JSON *lines* despite the ``.json`` name. Some code names the test files ``MusicBench_testA.json``
  / ``MusicBench_testB.json``: both spellings are accepted.
- ``MusicBench.tar.gz`` (≈16.8 GB): every wav. ``location`` is relative to the folder the tarball
  unpacks into, ``datashare/``: original clips are ``datashare/data/<ytid>.wav``, augmented copies
  ``datashare/data_aug2/<ytid>_<n>.wav`` (e.g. ``data_aug2/-0SdAVK79lg_1.wav``). A repacked tarball
  with ``location`` at its root is used with ``archive_root=""``.

Row fields: ``dataset, location, main_caption, alt_caption, prompt_aug, prompt_ch, prompt_bt,
prompt_bpm, prompt_key, beats [[times], [beat index]], bpm, chords, chords_time, key ["B", "major"],
keyprob, is_audioset_eval_mcaps``. ``is_audioset_eval_mcaps`` describes the *source* clip: an
augmentation of an AudioSet/MusicCaps eval clip carries True.

Splits: rows of the test files are test; a train row is test when its source clip is an eval clip
(``is_audioset_eval_mcaps``) or a clip of the test files, so no augmentation of a test clip is ever
trained on. The rest is split train/valid by a seeded hash of the group ``yt:<ytid>``: the same
group key MusicCaps and AudioSet use, so every copy of a video lands in one split across sources.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from musictext import storage
from musictext.ingest.base import (
    PublishedFile,
    Source,
    SourceOptions,
    ValidFractionOptions,
    archive_member,
    find_published,
    published_text,
    rejecting,
)
from musictext.ingest.records import ArchiveAudio, Record, make_record, safe_id
from musictext.ingest.sources.youtube_options import group_key
from musictext.rejects import Rejections, json_lines

HUB = "https://huggingface.co/datasets/amaai-lab/MusicBench/resolve/main"
TRAIN = "MusicBench_train.json"
TEST_A = "MusicBench_test_A.json"
TEST_B = "MusicBench_test_B.json"
TARBALL = "MusicBench.tar.gz"
LICENCE = "CC-BY-SA-3.0"

# A YouTube id is 11 characters of [A-Za-z0-9_-]; an augmented copy appends "_<n>". Splitting on
# the fixed length (not on the last "_") keeps ids that themselves end in "_<digit>" whole.
_YTID_STEM = re.compile(r"([A-Za-z0-9_-]{11})(?:_(\d+))?")


class MusicBenchOptions(ValidFractionOptions):
    # Folder the tarball's members live under; ``location`` is relative to it.
    archive_root: str = "datashare"


@dataclass
class _Clip:
    """Every row of one ``location`` (TestA and TestB share their audio)."""

    location: str
    ytid: str
    aug: str | None
    captions: list[str] = field(default_factory=list)
    test_file: bool = False
    row: dict = field(default_factory=dict)  # the first row, for the meta fields


def source_ytid(location: str) -> tuple[str, str | None]:
    """(YouTube id, augmentation index or None) of a ``location`` like ``data_aug2/<ytid>_<n>.wav``."""
    folder, name = posixpath.split(location)
    stem = posixpath.splitext(name)[0]
    match = _YTID_STEM.fullmatch(stem)
    if match:
        return match.group(1), match.group(2)
    # Not an 11-character id (never seen in the published files): strip an augmentation suffix
    # only outside the originals' folder.
    if posixpath.basename(folder) != "data":
        m = re.fullmatch(r"(.+)_(\d+)", stem)
        if m:
            return m.group(1), m.group(2)
    return stem, None


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _key_name(value) -> str | None:
    """``["B", "major"]`` -> "B major"; older copies hold ``["F# minor", null]``."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        parts = [p.strip() for p in value if isinstance(p, str) and p.strip()]
        return " ".join(parts) or None
    return None


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


class MusicBenchSource(Source):
    name = "musicbench"
    description = "MusicBench: MusicCaps clips + augmentations, captions with chords/beats/tempo/key"
    phase = 1
    Options = MusicBenchOptions
    licence = LICENCE
    published = (
        PublishedFile(TRAIN, f"{HUB}/{TRAIN}"),
        PublishedFile(TEST_A, f"{HUB}/{TEST_A}", aliases=("MusicBench_testA.json",)),
        PublishedFile(TEST_B, f"{HUB}/{TEST_B}", aliases=("MusicBench_testB.json",)),
    )

    def parse(self, meta_dir: str, opts: SourceOptions, rejections: Rejections) -> Iterator[Record]:
        assert isinstance(opts, MusicBenchOptions)
        clips: dict[str, _Clip] = {}
        test_ytids: set[str] = set()
        # Test files first: their rows decide the test clips before any train row is read.
        for published in (self.published_file(TEST_A), self.published_file(TEST_B), self.published_file(TRAIN)):
            uri = find_published(meta_dir, (published.name, *published.aliases))
            is_test = published.name != TRAIN
            for item, row in self._rows(uri, published.name, rejections):
                clip = clips.get(row["location"])
                if clip is None:
                    ytid, aug = source_ytid(row["location"])
                    clip = clips[row["location"]] = _Clip(row["location"], ytid, aug, row=row)
                for caption in (_text(row.get("main_caption")), _text(row.get("alt_caption"))):
                    if caption and caption not in clip.captions:
                        clip.captions.append(caption)
                if is_test:
                    clip.test_file = True
                if is_test or _flag(row.get("is_audioset_eval_mcaps")):
                    test_ytids.add(clip.ytid)

        tar_url = f"{opts.audio_base(HUB)}/{TARBALL}"
        used: dict[str, str] = {}
        for clip in clips.values():
            track_id = self._track_id(clip, used)
            if not clip.captions:
                rejections.add(track_id, f"no caption: main_caption and alt_caption are empty ({clip.location})")
                continue
            group = group_key(clip.ytid)
            # Drawn as MusicCaps and AudioSet draw it: a video lands in one split in all three.
            split = opts.split_of(group, clip.test_file or clip.ytid in test_ytids)
            member = archive_member(opts.archive_root, clip.location)
            meta = {"ytid": clip.ytid, "location": clip.location, "augmented": clip.aug is not None}
            bpm = _number(clip.row.get("bpm"))
            if bpm is not None:
                meta["bpm"] = bpm
            key = _key_name(clip.row.get("key"))
            if key:
                meta["key"] = key
            with rejecting(rejections):
                yield make_record(
                    track_id,
                    track_id=track_id,
                    source=self.name,
                    split=split,
                    captions=clip.captions,
                    licence=LICENCE,
                    audio=ArchiveAudio(urls=(tar_url,), member=member, format="tar"),
                    group=group,
                    clip_seconds=10.0,
                    max_clips=1,
                    meta=meta,
                )

    def _rows(self, uri: str, file_name: str, rejections: Rejections) -> Iterator[tuple[str, dict]]:
        for item, row in json_lines(published_text(storage.read_bytes(uri), file_name, rejections), file_name, rejections):
            location = _text(row.get("location"))
            while location.startswith("./"):
                location = location[2:]
            if not location or location.startswith("/") or ".." in location.split("/"):
                rejections.add(item, f"no usable location ({row.get('location')!r})")
                continue
            row["location"] = location
            yield item, row

    def _track_id(self, clip: _Clip, used: dict[str, str]) -> str:
        """``musicbench-<file stem>``; should two folders hold the same stem, the later one is
        prefixed with its folder, so ids stay unique and stable for the published files."""
        stem = posixpath.splitext(posixpath.basename(clip.location))[0]
        track_id = f"{self.name}-{safe_id(stem)}"
        if track_id in used and used[track_id] != clip.location:
            folder = posixpath.dirname(clip.location).replace("/", ".")
            track_id = f"{self.name}-{safe_id(folder + '.' + stem)}"
        used[track_id] = clip.location
        return track_id
