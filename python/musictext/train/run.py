"""The training program: ``python -m musictext.train`` (plain, or under ``torchrun``).

Plain torch DDP rather than accelerate: the only distributed pieces we need are the process
group torchrun describes (RANK/WORLD_SIZE/LOCAL_RANK) and DDP, and the contrastive loss must own
its cross-rank gather explicitly -- an extra wrapper would hide where the communication happens
without removing any of it.

Data streams from a node-local cache of the Parquet shards (train.stream), each rank reading its
own blocks within a memory budget; checkpoints (train.checkpoint) hold everything needed to
continue bit-exactly (on CPU) with ``--resume``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from transformers import AutoConfig

from musictext import layout, storage
from musictext.config import FamilyConfig, StageConfig, load_family_config
from musictext.hub import is_remote, resolve_pretrained
from musictext.layout import CHECKPOINTS, MODEL_DIR, STATE_FILE
from musictext.logs import progress, setup_logging
from musictext.metrics import chance_metrics, metrics_from_ranks, rank_queries
from musictext.pairs import target_dim
from musictext.target_space import TargetSpace
from musictext.text_encoder import TextEmbedder
from musictext.train.checkpoint import CheckpointStore, rng_state, set_rng_state
from musictext.train.loop import Objective, Position, TrainLoop, param_groups, warmup_cosine
from musictext.train.loss import Catalogue, build_loss, clip_keys
from musictext.train.stream import (
    GIB, RUNTIME_RESERVE, PairStream, build_cache, iter_rows, pad_token_lists, sample_targets,
)

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


# -- model ---------------------------------------------------------------------------------
def build_text_embedder(cfg: FamilyConfig, index, init_dir: str | None, d: Dist) -> TextEmbedder:
    """Stage 2 continues stage 1's model (its target space included); stage 1 starts from the
    base text model with the configured target space fitted on a sample of training targets."""
    dim = index.dim
    if init_dir:
        model = TextEmbedder.from_pretrained(storage.join(init_dir, MODEL_DIR))
        if model.target_dim != dim:
            raise ValueError(f"{init_dir}: model predicts {model.target_dim}-D, targets are {dim}-D")
        return model.train()
    space = None
    if cfg.text.target_space != "raw":
        sample = sample_targets(index, "train", cfg.text.space_fit_rows, cfg.train.seed)
        space = TargetSpace.fit(cfg.text.target_space, sample, cfg.text.space_dim)
        log.info("target space %s fitted on %d training targets: %d-D -> %d-D",
                 cfg.text.target_space, len(sample), dim, space.dim)
    return TextEmbedder.from_base(cfg.text, dim, space=space).train()


def initial_temperature(st: StageConfig, init_dir: str | None) -> float:
    # Stage 2 continues from the temperature stage 1 learned (when it learned one).
    if init_dir and st.learn_temperature:
        uri = storage.join(init_dir, STATE_FILE)
        if storage.exists(uri):
            return float(storage.read_json(uri).get("temperature", st.temperature))
    return st.temperature


def build_catalogue(embedder: TextEmbedder, index, st: StageConfig, d: Dist) -> Catalogue:
    """This rank's share of the training targets, in the training space, as float16 rows."""
    limit = math.ceil(st.catalogue_size / d.world) if st.catalogue_size else None
    vectors, keys, n = [], [], 0
    with torch.no_grad():
        for clip_ids, _tokens, targets in iter_rows(index, "train", d.rank, d.world):
            take = len(clip_ids) if limit is None else min(len(clip_ids), limit - n)
            rows = embedder.encode_targets(torch.from_numpy(targets[:take]).float().to(d.device))
            vectors.append(rows.to(torch.float16))
            keys.append(clip_keys(clip_ids[:take]))
            n += take
            if limit is not None and n >= limit:
                break
    return Catalogue(torch.cat(vectors), torch.cat(keys).to(d.device))


# -- data -----------------------------------------------------------------------------------
PHASES = {"clips": {1}, "songs": {2}, "all": None}


