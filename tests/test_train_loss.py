"""ContrastiveLoss: hand examples, and the cross-rank gather against the single-process loss;
the loss registry that the stage config chooses from."""

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from pydantic import ValidationError

from musictext.config import LOSS_NAMES, StageConfig, TrainConfig
from musictext.train.loss import LOSSES, ContrastiveLoss, build_loss, register_loss

WORLD = 2


def test_hand_value_two_pairs():
    # scale 1, logits [[1,0],[0,1]] -> CE per row = log(1 + e^-1), both directions alike.
    loss = ContrastiveLoss(temperature=1.0, learn_temperature=False)
    eye = torch.eye(2)
    out = loss(eye, eye)
    assert out["infonce"].item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert out["mse"].item() == pytest.approx(0.0)


def test_aligned_low_misaligned_high():
    loss = ContrastiveLoss(temperature=0.01, learn_temperature=False)
    eye = torch.eye(4)
    assert loss(eye, eye)["loss"].item() < 1e-3
    assert loss(eye, eye.flip(0))["loss"].item() > 10.0


def test_symmetric_in_text_and_audio():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    loss = ContrastiveLoss(temperature=0.1)
    assert loss(a, b)["infonce"].item() == pytest.approx(loss(b, a)["infonce"].item(), abs=1e-6)
    # and it is not the one-directional loss: t2a alone differs on random data
    t2a = F.cross_entropy(10 * a @ b.T, torch.arange(6)).item()
    assert loss(a, b)["infonce"].item() != pytest.approx(t2a, abs=1e-4)


def test_mse_term_weighted():
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    plain = ContrastiveLoss(temperature=1.0, learn_temperature=False)(e1, e2)
    weighted = ContrastiveLoss(temperature=1.0, learn_temperature=False, mse_weight=0.5)(e1, e2)
    assert plain["mse"].item() == pytest.approx(2.0)  # |e1 - e2|^2
    assert weighted["loss"].item() == pytest.approx(plain["loss"].item() + 1.0)


def test_temperature_learnable_and_clamped():
    assert len(list(ContrastiveLoss(learn_temperature=False).parameters())) == 0
    learn = ContrastiveLoss(temperature=0.07)
    assert [n for n, _ in learn.named_parameters()] == ["log_scale"]
    assert learn.temperature == pytest.approx(0.07, rel=1e-5)
    assert ContrastiveLoss(temperature=1e-4).logit_scale.item() == pytest.approx(100.0, rel=1e-5)
    x = F.normalize(torch.randn(4, 3), dim=-1)
    learn(x, x.roll(1, 0))["loss"].backward()
    assert learn.log_scale.grad is not None and learn.log_scale.grad.item() != 0.0


# -- the registry ----------------------------------------------------------------------------
def test_default_losses_reproduce_the_stage_objectives():
    train = TrainConfig()
    assert (train.stage1.loss, train.stage2.loss) == ("infonce", "infonce_mse")
    assert StageConfig(mse_weight=0.5).loss == "infonce_mse"  # a config file that only sets the weight
    assert set(LOSSES) == LOSS_NAMES  # every name a config accepts builds a loss
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    for stage, weight in ((train.stage1, 0.0), (train.stage2, 1.0), (StageConfig(loss="infonce", mse_weight=1.0), 0.0)):
        built = build_loss(stage, 0.2)
        assert type(built) is ContrastiveLoss and built.mse_weight == weight
        # bit-identical to the loss the trainer constructed before the registry existed
        assert torch.equal(built(a, b)["loss"], ContrastiveLoss(0.2, stage.learn_temperature, weight)(a, b)["loss"])


def test_unknown_loss_fails_at_config_validation():
    with pytest.raises(ValidationError, match="unknown loss 'infonse'; known losses: infonce, infonce_mse"):
        StageConfig(loss="infonse")
    with pytest.raises(ValidationError, match="unknown loss"):
        TrainConfig.model_validate({"stage2": {"loss": "triplet"}})


@pytest.fixture
def registered():
    names = []
    yield names
    for name in names:
        LOSSES.pop(name, None)
        LOSS_NAMES.discard(name)


def test_registering_a_loss_makes_it_selectable(registered):
    class Cosine(torch.nn.Module):
        def __init__(self, temperature):
            super().__init__()
            self.temperature = temperature

        def forward(self, text, audio):
            gap = 1.0 - (text * audio).sum(-1).mean()
            return {"loss": gap}

    with pytest.raises(ValidationError, match="unknown loss 'cosine'"):
        StageConfig(loss="cosine")
    registered.append("cosine")
    register_loss("cosine")(lambda stage, temperature: Cosine(temperature))
    stage = StageConfig(loss="cosine", temperature=0.3)
    built = build_loss(stage, stage.temperature)
    assert isinstance(built, Cosine) and built.temperature == 0.3
    assert built(torch.eye(2), torch.eye(2))["loss"].item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("infonce")(lambda stage, temperature: Cosine(temperature))


# -- two gloo ranks --------------------------------------------------------------------------
def _batch():
    g = torch.Generator().manual_seed(1)
    text = F.normalize(torch.randn(2 * WORLD, 8, generator=g), dim=-1)
    audio = F.normalize(torch.randn(2 * WORLD, 8, generator=g), dim=-1)
    return text, audio


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    text, audio = _batch()
    rows = slice(2 * rank, 2 * rank + 2)
    t = text[rows].clone().requires_grad_(True)
    a = audio[rows].clone().requires_grad_(True)
    loss = ContrastiveLoss(temperature=0.2, mse_weight=0.3)
    out = loss(t, a)
    out["loss"].backward()
    torch.save(
        {"loss": out["loss"].detach(), "t": t.grad, "a": a.grad, "scale": loss.log_scale.grad},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gather_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    text, audio = _batch()
    text.requires_grad_(True)
    audio.requires_grad_(True)
    ref_loss = ContrastiveLoss(temperature=0.2, mse_weight=0.3)
    ref = ref_loss(text, audio)
    ref["loss"].backward()

    # The mean of the local losses is the loss of the concatenated batch...
    mean_loss = sum(r["loss"] for r in ranks) / WORLD
    assert mean_loss.item() == pytest.approx(ref["loss"].item(), abs=1e-5)
    # ...and gradients flow across ranks: each rank's local rows get the sum over all ranks'
    # losses, which DDP's averaging turns into the gradient of the global loss (factor WORLD).
    got_t = torch.cat([r["t"] for r in ranks]) / WORLD
    got_a = torch.cat([r["a"] for r in ranks]) / WORLD
    torch.testing.assert_close(got_t, text.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_a, audio.grad, atol=1e-5, rtol=1e-4)
    mean_scale = sum(r["scale"] for r in ranks) / WORLD
    assert mean_scale.item() == pytest.approx(ref_loss.log_scale.grad.item(), abs=1e-5)
