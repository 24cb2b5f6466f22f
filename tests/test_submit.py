"""`musictext submit` against a local fake of the KFP v2beta1 API (tests/kfp_api_server.py): the
exact requests kfp.Client sends (routes, the uploaded YAML, typed run parameters, experiment,
namespace, bearer token), the printed run URL, waiting, and one-line errors that name the fix."""

from __future__ import annotations

import socket
from pathlib import Path

import kfp
import pytest
import yaml

from tests.http_server import serve
from tests.kfp_api_server import serve_kfp
from musictext_kfp import submit as submit_module
from musictext_kfp.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "kfp-token-5ecr3t-9f8e7d"
KEY_CONTENT = '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----FAKE4242"}'
BUCKET_SECRET = "mt-bucket-key"
ENV_NAMES = ["KFP_ENDPOINT", "KFP_TOKEN", "KFP_TOKEN_FILE", "KFP_NAMESPACE", "KFP_EXPERIMENT",
             "KFP_PIPELINE_NAME", "KFP_PIPELINE_VERSION", "RUN_NAME"]


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    """The cluster YAML with a bucket Secret, compiled once with the token and a credentials file
    in the environment (neither may end up in it)."""
    tmp = tmp_path_factory.mktemp("submit")
    key = tmp / "key.json"
    key.write_text(KEY_CONTENT)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KFP_TOKEN", TOKEN)
        mp.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        assert cli_main(["compile", "--output", str(tmp / "musictext.yaml"), "--pipeline-root", "gs://acme/mt",
                         "--bucket-secret", BUCKET_SECRET]) == 0
    return tmp / "musictext.yaml"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No KFP_* from the caller's shell, no kfp context file from their home, no retry waits."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setattr(submit_module, "RETRY_WAIT_S", 0.0)


