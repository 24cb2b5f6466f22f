"""`musictext index` + `musictext search` on a folder of generated audio, through a real Milvus
Lite file: Navidrome's schema, names, resume, rejected files, retrieval with a text embedder
fitted to the indexed tracks, reciprocal-rank fusion, and MERT's fallback / reduced space."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from musictext.audio import build_embedder
from musictext.audio.embedder import AudioEmbedder
from musictext.config import TextConfig, load_family_config
from musictext.search import index_library, rrf_fuse, search
from musictext.search.store import milvus
from musictext.text_encoder import TextEmbedder
from musictext_kfp.search_cli import main as cli

torch.set_num_threads(2)

RATE = 22050
SECS = 3.0
DASH = "\u2013"
# rel path: (tags (artist, title) or None, expected name, caption, sound)
TRACKS = {
    "drones/low.flac": (("Drone Lab", "Deep C"), f"Drone Lab {DASH} Deep C", "a low drone in c",
                        {"f0": 65.4, "bpm": 20}),
    "bells/high.flac": (("Bell Choir", "Tiny Bells"), f"Bell Choir {DASH} Tiny Bells", "tiny high bells ringing fast",
                        {"f0": 1760.0, "bpm": 240}),
    "07 - Sun Band - Bright Bells.wav": (None, f"Sun Band {DASH} Bright Bells", "bright bells at a walking pace",
                                         {"f0": 880.0, "bpm": 100}),
    "noise_wash.wav": (None, "noise_wash", "a wash of white noise", {"f0": 0.0, "bpm": 0, "noise": 0.3}),
    "a/same.flac": (("Twins", "Same Song"), f"Twins {DASH} Same Song", "a middle hum pulsing slowly",
                    {"f0": 220.0, "bpm": 50}),
    "b/same.flac": (("Twins", "Same Song"), f"Twins {DASH} Same Song (2)", "a nasal buzz that races",
                    {"f0": 330.0, "bpm": 200, "square": True}),
    "mid/pulse.flac": (("Pulse", "Mid Pulse"), f"Pulse {DASH} Mid Pulse", "steady mid pulse at a march",
                       {"f0": 440.0, "bpm": 120}),
    "clicks.wav": (None, "clicks", "sharp clicks and silence", {"f0": 0.0, "bpm": 300, "noise": 0.5, "clicks": True}),
}
BAD = {"broken.flac": "undecodable", "silence.wav": "silent"}


def _sound(f0: float, bpm: float, noise: float = 0.01, square: bool = False, clicks: bool = False,
           seed: int = 0) -> np.ndarray:
    t = np.arange(int(SECS * RATE)) / RATE
    x = np.zeros_like(t)
    if f0:
        x = sum(np.sin(2 * math.pi * f0 * k * t) / (k if square else k * k) for k in range(1, 6, 2 if square else 1)
                if f0 * k < RATE / 2)
    env = (1 - (t * bpm / 60) % 1) ** (40 if clicks else 2) if bpm else np.ones_like(t)
    rng = np.random.default_rng(seed)
    y = 0.3 * x * env + rng.normal(scale=noise, size=t.shape) * (env if clicks else 1)
    return np.stack([y, y], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    from mutagen.flac import FLAC

    root = tmp_path_factory.mktemp("library")
    for seed, (rel, (tags, _, _, sound)) in enumerate(TRACKS.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _sound(seed=seed, **sound), RATE)
        if tags:
            audio = FLAC(path)
            audio["artist"], audio["title"] = tags
            audio.save()
    (root / "broken.flac").write_bytes(b"fLaC but not really" * 20)
    sf.write(root / "silence.wav", np.zeros((int(SECS * RATE), 2), np.float32), RATE)
    return root


class CountingEmbedder(AudioEmbedder):
    """The real embedder, counting the tracks it embeds."""

    embedded = 0

    def embed_loaded(self, loaded):
        self.embedded += len(loaded)
        return super().embed_loaded(loaded)


def _embedder(family: str) -> CountingEmbedder:
    real = build_embedder(load_family_config(family, "demo").audio, device="cpu")
    return CountingEmbedder(real.cfg, real.adapter, real.device)


@pytest.fixture(scope="module")
def muq(library, tmp_path_factory):
    """The library indexed twice (the second run must do nothing) with the muq demo profile."""
    db = str(tmp_path_factory.mktemp("db") / "library.db")
    embedder = _embedder("muq")
    first = index_library(str(library), "muq", "demo", db, embedder=embedder)
    after_first = embedder.embedded
    second = index_library(str(library), "muq", "demo", db, embedder=embedder)
    return {"db": db, "first": first, "second": second, "embedder": embedder,
            "embedded": (after_first, embedder.embedded - after_first)}


def _rows(db: str, collection: str) -> list[dict]:
    with milvus(db) as client:
        client.load_collection(collection)
        return client.query(collection, filter="", limit=1000,
                            output_fields=["name", "path", "embedding", "offset", "model_id"])


def test_index_writes_navidromes_schema_and_names(muq, library):
    with milvus(muq["db"]) as client:
        fields = {f["name"]: f for f in client.describe_collection("embedding")["fields"]}
        index = client.describe_index("embedding", "embedding")
    assert list(fields) == ["name", "embedding", "offset", "model_id", "path"]
    assert fields["name"]["is_primary"] and fields["name"]["params"]["max_length"] == 512
    assert fields["embedding"]["params"]["dim"] == 192  # muq demo: 3 x 64
    assert (index["index_type"], index["metric_type"], int(index.get("nlist", 1024))) == ("IVF_FLAT", "COSINE", 1024)

    rows = {r["path"]: r for r in _rows(muq["db"], "embedding")}
    assert {r["name"] for r in rows.values()} == {name for _, name, _, _ in TRACKS.values()}
    assert {Path(p).relative_to(library).as_posix(): r["name"] for p, r in rows.items()} == {
        rel: name for rel, (_, name, _, _) in TRACKS.items()}
    assert {r["offset"] for r in rows.values()} == {0.0}
    assert {r["model_id"] for r in rows.values()} == {"OpenMuQ/MuQ-MuLan-large+random-init"}
    # Each stored vector is the file's upload-path vector.
    for rel in ("drones/low.flac", "noise_wash.wav"):
        path = str(library / rel)
        want = muq["embedder"].embed_file(path).numpy()
        np.testing.assert_allclose(rows[path]["embedding"], want, atol=1e-6)
    assert muq["first"]["embedded"] == len(TRACKS) and muq["first"]["backend"] == "milvus"


def test_second_run_skips_every_indexed_file(muq):
    assert muq["embedded"] == (len(TRACKS), 0)  # tracks embedded by the first and the second run
    assert muq["second"]["skipped"] == len(TRACKS) and muq["second"]["embedded"] == 0
    assert len(_rows(muq["db"], "embedding")) == len(TRACKS)


def test_bad_files_are_recorded_with_the_reason(muq):
    rows = [json.loads(line) for line in Path(muq["first"]["rejected_file"]).read_text().splitlines()]
    assert Path(muq["first"]["rejected_file"]).parent == Path(muq["db"]).parent
    assert {r["item"]: r["family"] for r in rows} == {name: "muq" for name in BAD}
    for r in rows:
        assert BAD[r["item"]] in r["reason"] and r["path"].endswith(r["item"])
    assert muq["first"]["rejected"] == muq["second"]["rejected"] == len(BAD)


# --------------------------------------------------------------------- text side
def _fit_text_embedder(base: str, captions: list[str], targets: np.ndarray, steps: int = 120) -> TextEmbedder:
    """A tiny text embedder fitted so each caption lands on its track's stored vector (after 100
    steps each caption's cosine to its own track beats every other track's by > 0.15)."""
    torch.manual_seed(0)
    model = TextEmbedder.from_base(TextConfig(base_model=base, hidden_dim=64), targets.shape[1])
    enc = model.tokenize(captions)
    want = torch.from_numpy(targets).float()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8 captions: a second thread only adds contention on a shared host
    try:
        _fit_steps(model, enc, want, opt, steps)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _fit_steps(model, enc, want, opt, steps: int) -> None:
    for _ in range(steps):
        pred = model(enc["input_ids"], enc["attention_mask"])
        loss = (1 - torch.nn.functional.cosine_similarity(pred, want)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def models(muq, library, tiny_base_model, tmp_path_factory) -> Path:
    """checkpoints/ with a muq_text_embedder fitted to the indexed tracks and an untrained
    mert_text_embedder (MERT demo space, 960-D)."""
    out = tmp_path_factory.mktemp("checkpoints")
    stored = {r["path"]: np.asarray(r["embedding"], np.float32) for r in _rows(muq["db"], "embedding")}
    captions = [caption for _, _, caption, _ in TRACKS.values()]
    targets = np.stack([stored[str(library / rel)] for rel in TRACKS])
    _fit_text_embedder(tiny_base_model, captions, targets).save_pretrained(out / "muq_text_embedder")
    torch.manual_seed(1)
    mert_dim = load_family_config("mert", "demo").audio.target_dim
    TextEmbedder.from_base(TextConfig(base_model=tiny_base_model, hidden_dim=32), mert_dim).save_pretrained(
        out / "mert_text_embedder")
    return out


def test_search_returns_the_captioned_track_first(muq, models, library):
    for rel, (_, name, caption, _) in TRACKS.items():
        hits = search(caption, ["muq"], str(models), muq["db"], top=len(TRACKS))
        assert (hits[0].name, hits[0].path) == (name, str(library / rel)), caption
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True) and [h.rank for h in hits] == list(range(1, len(TRACKS) + 1))
    # The scores are the cosines of the query with the stored vectors.
    query = TextEmbedder.from_pretrained(models / "muq_text_embedder").embed_text(TRACKS["clicks.wav"][2])
    stored = {r["path"]: np.asarray(r["embedding"]) for r in _rows(muq["db"], "embedding")}
    for h in search(TRACKS["clicks.wav"][2], ["muq"], str(models), muq["db"], top=3):
        v = stored[h.path]
        assert h.score == pytest.approx(float(v @ query / np.linalg.norm(v) / np.linalg.norm(query)), abs=1e-5)


def test_cli_search_prints_rank_score_name_path(muq, models, library, capsys):
    caption = TRACKS["mid/pulse.flac"][2]
    assert cli(["search", caption, "--family", "muq", "--models", str(models), "--db", muq["db"], "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    rank, score, rest = lines[0].split(None, 2)
    assert (rank, rest) == ("1", f"Pulse {DASH} Mid Pulse  {library / 'mid/pulse.flac'}") and 0 < float(score) <= 1
    # In a process of its own, as a person runs it after indexing: Lite reopens the file.
    done = subprocess.run([sys.executable, "-m", "musictext_kfp.search_cli", "search", caption, "--models",
                           str(models), "--db", muq["db"], "--top", "2", "--json"],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["found_by"] == {"muq": 1}
    assert rows[0]["path"] == str(library / "mid/pulse.flac")


def test_rrf_fuse_matches_a_hand_computed_example():
    fused = rrf_fuse({"muq": ["a", "b", "c"], "latent": ["c", "a", "d"]}, k=60)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    assert [item for item, _, _ in fused] == ["a", "c", "b", "d"]
    assert [s for _, s, _ in fused] == pytest.approx([1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62, 1 / 63])
    assert [r for _, _, r in fused] == [{"muq": 1, "latent": 2}, {"muq": 3, "latent": 1}, {"muq": 2}, {"latent": 3}]
    # k=0: plain reciprocal ranks. t (1/2 + 1/2) ties m and u (1/1): the better single rank goes
    # first, then the name.
    tied = rrf_fuse({"x": ["m", "t"], "y": ["u", "t"]}, k=0)
    assert [(i, s) for i, s, _ in tied] == [("m", 1.0), ("u", 1.0), ("t", 1.0)]


# --------------------------------------------------------------------- MERT: too wide for Milvus
@pytest.fixture(scope="module")
def mert(library, tmp_path_factory):
    """MERT demo vectors (960-D) of every good track, and its embedder."""
    embedder = _embedder("mert")
    vectors = {str(library / rel): embedder.embed_file(str(library / rel)).numpy() for rel in TRACKS}
    embedder.embedded = 0
    return {"embedder": embedder, "vectors": vectors}


def _cosines(query: np.ndarray, vectors: dict[str, np.ndarray]) -> dict[str, float]:
    paths = list(vectors)
    v = np.stack([vectors[p] for p in paths]).astype(np.float32)
    cos = v @ query / np.linalg.norm(v, axis=1) / np.linalg.norm(query)
    return dict(zip(paths, cos.tolist()))


def _exact_ranking(query: np.ndarray, vectors: dict[str, np.ndarray]) -> list[str]:
    cos = _cosines(query, vectors)
    return sorted(cos, key=lambda p: -cos[p])


def test_mert_over_the_limit_falls_back_to_exact_search(muq, mert, models, library, tmp_path, capsys, caplog):
    db = str(tmp_path / "db" / "library.db")
    summary = index_library(str(library), "mert", "demo", db, max_milvus_dim=512, embedder=mert["embedder"])
    assert summary["backend"] == "local" and summary["dim"] == 960 and summary["embedded"] == len(TRACKS)
    assert "over Milvus's limit of 512" in caplog.text and "exact search" in caplog.text
    assert Path(summary["vector_file"]) == tmp_path / "db" / "mert_embedding.f16.npy"
    assert np.load(summary["vector_file"]).dtype == np.float16
    with milvus(db) as client:
        assert not client.has_collection("mert_embedding")
    # resume works on the vector file too
    again = index_library(str(library), "mert", "demo", db, max_milvus_dim=512, embedder=mert["embedder"])
    assert (again["embedded"], again["skipped"], mert["embedder"].embedded) == (0, len(TRACKS), len(TRACKS))

    # Exact search: the ranking numpy gives over the vectors as stored (float16), and the cosines
    # of the float32 vectors up to float16 rounding.
    text = TextEmbedder.from_pretrained(models / "mert_text_embedder")
    as_stored = {p: v.astype(np.float16).astype(np.float32) for p, v in mert["vectors"].items()}
    for caption in ("a low drone in c", "sharp clicks and silence"):
        query = text.embed_text(caption)
        hits = search(caption, ["mert"], str(models), db, top=len(TRACKS))
        assert [h.path for h in hits] == _exact_ranking(query, as_stored)
        cosine = _cosines(query, mert["vectors"])
        assert [h.score for h in hits] == pytest.approx([cosine[h.path] for h in hits], abs=1e-4)

    # Fusion: the muq space (Milvus) and this mert space (vector file) of one db.
    index_library(str(library), "muq", "demo", db, embedder=muq["embedder"])
    caption = TRACKS["bells/high.flac"][2]
    muq_hits = search(caption, ["muq"], str(models), db, top=100)
    mert_hits = search(caption, ["mert"], str(models), db, top=100)
    want = rrf_fuse({"muq": [h.path for h in muq_hits], "mert": [h.path for h in mert_hits]})
    capsys.readouterr()
    assert cli(["search", caption, "--families", "muq,mert", "--models", str(models), "--db", db, "--top", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for line, (path, score, ranks) in zip(lines, want):
        marks = ", ".join(f"{space} {rank}" for space, rank in ranks.items())
        assert line.endswith(f"{path}  [{marks}]") and f"{score:.4f}" in line
    # Both spaces rank all 8 tracks, so every line names both.
    assert all(" [muq " in line and ", mert " in line for line in lines)


def test_mert_with_a_reduced_basis_goes_into_milvus(mert, models, library, tmp_path, capsys):
    from musictext.search.basis import BASIS_FILE

    export = models / "mert_text_embedder"
    rng = np.random.default_rng(0)
    components = np.linalg.qr(rng.normal(size=(960, 48)))[0].T.astype(np.float32)  # [48, 960] orthonormal rows
    mean = rng.normal(scale=0.01, size=960).astype(np.float32)
    np.savez(export / BASIS_FILE, mean=mean, components=components)
    try:
        db = str(tmp_path / "library.db")
        assert cli(["index", str(library), "--family", "mert", "--profile", "demo", "--db", db, "--models",
                    str(models), "--max-milvus-dim", "512", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert (summary["backend"], summary["dim"], summary["embedded"], summary["rejected"]) == (
            "milvus", 48, len(TRACKS), len(BAD))
        assert summary["reduced_basis"] == str(export / BASIS_FILE)
        rows = _rows(db, "mert_embedding")
        assert len(rows) == len(TRACKS) and len(rows[0]["embedding"]) == 48
        assert rows[0]["model_id"].startswith("m-a-p/MERT-v1-330M+random-init+pca48-")
        stored = {r["path"]: np.asarray(r["embedding"]) for r in rows}
        for path, v in mert["vectors"].items():
            np.testing.assert_allclose(stored[path], (v - mean) @ components.T, atol=1e-5)
        text = TextEmbedder.from_pretrained(export)
        caption = "tiny high bells ringing fast"
        hits = search(caption, ["mert"], str(models), db, top=len(TRACKS))
        projected = {p: (v - mean) @ components.T for p, v in mert["vectors"].items()}
        query = (text.embed_text(caption) - mean) @ components.T
        assert [h.path for h in hits] == _exact_ranking(query, projected)
        cosine = _cosines(query, projected)
        assert [h.score for h in hits] == pytest.approx([cosine[h.path] for h in hits], abs=1e-5)
        # Another basis than the one indexed with is refused, not silently mixed.
        np.savez(export / BASIS_FILE, mean=mean, components=components[::-1].copy())
        with pytest.raises(ValueError, match="not the basis"):
            search(caption, ["mert"], str(models), db)
    finally:
        (export / BASIS_FILE).unlink()
