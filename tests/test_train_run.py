"""The training program through torchrun: a toy task that must be learned, stage 2 on DDP,
a simulated two-node run, failures surfacing with the log tail, and a loss chosen by config."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from musictext.config import load_family_config
from musictext.metrics import chance_metrics
from musictext.train.launch import PROGRAM, LocalConfig, TrainJobSpec, launch
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


def _job(toy, stage: int, out_dir: str, **what) -> TrainJobSpec:
    """The toy task's job: a resolved ``config=``, or by default the muq demo family + overrides."""
    source = {} if "config" in what else {"family": "muq", "profile": "demo", "overrides": toy["overrides"]}
    where = {"text_dir": toy["text"], "targets_dir": toy["targets"], "out_dir": out_dir}
    return TrainJobSpec(**{**source, **where, **what, "stage": stage})


@pytest.fixture(scope="module", autouse=True)
def _env():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["MUSICTEXT_PROGRESS"] = "0"


@pytest.fixture(scope="module")
def stage1(toy):
    cfg = load_family_config("muq", "demo", toy["overrides"])
    out = str(toy["root"] / "stage1")
    state = launch(_job(toy, 1, out, config=cfg, log_dir=str(toy["root"] / "tb")), LocalConfig())
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
    assert not os.path.exists(os.path.join(out, "checkpoints"))  # a finished stage keeps its model/ only
    model = TextEmbedder.from_pretrained(os.path.join(out, "model"))
    vec = model.embed_text("a happy rock song with piano")
    assert vec.shape == (3 * BLOCK,)
    assert abs(float((vec**2).sum()) - 1.0) < 1e-5


def test_stage2_from_stage1_on_two_processes(stage1, toy):
    out1, state1 = stage1
    out2 = str(toy["root"] / "stage2")
    state = launch(_job(toy, 2, out2, init_dir=out1), LocalConfig(nproc_per_node=2))
    assert state["world_size"] == 2 and state["stage"] == 2
    # stage 2 continues from stage 1 (and its learned temperature) rather than from scratch
    assert state["temperature"] != pytest.approx(0.07)
    assert state["valid_init"]["R@1"] == pytest.approx(state1["best_valid_r1"])  # starts from stage 1's best
    assert state["best_valid_r1"] >= state1["best_valid_r1"]
    assert state["best_valid_r1"] == max([state["valid_init"]["R@1"]] + [v["R@1"] for v in state["valid"]])
    assert os.path.isdir(os.path.join(out2, "model"))


def test_failure_raises_with_log_tail(toy, tmp_path):
    with pytest.raises(RuntimeError, match=r"(?s)training failed \(exit \d+\).*missing"):
        launch(_job(toy, 1, str(tmp_path / "out"), text_dir=str(tmp_path / "missing")), LocalConfig())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_simulation(toy, tmp_path):
    """Two torchrun 'nodes' on 127.0.0.1 with a static rendezvous form one world of size 2."""
    overrides = json.loads(json.dumps(toy["overrides"]))
    overrides["train"]["stage1"]["epochs"] = 1
    args = _job(toy, 1, str(tmp_path / "out"), overrides=overrides).program_args()
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
             "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
             "-m", PROGRAM, *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    state = json.load(open(tmp_path / "out" / "train_state.json"))
    assert state["world_size"] == 2
    assert state["n_train"] == toy["info"]["splits"]["train"]


class _CosineLoss(torch.nn.Module):
    """A loss with no temperature to learn: mean 1 - cos(text, target)."""

    temperature = 0.5

    def forward(self, text, audio):
        gap = 1.0 - (text * audio).sum(-1).mean()
        return {"loss": gap, "gap": gap.detach()}


@pytest.fixture
def cosine_loss():
    """Registers "test_cosine" for one test; records the stage configs it was built for."""
    from musictext.config import LOSS_NAMES
    from musictext.train.loss import LOSSES, register_loss

    built = []

    @register_loss("test_cosine")
    def make(stage, temperature):
        built.append((stage, temperature))
        return _CosineLoss()

    yield built
    LOSSES.pop("test_cosine")
    LOSS_NAMES.discard("test_cosine")


def test_registered_loss_is_chosen_by_config(toy, tmp_path, cosine_loss):
    """The training program builds whatever loss the stage config names (in-process: world 1)."""
    from musictext.train.run import parse_args, run

    overrides = json.loads(json.dumps(toy["overrides"]))
    overrides["train"]["stage1"].update(epochs=2, loss="test_cosine", negatives="batch")
    args = _job(toy, 1, str(tmp_path / "out"), overrides=overrides).program_args()
    state = run(parse_args(args))
    ((stage, temperature),) = cosine_loss
    assert stage.loss == "test_cosine" and temperature == stage.temperature
    assert state["temperature"] == 0.5  # recorded from the registered module, not InfoNCE's
    # 1 - cos of unit vectors lies in [0, 2]; InfoNCE on 32-row batches would start near log(32) > 3
    assert all(0.0 <= loss <= 2.0 for loss in state["losses"]) and state["losses"][-1] < state["losses"][0]