def run_submit(capsys, package: Path, *argv: str) -> tuple[int, str, str]:
    rc = cli_main(["submit", "--package", str(package), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def use(monkeypatch, kfp_server, **env: str) -> None:
    monkeypatch.setenv("KFP_ENDPOINT", kfp_server.url)
    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def error_line(err: str) -> str:
    """The one `submit:` line on stderr (and no traceback)."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("submit: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_uploads_a_version_and_starts_a_typed_run(package, monkeypatch, capsys):
    with serve_kfp(token=TOKEN) as kfp_server:
        use(monkeypatch, kfp_server, KFP_EXPERIMENT="nightly", KFP_PIPELINE_VERSION="abc123-1", RUN_NAME="ci abc123")
        rc, out, _ = run_submit(capsys, package, "corpus_size=1000", "families=muq", "clip_seconds=4.5",
                                "m2l_native_rate=false", "gpu_node_selector=pool=a100",
                                "source_options=jamendo.tags=rock")
        assert rc == 0
        assert [r.route for r in kfp_server.requests] == [
            "healthz", "healthz", "list_pipelines", "upload_pipeline", "upload_version",
            "list_experiments", "create_experiment", "create_run"]
        assert {r.headers.get("authorization") for r in kfp_server.requests} == {f"Bearer {TOKEN}"}
        compiled = package.read_bytes()
        new, version = kfp_server.called("upload_pipeline")[0], kfp_server.called("upload_version")[0]
        assert new.query["name"] == ["musictext"] and "namespace" not in new.query
        assert new.files()["uploadfile"] == compiled == version.files()["uploadfile"]
        pipeline_id = next(iter(kfp_server.pipelines))
        assert version.query["pipelineid"] == [pipeline_id] and version.query["name"] == ["abc123-1"]
        assert kfp_server.called("create_experiment")[0].json()["display_name"] == "nightly"

        run = kfp_server.called("create_run")[0].json()
        assert run["display_name"] == "ci abc123"
        assert run["experiment_id"] == next(iter(kfp_server.experiments))
        assert run["pipeline_version_reference"] == {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": kfp_server.versions[pipeline_id][-1]["pipeline_version_id"]}
        assert run["runtime_config"]["parameters"] == {
            "corpus_size": 1000, "families": ["muq"], "clip_seconds": 4.5, "m2l_native_rate": False,
            "gpu_node_selector": {"pool": "a100"}, "source_options": {"jamendo": {"tags": "rock"}}}
        run_id = next(iter(kfp_server.runs))
        assert f"run URL: {kfp_server.url}/#/runs/details/{run_id}\n" in out


def test_later_submission_adds_a_version_and_reuses_the_experiment(package, monkeypatch, capsys):
    with serve_kfp(token=TOKEN) as kfp_server:
        use(monkeypatch, kfp_server, KFP_PIPELINE_VERSION="v1")
        assert run_submit(capsys, package)[0] == 0
        kfp_server.requests.clear()
        monkeypatch.setenv("KFP_PIPELINE_VERSION", "v2")
        assert run_submit(capsys, package, "seed=3")[0] == 0
        assert [r.route for r in kfp_server.requests] == [
            "healthz", "healthz", "list_pipelines", "upload_version", "list_experiments", "create_run"]
        (pipeline_id, versions), = kfp_server.versions.items()
        # the server's first version (named after the pipeline), then one per submission
        assert [v["display_name"] for v in versions] == ["musictext", "v1", "v2"]
        run = kfp_server.called("create_run")[0].json()
        assert run["runtime_config"]["parameters"] == {"seed": 3}
        assert run["display_name"] == "musictext v2"
        # the same version name again: the server refuses it, the message says what to change
        rc, _, err = run_submit(capsys, package)
        assert rc == 1 and "409" in error_line(err) and "KFP_PIPELINE_VERSION" in error_line(err)


def test_train_options_go_over_the_compiled_bucket_secret(package, monkeypatch, capsys):
    """KFP replaces a dict default wholesale; submit keeps the Secret wiring compile put there."""
    with serve_kfp(token=TOKEN) as kfp_server:
        use(monkeypatch, kfp_server)
        assert run_submit(capsys, package, "train_options=requests.cpu=8", "train_options=shm_size=16Gi")[0] == 0
        params = kfp_server.called("create_run")[0].json()["runtime_config"]["parameters"]
        assert params == {"train_options": {"bucket_secret": BUCKET_SECRET, "bucket_secret_key": "key.json",
                                            "requests": {"cpu": "8"}, "shm_size": "16Gi"}}


def test_multi_user_server_works_in_the_profile_namespace(package, monkeypatch, capsys):
    with serve_kfp(token=TOKEN, multi_user=True) as kfp_server:
        use(monkeypatch, kfp_server)
        rc, _, err = run_submit(capsys, package)
        assert rc == 2 and "KFP_NAMESPACE" in error_line(err)
        assert [r.route for r in kfp_server.requests] == ["healthz"]

        kfp_server.requests.clear()
        monkeypatch.setenv("KFP_NAMESPACE", "team-a")
        assert run_submit(capsys, package)[0] == 0
        # with a namespace kfp.Client asks no health of its own
        assert [r.route for r in kfp_server.requests][:2] == ["healthz", "list_pipelines"]
        assert kfp_server.called("list_pipelines")[0].query["namespace"] == ["team-a"]
        assert kfp_server.called("upload_pipeline")[0].query["namespace"] == ["team-a"]
        assert kfp_server.called("list_experiments")[0].query["namespace"] == ["team-a"]
        assert kfp_server.called("create_experiment")[0].json()["namespace"] == "team-a"


def test_token_file_is_sent_as_bearer(package, monkeypatch, capsys, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with serve_kfp(token=TOKEN) as kfp_server:
        monkeypatch.setenv("KFP_ENDPOINT", kfp_server.url)
        monkeypatch.setenv("KFP_TOKEN_FILE", str(token_file))
        assert run_submit(capsys, package)[0] == 0
        assert {r.headers.get("authorization") for r in kfp_server.requests} == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize("param, said", [
    ("corpus=5", "unknown pipeline parameter 'corpus'"),
    ("corpus_size=abc", "corpus_size: invalid int value: 'abc'"),
    ("clip_seconds=long", "clip_seconds: invalid float value"),
    ("families=muq,opera", "unknown families ['opera']"),
    ("m2l_native_rate=maybe", "m2l_native_rate: expected true or false"),
    ("clip_format=mp3", "clip_format: invalid choice: 'mp3'"),
    ("corpus_size", "expected pipeline parameters as KEY=VALUE"),
])
def test_bad_parameters_are_refused_before_any_request(package, monkeypatch, capsys, param, said):
    with serve_kfp(token=TOKEN) as kfp_server:
        use(monkeypatch, kfp_server)
        rc, _, err = run_submit(capsys, package, "seed=1", param)
        assert rc == 2 and said in error_line(err)
        assert kfp_server.requests == []


def test_wrong_token_stops_at_the_health_check(package, monkeypatch, capsys):
    with serve_kfp(token="the-right-one") as kfp_server:
        use(monkeypatch, kfp_server)
        rc, _, err = run_submit(capsys, package)
        line = error_line(err)
        assert rc == 1 and "401" in line and "KFP_TOKEN" in line and TOKEN not in err
        assert [r.route for r in kfp_server.requests] == ["healthz"]


def test_forbidden_upload_names_the_namespace(package, monkeypatch, capsys):
    with serve_kfp(token=TOKEN, faults={"upload_pipeline": [403]}) as kfp_server:
        use(monkeypatch, kfp_server, KFP_NAMESPACE="team-b")
        rc, _, err = run_submit(capsys, package)
        line = error_line(err)
        assert rc == 1 and "403" in line and "creating pipeline 'musictext'" in line and "team-b" in line
        assert not kfp_server.called("create_run")


def test_wrong_api_path_says_check_the_endpoint(package, monkeypatch, capsys):
    with serve_kfp(token=TOKEN) as kfp_server:
        use(monkeypatch, kfp_server, KFP_ENDPOINT=kfp_server.url + "/not-kfp")
        rc, _, err = run_submit(capsys, package)
        assert rc == 1 and "404" in error_line(err) and "KFP_ENDPOINT" in error_line(err)


def test_a_page_that_is_not_the_api(package, monkeypatch, capsys, tmp_path):
    """E.g. an auth proxy's sign-in page: 200, but no KFP JSON."""
    page = tmp_path / "apis/v2beta1/healthz"
    page.parent.mkdir(parents=True)
    page.write_text("<html><body>Sign in</body></html>")
    with serve(tmp_path) as (url, faults):
        monkeypatch.setenv("KFP_ENDPOINT", url)
        rc, _, err = run_submit(capsys, package)
        assert rc == 1 and "answered the health check with" in error_line(err)
        assert "not the KFP API" in error_line(err)
        assert [(path, status) for path, _, status in faults.log] == [("/apis/v2beta1/healthz", 200)]


def test_server_errors_retry_reads_and_never_repeat_a_run(package, monkeypatch, capsys):
    with serve_kfp(token=TOKEN, faults={"healthz": [503, 500], "create_run": [500]}) as kfp_server:
        use(monkeypatch, kfp_server)
        rc, _, err = run_submit(capsys, package)
        line = error_line(err)
        assert rc == 1 and "500" in line and "not retried" in line
        assert len(kfp_server.called("healthz")) == 4  # two refusals, then ours and kfp.Client's
        assert len(kfp_server.called("create_run")) == 1


def test_unreachable_endpoint(package, monkeypatch, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("KFP_ENDPOINT", f"http://127.0.0.1:{port}")
    rc, _, err = run_submit(capsys, package)
    assert rc == 1 and f"cannot reach KFP_ENDPOINT=http://127.0.0.1:{port}" in error_line(err)


@pytest.mark.parametrize("env, said", [
    ({}, "KFP_ENDPOINT is not set"),
    ({"KFP_ENDPOINT": "kubeflow.example.com"}, "has no scheme"),
    ({"KFP_ENDPOINT": "https://k.example.com", "KFP_TOKEN_FILE": "/nonexistent/token"}, "KFP_TOKEN_FILE"),
])
def test_missing_settings_are_named(package, monkeypatch, capsys, env, said):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rc, _, err = run_submit(capsys, package)
    assert rc == 2 and said in error_line(err)


def test_missing_package_says_compile_first(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("KFP_ENDPOINT", "https://k.example.com")
    rc, _, err = run_submit(capsys, tmp_path / "none.yaml")
    assert rc == 2 and "make compile" in error_line(err)


@pytest.mark.parametrize("states, rc, said", [
    (["PENDING", "RUNNING", "SUCCEEDED"], 0, "SUCCEEDED after"),
    (["RUNNING", "FAILED"], 1, "ended FAILED: task train-muq failed"),
    (["CANCELED"], 1, "ended CANCELED"),
])
def test_wait_exits_with_the_run_outcome(package, monkeypatch, capsys, states, rc, said):
    with serve_kfp(token=TOKEN, run_states=states) as kfp_server:
        use(monkeypatch, kfp_server)
        got, out, err = run_submit(capsys, package, "--wait", "--poll-seconds", "0")
        assert got == rc and said in out + err
        assert len(kfp_server.called("get_run")) == len(states)
        if rc:
            assert f"/#/runs/details/{next(iter(kfp_server.runs))}" in error_line(err)


def test_wait_gives_up_after_the_timeout(package, monkeypatch, capsys):
    with serve_kfp(token=TOKEN, run_states=["RUNNING"]) as kfp_server:
        use(monkeypatch, kfp_server)
        rc, _, err = run_submit(capsys, package, "--wait", "--timeout", "0.2", "--poll-seconds", "0.05")
        assert rc == 1 and "still RUNNING after 0.2 s" in error_line(err)


def test_no_secret_in_the_package_or_any_request(package, monkeypatch, capsys, tmp_path):
    key = tmp_path / "key.json"
    key.write_text(KEY_CONTENT)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    secrets = [TOKEN, "FAKE4242"]
    assert BUCKET_SECRET in package.read_text()  # the Secret's name only
    assert not [s for s in secrets if s in package.read_text()]
    with serve_kfp(token=TOKEN) as kfp_server:
        use(monkeypatch, kfp_server)
        assert run_submit(capsys, package, "corpus_size=10")[0] == 0
        for req in kfp_server.requests:
            others = {k: v for k, v in req.headers.items() if k != "authorization"}
            sent = f"{req.path} {req.query} {others}".encode() + req.body
            assert not [s for s in secrets if s.encode() in sent], req.route


def test_ci_example_submits_with_the_secrets():
    """The example workflow: on push to main, Python 3.11, pinned installs, one `make submit`
    step that gets the endpoint and token from repository secrets through its environment."""
    workflow = yaml.safe_load((ROOT / "examples/ci/github-actions.yaml").read_text())
    assert workflow[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads the key `on` as True
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    python = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert python and python[0]["with"]["python-version"] == "3.11"
    install = [s["run"].splitlines() for s in steps if "make venv" in s.get("run", "")]
    assert len(install) == 1 and install[0][-1] == "make venv"  # pip install -c constraints -r dev.txt
    assert all("-c requirements/constraints.txt" in line for line in install[0] if "pip install" in line)
    submit_steps = [s for s in steps if "make submit" in s.get("run", "")]
    assert len(submit_steps) == 1
    env = submit_steps[0]["env"]
    assert env["KFP_ENDPOINT"] == "${{ secrets.KFP_ENDPOINT }}"
    assert env["KFP_TOKEN"] == "${{ secrets.KFP_TOKEN }}"
    assert "secrets." not in submit_steps[0]["run"]  # secrets reach make through env only
