"""The clip stage decodes only the span its clips need: a clip cut from a long file costs little
memory, and holds exactly the samples (and renderings) a whole-file decode gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musictext import layout, storage
from musictext.audio.decode import open_audio
from musictext.clip.cut import clip_shard, clip_spans, render_clip, track_policy, track_span
from musictext.rejects import ItemError

RENDERINGS = ["native", "mono24k", "stereo44k"]
RATE = 44100
CHUNK_S = 60
CACHE = Path(tempfile.gettempdir()) / "musictext-test-audio"


def _chunk(index: int, frames: int) -> np.ndarray:
    """One minute of a stereo test signal: tones that change every minute plus seeded noise, so
    any misplaced sample shows."""
    t = (index * CHUNK_S * RATE + np.arange(frames)) / RATE
    rng = np.random.default_rng(index)
    left = 0.3 * np.sin(2 * np.pi * (220 + 7 * index) * t) + 0.01 * rng.standard_normal(frames)
    right = 0.2 * np.sin(2 * np.pi * (330 + 5 * index) * t) + 0.01 * rng.standard_normal(frames)
    return np.stack([left, right], axis=1).astype(np.float32)


def long_flac(minutes: int) -> Path:
    """A ``minutes``-long 16-bit stereo 44.1 kHz FLAC, written a minute at a time and kept in the
    temp dir between runs (written under a temporary name, so a killed run leaves nothing half-made)."""
    path = CACHE / f"long-{minutes}min-v1.flac"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with sf.SoundFile(tmp, "w", RATE, 2, format="FLAC", subtype="PCM_16") as out:
            for i in range(minutes):
                out.write(_chunk(i, CHUNK_S * RATE))
        tmp.replace(path)
    return path


def vbr_mp3(path: Path, seconds: float = 40.0) -> Path:
    """A VBR MP3 with a Xing table of contents (ffmpeg's LAME). Pure tones, so its frame sizes vary
    and libsndfile's seek, which trusts the table, lands off."""
    import imageio_ffmpeg

    t = np.arange(int(seconds * RATE)) / RATE
    src = path.with_suffix(".src.wav")
    sf.write(src, np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 557 * t)], axis=1),
             RATE, subtype="PCM_16")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src),
                    "-c:a", "libmp3lame", "-q:a", "4", str(path)], check=True)
    return path


def sequential(path: Path, start: int, stop: int) -> np.ndarray:
    """Frames start..stop decoded from the file's start, no seeking: the whole-file decode."""
    kept, pos = [], 0
    for block in sf.blocks(str(path), blocksize=1 << 16, dtype="float32", always_2d=True):
        lo, hi = max(start - pos, 0), min(stop - pos, len(block))
        if lo < hi:
            kept.append(block[lo:hi])
        pos += len(block)
        if pos >= stop:
            break
    return np.concatenate(kept)


