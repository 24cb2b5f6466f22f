"""The sidecar's numeric contract: enrichment, Music2Latent rows, windows, target dims."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musictext.audio import cut_windows, enrich, music2latent_features, prepare_waveform, window_starts
from musictext.audio.decode import check_waveform
from musictext.config import FAMILIES, load_family_config
from musictext.rejects import ItemError


# ----------------------------------------------------------------- independent references
def np_quantile_linear(row: np.ndarray, q: float) -> float:
    """Linear interpolation between order statistics (numpy's and torch's default)."""
    s = np.sort(row.astype(np.float64))
    pos = q * (len(s) - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def np_enrich(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    d, t = x.shape
    mean = x.sum(axis=1) / t
    robust = np.array(
        [(np_quantile_linear(r, 0.75) - np_quantile_linear(r, 0.25)) / 1.3489795003921634 for r in x]
    )
    if t >= 2:
        dmean = np.array([sum(r[k + 1] - r[k] for k in range(t - 1)) / (t - 1) for r in x])
    else:
        dmean = np.zeros(d)
    vec = np.concatenate([mean, robust, dmean])
    return vec / np.sqrt((vec**2).sum())


def np_m2l_features(latent: np.ndarray) -> np.ndarray:
    if latent.ndim == 3 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.ndim == 2:
        re, im = latent, np.zeros_like(latent)
    else:
        re, im = latent[0], latent[1]
    c, t = re.shape
    rows = []
    for ch in range(c):
        rows.append(re[ch])
        rows.append(im[ch])
    mag = np.sqrt(re.astype(np.float64) ** 2 + im.astype(np.float64) ** 2 + 1e-12)
    return np.concatenate([np.stack(rows), mag], axis=0)


# ----------------------------------------------------------------- enrich
@pytest.mark.parametrize("t", [1, 2, 7, 50])
def test_enrich_matches_independent_implementation(t):
    rng = np.random.default_rng(t)
    x = rng.normal(size=(24, t)).astype(np.float32) * rng.uniform(0.1, 3, size=(24, 1)).astype(np.float32)
    got = enrich(torch.from_numpy(x))
    assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == (72,)
    np.testing.assert_allclose(got.numpy(), np_enrich(x), atol=1e-5, rtol=0)


def test_enrich_single_window_has_zero_robust_and_dmean_blocks():
    x = torch.tensor([[3.0], [4.0]])
    got = enrich(x)
    assert got.tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0, 0.0, 0.0])


def test_enrich_hand_computed_iqr_and_signed_dmean():
    # One row 0,1,2,3,4: mean 2, q25 = 1, q75 = 3 (linear), IQR/1.349 = 2/1.34898,
    # signed diffs all +1 -> dmean 1. A second row descending gives dmean -1.
    x = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0, 0.0]])
    raw = np.array([2.0, 2.0, 2 / 1.3489795003921634, 2 / 1.3489795003921634, 1.0, -1.0])
    got = enrich(x).numpy()
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw), atol=1e-6)
    assert got[4] > 0 > got[5]  # signed, not absolute differences
    # Quantile interpolation between order statistics: [0, 10] -> q25 = 2.5, q75 = 7.5.
    two = enrich(torch.tensor([[0.0, 10.0]])).numpy()
    raw2 = np.array([5.0, 5.0 / 1.3489795003921634, 10.0])
    np.testing.assert_allclose(two, raw2 / np.linalg.norm(raw2), atol=1e-6)


def test_enrich_is_unit_norm_float32_and_zero_safe():
    x = torch.randn(10, 9, dtype=torch.float64) * 100
    got = enrich(x)
    assert got.dtype == torch.float32
    assert float(torch.linalg.vector_norm(got)) == pytest.approx(1.0, abs=1e-6)
    zero = enrich(torch.zeros(5, 3))
    assert torch.equal(zero, torch.zeros(15))
    with pytest.raises(ValueError):
        enrich(torch.zeros(5))


# ----------------------------------------------------------------- Music2Latent rows
@pytest.mark.parametrize("shape", [(8, 5), (1, 8, 5), (2, 8, 5)])
def test_music2latent_features_match_independent_implementation(shape):
    latent = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    got = music2latent_features(torch.from_numpy(latent))
    assert got.shape == (24, 5)
    np.testing.assert_allclose(got.numpy(), np_m2l_features(latent), atol=1e-6)


def test_music2latent_mono_quirk_rows():
    latent = torch.tensor([[1.0, -2.0], [0.5, 0.0]])  # C=2, T=2
    got = music2latent_features(latent)
    assert torch.equal(got[0], latent[0]) and torch.equal(got[2], latent[1])  # re rows
    assert torch.equal(got[1], torch.zeros(2)) and torch.equal(got[3], torch.zeros(2))  # im = 0
    np.testing.assert_allclose(got[4:].numpy(), np.sqrt(latent.numpy() ** 2 + 1e-12), atol=1e-7)
    with pytest.raises(ValueError):
        music2latent_features(torch.zeros(3, 4, 5))


# ----------------------------------------------------------------- windows
@pytest.mark.parametrize(
    "total, chunk, hop, want",
    [
        (5, 10, 3, [0]),  # shorter than one window
        (10, 10, 3, [0]),  # exactly one window
        (0, 10, 3, [0]),
        (30, 10, 10, [0, 10, 20]),  # exact multiple: no extra window
        (25, 10, 10, [0, 10, 15]),  # last window aligned to the end
        (26, 10, 5, [0, 5, 10, 15, 16]),
        (20, 10, 5, [0, 5, 10]),
    ],
)
def test_window_starts(total, chunk, hop, want):
    assert window_starts(total, chunk, hop) == want


def test_cut_windows_zero_pads_short_track_and_covers_the_end():
    x = torch.arange(1, 26, dtype=torch.float32)
    wins = cut_windows(x, 10, 10)
    assert [w.shape[0] for w in wins] == [10, 10, 10]
    assert torch.equal(wins[-1], x[15:])
    short = cut_windows(x[:4], 10, 5)
    assert len(short) == 1 and torch.equal(short[0], torch.cat([x[:4], torch.zeros(6)]))


def test_prepare_waveform_mono_mean_then_resample():
    stereo = torch.stack([torch.ones(4800), -torch.ones(4800) * 0.5])
    mono = prepare_waveform(stereo, 48000, 48000)
    assert torch.allclose(mono, torch.full((4800,), 0.25))
    down = prepare_waveform(stereo, 48000, 24000)
    assert down.shape == (2400,)
    assert float(down[600:1800].mean()) == pytest.approx(0.25, abs=1e-3)


def test_one_channel_mono_is_that_channel_exactly():
    x = torch.randn(1, 1000, dtype=torch.float64)
    mono = prepare_waveform(x, 24000, 24000)
    assert mono.dtype == torch.float32 and torch.equal(mono, x[0].float())


@pytest.mark.parametrize("bad, reason", [
    (float("nan"), "NaN or infinite"), (float("inf"), "NaN or infinite"), (-float("inf"), "NaN or infinite"),
])
@pytest.mark.parametrize("where", [0, 500, 999])
def test_check_waveform_names_non_finite_samples_anywhere(bad, reason, where):
    x = torch.full((1000,), 0.1)
    x[where] = bad
    with pytest.raises(ItemError, match=reason) as err:
        check_waveform("clip#7", x)
    assert err.value.item == "clip#7"


def test_check_waveform_silence_and_length():
    with pytest.raises(ItemError, match="all-silent"):
        check_waveform("a", torch.full((100,), -5e-7))
    with pytest.raises(ItemError, match="zero-length"):
        check_waveform("a", torch.zeros(0))
    check_waveform("a", torch.cat([torch.zeros(99), torch.tensor([-2e-6])]))  # quiet, not silent


# ----------------------------------------------------------------- dims
def test_production_target_dims():
    want = {"muq": 1536, "mert": 76800, "music2latent": 576}
    for family in FAMILIES:
        audio = load_family_config(family, "production").audio
        assert audio.target_dim == want[family]  # computed without weights


def test_demo_target_dims_follow_config():
    audio = load_family_config("mert", "demo").audio
    assert audio.target_dim == 3 * (audio.num_hidden_layers + 1) * audio.hidden_size
    audio = load_family_config("music2latent", "demo").audio
    assert audio.target_dim == 9 * audio.latent_channels
