"""The musictext DAG: sources -> clips -> audio targets + text -> train (2 stages) -> eval -> export.

One pipeline function serves both worlds: ``musictext run --local`` executes it with
``kfp.local.SubprocessRunner`` and ``musictext compile`` writes its cluster form
(``cluster_pipeline``: the same DAG inside an exit handler that deletes the run's training jobs,
retries on the steps a lost node kills, the bucket Secret in every task) as KFP pipeline YAML.
Defaults are the laptop demo's; ``musictext compile`` swaps in cluster defaults.
"""

import inspect
from dataclasses import dataclass

from kfp import dsl, kubernetes
from kfp.dsl import Dataset
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_context import Pipeline

from musictext.cluster import (
    BUCKET_SECRET_DIR,
    CREDENTIALS_ENV,
    DEFAULT_BUCKET_SECRET_KEY,
    DEFAULT_GPU_NODE_SELECTOR,
    GPU_RESOURCE,
    GPU_TOLERATION,
    credentials_path,
)
from musictext.config import FAMILIES

from musictext_kfp.components.check_params import check_params
from musictext_kfp.components.check_shard import check_shard
from musictext_kfp.components.cleanup_jobs import cleanup_jobs
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
from musictext_kfp.fanout import MAX_FANOUT
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


def job_placement(task: dsl.PipelineTask, node_selector) -> dsl.PipelineTask:
    """The GPU pool's node selector and taint toleration on a task that launches a training job:
    its task_config passthroughs hand them to the job instead of this (CPU) launcher pod."""
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration(task, **GPU_TOLERATION)
    return task


def named(task: dsl.PipelineTask, name: str) -> dsl.PipelineTask:
    task.set_display_name(name)
    return task


def list_step(sources, source_options, folder, corpus_size, shard_size, seed, **more_params) -> dsl.PipelineTask:
    """The tasks both pipelines start with: check every parameter (``more_params``: those beyond
    the listing's), then list the sources into at most MAX_FANOUT shards."""
    checked = named(
        check_params(sources=sources, source_options=source_options, folder=folder, corpus_size=corpus_size,
                     shard_size=shard_size, seed=seed, listing_only=not more_params, **more_params),
        "check parameters",
    )
    return named(
        list_sources(sources=sources, source_options=source_options, folder=folder, corpus_size=corpus_size,
                     shard_size=shard_size, seed=seed, max_fanout=MAX_FANOUT),
        "list sources",
    ).after(checked)


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
    train_options: dict = {},
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
        train_launcher: How training runs: local (torchrun in the task), trainjob (a Kubeflow
            Trainer v2 TrainJob) or pytorchjob (a Kubeflow Training Operator v1 PyTorchJob).
        train_nodes: Nodes of the training job (the local launcher runs one).
        gpus_per_node: GPUs each training node requests; 0 trains on CPU.
        procs_per_node: Training processes per node (torchrun --nproc-per-node).
        train_image: Image of the training job's pods.
        train_timeout_minutes: Time limit of one training stage, in minutes.
        train_options: More settings of the training job, as FIELD=VALUE with dotted fields
            nesting (e.g. requests.cpu=8, shm_size=16Gi, namespace=ml, cleanup=never); the
            local launcher ignores the cluster-only ones.
    """
    run_params = dict(locals())  # every parameter, for the first task's checks
    # 1. plan shards, then per shard: download (render for `synthetic`), clip, and compute the
    #    audio targets of every family on the GPU pool as soon as that shard is clipped.
    plan = list_step(**run_params)
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
            seed=seed,
            text=text.outputs["text"],
            targets=targets.outputs["targets"],
            launcher=train_launcher,
            nnodes=train_nodes,
            nproc_per_node=procs_per_node,
            gpus_per_node=gpus_per_node,
            node_selector=gpu_node_selector,
            train_image=train_image,
            timeout_minutes=train_timeout_minutes,
            train_options=train_options,
            # The job's labels and name: a retried task finds the job its first attempt started.
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            task_id=dsl.PIPELINE_TASK_ID_PLACEHOLDER,
        )
        stage1 = job_placement(
            named(train(stage=1, **launch), "train stage 1 (InfoNCE)"), gpu_node_selector
        )
        stage2 = job_placement(
            named(train(stage=2, init=stage1.outputs["model"], **launch), "train stage 2 (InfoNCE+MSE)"),
            gpu_node_selector,
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


# ---- The cluster form: what only a run on Kubeflow needs, added when the YAML is compiled. ----

@dataclass(frozen=True)
class Retry:
    """KFP's retry policy of a task: waits of ``backoff``, times ``factor`` each retry."""

    retries: int
    backoff: str
    factor: float = 2.0
    max_backoff: str = "3600s"


