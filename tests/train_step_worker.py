"""A few training steps of the real loop on fixed global batches, as one process or as one rank
of a torchrun world (each rank feeding its slice of every global batch). tests/test_train_loop.py
compares the two: the loss's cross-rank gather (batch and catalogue negatives) and DDP must make
them one computation.

    python -m tests.train_step_worker BASE OUT [--negatives batch|catalogue] [--steps N]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel as DDP

from musictext.config import StageConfig, TextConfig
from musictext.text_encoder import TextEmbedder
from musictext.train.loop import Objective, TrainLoop, param_groups, warmup_cosine
from musictext.train.loss import Catalogue, build_loss, clip_keys

GLOBAL_BATCH, DIM, SEQ, EXTRA = 8, 24, 7, 20


def global_batches(steps: int, vocab: int) -> list[dict]:
    rng = np.random.default_rng(123)
    out = []
    for s in range(steps):
        target = rng.standard_normal((GLOBAL_BATCH, DIM)).astype(np.float32)
        out.append({
            "input_ids": torch.from_numpy(rng.integers(5, vocab, size=(GLOBAL_BATCH, SEQ))),
            "attention_mask": torch.ones(GLOBAL_BATCH, SEQ, dtype=torch.long),
            "target": torch.from_numpy(target / np.linalg.norm(target, axis=1, keepdims=True)),
            "clip_ids": [f"step{s}-clip{i}" for i in range(GLOBAL_BATCH)],
        })
    return out


def catalogue_rows(batches: list[dict]) -> tuple[torch.Tensor, list[str]]:
    """Every batch's targets plus EXTRA others: what a catalogue of training targets holds."""
    extra = np.random.default_rng(7).standard_normal((EXTRA, DIM)).astype(np.float32)
    rows = torch.cat([b["target"] for b in batches] + [torch.from_numpy(extra)])
    ids = [c for b in batches for c in b["clip_ids"]] + [f"extra{i}" for i in range(EXTRA)]
    return rows, ids


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("base")
    p.add_argument("out")
    p.add_argument("--negatives", default="batch")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if world > 1:
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    embedder = TextEmbedder.from_base(TextConfig(base_model=args.base, hidden_dim=32), DIM)
    embedder.tower.eval()  # no dropout: the two runs must draw nothing random
    st = StageConfig(batch_size=GLOBAL_BATCH // world, lr=1e-3, head_lr=1e-2, mse_weight=0.5)
    loss = build_loss(st, 0.1)
    objective = Objective(embedder, loss)
    batches = global_batches(args.steps, embedder.tokenizer.vocab_size)
    if args.negatives == "catalogue":
        rows, ids = catalogue_rows(batches)
        with torch.no_grad():
            vectors = embedder.encode_targets(rows)
        keys = clip_keys(ids)
        loss.attach_catalogue(Catalogue(vectors[rank::world], keys[rank::world], chunk_rows=7))
    model = DDP(objective, broadcast_buffers=False) if world > 1 else objective
    optimizer = torch.optim.AdamW(param_groups(objective, st))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(args.steps, 0.3))
    loop = TrainLoop(objective, model, optimizer, scheduler, precision="fp32", grad_accum=1,
                     grad_clip=1.0, device=torch.device("cpu"))
    part = slice(rank * st.batch_size, (rank + 1) * st.batch_size)
    losses = []
    for batch in batches:
        mine = {k: v[part] for k, v in batch.items()}
        out = loop.micro_step(mine)
        losses.append(out["loss"])
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, losses)
        losses = list(np.mean(gathered, axis=0))
    if rank == 0:
        state = {k: v.detach().clone().contiguous() for k, v in objective.state_dict().items()}
        state["losses"] = torch.tensor(losses, dtype=torch.float64)
        save_file(state, args.out)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
