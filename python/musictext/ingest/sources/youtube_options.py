"""Options of the sources whose audio is a YouTube video (MusicCaps, AudioSet).

``youtube_url`` is the page the downloader hands to yt-dlp for a record's ``YouTubeAudio``:
``{ytid}`` is replaced by the video id. A full URL (never the bare id) matters: many ids start
with ``-`` (``-0Gj8-vB1q4``), which yt-dlp would read as an option. Tests point it at a local
server (``http://127.0.0.1:PORT/youtube/{ytid}.wav``).

Also shared by those sources: ``YTID`` (what a video id may contain) and ``train_or_valid`` (the
hashed valid subset of their non-test items).
"""

from __future__ import annotations

import re

from pydantic import field_validator

from musictext.ingest.base import SourceOptions, hashed_split

DEFAULT_YOUTUBE_URL = "https://www.youtube.com/watch?v={ytid}"
# YouTube ids are 11 characters of [A-Za-z0-9_-] and may start with "-"; the length is not
# enforced (it is YouTube's business), the alphabet is (the id goes into a URL and a track id).
YTID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class YouTubeOptions(SourceOptions):
    """SourceOptions plus the URL template of a YouTube id's page."""

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


def train_or_valid(group: str, seed: int, valid_fraction: float) -> str:
    """The split ("train" or "valid") of a non-test item: ``hashed_split`` of its ``group``.

    MusicCaps and AudioSet both draw their valid subset this way, so with the same
    ``split_seed`` and ``valid_fraction`` a video present in both sources (``yt:<ytid>``) lands
    in the same split in each.
    """
    return hashed_split(group, seed, {"train": 1.0 - valid_fraction, "valid": valid_fraction})