def write_shard(root: Path, tracks: list[dict]) -> Path:
    """A raw shard of ``tracks`` (each ``path`` a file anywhere): the files are linked into the
    shard's audio/, as manifest paths stay inside their shard."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for t in tracks:
        link = root / "audio" / f"{t['track_id']}{Path(t['path']).suffix}"
        link.symlink_to(Path(t["path"]).resolve())
        rows.append({"source": "fixture", "split": "train", "captions": ["a test signal"], "tags": [],
                     "licence": "CC0-1.0", **t, "path": f"audio/{link.name}"})
    (root / layout.MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def clip_rows(out: Path) -> dict[str, dict]:
    return {r["clip_id"]: r for r in storage.read_parquet(str(out / layout.CLIPS)).to_pylist()}


def rendering(out: Path, row: dict, name: str) -> np.ndarray:
    [ref] = [r for r in row["audio"] if r["rendering"] == name]
    return sf.read(str(out / ref["path"]), dtype="float32", always_2d=True)[0]


# ---- reading spans ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    data = _chunk(1, 20 * RATE)
    files = {}
    for ext, kw in {"wav": {"subtype": "PCM_24"}, "flac": {}, "ogg": {"format": "OGG", "subtype": "VORBIS"},
                    "opus": {"format": "OGG", "subtype": "OPUS"}}.items():
        rate = 48000 if ext == "opus" else RATE
        with sf.SoundFile(root / f"x.{ext}", "w", rate, 2, **kw) as f:
            for i in range(0, len(data), 4096):  # libsndfile's Vorbis encoder crashes on one huge write
                f.write(data[i : i + 4096])
        files[ext] = root / f"x.{ext}"
    files["mp3"] = vbr_mp3(root / "x.mp3")
    return files


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "opus", "mp3"])
def test_span_read_equals_whole_file_decode(formats, ext):
    path = formats[ext]
    whole, _ = sf.read(str(path), dtype="float32", always_2d=True)
    with open_audio("x", str(path)) as f:
        for start, frames in [(0, 1000), (12345, 264600), (441_007, 100_000), (len(whole) - 500, 2000)]:
            np.testing.assert_array_equal(f.read(start, frames), whole[start : start + frames],
                                          err_msg=f"{ext} @{start}")
        np.testing.assert_array_equal(f.read(700_001), whole[700_001:])


def test_why_mp3_is_read_from_its_start(formats):
    # libsndfile's own seek, or a read after an earlier read, gives other samples than one whole read.
    path = str(formats["mp3"])
    whole, _ = sf.read(path, dtype="float32", always_2d=True)
    with sf.SoundFile(path) as f:
        f.seek(441_007)
        seeked = f.read(20_000, dtype="float32", always_2d=True)
    with sf.SoundFile(path) as f:
        f.read(65_536)
        second = f.read(65_536, dtype="float32", always_2d=True)
    errors = (float(np.abs(seeked - whole[441_007:461_007]).max()), float(np.abs(second - whole[65_536:131_072]).max()))
    print(f"VBR MP3, max |error| of libsndfile's seek {errors[0]:.4f}, of a second read {errors[1]:.4f}")
    assert max(errors) > 1e-4, "libsndfile now reads this MP3 exactly in parts: MP3 could join EXACT_SEEK_FORMATS"
    with open_audio("x", path) as f:
        assert f.sound.format == "MP3"
        np.testing.assert_array_equal(f.read(441_007, 20_000), whole[441_007:461_007])
        np.testing.assert_array_equal(f.read(65_536, 65_536), whole[65_536:131_072])


def test_bucket_object_is_read_in_spans(formats):
    uri = "memory://seek-test/x.flac"
    storage.write_bytes(uri, formats["flac"].read_bytes())
    whole, _ = sf.read(str(formats["flac"]), dtype="float32", always_2d=True)
    with open_audio("x", uri) as f:
        assert (f.frames, f.rate) == (len(whole), RATE)
        np.testing.assert_array_equal(f.read(300_000, 5000), whole[300_000:305_000])


def test_open_failures_name_the_item(tmp_path):
    (tmp_path / "bad.flac").write_bytes(b"fLaC not really")
    with pytest.raises(ItemError, match="undecodable audio .*bad.flac"):
        with open_audio("t1", str(tmp_path / "bad.flac")):
            pass
    with pytest.raises(ItemError, match="audio file missing"):
        with open_audio("t1", str(tmp_path / "none.flac")):
            pass


# ---- the clip stage ----------------------------------------------------------------------------------


def test_clips_equal_the_whole_file_rules_and_samples(formats, tmp_path):
    """Spans, windows and samples are those of the former whole-file decode: track_span, track_policy
    and clip_spans applied to the full decode, and the samples it holds there."""
    tracks = [
        {"track_id": "plain", "path": str(formats["flac"])},
        {"track_id": "segment", "path": str(formats["flac"]), "start_s": 7.25, "end_s": 16.0},
        {"track_id": "open-ended", "path": str(formats["ogg"]), "start_s": 11.0, "max_clips": 3},
        {"track_id": "past-end", "path": str(formats["wav"]), "start_s": 15.0, "end_s": 99.0, "max_clips": 4},
        {"track_id": "whole", "path": str(formats["mp3"]), "whole_track": True},
        {"track_id": "mp3-segment", "path": str(formats["mp3"]), "start_s": 13.5, "clip_seconds": 4.0},
        {"track_id": "too-late", "path": str(formats["wav"]), "start_s": 25.0},
    ]
    raw = write_shard(tmp_path / "raw", tracks)
    out = tmp_path / "clips"
    clip_s, max_clips, min_s = 3.0, 2, 1.0
    summary = clip_shard(str(raw), str(out), RENDERINGS, clip_s, max_clips_per_track=max_clips, min_seconds=min_s)
    rows = clip_rows(out)
    expected = {}
    for track in tracks[:-1]:
        whole, rate = sf.read(track["path"], dtype="float32", always_2d=True)
        first, last = track_span(track, len(whole), rate)
        window, windows = track_policy(track, clip_s, max_clips, (last - first) / rate)
        for k, start, stop in clip_spans(last - first, rate, window, windows, min(min_s, window)):
            expected[f"{track['track_id']}#{k}"] = (first + start, first + stop, whole, rate)
    assert sorted(rows) == sorted(expected) and summary["rejected"] == 1  # too-late: after the end
    for clip_id, (start, stop, whole, rate) in expected.items():
        row = rows[clip_id]
        assert (row["start_s"], row["end_s"]) == (start / rate, stop / rate), clip_id
        for name in RENDERINGS:
            want, _ = render_clip(whole[start:stop], rate, name)
            np.testing.assert_array_equal(rendering(out, row, name), want, err_msg=f"{clip_id} {name}")
    assert rows["whole#0"]["end_s"] == pytest.approx(40.0, abs=0.1)


RSS_WORKER = r"""
import json, resource, sys, tracemalloc
import soundfile as sf
from musictext.clip.cut import clip_shard

