"""The ingest transport against a real local HTTP server: resumable downloads, retries,
checksums, archives (tar.gz, split zip), yt-dlp on local media, library paths kept inside."""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musictext.ingest.archives import close_all, fetch_archive, read_member
from musictext.ingest.base import SourceOptions
from musictext.ingest.fetch import confined, fetch_audio
from musictext.ingest.http import Client, RateLimiter
from musictext.ingest.records import ArchiveAudio, PathAudio, Record, YouTubeAudio
from musictext.rejects import ItemError
from tests.http_server import Faults, serve


def fast_client(**kw) -> Client:
    return Client(requests_per_second=1000, retries=3, timeout_s=10, backoff_s=0.01, **kw)


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    payload = np.random.default_rng(0).bytes(300_000)
    (root / "big.bin").write_bytes(payload)
    return root, payload


def test_an_interrupted_download_resumes_with_a_range_request(site, tmp_path):
    root, payload = site
    with serve(root, Faults(cut_after={"/big.bin": 120_000})) as (base, faults):
        path = fast_client().download(f"{base}/big.bin", tmp_path / "out" / "big.bin",
                                      sha256=hashlib.sha256(payload).hexdigest())
    assert path.read_bytes() == payload and not (tmp_path / "out" / "big.bin.part").exists()
    assert faults.log[0] == ("/big.bin", None, 200)
    # The second request asked for the rest only, from the byte the cut left off at.
    assert faults.log[1][2] == 206 and faults.log[1][1].startswith("bytes=")
    assert int(faults.log[1][1][6:-1]) >= 65_536


def test_a_partial_file_from_an_earlier_process_is_resumed(site, tmp_path):
    root, payload = site
    part = tmp_path / "big.bin.part"
    part.write_bytes(payload[:50_000])
    with serve(root) as (base, faults):
        fast_client().download(f"{base}/big.bin", tmp_path / "big.bin", size=len(payload))
    assert (tmp_path / "big.bin").read_bytes() == payload
    assert faults.log == [("/big.bin", "bytes=50000-", 206)]