def stage_phases(index, st: StageConfig, d: Dist) -> tuple[str, set[int] | None]:
    """The stage's curriculum subset, or all clips when the subset cannot fill two batches per rank."""
    phases = PHASES[st.data]
    if phases is not None and index.rows("train", phases) < 2 * st.batch_size * d.world:
        if d.main:
            log.warning("stage wants %s but only %d such training clips exist (< 2 batches per rank); "
                        "training on all clips", st.data, index.rows("train", phases))
        return "all", None
    return st.data, phases


@dataclass
class Validation:
    """The validation queries (first caption per clip) and their raw targets, on rank 0."""

    tokens: list[list[int]]
    targets: np.ndarray  # [N, dim] float32

    def __len__(self) -> int:
        return len(self.tokens)


def load_validation(index, cap: int) -> Validation:
    tokens, targets, n = [], [], 0
    for _ids, toks, rows in iter_rows(index, "valid"):
        take = min(len(toks), cap - n)
        tokens += [t[0] for t in toks[:take]]
        targets.append(np.asarray(rows[:take], dtype=np.float32))
        n += take
        if n >= cap:
            break
    dim = index.dim
    return Validation(tokens, np.concatenate(targets) if targets else np.zeros((0, dim), np.float32))


@torch.no_grad()
def validate(embedder: TextEmbedder, data: Validation, pad_id: int, device, batch_size: int = 128) -> dict:
    """Text->audio retrieval over the validation clips in the raw space Navidrome searches."""
    if not len(data):
        return {}
    embedder.eval()
    out = []
    for start in range(0, len(data), batch_size):
        b = pad_token_lists(data.tokens[start : start + batch_size], pad_id)
        out.append(embedder(b["input_ids"].to(device), b["attention_mask"].to(device)).float().cpu().numpy())
    embedder.train()
    labels = np.arange(len(data))
    return metrics_from_ranks(rank_queries(np.concatenate(out), data.targets, labels, labels).ranks)


def save_model(embedder: TextEmbedder, out_dir: str) -> None:
    embedder.save_to(storage.join(out_dir, MODEL_DIR))


class Board:
    """TensorBoard on rank 0; a bucket log dir is written locally and uploaded at each sync."""

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

    def sync(self) -> None:
        """Flush, and upload to the bucket (at checkpoints: a killed run keeps its curves)."""
        if not self.writer:
            return
        self.writer.flush()
        if self.remote:
            fs, path = storage.fs_for(self.remote)
            fs.put(self.local + "/", path, recursive=True)

    def close(self) -> None:
        if self.writer:
            self.sync()
            self.writer.close()


# -- checkpoints ----------------------------------------------------------------------------
def gather_rng(d: Dist) -> list[dict]:
    """Every rank's RNG states (rank order); ranks draw different dropout masks."""
    mine = rng_state()
    if d.world == 1:
        return [mine]
    states: list = [None] * d.world
    dist.all_gather_object(states, mine)
    return states


def save_checkpoint(store: CheckpointStore, loop: TrainLoop, pos: Position, history: dict, d: Dist,
                    board: Board, valid_r1: float | None = None) -> None:
    rngs = gather_rng(d)  # collective: every rank calls it
    if d.main:
        payload = {"loop": loop.state_dict(), "position": asdict(pos), "history": history,
                   "rng": rngs, "world_size": d.world}
        store.save(pos.optimizer_steps, payload, valid_r1)
        board.sync()
    barrier(d)


def restore_checkpoint(store: CheckpointStore, loop: TrainLoop, d: Dist) -> tuple[Position, dict] | None:
    if d.main:
        store.clean_temporaries()
    entry = store.latest()
    if entry is None:
        return None
    payload = store.load(entry)
    loop.load_state_dict(payload["loop"])
    if payload["world_size"] == d.world:
        set_rng_state(payload["rng"][d.rank])
    elif d.main:
        log.warning("checkpoint was written by %d processes, this run has %d: the data order and "
                    "dropout continue but not bit-exactly", payload["world_size"], d.world)
    pos = Position(**payload["position"])
    if d.main:
        log.info("resumed from %s: epoch %d, micro-step %d, optimiser step %d",
                 entry.file, pos.epoch, pos.step, pos.optimizer_steps)
    return pos, payload["history"]


