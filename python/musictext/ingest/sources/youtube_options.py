"""Options and records of the sources whose audio is a YouTube video (MusicCaps, AudioSet).

``youtube_url`` is the page the downloader hands to yt-dlp for a record's ``YouTubeAudio``:
``{ytid}`` is replaced by the video id. A full URL (never the bare id) matters: many ids start
with ``-`` (``-0Gj8-vB1q4``), which yt-dlp would read as an option. Tests point it at a local
server (``http://127.0.0.1:PORT/youtube/{ytid}.wav``).

Also shared by those sources: ``video_id`` (a row's id, checked against what a video id may
contain), ``group_key`` (``yt:<ytid>``, also MusicBench's) and ``segment_record`` (one segment
as a record, with the hashed valid subset of the non-test videos: ``base.train_or_valid``, also
importable from here).
"""

from __future__ import annotations

import re

from pydantic import field_validator

from musictext.ingest.base import ValidFractionOptions, train_or_valid  # noqa: F401 (re-exported)
from musictext.ingest.records import Record, YouTubeAudio, make_record
from musictext.rejects import ItemError

DEFAULT_YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
# YouTube ids are 11 characters of [A-Za-z0-9_-] and may start with "-"; the length is not
# enforced (it is YouTube's business), the alphabet is (the id goes into a URL and a track id).
YTID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLIP_SECONDS = 10.0  # MusicCaps clips and (most) AudioSet segments: each is one clip


class YouTubeOptions(ValidFractionOptions):
    """Source options plus the URL template of a YouTube id's page."""

    youtube_url: str = DEFAULT_YOUTUBE_URL

    @field_validator("youtube_url")
    @classmethod
    def _has_ytid(cls, value: str) -> str:
        if "{ytid}" not in value:
            raise ValueError(f"youtube_url {value!r} has no {{ytid}} placeholder")
        return value

    def video_url(self, ytid: str) -> str:
        """The page of one video (``{ytid}`` replaced; other braces are left alone)."""
        return self.youtube_url.replace("{ytid}", ytid)


def video_id(value: str, where: str) -> str:
    """The stripped video id of a row; ItemError naming the row (``where``) when it is none."""
    ytid = value.strip()
    if not YTID.fullmatch(ytid):
        raise ItemError(where, f"ytid {ytid!r} is not a YouTube id")
    return ytid


def group_key(ytid: str) -> str:
    """The recording key every source with clips of YouTube videos shares (MusicCaps, AudioSet,
    MusicBench): all copies of a video land in one split."""
    return f"yt:{ytid}"


def segment_record(item: str, ytid: str, span: tuple[float, float], test: bool, opts: YouTubeOptions,
                   **fields) -> Record:
    """The record ``item`` of one segment of a video, cut as a single clip: its audio, span,
    ``group_key`` and split (test, else ``train_or_valid`` of the group, so a video in both
    MusicCaps and AudioSet gets one split), plus the source's own ``fields``. ItemError naming
    ``item`` when the record is invalid."""
    group = group_key(ytid)
    start, end = span
    return make_record(
        item,
        track_id=item,
        split=opts.split_of(group, test),
        audio=YouTubeAudio(ytid=ytid),
        start_s=start,
        end_s=end,
        group=group,
        clip_seconds=CLIP_SECONDS,
        max_clips=1,
        **fields,
    )