def test_a_server_ignoring_ranges_restarts_the_file(site, tmp_path):
    root, payload = site
    (tmp_path / "big.bin.part").write_bytes(b"x" * 1000)
    with serve(root, Faults(ignore_range=True)) as (base, _):
        fast_client().download(f"{base}/big.bin", tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == payload


def test_transient_errors_are_retried_and_permanent_ones_name_the_item(site, tmp_path):
    root, payload = site
    with serve(root, Faults(unavailable={"/big.bin": 2})) as (base, faults):
        fast_client().download(f"{base}/big.bin", tmp_path / "a.bin")
        assert [s for _, _, s in faults.log] == [503, 503, 200]
        with pytest.raises(ItemError, match=r"track-7: HTTP 404 for .*/gone.bin"):
            fast_client().download(f"{base}/gone.bin", tmp_path / "b.bin", item="track-7")
        faults.unavailable["/big.bin"] = 10
        with pytest.raises(ItemError, match="after retries|503"):
            fast_client().get(f"{base}/big.bin", item="track-8")
    assert (tmp_path / "a.bin").read_bytes() == payload


def test_a_checksum_mismatch_is_the_items_fault_and_leaves_nothing(site, tmp_path):
    root, payload = site
    with serve(root) as (base, _):
        with pytest.raises(ItemError, match="sha256 mismatch for big.bin"):
            fast_client().download(f"{base}/big.bin", tmp_path / "big.bin", item="x", sha256="0" * 64)
        with pytest.raises(ItemError, match="size mismatch"):
            fast_client().download(f"{base}/big.bin", tmp_path / "big.bin", item="x", size=5)
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == [tmp_path / "site"]


def test_the_rate_limit_spaces_requests():
    limiter = RateLimiter(20.0)
    started = time.monotonic()
    for _ in range(6):
        limiter.wait()
    assert time.monotonic() - started >= 5 / 20.0 - 0.01


def _wav(seconds=1.0, rate=16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, (np.sin(np.arange(int(seconds * rate)) / rate * 2 * np.pi * 440) * 0.3).astype("float32"), rate,
             format="WAV")
    return buf.getvalue()


def test_tar_gz_members_are_read_from_one_decompressed_copy(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    with tarfile.open(site / "set.tar.gz", "w:gz") as tar:
        for name in ("data/a.wav", "data/b.wav"):
            info = tarfile.TarInfo(name)
            data = _wav()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with serve(site) as (base, _):
        ref = ArchiveAudio(urls=(f"{base}/set.tar.gz",), member="data/b.wav", format="tar")
        archive = fetch_archive(ref, tmp_path / "cache", fast_client(), "b")
        assert read_member(archive, "tar", "data/b.wav", "b") == _wav()
        with pytest.raises(ItemError, match="c: data/c.wav is not in set.tar.gz"):
            read_member(archive, "tar", "data/c.wav", "c")
    close_all()
    assert (archive.parent / "set.tar").is_file()  # decompressed once, then read at random


def test_split_zip_parts_are_joined_and_an_empty_member_is_rejected(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("f/a.mp3", b"ID3" + b"\0" * 5000)
        z.writestr("f/empty.mp3", b"")
    blob = buf.getvalue()
    site = tmp_path / "site"
    site.mkdir()
    thirds = [blob[: len(blob) // 3], blob[len(blob) // 3 : 2 * len(blob) // 3], blob[2 * len(blob) // 3 :]]
    for i, part in enumerate(thirds, 1):
        (site / f"mp3.zip.00{i}").write_bytes(part)
    with serve(site) as (base, _):
        urls = tuple(f"{base}/mp3.zip.00{i}" for i in (1, 2, 3))
        ref = ArchiveAudio(urls=urls, member="f/a.mp3", format="zip", sha1=hashlib.sha1(blob).hexdigest())
        archive = fetch_archive(ref, tmp_path / "cache", fast_client(), "a")
    assert archive.name == "mp3.zip" and archive.read_bytes() == blob
    # The parts are removed once joined (the lock files stay: removing one under a waiter races).
    assert sorted(p.name for p in archive.parent.iterdir() if not p.name.endswith(".lock")) == ["mp3.zip"]
    assert read_member(archive, "zip", "f/a.mp3", "a").startswith(b"ID3")
    with pytest.raises(ItemError, match="e: f/empty.mp3 in mp3.zip is empty"):
        read_member(archive, "zip", "f/empty.mp3", "e")
    close_all()


def _yt_record(ytid: str, start=2.0, end=5.0) -> Record:
    return Record(track_id=f"t-{ytid.strip('-')}", source="musiccaps", split="train", captions=["a tone"],
                  licence="x", audio=YouTubeAudio(ytid=ytid), group=f"yt:{ytid}", start_s=start, end_s=end)


def test_yt_dlp_fetches_only_the_segment_of_local_media(tmp_path):
    site = tmp_path / "youtube"
    site.mkdir()
    (site / "-dashid.wav").write_bytes(_wav(seconds=8.0))

    class Opts(SourceOptions):
        youtube_url: str

    with serve(tmp_path) as (base, _):
        opts = Opts(youtube_url=f"{base}/youtube/{{ytid}}.wav", cache_dir=str(tmp_path / "cache"))
        got = fetch_audio(_yt_record("-dashid"), str(tmp_path / "shard"), opts)
        assert got.path == "audio/t-dashid.flac" and (got.start_s, got.end_s) == (0.0, 3.0)
        info = sf.info(str(tmp_path / "shard" / got.path))
        assert info.samplerate == 16000 and abs(info.duration - 3.0) < 0.1
        with pytest.raises(ItemError, match=r"t-gone: yt-dlp: .*404"):
            fetch_audio(_yt_record("gone"), str(tmp_path / "shard"), opts)


@pytest.mark.parametrize("rel", ["../x.wav", "/etc/passwd", "a/../../x.wav", "http://evil/x.wav", "C:\\x.wav", ".."])
def test_library_paths_stay_inside_the_library(tmp_path, rel):
    with pytest.raises(ItemError, match="outside the folder"):
        confined(str(tmp_path), rel, "item")


def test_a_missing_library_file_is_not_found_not_undecodable(tmp_path):
    record = Record(track_id="f-1", source="folder", split="train", captions=["x"], licence="x",
                    audio=PathAudio(root=str(tmp_path), path="sub/none.flac"), group="file:sub/none.flac")
    with pytest.raises(ItemError, match="f-1: audio file .*sub/none.flac not found"):
        fetch_audio(record, str(tmp_path / "out"), SourceOptions())
    assert not Path(tmp_path / "out").exists()


def test_the_rate_limit_holds_across_the_items_of_a_shard(tmp_path):
    """Every item fetched with one source's options shares one client and its limiter (a
    client per item would let a whole shard through at once)."""
    from concurrent.futures import ThreadPoolExecutor

    from musictext.ingest.records import UrlAudio

    site = tmp_path / "site"
    site.mkdir()
    for i in range(6):
        (site / f"{i}.wav").write_bytes(_wav(0.1))
    with serve(site) as (base, faults):
        opts = SourceOptions(requests_per_second=10, cache_dir=str(tmp_path / "cache"))
        records = [Record(track_id=f"u-{i}", source="x", split="train", captions=["a tone"], licence="x",
                          audio=UrlAudio(url=f"{base}/{i}.wav"), group=f"u:{i}") for i in range(6)]
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda r: fetch_audio(r, str(tmp_path / "shard"), opts), records))
        elapsed = time.monotonic() - started
    assert len(faults.log) == 6 and elapsed >= 5 / 10 - 0.01  # 6 request starts, 0.1 s apart
