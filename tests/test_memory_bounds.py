"""Memory bounded by design (docs/memory.md): the clip stage never loads torch, and evaluation
never holds a queries x gallery matrix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np

from musictext.evaluate.core import EvalOptions, EvalSet, evaluate_set
from musictext.metrics import cosine_matrix

ROOT = Path(__file__).resolve().parents[1]

# The clip component's calls on a one-track raw shard, in a fresh interpreter; then, as the
# control that the check sees torch at all, the embedding stage's module (which needs it).
CLIP_CHILD = """
import json, sys
from pathlib import Path
import numpy as np, soundfile as sf
from musictext.clip.cut import clip_shard, renderings_for
from musictext.config import FAMILIES

raw = Path(sys.argv[1])
t = np.arange(3 * 44100) / 44100
sf.write(raw / "a.wav", 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)], 1), 44100)
(raw / "manifest.jsonl").write_text(json.dumps({"track_id": "a", "source": "t", "split": "train", "path": "a.wav",
                                                "captions": ["a tone"], "tags": [], "licence": "CC0-1.0"}) + "\\n")
renderings = renderings_for(list(FAMILIES), "production")
summary = clip_shard(str(raw), sys.argv[2], renderings, 2.0)
out = {"clips": summary["clips"], "renderings": renderings, "torch_after_clip": "torch" in sys.modules}
import musictext.audio.embedder
out["torch_after_embedder"] = "torch" in sys.modules
print(json.dumps(out))
"""


def test_the_clip_stage_never_imports_torch(tmp_path):
    (tmp_path / "raw").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "MUSICTEXT_PROGRESS": "0"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(CLIP_CHILD), str(tmp_path / "raw"),
                          str(tmp_path / "clips")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["clips"] == 1 and set(result["renderings"]) >= {"mono24k", "stereo44k"}  # it did clip
    assert not result["torch_after_clip"], "the clip stage imported torch (~190 MiB of RSS it never uses)"
    assert result["torch_after_embedder"]  # the control: the check does see torch


def _traced_peak(fn) -> int:
    """Peak bytes traced (numpy's buffers included) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _eval_set(n: int, dim: int) -> EvalSet:
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((n, dim), dtype=np.float32)
    text = audio + rng.standard_normal((n, dim), dtype=np.float32)
    return EvalSet(text=text, text_track=np.arange(n), audio=audio, track_ids=[f"t{i}" for i in range(n)],
                   captions=[f"c{i}" for i in range(n)])


def test_evaluation_memory_follows_the_block_not_the_square():
    n, dim, block = 3000, 16, 32
    evaluate_set(_eval_set(50, dim), None, EvalOptions(projections=()))  # its lazy imports (pyplot: ~20 MiB)
    data = _eval_set(n, dim)
    text, audio = data.text, data.audio
    square = n * n * 4  # one float32 queries x gallery matrix: 36 MB
    # ~10 block x gallery arrays (scores, masks, partitions; int64 indices count twice), the
    # pair samples and the report's plots (~3 MiB): a budget in N x block, far below the square
    # (measured: 6.7 MiB here at block 32).
    bound = 12 * block * n * 8 + 6 * 2**20
    assert bound < square / 2
    metrics = {}
    peak = _traced_peak(lambda: metrics.update(evaluate_set(data, None, EvalOptions(projections=(), block=block))[0]))
    assert metrics["n_test"] == n and metrics["text_to_audio"]["R@10"] > 0.5  # it did evaluate
    assert peak < bound, f"evaluation traced {peak / 2**20:.0f} MiB for {n} items (bound {bound / 2**20:.0f} MiB)"
    # The control: the same measurement sees a full cosine matrix.
    assert _traced_peak(lambda: cosine_matrix(text, audio)) > square


def test_the_librosa_free_resampling_is_librosa_bit_for_bit():
    """decode.librosa_load_array / soxr_resample give librosa.load's / librosa.resample's samples
    exactly, so the clip stage can render mono24k and stereo44k without importing librosa."""
    import io

    import librosa
    import soundfile as sf

    from musictext.audio.decode import librosa_load_array, soxr_resample

    rng = np.random.default_rng(0)
    for rate in (22050, 24000, 32000, 44100, 48000, 96000):
        for channels in (1, 2, 6):
            for frames in (999, rate + 7, 4 * rate):  # 4 s at 44.1 kHz: n * ratio rounds up in floats
                audio = (0.2 * rng.standard_normal((frames, channels))).astype(np.float32)
                buffer = io.BytesIO()
                sf.write(buffer, audio, rate, format="WAV", subtype="FLOAT")
                buffer.seek(0)
                want, _ = librosa.load(buffer, sr=24000, mono=True, res_type="soxr_hq")
                got = librosa_load_array(audio, rate, 24000)
                assert got.dtype == want.dtype and np.array_equal(got, want), (rate, channels, frames)
                stereo = audio[:, :2] if channels > 1 else np.repeat(audio, 2, axis=1)
                want = librosa.resample(stereo, orig_sr=rate, target_sr=44100, res_type="soxr_hq", axis=0)
                assert np.array_equal(soxr_resample(stereo, rate, 44100, axis=0), want), (rate, channels, frames)
