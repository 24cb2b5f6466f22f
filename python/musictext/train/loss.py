"""Training losses, chosen by name (``StageConfig.loss``) through a small registry.

A loss is an ``nn.Module`` whose ``forward(text, audio)`` takes [B, D] L2-normalised local rows
(same clip order) and returns a dict: "loss" (what is minimised) plus detached scalars that the
trainer logs as ``train/<key>``; it has a ``temperature`` (float) that the trainer records, so
that stage 2 can continue from stage 1's. ``register_loss(name)`` adds a factory
``(stage_config, temperature) -> module``; the built-in ones are at the end.

ContrastiveLoss (symmetric InfoNCE, + optional MSE to the target) owns the cross-rank gather.
Each rank computes the loss of its LOCAL rows against the GLOBAL batch (features of every rank
gathered with autograd). Row ``i`` of rank ``r`` is positive with global column
``r * B + i``: labels are offset by rank, which is correct because every clip occurs once in
the global batch (the sampler shows one caption per clip per epoch). The gather's backward sums
the gradients of all ranks' losses into each rank's local features, and DDP then averages over
ranks, so the update equals that of the single-process loss on the concatenated batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from musictext.config import LOSS_NAMES, StageConfig


def world() -> tuple[int, int]:
    """(rank, world size), (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` of every rank along dim 0; gradients flow back to each owner."""
    from torch.distributed._functional_collectives import all_gather_single_autograd

    return all_gather_single_autograd(t.contiguous(), 0, dist.group.WORLD)


class ContrastiveLoss(nn.Module):
    def __init__(
        self,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        mse_weight: float = 0.0,
        max_logit_scale: float = 100.0,
    ):
        super().__init__()
        init = torch.tensor(math.log(1.0 / temperature), dtype=torch.float32)
        if learn_temperature:
            self.log_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_scale", init)
        self.mse_weight = float(mse_weight)
        self.max_log_scale = math.log(max_logit_scale)

    @property
    def logit_scale(self) -> torch.Tensor:
        # Clamped so the temperature can neither explode logits nor go above 1 (scale < 1).
        return self.log_scale.clamp(0.0, self.max_log_scale).exp()

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach())

    def forward(self, text: torch.Tensor, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """``text`` and ``audio``: [B, D] L2-normalised local rows (same clip order)."""
        rank, size = world()
        if size > 1:
            all_text, all_audio = gather_with_grad(text), gather_with_grad(audio)
        else:
            all_text, all_audio = text, audio
        scale = self.logit_scale
        labels = torch.arange(text.shape[0], device=text.device) + rank * text.shape[0]
        t2a = F.cross_entropy(scale * text @ all_audio.T, labels)
        a2t = F.cross_entropy(scale * audio @ all_text.T, labels)
        infonce = 0.5 * (t2a + a2t)
        # Squared error summed over the vector (mean over rows): for unit vectors this is
        # 2 - 2cos, independent of the target dimension. A per-element mean would shrink by
        # 1/76,800 for MERT and vanish next to InfoNCE.
        mse = (text - audio).pow(2).sum(-1).mean()
        loss = infonce + self.mse_weight * mse if self.mse_weight else infonce
        return {"loss": loss, "infonce": infonce.detach(), "mse": mse.detach(), "logit_scale": scale.detach()}


# -- the registry ---------------------------------------------------------------------------
LossFactory = Callable[[StageConfig, float], nn.Module]
LOSSES: dict[str, LossFactory] = {}


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Decorator: make ``factory(stage, temperature)`` the loss that ``loss: <name>`` selects.

    The name is also added to the names a config accepts. The training processes must import
    the module that registers it (built-in losses live here for that reason).
    """

    def add(factory: LossFactory) -> LossFactory:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = factory
        LOSS_NAMES.add(name)
        return factory

    return add


def build_loss(stage: StageConfig, temperature: float) -> nn.Module:
    """The loss ``stage.loss`` names, starting at ``temperature`` (stage 2: stage 1's learned one)."""
    try:
        factory = LOSSES[stage.loss]
    except KeyError:
        raise ValueError(f"no loss registered as {stage.loss!r}; registered: {', '.join(sorted(LOSSES))}") from None
    return factory(stage, temperature)


@register_loss("infonce")
def infonce(stage: StageConfig, temperature: float) -> nn.Module:
    return ContrastiveLoss(temperature, stage.learn_temperature)


@register_loss("infonce_mse")
def infonce_mse(stage: StageConfig, temperature: float) -> nn.Module:
    return ContrastiveLoss(temperature, stage.learn_temperature, stage.mse_weight)
