"""The training program through torchrun: a toy task that must be learned, stage 2 on DDP,
a simulated two-node run, and failures surfacing with the log tail."""

import json
import os
import socket
import subprocess
import sys

import pytest

from musictext.config import load_family_config
from musictext.metrics import chance_metrics
from musictext.train.launch import run_args, train_stage
from musictext.text_encoder import TextEmbedder

BLOCK = 16


@pytest.fixture(scope="module")
def toy(toy_dataset, tiny_base_model):
    root, info = toy_dataset(n_clips=200, block_dim=BLOCK)
    base = tiny_base_model
    overrides = {
        "audio": {"embed_dim": BLOCK},
        "text": {"base_model": base, "hidden_dim": 64},
        "train": {
            "stage1": {"epochs": 8, "batch_size": 32, "lr": 1e-3, "head_lr": 5e-3, "freeze_layers": 0},
            "stage2": {"epochs": 2, "batch_size": 16, "lr": 5e-4, "head_lr": 2e-3, "freeze_layers": 1},
        },
    }
    return {"root": root, "base": base, "info": info, "overrides": overrides,
            "text": str(root / "text"), "targets": str(root / "targets")}


@pytest.fixture(scope="module", autouse=True)
def _env():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["MUSICTEXT_PROGRESS"] = "0"


@pytest.fixture(scope="module")
def stage1(toy):
    cfg = load_family_config("muq", "demo", toy["overrides"])
    out = str(toy["root"] / "stage1")
    state = train_stage(cfg, 1, toy["text"], toy["targets"], out, log_dir=str(toy["root"] / "tb"))
    return out, state


def test_stage1_learns_toy_task(stage1, toy):
    out, state = stage1
    assert os.path.isfile(os.path.join(out, "model", "model.safetensors"))
    assert json.load(open(os.path.join(out, "train_state.json"))) == state
    assert state["epochs"] == 8 and len(state["losses"]) == 8 and len(state["valid"]) == 8
    chance = chance_metrics(toy["info"]["splits"]["valid"])["R@1"]
    assert state["valid_chance_r1"] == pytest.approx(chance)
    assert state["best_valid_r1"] >= 4 * chance
    assert state["best_valid_r1"] > state["valid"][0]["R@1"]
    assert state["losses"][-1] < state["losses"][0]
    assert state["best_valid_r1"] == max(v["R@1"] for v in state["valid"])
    assert os.listdir(toy["root"] / "tb")  # tensorboard events
    model = TextEmbedder.from_pretrained(os.path.join(out, "model"))
    vec = model.embed_text("a happy rock song with piano")
    assert vec.shape == (3 * BLOCK,)
    assert abs(float((vec**2).sum()) - 1.0) < 1e-5


def test_stage2_from_stage1_on_two_processes(stage1, toy):
    out1, state1 = stage1
    out2 = str(toy["root"] / "stage2")
    state = train_stage("muq", 2, toy["text"], toy["targets"], out2, init_dir=out1, nproc_per_node=2,
                        profile="demo", overrides=toy["overrides"])
    assert state["world_size"] == 2 and state["stage"] == 2
    # stage 2 continues from stage 1 (and its learned temperature) rather than from scratch
    assert state["temperature"] != pytest.approx(0.07)
    assert state["valid_init"]["R@1"] == pytest.approx(state1["best_valid_r1"])  # starts from stage 1's best
    assert state["best_valid_r1"] >= state1["best_valid_r1"]
    assert state["best_valid_r1"] == max([state["valid_init"]["R@1"]] + [v["R@1"] for v in state["valid"]])
    assert os.path.isdir(os.path.join(out2, "model"))


def test_failure_raises_with_log_tail(toy, tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)training failed \(exit \d+\).*missing"):
        train_stage("muq", 1, str(tmp_path / "missing"), toy["targets"], str(tmp_path / "out"),
                    profile="demo", overrides=toy["overrides"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_simulation(toy, tmp_path):
    """Two torchrun 'nodes' on 127.0.0.1 with a static rendezvous form one world of size 2."""
    overrides = json.loads(json.dumps(toy["overrides"]))
    overrides["train"]["stage1"]["epochs"] = 1
    args = run_args("muq", 1, toy["text"], toy["targets"], str(tmp_path / "out"), profile="demo",
                    overrides=overrides)
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
             "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
             "-m", "musictext.train.run", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    state = json.load(open(tmp_path / "out" / "train_state.json"))
    assert state["world_size"] == 2
    assert state["n_train"] == toy["info"]["splits"]["train"]
