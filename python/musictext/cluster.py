"""Facts about the GPU node pool that the pipeline and the training launchers both use."""

GPU_RESOURCE = "nvidia.com/gpu"
# GPU nodes are commonly tainted so that only pods asking for GPUs land there.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# Label set by NVIDIA GPU feature discovery on GPU nodes; override per cluster (e.g. GKE's
# {"cloud.google.com/gke-accelerator": "nvidia-l4"}).
DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
