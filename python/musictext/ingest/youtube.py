"""YouTube audio through yt-dlp's Python API: only the record's segment, as FLAC.

yt-dlp fetches the best audio stream and, with ffmpeg (the static binary that imageio-ffmpeg
ships, so no system package is needed), cuts the segment (``download_ranges``) and converts it
to FLAC that soundfile and librosa read. Ids may start with "-": yt-dlp is given full URLs,
never bare ids. A removed, private or blocked video is the item's fault (``ItemError``); network
trouble is retried by yt-dlp itself (``retries``/``fragment_retries``) and then by tenacity.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from musictext.rejects import ItemError

log = logging.getLogger(__name__)

DEFAULT_URL = "https://www.youtube.com/watch?v={ytid}"
# yt-dlp messages that mean the video itself is unusable: never worth a retry.
PERMANENT = ("unavailable", "private video", "removed", "not available", "copyright", "sign in to confirm your age",
             "account associated", "terminated", "404", "403", "unsupported url", "does not exist",
             "members-only", "this live event")


class TransientYouTubeError(Exception):
    pass


def ffmpeg_exe() -> str | None:
    """ffmpeg from PATH, else the one imageio-ffmpeg ships, else None.

    yt-dlp recognises a binary by its name, and imageio-ffmpeg's is versioned
    (``ffmpeg-linux-x86_64-v9.0.2``): it is linked as ``ffmpeg`` in a private directory."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        shipped = Path(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return None
    link = Path(tempfile.gettempdir()) / f"musictext-ffmpeg-{os.getuid()}" / "ffmpeg"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f"ffmpeg.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(shipped)
        os.replace(tmp, link)
    # yt-dlp's section downloader looks for ffmpeg on PATH only (ignoring ffmpeg_location).
    if str(link.parent) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{link.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(link)


def ydl_options(out_stem: Path, start_s: float | None, end_s: float | None, rate_limit_bps: int | None,
                ffmpeg: str) -> dict:
    opts: dict = {
        "format": "bestaudio/best",
        "outtmpl": str(out_stem) + ".%(ext)s",
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "noplaylist": True,
        "retries": 3,
        "fragment_retries": 3,
        "socket_timeout": 30,
        "overwrites": True,
        "logger": logging.getLogger("yt_dlp"),
    }
    if rate_limit_bps:
        opts["ratelimit"] = rate_limit_bps
    opts["ffmpeg_location"] = ffmpeg
    opts["postprocessors"] = [{"key": "FFmpegExtractAudio", "preferredcodec": "flac"}]
    if start_s is not None and end_s is not None:
        from yt_dlp.utils import download_range_func

        opts["download_ranges"] = download_range_func(None, [(float(start_s), float(end_s))])
        opts["force_keyframes_at_cuts"] = True
    return opts


def _classify(item: str, err: Exception) -> Exception:
    text = str(err).lower()
    if "ffmpeg is not installed" in text or "ffprobe" in text and "not found" in text:
        return RuntimeError(f"yt-dlp needs ffmpeg: {err}")  # the environment, not the item
    if any(p in text for p in PERMANENT):
        return ItemError(item, f"yt-dlp: {str(err).strip()[:300]}")
    return TransientYouTubeError(str(err))


def download_segment(item: str, url: str, out_stem: Path, start_s: float | None = None, end_s: float | None = None,
                     retries: int = 3, rate_limit_bps: int | None = None) -> Path:
    """The audio of [start_s, end_s) (the whole stream when either is None) as
    ``out_stem.flac``."""
    import yt_dlp

    ffmpeg = ffmpeg_exe()
    if ffmpeg is None:
        raise RuntimeError("YouTube sources need ffmpeg (imageio-ffmpeg ships one; pip install imageio-ffmpeg)")
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    opts = ydl_options(out_stem, start_s, end_s, rate_limit_bps, ffmpeg)

    @retry(retry=retry_if_exception_type(TransientYouTubeError), stop=stop_after_attempt(retries + 1),
           wait=wait_exponential(multiplier=2, max=60), reraise=True)
    def attempt() -> None:
        try:
            with yt_dlp.YoutubeDL(opts) as ydl:
                ydl.download([url])
        except yt_dlp.utils.DownloadError as err:
            raise _classify(item, err) from None

    try:
        attempt()
    except TransientYouTubeError as err:
        raise ItemError(item, f"yt-dlp failed after {retries + 1} attempts: {err}") from None
    produced = sorted(p for p in out_stem.parent.glob(out_stem.name + ".*") if not p.name.endswith(".part"))
    if not produced:
        raise ItemError(item, f"yt-dlp wrote no file for {url}")
    if len(produced) > 1:  # the source stream next to its FLAC conversion: keep the FLAC
        keep = next((p for p in produced if p.suffix == ".flac"), produced[0])
        for p in produced:
            if p != keep:
                p.unlink()
        produced = [keep]
    return produced[0]