warm, raw, out, source = sys.argv[1:5]
renderings = ["native", "stereo44k"]  # a 44.1 kHz stereo source: no resampling, no librosa import
MIB = 2**20

def peak_rss():  # ru_maxrss: KiB on Linux, the peak since start() reset it
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / MIB

tracemalloc.start()  # numpy's buffers are traced too, independent of what the kernel keeps resident
clip_shard(warm, out + "-warm", renderings, 6.0)  # lazy imports and first-call set-up

def start():
    with open("/proc/self/clear_refs", "w") as f:  # "5": the peak RSS (ru_maxrss too) restarts from now
        f.write("5")
    tracemalloc.reset_peak()
    return rss_now(), tracemalloc.get_traced_memory()[0]

def growth(rss, traced):  # MiB above the start: peak RSS, peak of traced allocations
    return {"rss": peak_rss() - rss, "traced": (tracemalloc.get_traced_memory()[1] - traced) / MIB}

before = start()
summary = clip_shard(raw, out, renderings, 6.0)
clip = growth(*before)
before = start()
whole, _ = sf.read(source, dtype="float32", always_2d=True)  # the control: a whole-file decode
control = growth(*before)
print(json.dumps({"clip": clip, "control": control, "clips": summary["clips"]}))
"""


def clip_memory(tmp_path: Path, source: Path, start_s: float) -> tuple[dict, dict]:
    """Memory growth (MiB) of a subprocess cutting one 6 s clip at ``start_s`` from ``source``, then
    decoding the whole file (the control): peak RSS over the RSS before, and tracemalloc's peak;
    and the clip's row."""
    warm_file = tmp_path / "warm.flac"
    sf.write(warm_file, _chunk(0, 8 * RATE), RATE)
    warm = write_shard(tmp_path / "warm", [{"track_id": "warm", "path": str(warm_file)}])
    raw = write_shard(tmp_path / "raw", [{"track_id": "long", "path": str(source), "start_s": start_s}])
    out = tmp_path / "clips"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "python"),
                                                                    os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", RSS_WORKER, str(warm), str(raw), str(out), str(source)],
                          env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["clips"] == 1, done.stderr
    return result, clip_rows(out)["long#0"]


def _check_long_file(tmp_path: Path, minutes: int) -> None:
    source = long_flac(minutes)
    start_s = minutes * 60 / 2 + 0.37
    memory, row = clip_memory(tmp_path, source, start_s)
    clip, control = memory["clip"], memory["control"]
    samples_mib = minutes * 60 * RATE * 2 * 4 / 2**20  # the float32 samples of the whole file
    print(f"{minutes}-minute stereo FLAC, one 6 s clip: peak RSS +{clip['rss']:.1f} MiB, traced peak "
          f"{clip['traced']:.1f} MiB; a whole-file decode: RSS +{control['rss']:.0f}, "
          f"traced {control['traced']:.0f} MiB")
    # A 6 s stereo clip is 2 MiB of float32, its renderings and file bytes a few more. Asserted on
    # the traced allocations: RSS is only printed, because on a shared machine the kernel reclaims
    # the process's library pages and a phase that touches them again shows them as growth (seen:
    # +342 MiB for this clip while other jobs ran, +9 MiB on a quiet machine).
    assert clip["traced"] < 16
    assert control["traced"] > samples_mib  # the measurement sees a whole-file decode
    first = round(start_s * RATE)
    assert (row["start_s"], row["end_s"]) == (first / RATE, (first + 6 * RATE) / RATE)
    want = sequential(source, first, first + 6 * RATE)
    for name in ("native", "stereo44k"):
        np.testing.assert_array_equal(rendering(tmp_path / "clips", row, name), want, err_msg=name)


def test_clip_from_a_long_file_decodes_only_its_span(tmp_path):
    _check_long_file(tmp_path, minutes=3)  # a whole-file decode: 61 MiB of samples


@pytest.mark.slow
def test_clip_from_a_20_minute_file_decodes_only_its_span(tmp_path):
    _check_long_file(tmp_path, minutes=20)  # a whole-file decode: 404 MiB of samples
