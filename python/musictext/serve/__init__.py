"""The text service Navidrome calls: ``POST /embed_text`` over our exported text embedders.

``create_app`` builds the FastAPI app from loaded models (tests and embedding hosts use it
directly); ``serve_main`` loads a models directory and runs it under uvicorn (``musictext serve``).
Micro-batching lives in ``batching``, forwarding to an upstream sidecar in ``proxy``.
"""

from musictext.serve.app import DEFAULT_MODEL, KNOWN_MODELS, MAX_TEXT_CHARS, create_app
from musictext.serve.main import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    embedder_location,
    load_models,
    pick_device,
    serve_main,
)

__all__ = [
    "DEFAULT_HOST", "DEFAULT_MODEL", "DEFAULT_PORT", "KNOWN_MODELS", "MAX_TEXT_CHARS", "create_app",
    "embedder_location", "load_models", "pick_device", "serve_main",
]
