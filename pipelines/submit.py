"""`musictext submit`: upload a compiled pipeline to Kubeflow Pipelines as a new pipeline version,
start a run of it in an experiment, print the run's URL and optionally wait for it (docs/ci.md).

    KFP_ENDPOINT=https://kubeflow.example.com/pipeline KFP_TOKEN=... \\
        musictext submit --package build/musictext.yaml corpus_size=1000 families=muq --wait

The cluster comes from the environment: KFP_ENDPOINT, KFP_TOKEN or KFP_TOKEN_FILE, KFP_NAMESPACE,
KFP_EXPERIMENT, KFP_PIPELINE_NAME, KFP_PIPELINE_VERSION, RUN_NAME. Parameters are KEY=VALUE,
typed by the package's own parameter types and read as `musictext run` reads its options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tenacity
import urllib3
import yaml
from kfp_server_api.exceptions import ApiException

from musictext.config import deep_merge
from musictext_kfp.cli import add_pipeline_args, option_name, pipeline_inputs, pipeline_params
from musictext_kfp.compile import load_pipeline_yaml, validate_pipeline_docs

T = TypeVar("T")

DEFAULT_PACKAGE = "build/musictext.yaml"
DEFAULT_EXPERIMENT = "musictext"
# Run states after which a run never changes (kfp.Client.wait_for_run_completion misses CANCELED).
FINAL_STATES = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}
# Reads are retried on these (a KFP API server that restarts or is overloaded); writes are not,
# since a repeated upload or run creation could duplicate what the first one did.
RETRIED_STATUSES = {500, 502, 503, 504}
READ_ATTEMPTS = 4
RETRY_WAIT_S = 2.0
REQUEST_TIMEOUT_S = 60
BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
# Dict parameters whose given entries go over the package's default instead of replacing it (KFP
# replaces a default wholesale): train_options' default holds the --bucket-secret wiring.
MERGED_DICTS = {"train_options"}


class SubmitError(Exception):
    """A failure the user can fix, told in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class KfpSettings:
    endpoint: str
    token: str | None
    token_file: str | None
    namespace: str | None
    experiment: str
    pipeline_name: str | None
    version_name: str | None
    run_name: str | None


def settings_from_env(env: Mapping[str, str] = os.environ) -> KfpSettings:
    """The cluster to submit to, from the KFP_* variables (a missing or bad one is named)."""
    endpoint = env.get("KFP_ENDPOINT", "").strip().rstrip("/")
    if not endpoint:
        raise SubmitError("KFP_ENDPOINT is not set: export the Kubeflow Pipelines API URL, "
                          "e.g. https://kubeflow.example.com/pipeline", code=2)
    if not endpoint.startswith(("http://", "https://")):
        raise SubmitError(f"KFP_ENDPOINT={endpoint!r} has no scheme: write it as https://HOST[/PATH]", code=2)
    token_file = env.get("KFP_TOKEN_FILE") or None
    if env.get("KFP_TOKEN") and token_file:
        raise SubmitError("both KFP_TOKEN and KFP_TOKEN_FILE are set: keep one", code=2)
    if token_file and not Path(token_file).is_file():
        raise SubmitError(f"KFP_TOKEN_FILE={token_file} is not a file: point it at a token file", code=2)
    return KfpSettings(
        endpoint=endpoint,
        token=env.get("KFP_TOKEN") or None,
        token_file=token_file,
        namespace=env.get("KFP_NAMESPACE") or None,
        experiment=env.get("KFP_EXPERIMENT") or DEFAULT_EXPERIMENT,
        pipeline_name=env.get("KFP_PIPELINE_NAME") or None,
        version_name=env.get("KFP_PIPELINE_VERSION") or None,
        run_name=env.get("RUN_NAME") or None,
    )


# -- the package and its parameters ------------------------------------------------------------


