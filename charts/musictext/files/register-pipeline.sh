#!/bin/sh
# Compile the musictext pipeline and upload it to Kubeflow Pipelines: a new pipeline on first
# install, a new version of the existing one on upgrade. Runs in the musictext image as the
# Helm post-install/post-upgrade hook. Inputs (env): KFP_ENDPOINT, PIPELINE_NAME,
# PIPELINE_VERSION, PIPELINE_ROOT, MUSICTEXT_IMAGE, MUSICTEXT_AUDIO_IMAGE, GPU_NODE_SELECTOR,
# TRAIN_NODES, PROCS_PER_NODE, GPUS_PER_NODE, optional KFP_NAMESPACE.
set -eu

: "${KFP_ENDPOINT:?}" "${PIPELINE_NAME:?}" "${PIPELINE_VERSION:?}"
package="${TMPDIR:-/tmp}/musictext.yaml"

# The chart's values become the compiled pipeline's defaults; a run can still override them.
musictext compile --output "$package" \
  --pipeline-root "${PIPELINE_ROOT:?}" \
  --image "${MUSICTEXT_IMAGE:?}" \
  --audio-image "${MUSICTEXT_AUDIO_IMAGE:?}" \
  --gpu-node-selector "${GPU_NODE_SELECTOR:?}" \
  --train-nodes "${TRAIN_NODES:-1}" \
  --procs-per-node "${PROCS_PER_NODE:-1}" \
  --gpus-per-node "${GPUS_PER_NODE:-1}"

# Exit 0: a pipeline of that name exists; 3: it does not; anything else: the API failed (and
# this hook must fail rather than create a duplicate).
found=0
python - <<'PY' || found=$?
import os
import sys

import kfp

client = kfp.Client(host=os.environ["KFP_ENDPOINT"], namespace=os.environ.get("KFP_NAMESPACE") or None)
sys.exit(0 if client.get_pipeline_id(os.environ["PIPELINE_NAME"]) else 3)
PY

case "$found" in
  0)
    echo "pipeline $PIPELINE_NAME exists: uploading version $PIPELINE_VERSION"
    kfp --endpoint "$KFP_ENDPOINT" pipeline create-version "$package" \
      -n "$PIPELINE_NAME" -v "$PIPELINE_VERSION"
    ;;
  3)
    echo "pipeline $PIPELINE_NAME not found: creating it"
    kfp --endpoint "$KFP_ENDPOINT" pipeline create -p "$PIPELINE_NAME" "$package"
    ;;
  *)
    echo "could not query KFP at $KFP_ENDPOINT (exit $found)" >&2
    exit "$found"
    ;;
esac
