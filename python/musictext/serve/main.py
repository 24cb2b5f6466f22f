"""Loading exports for the service and running it under uvicorn (``musictext serve``)."""

from __future__ import annotations

import logging

import torch

from musictext import storage
from musictext.exports import find_exports, load_export
from musictext.layout import CONFIG_FILE
from musictext.serve.app import DEFAULT_MODEL, create_app
from musictext.serve.proxy import Upstream
from musictext.text_encoder import TextEmbedder

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9003  # the Python text service's TEXT_EMBEDDING_PORT default in Navidrome's sidecar


def pick_device(device: str = "auto") -> str:
    """"auto": the GPU when torch sees one, else the CPU; "cuda" without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: torch sees no CUDA device here")
    return device


def embedder_location(path: str, name: str | None = None) -> str:
    """``path`` itself when it is a ``{name}_text_embedder`` dir, else the export of model id
    ``name`` (default muq) in the models directory ``path``."""
    if storage.exists(storage.join(path, CONFIG_FILE)):
        return path
    found = find_exports(path)
    name = name or DEFAULT_MODEL
    if name not in found:
        raise FileNotFoundError(f"{path} holds no {name}_text_embedder export (found: "
                                f"{', '.join(sorted(found)) or 'none'}); pass an export dir or --name")
    return found[name]


def load_models(models_dir: str, device: str = "cpu",
                names: list[str] | None = None) -> tuple[dict[str, TextEmbedder], dict[str, str]]:
    """({model id: embedder on ``device``}, {model id: location}) for the exports in ``models_dir``
    (a local path or bucket URI, e.g. a run's checkpoints/); only ``names`` when given."""
    found = find_exports(models_dir)
    if names:
        missing = sorted(set(names) - set(found))
        if missing:
            raise FileNotFoundError(f"{models_dir} holds no export for {missing} (found: {sorted(found)})")
        found = {n: found[n] for n in names}
    if not found:
        raise FileNotFoundError(f"{models_dir} holds no exported text embedder "
                                f"(expected muq_text_embedder/, mert_text_embedder/ or latent_text_embedder/)")
    models = {}
    for name, location in found.items():
        model = load_export(location).to(device)
        log.info("loaded %s (%d-D, %s) from %s", name, model.target_dim, model.base_model, location)
        models[name] = model
    return models, found


def serve_main(args) -> int:
    """Run the service with the CLI's options (see musictext_kfp.serve_cli)."""
    import uvicorn

    device = pick_device(getattr(args, "device", "auto"))
    if getattr(args, "upstream", None):
        Upstream(args.upstream)  # a bad URL fails now, not after loading the models
    names = getattr(args, "names", None)
    models, locations = load_models(args.models, device, names)
    app = create_app(models, upstream=getattr(args, "upstream", None),
                     max_batch=getattr(args, "max_batch", 32), max_wait_ms=getattr(args, "batch_wait_ms", 2.0),
                     locations=locations, models_dir=args.models, device=device)
    uvicorn.run(app, host=getattr(args, "host", DEFAULT_HOST), port=getattr(args, "port", DEFAULT_PORT),
                log_level=(getattr(args, "log_level", None) or "info").lower(),
                access_log=getattr(args, "access_log", False))
    return 0
