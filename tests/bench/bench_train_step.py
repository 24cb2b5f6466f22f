"""Training step overhead: our loop (stream -> TrainLoop.micro_step) vs a bare PyTorch loop doing
the same forward + backward + clip + AdamW + schedule step on the same batches.

    python -m tests.bench.bench_train_step [--family muq] [--batch 32] [--steps 30]

The two loops start from the same weights and alternate step by step on the very batch ours just
drew (which one goes first alternates too), so machine noise hits both alike; the ratio is the
geometric mean of the per-pair ratios, warm-up steps excluded. Production text side
(all-MiniLM-L6-v2 + the family's head width) at the family's production target dimension. Prints one line:
    train-step: ours/bare <ratio> (<family>, batch <b>, <k> paired steps)
and writes build/bench/train_step.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from musictext.config import load_family_config
from musictext.hub import resolve_pretrained
from musictext.text_encoder import TextEmbedder
from musictext.train.loop import Objective, TrainLoop, param_groups, warmup_cosine
from musictext.train.loss import build_loss
from musictext.train.stream import PairStream, build_cache
from tests.toy import write_toy_dataset

ROOT = Path(__file__).resolve().parents[2]
WARMUP = 3


def bare_step(embedder, log_scale, optimizer, scheduler, params, batch, grad_clip: float) -> float:
    """What any PyTorch user would write: forward, symmetric InfoNCE, backward, clip, step."""
    text = F.normalize(embedder.head(_pooled(embedder, batch)), dim=-1)
    audio = F.normalize(batch["target"], dim=-1)
    scale = log_scale.clamp(0, math.log(100.0)).exp()
    labels = torch.arange(len(text))
    loss = 0.5 * (F.cross_entropy(scale * text @ audio.T, labels) + F.cross_entropy(scale * audio @ text.T, labels))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return float(loss.detach())


def _pooled(embedder, batch):
    hidden = embedder.tower(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="muq")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    cfg = load_family_config(args.family, "production")
    st = cfg.train.stage1
    dim = cfg.audio.target_dim
    base = resolve_pretrained(cfg.text.base_model)
    with tempfile.TemporaryDirectory(prefix="bench-train-step-") as tmp:
        n_clips = (args.steps + WARMUP + 2) * args.batch * 2
        write_toy_dataset(f"{tmp}/text", f"{tmp}/targets", AutoTokenizer.from_pretrained(base),
                          n_clips=n_clips, block_dim=dim // 3, splits=(1.0, 0.0, 0.0))
        index = build_cache(f"{tmp}/text", f"{tmp}/targets", f"{tmp}/cache", cfg.text.max_length)
        stream = PairStream(index, "train", args.batch, 0, 1, 0, 1.0)
        torch.manual_seed(0)
        ours = TextEmbedder.from_base(cfg.text, dim).train()
        bare = copy.deepcopy(ours)
        for m in (ours, bare):
            m.tower.eval()  # no dropout: both loops compute the same numbers
        objective = Objective(ours, build_loss(st, st.temperature))
        optimizer = torch.optim.AdamW(param_groups(objective, st))
        total = args.steps + WARMUP
        loop = TrainLoop(objective, objective, optimizer,
                         torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, st.warmup_ratio)),
                         precision="fp32", grad_accum=1, grad_clip=cfg.train.grad_clip, device=torch.device("cpu"))
        log_scale = torch.nn.Parameter(torch.tensor(math.log(1 / st.temperature)))
        bare_params = [*bare.parameters(), log_scale]
        bare_opt = torch.optim.AdamW(bare_params, lr=st.lr, weight_decay=st.weight_decay)
        bare_sched = torch.optim.lr_scheduler.LambdaLR(bare_opt, warmup_cosine(total, st.warmup_ratio))
        batches = stream.batches(1)
        t_ours, t_bare, gaps = [], [], []
        for i in range(total):
            start = time.perf_counter()
            batch = next(batches)  # drawing the batch is part of our loop's step
            fetch = time.perf_counter() - start
            # Which loop steps first alternates, so neither always runs on a warmer cache.
            for which in ("ours", "bare") if i % 2 == 0 else ("bare", "ours"):
                start = time.perf_counter()
                if which == "ours":
                    out = loop.micro_step(batch)
                    t_ours.append(fetch + time.perf_counter() - start)
                else:
                    loss = bare_step(bare, log_scale, bare_opt, bare_sched, bare_params, batch, cfg.train.grad_clip)
                    t_bare.append(time.perf_counter() - start)
            gaps.append(abs(out["loss"] - loss))
    ours_s, bare_s = float(np.median(t_ours[WARMUP:])), float(np.median(t_bare[WARMUP:]))
    # The geometric mean of the per-pair ratios: a pair runs back to back, so slow phases of a
    # shared machine cancel within it, and the order alternates, so the second runner's cache
    # advantage cancels between pairs (a median would sit between the two orders' clusters).
    pairs = np.array(t_ours[WARMUP:]) / np.array(t_bare[WARMUP:])
    ratio = float(np.exp(np.log(pairs).mean()))
    order = np.arange(WARMUP, total) % 2 == 0  # ours stepped first
    by_order = {"ours_first": float(np.exp(np.log(pairs[order]).mean())),
                "bare_first": float(np.exp(np.log(pairs[~order]).mean()))}
    print(f"train-step: ours/bare {ratio:.2f} ({args.family}, batch {args.batch}, {args.steps} paired steps)")
    result = {"family": args.family, "batch": args.batch, "steps": args.steps, "dim": dim,
              "ours_median_s": ours_s, "bare_median_s": bare_s, "ratio": ratio, "ratio_by_order": by_order,
              "first_step_loss_gap": gaps[0]}
    out_dir = ROOT / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_step.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
