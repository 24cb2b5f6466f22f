#!/bin/sh
# Compile the musictext pipeline and upload it to Kubeflow Pipelines: on install the pipeline
# (created with this package) and this version of it, on upgrade a new version. Runs in the
# musictext image as the Helm post-install/post-upgrade hook.
#   Arguments: `musictext compile` flags (the chart renders them from its values).
#   Env (as `musictext submit` reads it): KFP_ENDPOINT, KFP_PIPELINE_NAME, KFP_PIPELINE_VERSION;
#   multi-user Kubeflow: KFP_NAMESPACE (the profile namespace the pipeline belongs to) and
#   KFP_TOKEN_FILE (a projected service-account token, read again before each request).
set -eu

: "${KFP_ENDPOINT:?}" "${KFP_PIPELINE_NAME:?}" "${KFP_PIPELINE_VERSION:?}"
PACKAGE="${TMPDIR:-/tmp}/musictext.yaml"
export PACKAGE

musictext compile --output "$PACKAGE" "$@"

# The upload of `musictext submit` (pipelines/submit.py), without starting a run.
python - <<'PY'
import os
import sys
from pathlib import Path

from musictext_kfp.submit import SubmitError, check_server, connect, settings_from_env, upload

try:
    settings = settings_from_env()
    where = f"namespace {settings.namespace}" if settings.namespace else "shared pipelines"
    check_server(settings)
    # exist_ok: a retried hook whose earlier attempt uploaded before failing finds its version
    # there; the version name hashes the compile flags, so that version holds this package.
    _, version_id = upload(connect(settings), Path(os.environ["PACKAGE"]), settings.pipeline_name,
                           settings.version_name, settings, exist_ok=True)
except SubmitError as err:
    print(f"register-pipeline: {err}", file=sys.stderr)
    sys.exit(err.code)
if version_id is None:
    print(f"pipeline {settings.pipeline_name} already has version {settings.version_name}")
else:
    print(f"uploaded version {settings.version_name} of pipeline {settings.pipeline_name} ({where})")
PY