# The steps a lost (preempted, drained) node kills, by component name. Each picks up where it
# stopped: download keeps the items fetched, embedding redoes one shard, and train finds the job
# its first attempt started (named by run and task id), whose training resumes from its newest
# checkpoint. A retried pod waits in Pending for a node anyway: the backoff only spaces attempts
# at a failing source or API server.
RETRIES = {
    "download": Retry(3, "60s"),
    "embed-audio": Retry(3, "60s"),
    "train": Retry(2, "120s"),
}
# Pipelines whose runs start training jobs on the cluster: their cluster form deletes them at exit.
LAUNCH_JOBS = {"musictext_pipeline"}


def cluster_pipeline(
    name: str = "musictext_pipeline",
    bucket_secret: str = "",
    bucket_secret_key: str = DEFAULT_BUCKET_SECRET_KEY,
) -> GraphComponent:
    """The cluster form of the pipeline function ``name`` of this module: the same parameters
    and DAG, with

    * an exit handler (``LAUNCH_JOBS`` only) whose task deletes the run's training jobs after
      the run ends, succeeded, failed or cancelled (KFP returns no pipeline output from inside
      an exit handler, so this form returns nothing: the report stays an artifact of its task);
    * ``RETRIES`` on the steps a lost node kills (kfp.local would retry them too, with the same
      waits, which only slows a failing local run down);
    * ``bucket_secret`` (a Secret's name; "" = none) mounted in every task, with
      GOOGLE_APPLICATION_CREDENTIALS pointing at its ``bucket_secret_key``.
    """
    base = globals()[name]
    body = base.pipeline_func
    names = list(inspect.signature(body).parameters)

    def on_cluster(*args):
        params = dict(zip(names, args))
        if name in LAUNCH_JOBS:
            cleanup = named(
                cleanup_jobs(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, launcher=params["train_launcher"],
                             train_options=params["train_options"]),
                "delete training jobs",
            ).set_caching_options(False)  # a cached cleanup deletes nothing
            with dsl.ExitHandler(cleanup, name="run"):
                body(**params)
        else:
            body(**params)
        for task in Pipeline.get_default_pipeline().tasks.values():
            cluster_task(task, bucket_secret, bucket_secret_key)

    # KFP reads a pipeline's inputs and their help from its signature and docstring.
    on_cluster.__signature__ = inspect.signature(body).replace(return_annotation=inspect.Signature.empty)
    on_cluster.__doc__ = body.__doc__
    on_cluster.__name__ = body.__name__
    return dsl.pipeline(name=base.name, description=base.description)(on_cluster)


def cluster_task(task: dsl.PipelineTask, bucket_secret: str, bucket_secret_key: str) -> None:
    """One task's cluster-only settings: its retry policy, the bucket Secret."""
    retry = RETRIES.get(task.component_spec.name)
    if retry:
        task.set_retry(num_retries=retry.retries, backoff_duration=retry.backoff,
                       backoff_factor=retry.factor, backoff_max_duration=retry.max_backoff)
    if bucket_secret:
        kubernetes.use_secret_as_volume(task, secret_name=bucket_secret, mount_path=BUCKET_SECRET_DIR)
        task.set_env_variable(CREDENTIALS_ENV, credentials_path(bucket_secret_key))
