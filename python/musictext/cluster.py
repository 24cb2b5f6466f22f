"""Facts about the GPU node pool that the pipeline and the training launchers both use."""

GPU_RESOURCE = "nvidia.com/gpu"
# GPU nodes are commonly tainted so that only pods asking for GPUs land there.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# Label set by NVIDIA GPU feature discovery on GPU nodes; override per cluster (e.g. GKE's
# {"cloud.google.com/gke-accelerator": "nvidia-l4"}).
DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}

# Where pods find the bucket Secret (`musictext compile --bucket-secret`, a launch config's
# bucket_secret): every pipeline task and every training pod mount it at the same path.
BUCKET_SECRET_DIR = "/var/run/secrets/musictext/bucket"
DEFAULT_BUCKET_SECRET_KEY = "key.json"
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"


def credentials_path(key: str) -> str:
    """GOOGLE_APPLICATION_CREDENTIALS for a pod that mounts the bucket Secret."""
    return f"{BUCKET_SECRET_DIR}/{key}"
