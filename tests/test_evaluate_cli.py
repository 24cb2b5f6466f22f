"""`musictext evaluate` end to end on a tiny records file: targets given as a parquet or an .npy,
or computed from audio files through the family's upload path; numbers recomputed by hand."""

from __future__ import annotations

import argparse
import base64
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from musictext import schema, storage
from musictext.config import TextConfig, load_family_config
from musictext.ingest.records import GeneratedAudio, PathAudio, Record
from musictext.text_encoder import TextEmbedder
from musictext_kfp.evaluate_cli import add_evaluate_parser
from tests.toy import GENRES, MOODS

DIM = 24
N_TEST = 12


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="musictext")
    add_evaluate_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def _record(k: int, split: str, audio) -> Record:
    genre, mood = GENRES[k % 3], MOODS[k % 4]
    return Record(track_id=f"t{k:02d}", source="toy", split=split, licence="CC0-1.0", audio=audio,
                  captions=[f"a {mood} {genre} song", f"{genre} music, {mood} mood"], tags=[genre, mood],
                  group=f"toy:{k}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_base_model):
    """A records file (12 test + 3 train records), their targets (parquet: two clips for t00,
    one for the others; and the same as .npy + ids), and an export named like a run's."""
    root = tmp_path_factory.mktemp("evalcli")
    records = [_record(k, "test" if k < N_TEST else "train", GeneratedAudio(seed=0, index=k)) for k in range(N_TEST + 3)]
    (root / "records.jsonl").write_text("".join(json.dumps(r.row()) + "\n" for r in records))
    rng = np.random.default_rng(0)
    ids = ["t00#0", "t00#1"] + [f"t{k:02d}#0" for k in range(1, N_TEST + 3)]
    vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    col = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM)
    splits = ["test" if int(i[1:3]) < N_TEST else "train" for i in ids]
    storage.write_parquet(str(root / "targets.parquet"),
                          pa.table([pa.array(ids), pa.array(splits), col], schema=schema.target_schema(DIM)))
    np.save(root / "targets.npy", vectors)
    (root / "ids.txt").write_text("\n".join(ids) + "\n")
    torch.manual_seed(0)
    model_dir = root / "models" / "muq_text_embedder"
    TextEmbedder.from_base(TextConfig(base_model=tiny_base_model, hidden_dim=32), DIM).save_pretrained(model_dir)
    return {"root": root, "records": records, "ids": ids, "vectors": vectors, "model": model_dir}


def _by_hand(model_dir, records, ids, vectors) -> dict:
    """Pessimistic ranks of every caption over the test clips (t00's two clips both relevant)."""
    model = TextEmbedder.from_pretrained(str(model_dir))
    test = [r for r in records if r.split == "test"]
    rows = [i for i, vid in enumerate(ids) if int(vid[1:3]) < N_TEST]
    clip_track = np.array([int(ids[i][1:3]) for i in rows])
    audio = vectors[rows] / np.linalg.norm(vectors[rows], axis=1, keepdims=True)
    captions = [c for r in test for c in r.captions]
    owner = np.array([k for k, r in enumerate(test) for _ in r.captions])
    text = model.embed_texts(captions)
    sim = (text / np.linalg.norm(text, axis=1, keepdims=True)) @ audio.T
    ranks = []
    for q in range(len(captions)):
        relevant = clip_track == owner[q]
        ranks.append(1 + int((sim[q, ~relevant] >= sim[q, relevant].max()).sum()))
    return {"ranks": np.array(ranks), "n_audio": len(rows), "n_captions": len(captions)}


def test_cli_with_targets_parquet(tiny, tmp_path, capsys):
    out = tmp_path / "eval"
    assert cli(["evaluate", "--model", str(tiny["model"]), "--records", str(tiny["root"] / "records.jsonl"),
                "--targets", str(tiny["root"] / "targets.parquet"), "--out", str(out),
                "--projections", "tsne", "--genres", "rock,jazz,techno"]) == 0
    printed = capsys.readouterr().out
    assert "text→audio" in printed and "audio→text" in printed and str(out / "report.html") in printed

    m = json.loads((out / "metrics.json").read_text())
    want = _by_hand(tiny["model"], tiny["records"], tiny["ids"], tiny["vectors"])
    assert m["n_tracks"] == N_TEST and m["n_test"] == want["n_audio"] == N_TEST + 1  # t00 has two clips
    assert m["n_captions"] == want["n_captions"] == 2 * N_TEST
    assert m["split"] == "test" and m["family"] == "muq" and m["n_records"] == N_TEST
    t2a = m["text_to_audio"]
    assert t2a["R@1"] == pytest.approx(np.mean(want["ranks"] <= 1))
    assert t2a["R@5"] == pytest.approx(np.mean(want["ranks"] <= 5))
    assert t2a["MRR"] == pytest.approx(np.mean(1 / want["ranks"]))
    assert t2a["median_rank"] == pytest.approx(np.median(want["ranks"]))
    # chance: t00's captions have 2 relevant clips of 13, the others 1
    assert m["chance"]["R@1"] == pytest.approx((2 * 2 / 13 + 22 * 1 / 13) / 24)
    assert {"R@1", "R@5", "R@10", "MRR", "mAP@10", "median_rank"} == set(m["audio_to_text"]) == set(m["chance_audio_to_text"])

    tagging = m["tagging"]
    assert tagging["n_tags"] == 7 and set(tagging["per_tag"]) == set(GENRES[:3]) | set(MOODS[:4])
    assert tagging["genre_accuracy"]["tags"] == ["rock", "jazz", "techno"]
    assert tagging["genre_accuracy"]["chance"] == pytest.approx(1 / 3)
    assert set(tagging["mood_accuracy"]["tags"]) == set(MOODS[:4])  # recognised as moods by the sources' words

    page = (out / "report.html").read_text()
    png = base64.b64encode((out / "cosine_histogram.png").read_bytes()).decode()
    assert png in page and "projection_tsne" in page and "data:image/png;base64," in page
    summary = (out / "summary.md").read_text()
    assert "| text→audio |" in summary and f"{t2a['R@1']:.3f}" in summary and "macro ROC-AUC" in summary
    assert not (out / "projection_umap.png").exists()