# -- the run --------------------------------------------------------------------------------
def seed_everything(seed: int, rank: int) -> None:
    """Per-rank seeds: ranks draw different dropout masks; data order has its own seeding."""
    random.seed(seed * 1000 + rank)
    np.random.seed(seed * 1000 + rank)
    torch.manual_seed(seed * 1000 + rank)


def check_inputs(args: argparse.Namespace, cfg: FamilyConfig) -> None:
    """Fail before any expensive work: missing inputs, a data/config dimension mismatch."""
    text = storage.join(args.text_dir, layout.TEXT)
    if not storage.exists(text):
        raise FileNotFoundError(f"{args.text_dir}: no {layout.TEXT} (is it the prepare-text output?)")
    meta = storage.join(args.targets_dir, layout.META)
    if not storage.exists(meta):
        raise FileNotFoundError(f"{args.targets_dir}: no {layout.META} (is it a targets dataset?)")
    missing = [u for u in layout.target_files(args.targets_dir) if not storage.exists(u)]
    if missing:
        raise FileNotFoundError(f"{args.targets_dir}: {len(missing)} target shard(s) missing, e.g. {missing[0]}")
    dim, expected = target_dim(args.targets_dir), cfg.audio.target_dim
    if dim != expected:
        raise ValueError(f"{args.targets_dir}: targets are {dim}-D but the {cfg.family} config "
                         f"({args.profile} profile) gives {expected}-D vectors; wrong family or profile?")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    check_budget(args.memory_budget or cfg.train.memory_budget_gib, stage_config(cfg, args.stage).batch_size, dim)
    if not args.init_dir:
        check_base_model(cfg.text.base_model)


def check_budget(budget_gib: float, batch_size: int, dim: int) -> None:
    """The least any data window needs: two float32 batches and one stored row per batch slot
    (the stream checks the exact figure, with the token sizes, once its cache is built)."""
    least = batch_size * dim * (4 * 2 + 4) + RUNTIME_RESERVE
    if budget_gib * GIB < least:
        raise ValueError(f"memory budget {budget_gib} GiB cannot hold one batch of {batch_size} x {dim}-D "
                         f"targets; at least {least / GIB:.3f} GiB is needed (--memory-budget / "
                         f"train.memory_budget_gib)")


def check_base_model(ref: str) -> None:
    """The base text model's config loads (a typo or a missing mirror fails here, not after the cache)."""
    try:
        AutoConfig.from_pretrained(resolve_pretrained(ref))
    except (OSError, ValueError) as err:
        raise ValueError(f"base text model {ref!r} cannot be loaded: {err}") from None


CACHE_ENV = "MUSICTEXT_TRAIN_CACHE"


def cache_location(args: argparse.Namespace) -> str:
    """Node-local cache of tokenised pairs: --cache-dir, else $MUSICTEXT_TRAIN_CACHE or the temp
    dir, one folder per (text, targets) pair -- never inside the model artifact it would bloat.
    Stage 2 and retries of a stage find the cache stage 1 built."""
    if args.cache_dir:
        return args.cache_dir
    root = os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "musictext-train-cache")
    key = hashlib.sha256(f"{args.text_dir}\n{args.targets_dir}".encode()).hexdigest()[:16]
    return os.path.join(root, key)


