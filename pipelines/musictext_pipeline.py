"""The musictext DAG: sources -> clips -> audio targets + text -> train (2 stages) -> eval -> export.

One pipeline function serves both worlds: ``musictext run --local`` executes it with
``kfp.local.SubprocessRunner`` and ``musictext compile`` writes it as KFP pipeline YAML for a
cluster. Defaults are the laptop demo's; ``musictext compile`` swaps in cluster defaults.
"""

from kfp import dsl, kubernetes
from kfp.dsl import Dataset

from musictext.cluster import DEFAULT_GPU_NODE_SELECTOR, GPU_RESOURCE, GPU_TOLERATION
from musictext.config import FAMILIES

from musictext_kfp.components.check_shard import check_shard
from musictext_kfp.components.clip import clip
from musictext_kfp.components.download import download
from musictext_kfp.components.embed_audio import embed_audio
from musictext_kfp.components.evaluate import evaluate
from musictext_kfp.components.export import export
from musictext_kfp.components.gather_targets import gather_targets
from musictext_kfp.components.list_sources import list_sources
from musictext_kfp.components.merge_shards import merge_shards
from musictext_kfp.components.prepare_text import prepare_text
from musictext_kfp.components.report import report
from musictext_kfp.components.train import train
from musictext_kfp.images import IMAGE

PIPELINE_NAME = "musictext"
# KFP needs the fan-out width at compile time; downloads are I/O bound, so a fixed 8 at once.
DOWNLOAD_PARALLELISM = 8


def on_gpu_pool(task: dsl.PipelineTask, node_selector) -> dsl.PipelineTask:
    """Pin a task to the GPU node pool: accelerator request, node selector, GPU taint toleration."""
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration(task, **GPU_TOLERATION)
    return task


def named(task: dsl.PipelineTask, name: str) -> dsl.PipelineTask:
    task.set_display_name(name)
    return task


