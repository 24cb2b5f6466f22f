"""The training step and its state: catalogue negatives, two ranks = one process, checkpoints,
and a run killed or stopped at step k resuming bit-exactly (CPU)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from musictext.train.checkpoint import CheckpointStore
from musictext.train.loss import Catalogue, ContrastiveLoss, clip_keys

ROOT = Path(__file__).resolve().parents[1]


# -- catalogue negatives --------------------------------------------------------------------
def test_catalogue_loss_is_cross_entropy_over_batch_and_catalogue():
    torch.manual_seed(0)
    text = F.normalize(torch.randn(4, 6), dim=-1).requires_grad_()
    audio = F.normalize(torch.randn(4, 6), dim=-1)
    extra = F.normalize(torch.randn(5, 6), dim=-1)
    ids = [f"b{i}" for i in range(4)]
    # The catalogue holds the batch's own targets too: they must not be counted twice.
    catalogue = Catalogue(torch.cat([audio, extra]), clip_keys(ids + [f"x{i}" for i in range(5)]), chunk_rows=3)
    loss = ContrastiveLoss(temperature=0.1, learn_temperature=False)
    loss.attach_catalogue(catalogue)
    got = loss(text, audio, keys=clip_keys(ids))
    gallery = torch.cat([audio, extra.half().float()])
    t2a = F.cross_entropy(10.0 * text @ gallery.T, torch.arange(4))
    a2t = F.cross_entropy(10.0 * audio @ text.T, torch.arange(4))
    assert float(got["infonce"]) == pytest.approx(float(0.5 * (t2a + a2t)), abs=1e-3)
    got["loss"].backward()
    assert text.grad is not None and torch.isfinite(text.grad).all()


def test_catalogue_needs_the_clip_keys():
    loss = ContrastiveLoss()
    loss.attach_catalogue(Catalogue(torch.zeros(2, 3), clip_keys(["a", "b"])))
    with pytest.raises(ValueError, match="clip keys"):
        loss(F.normalize(torch.randn(2, 3), dim=-1), F.normalize(torch.randn(2, 3), dim=-1))


def test_clip_keys_are_stable_and_distinct():
    a = clip_keys(["x#0", "x#1", "y#0"])
    assert a.tolist() == clip_keys(["x#0", "x#1", "y#0"]).tolist()
    assert len(set(a.tolist())) == 3 and (a >= 0).all()


# -- two ranks are one computation ----------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steps(tiny_base_model, out: Path, negatives: str, nodes: int) -> dict:
    """One process, or ``nodes`` torchrun "nodes" on 127.0.0.1 (one process each, static rendezvous)."""
    worker = ["-m", "tests.train_step_worker", tiny_base_model, str(out), "--negatives", negatives]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'python'}")
    if nodes == 1:
        cmds = [[sys.executable, *worker]]
    else:
        port = _free_port()
        cmds = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nodes), "--node-rank", str(rank),
                 "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port), *worker]
                for rank in range(nodes)]
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cmds]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n".join(o[-3000:] for o in outputs)
    return load_file(str(out))


@pytest.mark.parametrize("negatives", ["batch", "catalogue"])
def test_two_nodes_equal_one_process_on_the_same_global_batches(tiny_base_model, tmp_path, negatives):
    single = _steps(tiny_base_model, tmp_path / "single.safetensors", negatives, 1)
    ranks = _steps(tiny_base_model, tmp_path / "ddp.safetensors", negatives, 2)
    assert torch.allclose(single.pop("losses"), ranks.pop("losses"), atol=1e-5)
    moved = 0
    for name, value in single.items():
        assert torch.allclose(value, ranks[name], atol=2e-5), name
        moved += 1
    assert moved > 10


def test_accumulated_micro_batches_step_like_their_whole_batch(tiny_base_model):
    """grad_accum 2 on two halves = one step on the whole batch, for a loss that is a mean over
    rows (contrastive negatives, by design, stay within a micro-batch)."""
    from musictext.config import StageConfig, TextConfig
    from musictext.text_encoder import TextEmbedder
    from musictext.train.loop import Objective, TrainLoop, param_groups, warmup_cosine
    from tests.train_step_worker import global_batches

    class MeanGap(torch.nn.Module):
        def forward(self, text, audio):
            return {"loss": 1.0 - (text * audio).sum(-1).mean()}

    def trained(accum: int) -> dict:
        torch.manual_seed(0)
        embedder = TextEmbedder.from_base(TextConfig(base_model=tiny_base_model, hidden_dim=32), 24)
        embedder.tower.eval()
        objective = Objective(embedder, MeanGap())
        st = StageConfig(lr=1e-3, head_lr=1e-2)
        optimizer = torch.optim.AdamW(param_groups(objective, st))
        loop = TrainLoop(objective, objective, optimizer,
                         torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(4, 0.25)),
                         precision="fp32", grad_accum=accum, grad_clip=0.0, device=torch.device("cpu"))
        for batch in global_batches(2, embedder.tokenizer.vocab_size):
            batch.pop("clip_ids")
            halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
            for part in (halves if accum == 2 else [batch]):
                loop.micro_step(part)
        assert loop.scheduler.last_epoch == 2  # optimiser steps, not micro-batches
        return objective.state_dict()

    whole, accumulated = trained(1), trained(2)
    for name in whole:
        assert torch.allclose(whole[name], accumulated[name], atol=1e-6), name


# -- checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["local", "memory"])
def test_checkpoints_keep_the_newest_and_the_best(tmp_path, where):
    directory = str(tmp_path / "ck") if where == "local" else f"memory://ck-{os.getpid()}/checkpoints"
    store = CheckpointStore(directory, keep=2)
    for step, r1 in [(10, 0.5), (20, 0.9), (30, 0.2), (40, None), (50, 0.3)]:
        store.save(step, {"step": step, "w": torch.full((3,), float(step))}, r1)
    assert [e.step for e in store.entries()] == [20, 40, 50]  # best (0.9) + newest two
    assert store.latest().step == 50 and store.best().step == 20
    assert torch.equal(store.load(store.latest())["w"], torch.full((3,), 50.0))


def test_an_unlisted_checkpoint_file_is_ignored(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    store.save(5, {"x": 1})
    (tmp_path / "step-00000009.pt").write_bytes(b"half a checkpoint")
    assert store.latest().step == 5


# -- resume ---------------------------------------------------------------------------------
BLOCK = 16


@pytest.fixture(scope="module")
def toy(toy_dataset, tiny_base_model):
    root, info = toy_dataset(n_clips=120, block_dim=BLOCK)
    overrides = {
        "audio": {"embed_dim": BLOCK},
        "text": {"base_model": tiny_base_model, "hidden_dim": 32},
        "train": {"checkpoint_every": 2, "keep_checkpoints": 10, "keep_checkpoints_after": True,
                  "stage1": {"epochs": 3, "batch_size": 16, "lr": 1e-3, "head_lr": 5e-3,
                             "negatives": "catalogue"}},
    }
    return {"root": root, "overrides": overrides, "text": str(root / "text"), "targets": str(root / "targets")}


def _program(toy, out: Path, *extra: str, overrides: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "musictext.train", "--family", "muq", "--profile", "demo",
            "--overrides-json", json.dumps(overrides or toy["overrides"]), "--stage", "1", "--text-dir", toy["text"],
            "--targets-dir", toy["targets"], "--out-dir", str(out), *extra]


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MUSICTEXT_PROGRESS="0", HF_HUB_OFFLINE="1",
                PYTHONPATH=str(ROOT / "python"))


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def _final(out: Path) -> tuple[dict, dict]:
    store = CheckpointStore(str(out / "checkpoints"))
    payload = store.load(store.latest())
    return payload["loop"]["objective"], payload


def _assert_same_state(a: Path, b: Path) -> None:
    (sa, pa), (sb, pb) = _final(a), _final(b)
    assert pa["position"] == pb["position"]
    assert pa["history"]["losses"] == pb["history"]["losses"]
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name  # bit-exact on CPU
    for group_a, group_b in zip(pa["loop"]["optimizer"]["state"].values(), pb["loop"]["optimizer"]["state"].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in ("exp_avg", "exp_avg_sq"))


def test_stopped_at_step_k_and_resumed_equals_uninterrupted(toy, tmp_path):
    _run(_program(toy, tmp_path / "straight", "--max-steps", "10"))
    _run(_program(toy, tmp_path / "resumed", "--max-steps", "5"))
    _run(_program(toy, tmp_path / "resumed", "--max-steps", "10", "--resume"))
    _assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    state = json.load(open(tmp_path / "resumed" / "train_state.json"))
    assert state["resumed"] == [5] and state["optimizer_steps"] == 10 and not state["finished"]


def test_killed_mid_run_resumes_bit_exactly(toy, tmp_path):
    _run(_program(toy, tmp_path / "straight"))
    out = tmp_path / "killed"
    proc = subprocess.Popen(_program(toy, out), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    listing = out / "checkpoints" / "checkpoints.json"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if listing.exists() and json.loads(listing.read_text())["checkpoints"][-1]["step"] >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = CheckpointStore(str(out / "checkpoints")).latest().step
    _run(_program(toy, out, "--resume"))
    _assert_same_state(tmp_path / "straight", out)
    state = json.load(open(out / "train_state.json"))
    assert state["resumed"] == [killed_at] and state["finished"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp") or ".tmp-" in p.name]


# -- clear errors before expensive work -----------------------------------------------------
def _args(toy, out: Path, overrides: dict, *extra: str):
    from musictext.train.run import parse_args

    return parse_args(_program(toy, out, *extra, overrides=overrides)[3:])


@pytest.mark.parametrize("change, extra, message", [
    ({"audio": {"embed_dim": 8}}, (), r"targets are 48-D but the muq config \(demo profile\) gives 24-D"),
    ({"text": {"base_model": "/nonexistent/minilm"}}, (), r"base text model '/nonexistent/minilm' cannot be loaded"),
    ({}, ("--memory-budget", "0.0001"), r"memory budget 0.0001 GiB cannot hold one batch of 16 x 48-D"),
    ({}, ("--max-steps", "0"), r"--max-steps must be >= 1"),
])
def test_bad_setup_fails_before_the_cache_is_built(toy, tmp_path, change, extra, message):
    from musictext.train.run import run

    overrides = json.loads(json.dumps(toy["overrides"]))
    for key, value in change.items():
        overrides[key].update(value)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run(_args(toy, tmp_path / "out", overrides, *extra, "--cache-dir", str(tmp_path / "cache")))
    assert not (tmp_path / "cache").exists()


def test_a_missing_target_shard_is_named(toy, tmp_path):
    import shutil

    from musictext.train.run import run

    targets = tmp_path / "targets"
    shutil.copytree(toy["targets"], targets)
    (targets / "shards.json").write_text(json.dumps({"files": [str(targets / "targets.parquet"),
                                                               str(targets / "gone.parquet")]}))
    args = _args(toy, tmp_path / "out", toy["overrides"])
    args.targets_dir = str(targets)
    with pytest.raises(FileNotFoundError, match=r"1 target shard\(s\) missing, e.g. .*gone.parquet"):
        run(args)