def read_package(path: str | Path) -> tuple[str, dict]:
    """The compiled pipeline's name and parameters (name -> kfp InputSpec), its documents checked
    with the KFP protos."""
    from google.protobuf import json_format
    from kfp.dsl.structures import InputSpec

    path = Path(path)
    if not path.is_file():
        raise SubmitError(f"{path} not found: run `make compile` first or pass --package FILE", code=2)
    try:
        docs = load_pipeline_yaml(path)
        validate_pipeline_docs(docs)
        spec = docs[0]
        parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        inputs = {name: InputSpec.from_ir_component_inputs_dict(p) for name, p in parameters.items()}
        return spec["pipelineInfo"]["name"], inputs
    except (yaml.YAMLError, json_format.ParseError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SubmitError(f"{path} is not a compiled KFP pipeline: {one_line(str(exc))[:200]}", code=2) from exc


def parameter_tokens(key: str, value: str, spec) -> list[str]:
    """KEY=VALUE as the `musictext run` option that sets it (booleans take a --no- form)."""
    if spec.type == "Boolean":
        if value.lower() not in BOOLEANS:
            raise SubmitError(f"pipeline parameter {key}: expected true or false, got {value!r}", code=2)
        return [option_name(key) if BOOLEANS[value.lower()] else "--no-" + option_name(key)[2:]]
    return [f"{option_name(key)}={value}"]  # '=' keeps a value such as -1 from reading as an option


def parse_run_params(pairs: list[str], inputs: dict) -> dict[str, Any]:
    """KEY=VALUE pairs as typed pipeline parameters; ``inputs`` are the package's parameters.
    Unknown names, values of the wrong type or outside a parameter's choices are refused."""
    known = pipeline_inputs()
    argv: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SubmitError(f"expected pipeline parameters as KEY=VALUE, got {pair!r}", code=2)
        if key not in inputs:
            raise SubmitError(f"unknown pipeline parameter {key!r}; the pipeline takes: "
                              f"{', '.join(sorted(inputs))}", code=2)
        if key not in known or known[key].type != inputs[key].type:
            raise SubmitError(f"pipeline parameter {key!r} differs between the package and this "
                              "checkout: recompile the package (make compile)", code=2)
        argv += parameter_tokens(key, value, inputs[key])
    parser = argparse.ArgumentParser(prog="musictext submit", add_help=False, exit_on_error=False)
    add_pipeline_args(parser)
    try:
        params = pipeline_params(parser.parse_args(argv))
    except argparse.ArgumentError as err:
        name = (err.argument_name or "").split("/")[0].lstrip("-").replace("-", "_")
        raise SubmitError(f"pipeline parameter {name}: {err.message}", code=2) from err
    except SystemExit as err:  # a Dict parameter's own check (e.g. source_options)
        raise SubmitError(str(err), code=2) from err
    for name in MERGED_DICTS & params.keys():
        params[name] = deep_merge(inputs[name].default or {}, params[name])
    return params


# -- talking to the API server -----------------------------------------------------------------


def server_detail(err: ApiException) -> str:
    """The server's own error message (grpc-gateway JSON), else its reason, on one line."""
    try:
        body = json.loads(err.body or "")
        detail = body.get("message") or body.get("error") or ""
    except (ValueError, AttributeError):
        detail = err.body.decode(errors="replace") if isinstance(err.body, bytes) else (err.body or "")
    return one_line(str(detail or err.reason or ""))[:300]


def one_line(text: str) -> str:
    return " ".join(text.split())


def explain(err: Exception, doing: str, settings: KfpSettings, retried: bool) -> str:
    """One line saying what failed while ``doing`` and what to change."""
    where = f"KFP_ENDPOINT={settings.endpoint}"
    if isinstance(err, urllib3.exceptions.HTTPError) or (isinstance(err, ApiException) and not err.status):
        reason = getattr(err, "reason", None) or err
        return f"{doing}: cannot reach {where} ({one_line(str(reason))[:200]}); check the URL and the network"
    status, detail = err.status, server_detail(err)
    said = f"{doing}: HTTP {status} {err.reason or ''}".rstrip() + (f" ({detail})" if detail else "")
    if status == 401:
        return f"{said}: set KFP_TOKEN (or KFP_TOKEN_FILE) to a token {where} accepts"
    if status == 403:
        namespace = settings.namespace or "(none: KFP_NAMESPACE unset)"
        return (f"{said}: the token's identity may not do this in namespace {namespace}; check "
                "KFP_NAMESPACE and that the identity is a contributor of that profile")
    if status == 404:
        return f"{said}: check that {where} is the Kubeflow Pipelines API base (e.g. https://HOST/pipeline)"
    if status == 409:
        return f"{said}: set KFP_PIPELINE_VERSION (or KFP_PIPELINE_NAME) to a new name"
    if status in RETRIED_STATUSES:
        tried = f"after {READ_ATTEMPTS} attempts" if retried else "not retried, a repeat could duplicate it"
        return f"{said}: the KFP API server failed ({tried}); try again or check its logs"
    return said


def is_server_error(err: BaseException) -> bool:
    return isinstance(err, ApiException) and err.status in RETRIED_STATUSES


@contextlib.contextmanager
def step(doing: str, settings: KfpSettings, retried: bool = False) -> Iterator[None]:
    """Turn an API or network failure inside the block into a one-line SubmitError."""
    try:
        yield
    except (ApiException, urllib3.exceptions.HTTPError) as err:
        raise SubmitError(explain(err, doing, settings, retried)) from err
    except ValueError as err:  # kfp.Client's own refusals, e.g. two experiments of one name
        raise SubmitError(f"{doing}: {one_line(str(err))}") from err


def read(call: Callable[..., T], *args, **kwargs) -> T:
    """An idempotent request, retried on a 5xx answer."""
    for attempt in tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_server_error), stop=tenacity.stop_after_attempt(READ_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=RETRY_WAIT_S, max=30), reraise=True,
    ):
        with attempt:
            return call(*args, **kwargs)
    raise AssertionError("unreachable: tenacity re-raises the last error")


