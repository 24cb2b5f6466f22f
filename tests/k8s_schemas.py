"""Schema validation of Kubernetes objects offline: core kinds and the CRDs in shared/crds/.

Core objects validate with kubernetes_validate (strict, Kubernetes 1.35); custom resources with
jsonschema against their CRD's openAPIV3Schema, tightened so an unknown field fails as
`kubectl apply --validate=strict` would. Used by the manifest, chart and PyTorchJob tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import yaml

REPO = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.35.0"


def _find_crds() -> Path | None:
    # shared/ sits beside the checkout (CI: a fresh clone with shared/ beside it) or inside it.
    for base in (REPO / "shared", REPO.parent / "shared", Path("/work/shared")):
        if (base / "crds").is_dir():
            return base / "crds"
    return None


CRDS = _find_crds()


def _strict(schema: object) -> object:
    """Copy of an OpenAPI schema where objects with declared properties reject unknown keys."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> strict openAPIV3Schema, for every CRD file in shared/crds/."""
    if CRDS is None:
        return {}
    out = {}
    for path in sorted(CRDS.glob("*.yaml")):
        text = path.read_text()
        if "kind: CustomResourceDefinition" not in text:
            continue  # e.g. the runtime, which is a Helm template rather than YAML
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = version["schema"]["openAPIV3Schema"]
                out[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return out


def validate_object(obj: dict) -> None:
    """Raise if ``obj`` is not a valid object of its kind (core: Kubernetes schemas; CRs: CRD)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    schemas = crd_schemas()
    if key in schemas:
        jsonschema.validate(obj, schemas[key], cls=jsonschema.Draft7Validator)
        # The CRD types metadata as a bare object: check it as the ObjectMeta it becomes.
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, K8S_VERSION, strict=True
        )
        return
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.utils.SchemaNotFoundError as exc:
        # A custom resource whose CRD we do not have: never let it pass unchecked.
        raise AssertionError(f"no schema for {key}: neither Kubernetes {K8S_VERSION} nor shared/crds/") from exc


def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    """A strict validator for one custom resource kind; fails loudly if its CRD is missing."""
    schemas = crd_schemas()
    if (api_version, kind) not in schemas:
        raise AssertionError(f"no CRD for {api_version} {kind} in shared/crds/ ({CRDS})")
    return jsonschema.Draft7Validator(schemas[(api_version, kind)])
