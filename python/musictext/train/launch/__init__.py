"""Launch one training stage: locally through torchrun, or on a cluster as a Kubeflow Trainer v2
TrainJob (the cluster default) or a Training Operator v1 PyTorchJob.

What to run is a ``TrainJobSpec``; how to run it is one typed ``LaunchConfig`` per backend,
looked up by launcher name (``launch_config("trainjob", ...)``) and run by ``launch(job,
config)``. Both cluster backends share ``ClusterJobConfig`` and ``run_job`` (cluster.py); another
backend is one more LaunchConfig subclass and one more ``@register_backend`` Backend, in a module
imported here. docs/launchers.md describes the backends.
"""

from musictext.train.launch.base import (
    PROGRAM,
    Backend,
    LaunchConfig,
    TrainJobSpec,
    backend_for,
    config_class,
    launch,
    launch_config,
    launchers,
    pipeline_launch_config,
    register_backend,
)
from musictext.train.launch.cluster import (
    JOB_KINDS,
    ClusterJobConfig,
    JobCancelled,
    JobFailed,
    delete_run_jobs,
    rbac_rules,
    run_job,
    wait_for_job,
)
from musictext.train.launch.local import LocalBackend, LocalConfig
from musictext.train.launch.pytorchjob import PYTORCHJOB, PyTorchJobBackend, PyTorchJobConfig, build_pytorchjob
from musictext.train.launch.task import artifact_location, mirror_to_local, run_train_task
from musictext.train.launch.trainjob import (
    TRAINJOB,
    NodesFailed,
    TrainJobBackend,
    TrainJobConfig,
    build_trainjob,
    run_trainjob_locally,
)

# The Role rules each cluster launcher's calls need (contract C3; the chart's Role equals them).
RBAC_RULES: dict[str, list[dict]] = {launcher: rbac_rules(kind) for launcher, kind in JOB_KINDS.items()}

__all__ = [
    "PROGRAM", "Backend", "LaunchConfig", "TrainJobSpec", "backend_for", "config_class", "launch",
    "launch_config", "launchers", "pipeline_launch_config", "register_backend", "LocalBackend", "LocalConfig",
    "ClusterJobConfig", "JobCancelled", "JobFailed", "delete_run_jobs", "run_job", "wait_for_job", "RBAC_RULES",
    "PYTORCHJOB", "PyTorchJobBackend", "PyTorchJobConfig", "build_pytorchjob",
    "TRAINJOB", "NodesFailed", "TrainJobBackend", "TrainJobConfig", "build_trainjob", "run_trainjob_locally",
    "artifact_location", "mirror_to_local", "run_train_task",
]