def api_configuration(settings: KfpSettings):
    """The kfp_server_api configuration kfp.Client builds for this endpoint and token."""
    import kfp_server_api
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    config = kfp_server_api.Configuration(host=settings.endpoint)
    config.api_key_prefix["authorization"] = "Bearer"
    if settings.token:
        config.api_key["authorization"] = settings.token
    elif settings.token_file:
        config.api_key["authorization"] = "placeholder"  # replaced from the file before each request
        config.refresh_api_key_hook = ServiceAccountTokenVolumeCredentials(settings.token_file).refresh_api_key_hook
    return config


def check_server(settings: KfpSettings) -> None:
    """One health request before anything is uploaded: the endpoint answers, accepts the token,
    and a multi-user server has a namespace to work in. (kfp.Client asks the same itself when no
    namespace is given, but retries a refusal five times, five seconds apart, with tracebacks.)"""
    import kfp_server_api

    api = kfp_server_api.HealthzServiceApi(kfp_server_api.ApiClient(api_configuration(settings)))
    with step("checking the KFP API server", settings, retried=True):
        # raw, since the generated client turns any 200 page (a login form) into an empty answer
        answer = read(api.healthz_service_get_healthz, _request_timeout=REQUEST_TIMEOUT_S, _preload_content=False)
    try:
        health = json.loads(answer.data)
        multi_user = health.get("multi_user", False)
    except (ValueError, AttributeError):
        kind = answer.headers.get("Content-Type", "no content type")
        raise SubmitError(f"KFP_ENDPOINT={settings.endpoint} answered the health check with {kind}, not the "
                          "KFP API (a login page?): check KFP_ENDPOINT and the token") from None
    if multi_user and not settings.namespace:
        raise SubmitError(f"KFP at {settings.endpoint} is multi-user: set KFP_NAMESPACE to your "
                          "profile's namespace", code=2)


