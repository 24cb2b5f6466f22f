"""A local fake of the Kubeflow Pipelines API (v2beta1): exactly the routes `musictext submit`
reaches through kfp.Client, on 127.0.0.1 in a thread. It keeps pipelines, versions, experiments
and runs in memory, records every request (method, route, query, headers, body), checks the
bearer token when given one, and answers faults on demand (a status per route, in turn)."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.http_server import send_json, serve_handler

API = "/apis/v2beta1"

# (method, path pattern) -> route name; faults and assertions use the names.
ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(f"^{API}{pattern}$"), name)
    for method, pattern, name in [
        ("GET", "/healthz", "healthz"),
        ("GET", "/pipelines", "list_pipelines"),
        ("POST", "/pipelines/upload", "upload_pipeline"),
        ("POST", "/pipelines/upload_version", "upload_version"),
        ("GET", "/experiments", "list_experiments"),
        ("POST", "/experiments", "create_experiment"),
        ("POST", "/runs", "create_run"),
        ("GET", "/runs/(?P<run_id>[^/]+)", "get_run"),
    ]
]


@dataclass
class Request:
    method: str
    route: str  # a ROUTES name, or "unknown"
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def files(self) -> dict[str, bytes]:
        """A multipart/form-data body's parts: field name -> content."""
        head = f"Content-Type: {self.headers['content-type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + self.body)
        return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()}


@dataclass
class FakeKfp:
    token: str | None = None  # the bearer token every request must carry; None: no auth
    multi_user: bool = False
    run_states: list[str] = field(default_factory=lambda: ["SUCCEEDED"])  # GET run answers, last repeats
    faults: dict[str, list[int]] = field(default_factory=dict)  # route -> statuses answered first
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, list[dict]] = field(default_factory=dict)  # pipeline id -> versions
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _polls: dict[str, int] = field(default_factory=dict)

    def called(self, route: str) -> list[Request]:
        return [r for r in self.requests if r.route == route]

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids)}"

    # -- handlers: (request, path groups) -> (status, JSON body) --------------------------------

    def healthz(self, req: Request, **_) -> tuple[int, dict]:
        return 200, {"multi_user": self.multi_user}

    def list_pipelines(self, req: Request, **_) -> tuple[int, dict]:
        return listing(req, "pipelines", self.pipelines.values())

    def upload_pipeline(self, req: Request, **_) -> tuple[int, dict]:
        name = req.query["name"][0]
        pipeline = {"pipeline_id": self.new_id("pipeline"), "display_name": name, "name": name,
                    "namespace": req.query.get("namespace", [""])[0]}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.versions[pipeline["pipeline_id"]] = []
        self.add_version(pipeline["pipeline_id"], name, req)
        return 200, pipeline

    def upload_version(self, req: Request, **_) -> tuple[int, dict]:
        pipeline_id = req.query["pipelineid"][0]
        if pipeline_id not in self.pipelines:
            return 404, {"code": 5, "message": f"pipeline {pipeline_id} not found"}
        name = req.query["name"][0]
        if any(v["display_name"] == name for v in self.versions[pipeline_id]):
            return 409, {"code": 6, "message": f"pipeline version {name} already exists"}
        return 200, self.add_version(pipeline_id, name, req)

    def add_version(self, pipeline_id: str, name: str, req: Request) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": self.new_id("version"),
                   "display_name": name, "name": name,
                   "pipeline_spec_yaml": req.files()["uploadfile"].decode()}
        self.versions[pipeline_id].append(version)
        return version

    def list_experiments(self, req: Request, **_) -> tuple[int, dict]:
        return listing(req, "experiments", self.experiments.values())

    def create_experiment(self, req: Request, **_) -> tuple[int, dict]:
        experiment = {**req.json(), "experiment_id": self.new_id("experiment")}
        self.experiments[experiment["experiment_id"]] = experiment
        return 200, experiment

    def create_run(self, req: Request, **_) -> tuple[int, dict]:
        run = {**req.json(), "run_id": self.new_id("run"), "state": "PENDING"}
        self.runs[run["run_id"]] = run
        return 200, run

    def get_run(self, req: Request, run_id: str) -> tuple[int, dict]:
        if run_id not in self.runs:
            return 404, {"code": 5, "message": f"run {run_id} not found"}
        poll = self._polls[run_id] = self._polls.get(run_id, -1) + 1
        state = self.run_states[min(poll, len(self.run_states) - 1)]
        run = {**self.runs[run_id], "state": state}
        if state == "FAILED":
            run["error"] = {"code": 2, "message": "task train-muq failed"}
        return 200, run

    def answer(self, req: Request, groups: dict[str, str]) -> tuple[int, dict]:
        if self.token and req.headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"code": 16, "message": "Unauthenticated: invalid bearer token"}
        pending = self.faults.get(req.route)
        if pending:
            status = pending.pop(0)
            return status, {"code": 13, "message": f"injected {status}"}
        if req.route == "unknown":
            return 404, {"code": 5, "message": f"no route {req.path}"}
        return getattr(self, req.route)(req, **groups)


def matches(req: Request, item: dict) -> bool:
    """Whether ``item`` passes the request's filter (display_name EQUALS, all kfp.Client sends)."""
    raw = req.query.get("filter", [""])[0]
    if not raw:
        return True
    predicates = json.loads(raw)["predicates"]
    return all(item.get(p["key"]) == p.get("stringValue", p.get("string_value")) for p in predicates)


def listing(req: Request, key: str, items) -> tuple[int, dict]:
    """A v2beta1 list answer: the namespace's items the request's filter matches (KFP omits
    empty lists and the count when nothing matches)."""
    namespace = req.query.get("namespace", [""])[0]
    found = [i for i in items if i.get("namespace", "") == namespace and matches(req, i)]
    return 200, {key: found, "total_size": len(found)} if found else {}


def route_of(method: str, path: str) -> tuple[str, dict[str, str]]:
    for route_method, pattern, name in ROUTES:
        hit = pattern.match(path)
        if hit and route_method == method:
            return name, hit.groupdict()
    return "unknown", {}


def _handler(kfp: FakeKfp):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def handle_any(self) -> None:
            url = urlsplit(self.path)
            route, groups = route_of(self.command, url.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(self.command, route, url.path, parse_qs(url.query), {k.lower(): v for k, v in self.headers.items()},
                          self.rfile.read(length))
            kfp.requests.append(req)
            status, body = kfp.answer(req, groups)
            send_json(self, status, body)

        do_GET = do_POST = do_DELETE = handle_any  # noqa: N815 -- http.server's naming

    return Handler


@contextlib.contextmanager
def serve_kfp(**settings) -> Iterator[FakeKfp]:
    """Run a FakeKfp (``settings`` are its fields) until the block ends; ``.url`` is its endpoint."""
    kfp = FakeKfp(**settings)
    with serve_handler(_handler(kfp)) as (kfp.url, _):
        yield kfp
