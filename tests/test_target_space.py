"""Target spaces (raw / standardise / whiten / pca) fitted on anisotropic targets, the heads that
predict in them, raw-space outputs, save/load (old directories included) and the exported basis."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musictext import layout
from musictext.config import TextConfig, load_family_config
from musictext.search.basis import BASIS_FILE, load_basis
from musictext.target_space import BASIS_FILE as SPACE_BASIS_FILE
from musictext.target_space import KINDS, TargetSpace
from musictext.text_encoder import TextEmbedder, pool

N, D = 300, 48
BLOCK = D // 3
TEXTS = ["a happy rock song with piano", "dark ambient drone", "Jazz trumpet, SAD mood", ""]


def anisotropic(n: int = N, dim: int = D, seed: int = 0) -> np.ndarray:
    """Unit vectors around one dominant direction, their spread decaying over dimensions
    (mean pairwise cosine ~0.9, like the audio targets)."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim)
    spread = rng.standard_normal((n, dim)) * np.geomspace(1.0, 0.01, dim)
    x = 8.0 * direction / np.linalg.norm(direction) + spread
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return anisotropic()


def rel_error(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.numpy() - b) / np.linalg.norm(b))


# -- the space ------------------------------------------------------------------------------
def test_sample_is_anisotropic(sample):
    cos = sample @ sample.T
    assert cos[np.triu_indices(N, 1)].mean() > 0.8


def test_pca_round_trip_is_exact_with_all_components_and_improves_with_k(sample):
    x = torch.from_numpy(sample)
    errors = []
    for k in (2, 4, 8, 16, 32, D):
        space = TargetSpace.fit("pca", sample, k)
        assert space.dim == k and space.source_dim == D
        z = space.encode(x)
        assert z.shape == (N, k)
        errors.append(rel_error(space.inverse(z), sample))
    assert errors[-1] < 1e-4
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    # Components are unit, orthogonal rows.
    comp = TargetSpace.fit("pca", sample, 8).components
    torch.testing.assert_close(comp @ comp.T, torch.eye(8), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [N, 30])  # the D x D and the n x n (fewer rows than dimensions) route
def test_components_are_the_svd_directions(sample, n):
    x = sample[:n]
    space = TargetSpace.fit("whiten", x, 10)
    _, s, vh = np.linalg.svd(x - x.mean(0), full_matrices=False)
    agree = np.abs(np.sum(space.components.numpy() * vh[:10], axis=1))  # |cos| per direction (signs are free)
    np.testing.assert_allclose(agree, 1.0, atol=1e-4)
    np.testing.assert_allclose(space.scale.numpy(), s[:10] / np.sqrt(n - 1), rtol=1e-4)


def test_decode_keeps_direction_and_gives_the_mean_norm(sample):
    x = torch.from_numpy(sample)
    for kind in KINDS:
        space = TargetSpace.fit(kind, sample, D if kind in ("pca", "whiten") else None)
        z = space.encode(x)
        if kind == "raw":
            assert torch.equal(space.decode(z), x)
            continue
        assert float(space.norm) == pytest.approx(float(z.norm(dim=-1).mean()), rel=1e-5)
        # A prediction of the right direction but any length decodes to the target's direction
        # (up to the target's own deviation from the mean norm).
        cos = F.cosine_similarity(space.decode(7.0 * z), x, dim=-1)
        assert cos.mean() > 0.995 and cos.min() > 0.95, (kind, float(cos.mean()), float(cos.min()))
        # ... exactly so for a target whose encoded length is the mean one.
        at_norm = space.inverse(z / z.norm(dim=-1, keepdim=True) * space.norm)
        torch.testing.assert_close(space.decode(0.5 * space.encode(at_norm)), at_norm, atol=1e-5, rtol=0)
        # Unit predictions: the decoded residual has length norm in training coordinates.
        back = space.encode(space.decode(z))
        torch.testing.assert_close(back.norm(dim=-1), space.norm.expand(N), rtol=1e-4, atol=0)