def run(args: argparse.Namespace) -> dict:
    setup_logging()
    d = init_distributed()
    cfg = load_config(args)
    st = stage_config(cfg, args.stage)
    check_inputs(args, cfg)
    seed_everything(cfg.train.seed, d.rank)
    t0 = time.perf_counter()
    budget = args.memory_budget or cfg.train.memory_budget_gib

    index = build_cache(args.text_dir, args.targets_dir, cache_location(args), cfg.text.max_length)
    embedder = build_text_embedder(cfg, index, args.init_dir, d)
    embedder.freeze(st.freeze_layers)
    pad_id = embedder.tokenizer.pad_token_id or 0
    subset, phases = stage_phases(index, st, d)
    stream = PairStream(index, "train", st.batch_size, d.rank, d.world, cfg.train.seed, budget,
                        phases=phases, pad_id=pad_id)
    valid = load_validation(index, cfg.train.valid_max_clips) if d.main else Validation([], np.zeros((0, 0)))

    loss = build_loss(st, initial_temperature(st, args.init_dir))
    objective = Objective(embedder, loss).to(d.device)
    if st.negatives == "catalogue":
        if not hasattr(loss, "attach_catalogue"):
            raise ValueError(f"loss {st.loss!r} does not score catalogue negatives; set negatives: batch")
        loss.attach_catalogue(build_catalogue(embedder, index, st, d))
    model = objective
    if d.world > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        model = DDP(objective, device_ids=ids, broadcast_buffers=False)

    steps_per_epoch = stream.steps_per_epoch
    updates_per_epoch = math.ceil(steps_per_epoch / st.grad_accum)
    total_updates = st.epochs * updates_per_epoch
    optimizer = torch.optim.AdamW(param_groups(objective, st))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_updates, st.warmup_ratio))
    loop = TrainLoop(objective, model, optimizer, scheduler, precision=cfg.train.precision,
                     grad_accum=st.grad_accum, grad_clip=cfg.train.grad_clip, device=d.device)
    store = CheckpointStore(storage.join(args.out_dir, CHECKPOINTS), cfg.train.keep_checkpoints)
    board = Board(args.log_dir, d.main)
    trainable, total = embedder.n_parameters()
    history = {
        "family": cfg.family, "stage": args.stage, "epochs": st.epochs, "world_size": d.world,
        "batch_size_per_rank": st.batch_size, "grad_accum": st.grad_accum, "precision": loop.precision,
        "n_train": index.rows("train", phases), "n_valid": len(valid), "data": subset,
        "negatives": st.negatives, "target_space": cfg.text.target_space if not args.init_dir else None,
        "params_trainable": trainable, "params_total": total, "memory": stream.memory_plan(),
        "target_dim": index.dim, "losses": [], "valid": [], "best_epoch": None, "best_valid_r1": None,
        "valid_chance_r1": chance_metrics(len(valid))["R@1"] if len(valid) else None,
        "steps_per_epoch": steps_per_epoch, "resumed": [],
    }
    pos = Position()
    restored = restore_checkpoint(store, loop, d) if args.resume else None
    if restored:
        pos, history = restored
        history["resumed"].append(pos.optimizer_steps)
        # The batch order depends on the shuffle window: keep the one the run started with.
        window = history["memory"]["window_rows"]
        if window != stream.memory_plan()["window_rows"]:
            stream = PairStream(index, "train", st.batch_size, d.rank, d.world, cfg.train.seed, budget,
                                phases=phases, pad_id=pad_id, window_rows=window)
    if d.main:
        log.info("%s stage %d on %s: %d train / %d valid clips, dim %d, world %d, batch %d/rank x %d "
                 "accumulated, %d steps/epoch, %s negatives, %s, data window %d rows",
                 cfg.family, args.stage, subset, history["n_train"], len(valid), index.dim, d.world,
                 st.batch_size, st.grad_accum, steps_per_epoch, st.negatives, loop.precision,
                 history["memory"]["window_rows"])
    if d.main and args.init_dir and len(valid) and not restored:
        # Stage 2 must not end worse than where it started: the initial model is "epoch 0".
        vm0 = validate(embedder, valid, pad_id, d.device)
        history["valid_init"] = vm0
        history["best_epoch"], history["best_valid_r1"] = 0, vm0["R@1"]
        save_model(embedder, args.out_dir)
        log.info("initial model: valid R@1 %.3f MRR %.3f", vm0["R@1"], vm0["MRR"])

    step_seconds: list[float] = []
    stopped = False
    while pos.epoch <= st.epochs and not stopped:
        batches = stream.batches(pos.epoch, pos.step)
        bar = progress(batches, desc=f"epoch {pos.epoch}", total=steps_per_epoch - pos.step) if d.main else batches
        for batch in bar:
            start = time.perf_counter()
            out = loop.micro_step(batch)
            step_seconds.append(time.perf_counter() - start)
            pos.step += 1
            pos.loss_sum += out["loss"]
            pos.loss_count += 1
            if loop.pending:
                continue
            pos.optimizer_steps += 1
            if d.main and pos.optimizer_steps % 10 == 0:
                board.scalars({f"train/{k}": v for k, v in out.items()} | {"train/lr": loop.lr,
                              "train/temperature": loss.temperature}, pos.optimizer_steps)
            if cfg.train.checkpoint_every and pos.optimizer_steps % cfg.train.checkpoint_every == 0:
                save_checkpoint(store, loop, pos, history, d, board)
            if args.max_steps and pos.optimizer_steps >= args.max_steps:
                stopped = True
                break
        if stopped and pos.step < steps_per_epoch:
            if not (cfg.train.checkpoint_every and pos.optimizer_steps % cfg.train.checkpoint_every == 0):
                save_checkpoint(store, loop, pos, history, d, board)
            break
        if loop.pending:  # an epoch's last, partial accumulation still updates the model
            loop.optimizer_step()
            pos.optimizer_steps += 1
        valid_r1 = end_epoch(pos, history, embedder, valid, pad_id, d, board, loss, st, args)
        pos.epoch, pos.step, pos.loss_sum, pos.loss_count = pos.epoch + 1, 0, 0.0, 0
        save_checkpoint(store, loop, pos, history, d, board, valid_r1)

    history.update(temperature=loss.temperature, seconds=time.perf_counter() - t0,
                   seconds_per_step=float(np.mean(step_seconds)) if step_seconds else None,
                   optimizer_steps=pos.optimizer_steps, finished=pos.epoch > st.epochs)
    if d.main:
        storage.write_json(storage.join(args.out_dir, STATE_FILE), history)
        if history["finished"] and not cfg.train.keep_checkpoints_after:
            store.remove_all()
        log.info("done in %.1fs; best epoch %s valid R@1 %s", history["seconds"], history["best_epoch"],
                 _fmt(history["best_valid_r1"]))
    board.close()
    barrier(d)
    if d.world > 1:
        dist.destroy_process_group()
    return history