def list_step(sources, source_options, folder, corpus_size, shard_size, seed) -> dsl.PipelineTask:
    """The listing task both pipelines start with."""
    return named(
        list_sources(sources=sources, source_options=source_options, folder=folder, corpus_size=corpus_size,
                     shard_size=shard_size, seed=seed),
        "list sources",
    )


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Train text embedders that land in Navidrome's MuQ-MuLan, MERT and "
    "Music2Latent audio spaces.",
)
def musictext_pipeline(
    sources: list = ["synthetic"],
    source_options: dict = {},
    folder: str = "",
    corpus_size: int = 400,
    shard_size: int = 100,
    seed: int = 0,
    clip_seconds: float = 6.0,
    max_clips_per_track: int = 1,
    clip_format: str = "wav",
    m2l_native_rate: bool = False,
    families: list = list(FAMILIES),
    profile: str = "demo",
    epochs_stage1: int = 0,
    epochs_stage2: int = 0,
    batch_size: int = 0,
    gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
    train_launcher: str = "local",
    train_nodes: int = 1,
    gpus_per_node: int = 0,
    procs_per_node: int = 1,
    train_image: str = IMAGE,
    train_timeout_minutes: int = 24 * 60,
) -> Dataset:
    """The whole run, from sources to exported checkpoints and a report.

    Each parameter's description below is its help text in ``musictext run``/``compile`` and
    its input description in the compiled pipeline (kfp parses this Args: section).

    Args:
        sources: Data sources to ingest (`musictext datasets list`); the built-in `synthetic`
            renders MIDI pieces with FluidSynth, `folder` reads your own music.
        source_options: Options per source, as SOURCE.OPTION=VALUE (e.g.
            musiccaps.metadata=gs://bucket/musiccaps, jamendo.split=1).
        folder: Your own music directory (local path or bucket URI) for the `folder` source, with
            an optional captions.csv or captions.jsonl.
        corpus_size: Items per source at most (a seeded sample when a source has more).
        shard_size: Tracks per download/clip/embedding shard, the unit of the fan-out.
        seed: Seed of the corpus plan and the synthetic rendering.
        clip_seconds: Length of every clip, in seconds.
        max_clips_per_track: Clips cut from one track at most.
        clip_format: Clip files: wav (float, lossless, fast to decode) or flac (24-bit,
            smaller; lossless for sources of at most 24 bits).
        m2l_native_rate: Music2Latent targets from each clip at its source rate and channels,
            exactly as Navidrome encodes a user's file (mono and >2-channel clips are then
            rejected, as Navidrome stores nothing for them), instead of from its 44.1 kHz stereo
            rendering.
        families: Embedding families to train, each for its own audio space.
        profile: Family config profile: demo (small random-init audio models, reduced
            dimensions) or production (real checkpoints, full dimensions).
        epochs_stage1: Stage-1 (InfoNCE) epochs; 0 keeps the family config's value.
        epochs_stage2: Stage-2 (InfoNCE + MSE) epochs; 0 keeps the family config's value.
        batch_size: Training batch size; 0 keeps the family config's value.
        gpu_node_selector: Node labels of the GPU pool that runs audio embedding and training.
        train_launcher: How training runs: local (torchrun in the task) or pytorchjob (a
            Kubeflow PyTorchJob).
        train_nodes: Nodes of the training PyTorchJob (the local launcher runs one).
        gpus_per_node: GPUs each training node requests; 0 trains on CPU.
        procs_per_node: Training processes per node (torchrun --nproc-per-node).
        train_image: Image of the training PyTorchJob's pods.
        train_timeout_minutes: Time limit of one training stage, in minutes.
    """
    # 1. plan shards, then per shard: download (render for `synthetic`), clip, and compute the
    #    audio targets of every family on the GPU pool as soon as that shard is clipped.
    plan = list_step(sources, source_options, folder, corpus_size, shard_size, seed)
    with dsl.ParallelFor(plan.outputs["Output"], parallelism=DOWNLOAD_PARALLELISM) as shard:
        raw = named(
            download(shard=shard, records=plan.outputs["records"]),
            "download",
        )
        clipped = named(
            clip(
                raw=raw.outputs["raw"],
                families=families,
                profile=profile,
                clip_seconds=clip_seconds,
                max_clips_per_track=max_clips_per_track,
                clip_format=clip_format,
                m2l_native_rate=m2l_native_rate,
            ),
            "clip",
        )
        embedded = on_gpu_pool(
            named(
                embed_audio(clips=clipped.outputs["clips"], families=families, profile=profile,
                            m2l_native_rate=m2l_native_rate),
                "embed audio",
            ),
            gpu_node_selector,
        )
    index = named(
        merge_shards(
            shards=dsl.Collected(clipped.outputs["clips"]),
            targets=dsl.Collected(embedded.outputs["targets"]),
            raws=dsl.Collected(raw.outputs["raw"]),
            listing=plan.outputs["records"],
        ),
        "index shards",
    )

    # 2. per family: its targets, text prep, two training stages, eval, export.
    with dsl.ParallelFor(families) as family:
        targets = named(
            gather_targets(family=family, index=index.outputs["index"]), "gather targets"
        )
        text = named(
            prepare_text(family=family, profile=profile, clips_index=index.outputs["index"]),
            "prepare text",
        )
        launch = dict(
            family=family,
            profile=profile,
            epochs_stage1=epochs_stage1,
            epochs_stage2=epochs_stage2,
            batch_size=batch_size,
            text=text.outputs["text"],
            targets=targets.outputs["targets"],
            launcher=train_launcher,
            nnodes=train_nodes,
            nproc_per_node=procs_per_node,
            gpus_per_node=gpus_per_node,
            node_selector=gpu_node_selector,
            train_image=train_image,
            timeout_minutes=train_timeout_minutes,
        )
        stage1 = named(train(stage=1, **launch), "train stage 1 (InfoNCE)")
        stage2 = named(
            train(stage=2, init=stage1.outputs["model"], **launch), "train stage 2 (InfoNCE+MSE)"
        )
        scored = named(
            evaluate(
                family=family,
                model=stage2.outputs["model"],
                text=text.outputs["text"],
                targets=targets.outputs["targets"],
                clips_index=index.outputs["index"],
            ),
            "evaluate",
        )
        exported = named(
            export(
                family=family,
                profile=profile,
                model=stage2.outputs["model"],
                evaluation=scored.outputs["evaluation"],
                clips_index=index.outputs["index"],
            ),
            "export",
        )

    summary = named(
        report(
            evaluations=dsl.Collected(scored.outputs["evaluation"]),
            exports=dsl.Collected(exported.outputs["exported"]),
            targets=dsl.Collected(targets.outputs["targets"]),
            texts=dsl.Collected(text.outputs["text"]),
            clips_index=index.outputs["index"],
        ),
        "report",
    )
    return summary.outputs["run"]


@dsl.pipeline(
    name=f"{PIPELINE_NAME}-fanout-dry-run",
    description="List every source and walk the download/clip fan-out without fetching audio.",
)
def fanout_dry_run(
    sources: list = ["synthetic"],
    source_options: dict = {},
    folder: str = "",
    corpus_size: int = 400,
    shard_size: int = 100,
    seed: int = 0,
) -> list:
    """The fan-out of ``musictext_pipeline`` with download and clip replaced by a check of each
    shard's records: how wide it is, and whether every source lists, before any audio moves.

    Args:
        sources: Data sources to list.
        source_options: Options per source, as SOURCE.OPTION=VALUE.
        folder: Your own music directory for the `folder` source.
        corpus_size: Items per source at most.
        shard_size: Records per shard, the unit of the fan-out.
        seed: Seed of the corpus sample and hashed splits.
    """
    plan = list_step(sources, source_options, folder, corpus_size, shard_size, seed)
    with dsl.ParallelFor(plan.outputs["Output"], parallelism=DOWNLOAD_PARALLELISM) as shard:
        checked = named(check_shard(shard=shard, records=plan.outputs["records"]), "check shard")
    return dsl.Collected(checked.output)
