"""The optimisation step and its resumable state: precision, accumulation, clipping, position.

Kept apart from the program (run.py) so the step the training program takes is the step a
benchmark or a test drives with batches of its own (bench_train_step, the two-rank test).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from musictext.config import StageConfig
from musictext.train.loss import clip_keys


class Objective(nn.Module):
    """Embedder + loss in one module, so DDP also synchronises the learnable temperature.

    The embedder's head predicts the training space (raw, standardised, whitened or PCA
    coordinates, see target_space); the targets are mapped into the same space here.
    """

    def __init__(self, embedder: nn.Module, loss: nn.Module):
        super().__init__()
        self.embedder = embedder
        self.loss = loss

    def forward(self, input_ids, attention_mask, target, keys=None):
        text = self.embedder.forward_space(input_ids, attention_mask).float()
        # Targets go through the space's projection in fp32: a bf16 matmul against PCA
        # components would blur the small differences between targets.
        with torch.autocast(target.device.type, enabled=False):
            audio = self.embedder.encode_targets(target.float())
        if getattr(self.loss, "uses_keys", False):
            return self.loss(text, audio, keys=keys)
        return self.loss(text, audio)


def param_groups(objective: Objective, st: StageConfig) -> list[dict]:
    """Tower at ``lr``, head and temperature at ``head_lr``; no decay on biases/norms/scale."""
    groups: dict[tuple[str, bool], list] = {}
    for name, p in objective.named_parameters():
        if not p.requires_grad:
            continue
        part = "tower" if name.startswith("embedder.tower.") else "head"
        decay = p.ndim >= 2
        groups.setdefault((part, decay), []).append(p)
    return [
        {
            "params": params,
            "lr": st.lr if part == "tower" else st.head_lr,
            "weight_decay": st.weight_decay if decay else 0.0,
            "name": f"{part}{'' if decay else '_nodecay'}",
        }
        for (part, decay), params in groups.items()
    ]


def warmup_cosine(total_steps: int, warmup_ratio: float):
    """LambdaLR factor: linear warmup over ``warmup_ratio`` of the steps, then cosine to 0."""
    warmup = max(1, int(round(total_steps * warmup_ratio)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bf16 on GPU, fp32 on CPU; fp16 exists only with CUDA (it needs a grad scaler)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    return precision


@dataclass
class Position:
    """Where the run is: ``step`` micro-batches of ``epoch`` are done (the stream resumes there)."""

    epoch: int = 1
    step: int = 0
    optimizer_steps: int = 0
    loss_sum: float = 0.0  # this epoch's micro-batch losses so far (epoch mean survives resume)
    loss_count: int = 0


class TrainLoop:
    """Micro-steps with accumulation under autocast; optimiser step with clipping and schedule."""

    def __init__(self, objective: Objective, model: nn.Module, optimizer, scheduler, *, precision: str,
                 grad_accum: int, grad_clip: float, device: torch.device):
        self.objective, self.model = objective, model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.precision = resolve_precision(precision, device)
        self.grad_accum, self.grad_clip, self.device = grad_accum, grad_clip, device
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.params = [p for p in objective.parameters() if p.requires_grad]
        self.pending = 0  # micro-batches accumulated since the last optimiser step

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def micro_step(self, batch: dict) -> dict[str, float]:
        """Forward + backward of one micro-batch; steps the optimiser every ``grad_accum``."""
        self.pending += 1
        last = self.pending == self.grad_accum
        # Clip keys only for a loss that reads them (the catalogue's): hashing is per-step work.
        wants_keys = getattr(self.objective.loss, "uses_keys", False) and "clip_ids" in batch
        keys = clip_keys(batch["clip_ids"]).to(self.device) if wants_keys else None
        # DDP all-reduces gradients only on the micro-batch that completes an accumulation.
        sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()
        with sync:
            with self.autocast():
                out = self.model(batch["input_ids"].to(self.device, non_blocking=True),
                                 batch["attention_mask"].to(self.device, non_blocking=True),
                                 batch["target"].to(self.device, non_blocking=True), keys)
            self.scaler.scale(out["loss"] / self.grad_accum).backward()
        if last:
            self.optimizer_step()
        return {k: float(v.detach()) for k, v in out.items()}

    def optimizer_step(self) -> None:
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.pending = 0

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"objective": self.objective.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def position_dict(pos: Position) -> dict:
    return asdict(pos)