def connect(settings: KfpSettings):
    """A kfp.Client whose every request carries `Authorization: Bearer <token>`; a token file is
    read again before each request, so a projected service-account token may rotate."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    credentials = ServiceAccountTokenVolumeCredentials(settings.token_file) if settings.token_file else None
    with warnings.catch_warnings():  # "only works with KFP v2.0.0-beta.2 and later": every server is
        warnings.simplefilter("ignore", FutureWarning)
        with step("connecting to the KFP API server", settings):
            # kfp's default namespace argument "kubeflow" means "none given".
            return kfp.Client(host=settings.endpoint, existing_token=settings.token,
                              credentials=credentials, namespace=settings.namespace or "kubeflow")


def find_pipeline_id(client, name: str, namespace: str | None) -> str | None:
    """The id of the pipeline called ``name`` in ``namespace`` (shared pipelines when None).
    (kfp.Client.get_pipeline_id lists shared pipelines only.)"""
    name_filter = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})
    found = read(client.list_pipelines, filter=name_filter, namespace=namespace).pipelines or []
    if len(found) > 1:
        raise SubmitError(f"{len(found)} pipelines are named {name!r}: set KFP_PIPELINE_NAME to a unique name")
    return found[0].pipeline_id if found else None


def upload(client, package: Path, name: str, version: str, settings: KfpSettings,
           exist_ok: bool = False) -> tuple[str, str | None]:
    """Upload ``package`` as version ``version`` of pipeline ``name``; returns the pipeline and
    version ids. An absent pipeline is created first (the server stores the package as its
    first version too, named after the pipeline), so every run names the version it ran.
    ``exist_ok``: the server's 409 for a version of that name already there is success, with
    None for the version id (a retry whose earlier attempt uploaded it)."""
    with step(f"looking up pipeline {name!r}", settings, retried=True):
        pipeline_id = find_pipeline_id(client, name, settings.namespace)
    if pipeline_id is None:
        with step(f"creating pipeline {name!r}", settings):
            pipeline_id = client.upload_pipeline(str(package), pipeline_name=name,
                                                 namespace=settings.namespace).pipeline_id
    with step(f"uploading version {version!r} of pipeline {name!r}", settings):
        try:
            made = client.upload_pipeline_version(str(package), version, pipeline_id=pipeline_id)
        except ApiException as err:
            if exist_ok and err.status == 409:
                return pipeline_id, None
            raise
    return pipeline_id, made.pipeline_version_id


def experiment_id(client, settings: KfpSettings) -> str:
    """The id of experiment KFP_EXPERIMENT, created when absent (a lookup, then a create: a
    retry after a failed create finds what it made)."""
    with step(f"finding or creating experiment {settings.experiment!r}", settings, retried=True):
        return read(client.create_experiment, settings.experiment, namespace=settings.namespace).experiment_id


def run_url(endpoint: str, run_id: str) -> str:
    return f"{endpoint}/#/runs/details/{run_id}"


def wait_for_run(client, run_id: str, settings: KfpSettings, timeout_s: float | None, poll_s: float) -> Any:
    """Poll the run until it reaches a final state; SubmitError when ``timeout_s`` passes first
    (the run itself goes on)."""
    started = time.monotonic()
    last = None
    while True:
        with step(f"reading run {run_id}", settings, retried=True):
            run = read(client.get_run, run_id)
        if run.state in FINAL_STATES:
            return run
        if run.state != last:
            print(f"run {run_id}: {run.state}", flush=True)
            last = run.state
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise SubmitError(f"run {run_id} is still {run.state} after {timeout_s:g} s (--timeout); it goes "
                              f"on: {run_url(settings.endpoint, run_id)}")
        time.sleep(poll_s)


def default_version_name() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d-%H%M%S")


def submit(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> int:
    """Everything the user gives is checked before the first request."""
    settings = settings_from_env(env)
    package = Path(args.package)
    package_name, inputs = read_package(package)
    params = parse_run_params(args.params, inputs)
    name = settings.pipeline_name or package_name
    version = settings.version_name or default_version_name()

    check_server(settings)
    client = connect(settings)
    pipeline_id, version_id = upload(client, package, name, version, settings)
    exp_id = experiment_id(client, settings)
    run_name = settings.run_name or f"{name} {version}"
    with step(f"creating run {run_name!r}", settings):
        run = client.run_pipeline(exp_id, run_name, params=params, pipeline_id=pipeline_id, version_id=version_id)
    print(f"pipeline {name!r} version {version!r}; run {run_name!r} in experiment {settings.experiment!r}")
    print(f"run URL: {run_url(settings.endpoint, run.run_id)}", flush=True)
    if not args.wait:
        return 0
    started = time.monotonic()
    done = wait_for_run(client, run.run_id, settings, args.timeout, args.poll_seconds)
    print(f"run {run.run_id}: {done.state} after {time.monotonic() - started:.0f} s")
    if done.state != "SUCCEEDED":
        error = one_line(str(getattr(done.error, "message", "") or "")) if done.error else ""
        raise SubmitError(f"run {run.run_id} ended {done.state}" + (f": {error}" if error else "")
                          + f"; see {run_url(settings.endpoint, run.run_id)}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        return submit(args)
    except SubmitError as err:
        print(f"submit: {err}", file=sys.stderr)
        return err.code


def _seconds(value: str) -> float:
    seconds = float(value)
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {value!r}")
    return seconds


def add_submit_parser(sub) -> None:
    sm = sub.add_parser(
        "submit", help="upload a compiled pipeline as a new version and start a run on a KFP cluster",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sm.add_argument("params", nargs="*", metavar="KEY=VALUE",
                    help="pipeline parameters (e.g. corpus_size=1000 families=muq,mert; a dict "
                         "parameter once per entry: gpu_node_selector=pool=a100; booleans true/false)")
    sm.add_argument("--package", default=DEFAULT_PACKAGE, help=f"the compiled pipeline (default {DEFAULT_PACKAGE})")
    sm.add_argument("--wait", action="store_true", help="wait for the run to finish; exit 1 unless it succeeds")
    sm.add_argument("--timeout", type=_seconds, default=None, metavar="SECONDS",
                    help="with --wait: stop waiting after this long and exit 1 (default: no limit)")
    sm.add_argument("--poll-seconds", type=_seconds, default=30.0, metavar="SECONDS",
                    help="with --wait: time between status checks (default 30)")
    sm.set_defaults(func=cmd_submit)