def test_standardise_gives_zero_mean_unit_variance(sample):
    z = TargetSpace.fit("standardise", sample).encode(torch.from_numpy(sample)).double()
    assert z.shape == (N, D)
    torch.testing.assert_close(z.mean(0), torch.zeros(D, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(D, dtype=torch.float64), atol=1e-4, rtol=0)


def test_whiten_gives_identity_covariance(sample):
    for k in (D, 10):
        z = TargetSpace.fit("whiten", sample, k).encode(torch.from_numpy(sample)).double()
        cov = z.T @ z / (N - 1)
        torch.testing.assert_close(cov, torch.eye(k, dtype=torch.float64), atol=1e-3, rtol=0)


def test_constant_dimensions_are_floored_not_exploding(sample):
    x = sample.copy()
    x[:, BLOCK : 2 * BLOCK] = 0.0  # an all-zero block (MuQ's robust block on short clips)
    space = TargetSpace.fit("standardise", x, eps=1e-3)
    scale = space.scale[BLOCK : 2 * BLOCK]
    assert torch.all(scale == scale[0]) and float(scale[0]) == pytest.approx(1e-3 * float(space.scale.max()))
    z = space.encode(torch.from_numpy(x))
    assert torch.isfinite(z).all() and torch.all(z[:, BLOCK : 2 * BLOCK] == 0)
    # Fewer rows than dimensions: the centred sample has rank n - 1, the last scale is floored.
    few = x[:20]
    white = TargetSpace.fit("whiten", few, eps=1e-3)
    assert white.dim == 20 and float(white.scale[-1]) == pytest.approx(1e-3 * float(white.scale[0]))
    torch.testing.assert_close(white.components @ white.components.T, torch.eye(20), atol=1e-5, rtol=0)
    assert torch.isfinite(white.encode(torch.from_numpy(few))).all()
    assert torch.isfinite(white.decode(torch.randn(3, 20))).all()


def test_bad_fits_are_refused(sample):
    with pytest.raises(ValueError, match=r"k=11.*n=10.*D=48"):
        TargetSpace.fit("pca", sample[:10], 11)
    with pytest.raises(ValueError, match="k=0"):
        TargetSpace.fit("whiten", sample, 0)
    with pytest.raises(ValueError, match="only for pca/whiten"):
        TargetSpace.fit("standardise", sample, 8)
    with pytest.raises(ValueError, match="unknown target space 'zca'"):
        TargetSpace.fit("zca", sample)
    with pytest.raises(ValueError, match="no variance"):
        TargetSpace.fit("pca", np.ones((5, D), np.float32))
    bad = sample.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        TargetSpace.fit("pca", bad)


def test_state_dict_and_description_round_trip(sample):
    x = torch.from_numpy(sample[:7])
    for kind in KINDS:
        space = TargetSpace.fit(kind, sample, 12 if kind in ("pca", "whiten") else None)
        again = TargetSpace.from_description(json.loads(json.dumps(space.describe())))
        again.load_state_dict(space.state_dict())
        assert again.describe() == space.describe() == {"kind": kind, "k": space.dim, "D": D}
        assert torch.equal(again.encode(x), space.encode(x))
    assert TargetSpace("raw", D).state_dict() == {}  # raw costs nothing


@pytest.mark.parametrize("kind", ["pca", "whiten"])
def test_saved_basis_projects_like_encode(sample, kind, tmp_path):
    space = TargetSpace.fit(kind, sample, 12)
    uri = str(tmp_path / BASIS_FILE)
    space.save_basis(uri)
    basis = load_basis(uri)
    assert basis.mean.shape == (D,) and basis.components.shape == (12, D)
    np.testing.assert_allclose(basis.project(sample), space.encode(torch.from_numpy(sample)).numpy(), atol=1e-5)
    assert SPACE_BASIS_FILE == BASIS_FILE
    with pytest.raises(ValueError, match="no reduced basis"):
        TargetSpace.fit("standardise", sample).save_basis(uri)


# -- the model ------------------------------------------------------------------------------
COMBOS = [(kind, head) for kind in KINDS for head in ("blocks", "lowrank")]


def text_cfg(base: str, kind: str, head: str, k: int | None = None) -> TextConfig:
    return TextConfig(base_model=base, hidden_dim=32, head=head, head_rank=6, target_space=kind,
                      space_dim=k if kind in ("pca", "whiten") else None)


def make_model(base: str, sample: np.ndarray, kind: str, head: str, k: int = 12) -> TextEmbedder:
    torch.manual_seed(0)
    cfg = text_cfg(base, kind, head, k)
    space = TargetSpace.fit(kind, sample, cfg.space_dim)
    return TextEmbedder.from_base(cfg, D, space=space)


@pytest.mark.parametrize("kind,head", COMBOS)
def test_model_shapes_norms_gradients_and_save_load(tiny_base_model, sample, kind, head, tmp_path):
    model = make_model(tiny_base_model, sample, kind, head).train()
    k = 12 if kind in ("pca", "whiten") else D
    enc = model.tokenize(TEXTS)
    pred = model.forward_space(enc["input_ids"], enc["attention_mask"])
    target = model.encode_targets(torch.from_numpy(sample[: len(TEXTS)]))
    assert pred.shape == target.shape == (len(TEXTS), k)
    torch.testing.assert_close(pred.norm(dim=-1), torch.ones(len(TEXTS)))
    torch.testing.assert_close(target.norm(dim=-1), torch.ones(len(TEXTS)))
    loss = -(pred * target).sum()
    loss.backward()
    for name in ("tower.embeddings.word_embeddings.weight", "head.trunk.0.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(b.grad is None and not b.requires_grad for b in model.space.buffers())

    out = model.embed_texts(TEXTS)  # the raw space, whatever the training space
    assert out.shape == (len(TEXTS), D) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert model.embed_text(TEXTS[0]).shape == (D,)

    cfg = model.describe()
    assert cfg["head"] == head and cfg["space"] == {"kind": kind, "k": k, "D": D} and cfg["target_dim"] == D
    assert cfg["head_rank"] == (6 if head == "lowrank" else None)
    model.save_pretrained(tmp_path / "m")
    loaded = TextEmbedder.from_pretrained(tmp_path / "m")
    assert loaded.describe() == cfg
    np.testing.assert_array_equal(loaded.embed_texts(TEXTS), out)


def test_head_shapes(tiny_base_model, sample):
    blocks = make_model(tiny_base_model, sample, "standardise", "blocks").head
    assert [b.out_features for b in blocks.blocks] == [BLOCK] * 3
    assert make_model(tiny_base_model, sample, "pca", "blocks").head.out.out_features == 12
    low = make_model(tiny_base_model, sample, "whiten", "lowrank").head
    assert (low.down.out_features, low.down.bias, low.up.out_features) == (6, None, 12)


def test_old_directory_loads_as_blocks_raw_with_identical_outputs(tiny_base_model, tmp_path):
    """A directory as today's code saves it (config.json without head/space keys) loads as a
    blocks head in the raw space, and gives bit-identical outputs."""
    torch.manual_seed(1)
    model = TextEmbedder.from_base(TextConfig(base_model=tiny_base_model, hidden_dim=32), D).eval()
    model.save_pretrained(tmp_path / "old")
    cfg_path = tmp_path / "old" / layout.CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    for key in ("head", "head_rank", "space"):
        cfg.pop(key)
    cfg_path.write_text(json.dumps(cfg))
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "old" / layout.WEIGHTS_FILE)).keys()
    assert all(k.startswith(("tower.", "head.")) for k in keys)  # no space buffers

    loaded = TextEmbedder.from_pretrained(tmp_path / "old")
    assert loaded.head_kind == "blocks" and loaded.space.kind == "raw"
    enc = loaded.tokenize(TEXTS)
    with torch.no_grad():
        got = loaded(enc["input_ids"], enc["attention_mask"])
        hidden = model.tower(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        today = F.normalize(model.head(pool(hidden, enc["attention_mask"], "mean")), dim=-1)  # today's forward
        assert torch.equal(got, today)
        assert torch.equal(loaded.forward_space(enc["input_ids"], enc["attention_mask"]), got)


def test_parameter_counts(tiny_base_model, sample):
    blocks = make_model(tiny_base_model, sample, "raw", "blocks")
    low = make_model(tiny_base_model, sample, "raw", "lowrank")
    assert low.n_head_parameters() < blocks.n_head_parameters()
    # trunk 32x32 + LayerNorm, then 32 -> 6 (no bias) -> 48
    assert low.n_head_parameters() == (32 * 32 + 32) + 2 * 32 + 32 * 6 + (6 * 48 + 48)
    trainable, total = blocks.n_parameters()
    assert trainable == total == sum(p.numel() for p in blocks.parameters())
    blocks.freeze(1)
    trainable, total2 = blocks.n_parameters()
    assert total2 == total and trainable < total
    pca = make_model(tiny_base_model, sample, "pca", "blocks")
    assert pca.n_head_parameters() == (32 * 32 + 32) + 2 * 32 + (32 * 12 + 12)


def test_config_combinations_are_validated():
    with pytest.raises(ValueError, match="space_dim is only for target_space pca/whiten"):
        TextConfig(target_space="standardise", space_dim=8)
    with pytest.raises(ValueError, match="head_rank must be a positive int"):
        TextConfig(head="lowrank", head_rank=0)
    with pytest.raises(ValueError, match="space_fit_rows"):
        TextConfig(target_space="pca", space_dim=300, space_fit_rows=100)
    with pytest.raises(ValueError):
        TextConfig(target_space="zca")
    assert TextConfig(target_space="whiten", space_dim=8).space_dim == 8


def test_from_base_refuses_a_space_that_is_not_the_configs(tiny_base_model, sample):
    with pytest.raises(ValueError, match="fit it first"):
        TextEmbedder.from_base(text_cfg(tiny_base_model, "pca", "blocks", 12), D)
    with pytest.raises(ValueError, match="'whiten' but text.target_space is 'pca'"):
        TextEmbedder.from_base(text_cfg(tiny_base_model, "pca", "blocks", 12), D,
                               space=TargetSpace.fit("whiten", sample, 12))
    with pytest.raises(ValueError, match="k=10"):
        TextEmbedder.from_base(text_cfg(tiny_base_model, "pca", "blocks", 12), D,
                               space=TargetSpace.fit("pca", sample, 10))
    with pytest.raises(ValueError, match="maps 48-D targets"):
        TextEmbedder.from_base(text_cfg(tiny_base_model, "pca", "blocks", 12), 2 * D,
                               space=TargetSpace.fit("pca", sample, 12))


# -- export ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,head", [("pca", "lowrank"), ("whiten", "blocks")])
def test_export_writes_the_basis_search_reads(tiny_base_model, sample, kind, head, tmp_path):
    from musictext.export.navidrome import export_family, load_exported

    model = make_model(tiny_base_model, sample, kind, head).eval()
    model.save_pretrained(tmp_path / "stage2" / "model")
    cfg = load_family_config("muq", "demo", {"audio": {"embed_dim": BLOCK}, "text": {"base_model": tiny_base_model}})
    info = export_family(str(tmp_path / "stage2"), {}, str(tmp_path / "out"), cfg)  # ONNX checked inside
    assert info["reduced_basis"] == f"{info['text_embedder']}/{BASIS_FILE}"
    basis = load_basis(info["reduced_basis"])
    assert basis.mean.shape == (D,) and basis.components.shape == (12, D)
    targets = sample[:50]
    np.testing.assert_allclose(basis.project(targets), model.space.encode(torch.from_numpy(targets)).numpy(),
                               atol=1e-5)

    want = model.embed_texts(TEXTS)
    assert want.shape == (len(TEXTS), D)
    np.testing.assert_array_equal(TextEmbedder.from_pretrained(info["text_embedder"]).embed_texts(TEXTS), want)
    np.testing.assert_allclose(load_exported(info["checkpoint"]).embed_texts(TEXTS), want, atol=1e-6)


def test_raw_export_has_no_basis(tiny_base_model, tmp_path):
    from musictext.export.navidrome import export_family

    torch.manual_seed(0)
    TextEmbedder.from_base(TextConfig(base_model=tiny_base_model, hidden_dim=32), D).save_pretrained(
        tmp_path / "stage2" / "model")
    cfg = load_family_config("muq", "demo", {"audio": {"embed_dim": BLOCK}, "text": {"base_model": tiny_base_model}})
    info = export_family(str(tmp_path / "stage2"), {}, str(tmp_path / "out"), cfg)
    assert info["reduced_basis"] is None
    assert not (tmp_path / "out" / "muq_text_embedder" / BASIS_FILE).exists()
