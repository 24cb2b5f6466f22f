"""Training losses, chosen by name (``StageConfig.loss``) through a small registry.

A loss is an ``nn.Module`` whose ``forward(text, audio)`` takes [B, D] L2-normalised local rows
(same clip order) and returns a dict: "loss" (what is minimised) plus detached scalars that the
trainer logs as ``train/<key>``; it has a ``temperature`` (float) that the trainer records, so
that stage 2 can continue from stage 1's. ``register_loss(name)`` adds a factory
``(stage_config, temperature) -> module``; the built-in ones are at the end.

ContrastiveLoss (symmetric InfoNCE, + optional MSE to the target) owns the cross-rank gather,
and, with a ``Catalogue`` attached, the text->audio direction also scores every caption against
a catalogue of training targets sharded across ranks (see ``Catalogue``).
Each rank computes the loss of its LOCAL rows against the GLOBAL batch (features of every rank
gathered with autograd). Row ``i`` of rank ``r`` is positive with global column
``r * B + i``: labels are offset by rank, which is correct because every clip occurs once in
the global batch (the sampler shows one caption per clip per epoch). The gather's backward sums
the gradients of all ranks' losses into each rank's local features, and DDP then averages over
ranks, so the update equals that of the single-process loss on the concatenated batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

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


def clip_keys(clip_ids: list[str]) -> torch.Tensor:
    """A stable 63-bit key per clip id (the same on every rank and run), as int64."""
    return torch.tensor(
        [int.from_bytes(hashlib.blake2b(c.encode(), digest_size=8).digest(), "big") >> 1 for c in clip_ids],
        dtype=torch.int64,
    )


class Catalogue(nn.Module):
    """This rank's share of the negatives catalogue: unit rows of training targets in the
    training space, kept in float16, with their clip keys.

    The audio targets are frozen, so any training target is a valid negative for any caption
    (a batch only shows ``batch_size`` of them). Rank r holds rows r::world; each rank scores the
    GLOBAL batch's captions against its rows and the per-rank log-sum-exps are combined, so the
    memory per rank is ``rows / world`` whatever the world size.
    """

    def __init__(self, vectors: torch.Tensor, keys: torch.Tensor, chunk_rows: int = 16384):
        super().__init__()
        if vectors.shape[0] != keys.shape[0]:
            raise ValueError(f"catalogue: {vectors.shape[0]} vectors but {keys.shape[0]} keys")
        self.register_buffer("vectors", vectors.to(torch.float16), persistent=False)
        self.register_buffer("keys", keys.to(torch.int64), persistent=False)
        self.chunk_rows = chunk_rows

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def log_sum_exp(self, scaled_text: torch.Tensor, batch_keys: torch.Tensor) -> torch.Tensor:
        """[G] log-sum-exp over this rank's rows of ``scaled_text @ rows.T``, leaving out the
        rows of clips in the batch (they are the batch's own negatives and positives)."""
        out = torch.full((scaled_text.shape[0],), float("-inf"), device=scaled_text.device)
        for start in range(0, len(self), self.chunk_rows):
            rows = self.vectors[start : start + self.chunk_rows]
            drop = torch.isin(self.keys[start : start + self.chunk_rows], batch_keys)
            # Recomputed in backward: the [G, chunk] logits are never all held at once.
            part = checkpoint(_chunk_lse, scaled_text, rows, drop, use_reentrant=False)
            out = torch.logaddexp(out, part)
        return out


def _chunk_lse(scaled_text: torch.Tensor, rows: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    logits = scaled_text @ rows.to(scaled_text.dtype).T
    return logits.masked_fill(drop, float("-inf")).logsumexp(-1)


class ContrastiveLoss(nn.Module):
    def __init__(
        self,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        mse_weight: float = 0.0,
        max_logit_scale: float = 100.0,
    ):
        super().__init__()
        self.catalogue: Catalogue | None = None
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

    @property
    def uses_keys(self) -> bool:
        return self.catalogue is not None

    def attach_catalogue(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue

    def forward(
        self, text: torch.Tensor, audio: torch.Tensor, keys: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """``text`` and ``audio``: [B, D] L2-normalised local rows (same clip order); ``keys``:
        [B] clip keys (``clip_keys``), needed with a catalogue."""
        rank, size = world()
        if size > 1:
            all_text, all_audio = gather_with_grad(text), gather_with_grad(audio)
        else:
            all_text, all_audio = text, audio
        scale = self.logit_scale
        labels = torch.arange(text.shape[0], device=text.device) + rank * text.shape[0]
        t2a_logits = scale * text @ all_audio.T
        if self.catalogue is None:
            t2a = F.cross_entropy(t2a_logits, labels)
        else:
            t2a = self._catalogue_t2a(t2a_logits, labels, scale * all_text, keys, rank, size)
        a2t = F.cross_entropy(scale * audio @ all_text.T, labels)
        infonce = 0.5 * (t2a + a2t)
        # Squared error summed over the vector (mean over rows): for unit vectors this is
        # 2 - 2cos, independent of the target dimension. A per-element mean would shrink by
        # 1/76,800 for MERT and vanish next to InfoNCE.
        mse = (text - audio).pow(2).sum(-1).mean()
        loss = infonce + self.mse_weight * mse if self.mse_weight else infonce
        return {"loss": loss, "infonce": infonce.detach(), "mse": mse.detach(), "logit_scale": scale.detach()}


    def _catalogue_t2a(self, batch_logits, labels, scaled_all_text, keys, rank: int, size: int):
        """Cross-entropy of each local caption over the global batch's targets plus the whole
        catalogue (its rows of the batch's clips left out, as the batch already holds them)."""
        if keys is None:
            raise ValueError("a catalogue loss needs the batch's clip keys")
        all_keys = _gather_plain(keys.to(batch_logits.device), size)
        # Every rank scores every caption of the global batch against its own catalogue rows;
        # gathering the [G] partial log-sum-exps (with autograd) gives each caption the whole.
        partial = self.catalogue.log_sum_exp(scaled_all_text, all_keys)
        parts = gather_with_grad(partial).view(size, -1) if size > 1 else partial.view(1, -1)
        local = slice(rank * batch_logits.shape[0], (rank + 1) * batch_logits.shape[0])
        catalogue_lse = parts[:, local].logsumexp(0)
        lse = torch.logaddexp(batch_logits.logsumexp(-1), catalogue_lse)
        positive = batch_logits.gather(1, labels.view(-1, 1)).squeeze(1)
        return (lse - positive).mean()


def _gather_plain(t: torch.Tensor, size: int) -> torch.Tensor:
    if size == 1:
        return t
    out = [torch.empty_like(t) for _ in range(size)]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


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
    return ContrastiveLoss(temperature, stage.learn_temperature, max_logit_scale=stage.max_logit_scale)


@register_loss("infonce_mse")
def infonce_mse(stage: StageConfig, temperature: float) -> nn.Module:
    return ContrastiveLoss(temperature, stage.learn_temperature, stage.mse_weight, stage.max_logit_scale)