def test_cli_with_npy_and_ids_matches_parquet(tiny, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["evaluate", "--model", str(tiny["model"].parent), "--family", "muq",
              "--records", str(tiny["root"] / "records.jsonl"), "--projections", "none", "--split", "all"]
    assert cli([*common, "--targets", str(tiny["root"] / "targets.parquet"), "--out", str(a)]) == 0
    assert cli([*common, "--targets", str(tiny["root"] / "targets.npy"), "--ids", str(tiny["root"] / "ids.txt"),
                "--out", str(b)]) == 0
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert ma["n_tracks"] == N_TEST + 3  # --split all
    for key in ("text_to_audio", "audio_to_text", "chance", "tagging"):
        assert ma[key] == mb[key], key


def test_cli_reports_bad_input(tiny, tmp_path, capsys):
    records = tiny["root"] / "records.jsonl"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(records.read_text() + '{"track_id": "x"}\n')
    base = ["evaluate", "--model", str(tiny["model"]), "--out", str(tmp_path / "o"), "--projections", "none"]
    parquet = ["--targets", str(tiny["root"] / "targets.parquet")]
    assert cli([*base, *parquet, "--records", str(bad)]) == 2
    assert f"bad.jsonl line {N_TEST + 4}:" in capsys.readouterr().err
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((len(tiny["ids"]), 8), np.float32))
    assert cli([*base, "--targets", str(wrong), "--ids", str(tiny["root"] / "ids.txt"), "--records", str(records)]) == 2
    assert "gives 24-D vectors but the audio vectors are 8-D" in capsys.readouterr().err
    assert cli([*base, "--targets", str(wrong), "--records", str(records)]) == 2
    assert "needs --ids" in capsys.readouterr().err
    assert cli([*base, *parquet, "--records", str(records), "--split", "valid"]) == 2
    assert "no records in split 'valid'" in capsys.readouterr().err


def test_cli_embeds_audio_files_through_the_upload_path(tmp_path, tiny_base_model, capsys):
    """--audio DIR: path records' files embedded with the family's AudioEmbedder (demo profile);
    a record whose file is missing is rejected by name, the others evaluated."""
    import soundfile as sf
    from musictext.audio import build_embedder

    from tests.audio_fixtures import tone

    audio_dir = tmp_path / "music"
    (audio_dir / "a").mkdir(parents=True)
    records = []
    for k in range(6):
        path = f"a/song{k}.wav"
        if k < 5:
            sf.write(audio_dir / path, tone(110.0 * (k + 1), 24000, 3.0), 24000)
        records.append(_record(k, "test", PathAudio(root="/nowhere", path=path)))
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r.row()) + "\n" for r in records))
    dim = load_family_config("muq", "demo").audio.target_dim
    torch.manual_seed(0)
    model_dir = tmp_path / "muq_text_embedder"
    TextEmbedder.from_base(TextConfig(base_model=tiny_base_model, hidden_dim=32), dim).save_pretrained(model_dir)

    out = tmp_path / "eval"
    assert cli(["evaluate", "--model", str(model_dir), "--records", str(tmp_path / "records.jsonl"),
                "--audio", str(audio_dir), "--profile", "demo", "--device", "cpu", "--out", str(out),
                "--projections", "none"]) == 0
    assert "rejected: 1 records" in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["rejected"] == [{"item": "t05", "reason": m["rejected"][0]["reason"]}]
    assert "no audio file" in m["rejected"][0]["reason"] and "song5.wav" in m["rejected"][0]["reason"]
    assert m["audio"]["kind"] == "audio files" and m["audio"]["profile"] == "demo"

    # The same numbers from vectors of embed_file, Navidrome's upload path, computed here.
    embedder = build_embedder(load_family_config("muq", "demo").audio, device="cpu")
    vectors = np.stack([embedder.embed_file(str(audio_dir / f"a/song{k}.wav")).numpy() for k in range(5)])
    want = _by_hand(model_dir, records[:5], [f"t{k:02d}" for k in range(5)], vectors)
    assert m["text_to_audio"]["MRR"] == pytest.approx(np.mean(1 / want["ranks"]), abs=1e-6)
    assert m["n_tracks"] == 5 and m["n_captions"] == 10