def end_epoch(pos: Position, history: dict, embedder, valid: Validation, pad_id: int, d: Dist,
              board: Board, loss, st: StageConfig, args) -> float | None:
    """Epoch loss over ranks; on rank 0 validation, the best model saved, the epoch logged."""
    epoch_loss = mean_over_ranks(pos.loss_sum / max(1, pos.loss_count), d)
    history["losses"].append(epoch_loss)
    if not d.main:
        return None
    vm = validate(embedder, valid, pad_id, d.device)
    history["valid"].append(vm)
    board.scalars({f"valid/{k}": v for k, v in vm.items()} | {"train/epoch_loss": epoch_loss}, pos.epoch)
    best = history["best_valid_r1"]
    improved = best is None or (vm.get("R@1", 0.0), vm.get("MRR", 0.0)) > (best, history.get("best_mrr", -1.0))
    if improved:
        history["best_epoch"], history["best_valid_r1"], history["best_mrr"] = pos.epoch, vm.get("R@1"), vm.get("MRR")
        save_model(embedder, args.out_dir)
    log.info("epoch %d/%d loss %.4f valid R@1 %s MRR %s T %.4f%s", pos.epoch, st.epochs, epoch_loss,
             _fmt(vm.get("R@1")), _fmt(vm.get("MRR")), loss.temperature, " (best, saved)" if improved else "")
    # One machine-readable line per epoch on stdout (the log goes to stderr).
    print(json.dumps({"stage": args.stage, "epoch": pos.epoch, "loss": epoch_loss, "valid": vm,
                      "temperature": loss.temperature}), flush=True)
    return vm.get("R@1")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m musictext.train", description=__doc__.splitlines()[0])
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
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in OUT_DIR/checkpoints (a fresh start if none)")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (checkpointed)")
    p.add_argument("--memory-budget", type=float, metavar="GIB",
                   help="host memory for training data per process (default: the config's)")
    p.add_argument("--cache-dir", help=f"node-local cache of tokenised pairs (default: ${CACHE_ENV} or the "
                   "temp dir, a folder per text/targets pair)")
    args = p.parse_args(argv)
    if not (args.family or args.config_json):
        p.error("one of --family or --config-json is required")
    return args


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
