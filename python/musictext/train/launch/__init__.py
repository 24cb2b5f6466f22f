"""Launch one training stage: locally through torchrun, or on a cluster as a PyTorchJob.

What to run is a ``TrainJobSpec``; how to run it is one typed ``LaunchConfig`` per backend,
looked up by launcher name (``launch_config("pytorchjob", ...)``) and run by ``launch(job,
config)``. Another backend (e.g. a Kubeflow Trainer v2 TrainJob) is one more LaunchConfig
subclass and one more ``@register_backend`` Backend, in a module imported here.
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
    register_backend,
)
from musictext.train.launch.local import LocalBackend, LocalConfig
from musictext.train.launch.pytorchjob import PyTorchJobBackend, PyTorchJobConfig, build_pytorchjob
from musictext.train.launch.task import artifact_location, mirror_to_local, run_train_task

__all__ = [
    "PROGRAM", "Backend", "LaunchConfig", "TrainJobSpec", "backend_for", "config_class", "launch",
    "launch_config", "launchers", "register_backend", "LocalBackend", "LocalConfig",
    "PyTorchJobBackend", "PyTorchJobConfig", "build_pytorchjob", "artifact_location",
    "mirror_to_local", "run_train_task",
]
