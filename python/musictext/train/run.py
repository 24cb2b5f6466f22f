"""The training program: ``python -m musictext.train.run`` (plain, or under ``torchrun``).

Plain torch DDP rather than accelerate: the only distributed pieces we need are the process
group torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK), a DistributedSampler and DDP, and the
contrastive loss must own its cross-rank gather explicitly — an extra wrapper would hide where
the communication happens without removing any of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

from musictext import storage
from musictext.config import FamilyConfig, StageConfig, load_family_config
from musictext.metrics import chance_metrics, cosine_matrix, retrieval_metrics
from musictext.hub import is_remote
from musictext.logs import progress, setup_logging
from musictext.layout import MODEL_DIR, STATE_FILE
from musictext.pairs import SplitData, load_splits, target_dim
from musictext.train.data import CaptionPairs, collate, first_caption_pairs
from musictext.train.loss import build_loss
from musictext.text_encoder import TextEmbedder

log = logging.getLogger("musictext.train")



# -- process group --------------------------------------------------------------------------
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Read torchrun's env; join a process group when there is more than one process."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def mean_over_ranks(value: float, d: Dist) -> float:
    if d.world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item()) / d.world


# -- configuration --------------------------------------------------------------------------
def _json_arg(value: str | None) -> dict:
    """A JSON object given inline or as a path to a file."""
    if not value:
        return {}
    text = value if value.lstrip().startswith("{") else Path(value).read_text()
    return json.loads(text)


def load_config(args: argparse.Namespace) -> FamilyConfig:
    if args.config_json:
        return FamilyConfig.model_validate(_json_arg(args.config_json))
    return load_family_config(args.family, args.profile, _json_arg(args.overrides_json))


def stage_config(cfg: FamilyConfig, stage: int) -> StageConfig:
    return cfg.train.stage1 if stage == 1 else cfg.train.stage2


# -- model and optimisation -----------------------------------------------------------------
class Objective(nn.Module):
    """Embedder + loss in one module, so DDP also synchronises the learnable temperature."""

    def __init__(self, embedder: TextEmbedder, loss: nn.Module):
        super().__init__()
        self.embedder = embedder
        self.loss = loss

    def forward(self, input_ids, attention_mask, target):
        return self.loss(self.embedder(input_ids, attention_mask), target)


def build_text_embedder(cfg: FamilyConfig, dim: int, init_dir: str | None) -> TextEmbedder:
    if init_dir:
        model = TextEmbedder.from_pretrained(storage.join(init_dir, MODEL_DIR))
        if model.target_dim != dim:
            raise ValueError(f"{init_dir}: model predicts {model.target_dim}-D, targets are {dim}-D")
        return model.train()
    return TextEmbedder.from_base(cfg.text, dim).train()


def initial_temperature(st: StageConfig, init_dir: str | None) -> float:
    # Stage 2 continues from the temperature stage 1 learned (when it learned one).
    if init_dir and st.learn_temperature:
        uri = storage.join(init_dir, STATE_FILE)
        if storage.exists(uri):
            return float(storage.read_json(uri).get("temperature", st.temperature))
    return st.temperature


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
    warmup = max(1, int(round(total_steps * warmup_ratio)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


# -- validation and saving ------------------------------------------------------------------
@torch.no_grad()
def validate(embedder: TextEmbedder, data: SplitData, pad_id: int, device, batch_size: int = 128) -> dict:
    """Text→audio retrieval over the split's clips (query: each clip's first caption)."""
    embedder.eval()
    pairs = first_caption_pairs(data)
    make = collate(pad_id)
    out = []
    for start in range(0, len(pairs), batch_size):
        b = make(pairs[start : start + batch_size])
        out.append(embedder(b["input_ids"].to(device), b["attention_mask"].to(device)).float().cpu().numpy())
    embedder.train()
    sim = cosine_matrix(np.concatenate(out), data.targets)
    return retrieval_metrics(sim, np.arange(len(pairs)))


def save_model(embedder: TextEmbedder, out_dir: str) -> None:
    embedder.save_to(storage.join(out_dir, MODEL_DIR))


class Board:
    """TensorBoard on rank 0; a bucket log dir is written locally and uploaded at close."""

    def __init__(self, log_dir: str | None, enabled: bool):
        self.writer = None
        self.remote = log_dir if log_dir and is_remote(log_dir) else None
        if not (log_dir and enabled):
            return
        from torch.utils.tensorboard import SummaryWriter

        self.local = tempfile.mkdtemp(prefix="tb-") if self.remote else log_dir
        self.writer = SummaryWriter(self.local)

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if not self.writer:
            return
        self.writer.close()
        if self.remote:
            fs, path = storage.fs_for(self.remote)
            fs.put(self.local + "/", path, recursive=True)


# -- the loop -------------------------------------------------------------------------------
def train_one_epoch(objective, loader, optimizer, scheduler, grad_clip, d: Dist, epoch: int, board) -> dict:
    objective.train()
    params = [p for p in objective.parameters() if p.requires_grad]
    losses, seconds = [], []
    batches = progress(loader, desc=f"epoch {epoch}", total=len(loader)) if d.main else loader
    for batch in batches:
        start = time.perf_counter()
        batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
        out = objective(batch["input_ids"], batch["attention_mask"], batch["target"])
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        seconds.append(time.perf_counter() - start)
        losses.append(float(out["loss"].detach()))
        step = scheduler.last_epoch
        if d.main and step % 10 == 0:
            board.scalars({f"train/{key}": float(value.detach()) for key, value in out.items()}, step)
    return {
        "loss": mean_over_ranks(float(np.mean(losses)) if losses else float("nan"), d),
        "steps": len(losses),
        "seconds_per_step": float(np.mean(seconds)) if seconds else float("nan"),
    }


def run(args: argparse.Namespace) -> dict:
    setup_logging()
    d = init_distributed()
    cfg = load_config(args)
    st = stage_config(cfg, args.stage)
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)
    t0 = time.perf_counter()

    dim = target_dim(args.targets_dir)
    embedder = build_text_embedder(cfg, dim, args.init_dir)
    embedder.freeze(st.freeze_layers)
    max_len = embedder.max_length
    splits = load_splits(args.text_dir, args.targets_dir, ("train", "valid"), max_len)
    train_data, valid_data = splits["train"], splits["valid"]
    if len(train_data) < 2:
        raise ValueError(f"{args.text_dir}: {len(train_data)} usable training clips; need at least 2")
    pad_id = embedder.tokenizer.pad_token_id or 0

    loss = build_loss(st, initial_temperature(st, args.init_dir))
    objective = Objective(embedder, loss).to(d.device)
    model = objective
    if d.world > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        model = DDP(objective, device_ids=ids, broadcast_buffers=False)

    dataset = CaptionPairs(train_data, seed=cfg.train.seed)
    # drop_last: no padding with repeated clips, which would put false negatives in a batch.
    sampler = DistributedSampler(dataset, d.world, d.rank, shuffle=True, seed=cfg.train.seed, drop_last=True)
    per_rank = len(sampler)
    batch = min(st.batch_size, per_rank)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, collate_fn=collate(pad_id),
                        drop_last=per_rank >= 2 * batch)
    total_steps = st.epochs * len(loader)
    optimizer = torch.optim.AdamW(param_groups(objective, st))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, st.warmup_ratio))

    if d.main:
        log.info(
            "%s stage %d: %d train / %d valid clips, dim %d, world %d, batch %d/rank, %d steps",
            cfg.family, args.stage, len(train_data), len(valid_data), dim, d.world, batch, total_steps,
        )
    board = Board(args.log_dir, d.main)
    state = {
        "family": cfg.family, "stage": args.stage, "epochs": st.epochs, "world_size": d.world,
        "batch_size_per_rank": batch, "n_train": len(train_data), "n_valid": len(valid_data),
        "target_dim": dim, "losses": [], "valid": [], "best_epoch": None, "best_valid_r1": None,
        "valid_chance_r1": chance_metrics(len(valid_data))["R@1"] if len(valid_data) else None,
    }
    best_key = (-1.0, -1.0)
    if d.main and args.init_dir and len(valid_data):
        # Stage 2 must not end worse than where it started: the initial model is "epoch 0".
        vm0 = validate(embedder, valid_data, pad_id, d.device)
        state["valid_init"] = vm0
        best_key = (vm0["R@1"], vm0["MRR"])
        state["best_epoch"], state["best_valid_r1"] = 0, vm0["R@1"]
        save_model(embedder, args.out_dir)
        log.info("initial model: valid R@1 %.3f MRR %.3f", vm0["R@1"], vm0["MRR"])
    step_seconds = []
    for epoch in range(1, st.epochs + 1):
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)
        stats = train_one_epoch(model, loader, optimizer, scheduler, cfg.train.grad_clip, d, epoch, board)
        step_seconds.append(stats["seconds_per_step"])
        state["losses"].append(stats["loss"])
        if d.main:
            vm = validate(embedder, valid_data, pad_id, d.device) if len(valid_data) else {}
            state["valid"].append(vm)
            board.scalars({f"valid/{k}": v for k, v in vm.items()} | {"train/epoch_loss": stats["loss"]}, epoch)
            key = (vm.get("R@1", 0.0), vm.get("MRR", 0.0)) if vm else (float(epoch), 0.0)
            improved = key > best_key
            if improved:
                best_key = key
                state["best_epoch"], state["best_valid_r1"] = epoch, vm.get("R@1")
                save_model(embedder, args.out_dir)
            log.info(
                "epoch %d/%d loss %.4f valid R@1 %s MRR %s T %.4f %.2fs/step%s",
                epoch, st.epochs, stats["loss"], _fmt(vm.get("R@1")), _fmt(vm.get("MRR")),
                loss.temperature, stats["seconds_per_step"], " (best, saved)" if improved else "",
            )
            # One machine-readable line per epoch on stdout (the log goes to stderr).
            print(json.dumps({"stage": args.stage, "epoch": epoch, "loss": stats["loss"],
                              "valid": vm, "temperature": loss.temperature}), flush=True)
        barrier(d)

    state.update(
        temperature=loss.temperature,
        seconds=time.perf_counter() - t0,
        seconds_per_step=float(np.nanmean(step_seconds)),
        steps_per_epoch=len(loader),
    )
    if d.main:
        storage.write_json(storage.join(args.out_dir, STATE_FILE), state)
        log.info("done in %.1fs; best epoch %s valid R@1 %s", state["seconds"], state["best_epoch"],
                 _fmt(state["best_valid_r1"]))
    board.close()
    barrier(d)
    if d.world > 1:
        dist.destroy_process_group()
    return state


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m musictext.train.run", description=__doc__.splitlines()[0])
    p.add_argument("--family", help="muq | mert | music2latent (with --profile/--overrides-json)")
    p.add_argument("--profile", default="production")
    p.add_argument("--overrides-json", help="nested config overrides: inline JSON or a file path")
    p.add_argument("--config-json", help="a complete FamilyConfig (inline JSON or file); wins over --family")
    p.add_argument("--stage", type=int, choices=(1, 2), required=True)
    p.add_argument("--text-dir", required=True)
    p.add_argument("--targets-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--init-dir", help="stage 2: the stage 1 out dir to start from")
    p.add_argument("--log-dir", help="TensorBoard directory (local or bucket)")
    args = p.parse_args(argv)
    if not (args.family or args.config_json):
        p.error("one of --family or --config-json is required")
    return args


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
