"""The text service: Navidrome's ``/embed_text`` contract over our exported text embedders.

Contract (``shared/reference/navidrome-contract.md``, "The text service"):
- ``POST /embed_text`` ``{"text": str, "model": "muq"|"mert"|"latent"}`` (model defaults to
  "muq") -> 200 ``{"embedding": [float], "model", "dimension", "is_stub": false}``;
- ``GET /models`` -> ``[{"name", "dimension", "status", "description"}]``;
- ``GET /health`` -> ``{"status": "healthy", ...}``.
We never answer with a stub: a query we cannot embed is an error (422 for bad input, 503 for a
known model that is not loaded), so ``is_stub`` is always false.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field, field_validator

from musictext.audio.families import FAMILY_NAMES
from musictext.captions import MAX_QUERY_CHARS, clean_query
from musictext.config import load_family_config
from musictext.exports import export_name, family_of
from musictext.serve.batching import MicroBatcher
from musictext.serve.proxy import METHODS, Upstream
from musictext.text_encoder import TextEmbedder

log = logging.getLogger(__name__)

DEFAULT_MODEL = "muq"  # Navidrome's default model id
KNOWN_MODELS: tuple[str, ...] = tuple(export_name(f) for f in FAMILY_NAMES)
# A query is a short description ("slow sad piano"). The tower reads at most its max_length
# tokens (64 by default, ~300 characters) and truncates the rest, so 2,000 characters leaves
# room for any real query while bounding what one request costs (tokenising is linear in the
# text, and a batch pads every query to its longest one). Longer input is refused, not cut, and
# refused before it is cleaned (pydantic checks max_length before the validators below run).
MAX_TEXT_CHARS = MAX_QUERY_CHARS
FAMILY_TITLES = {"muq": "MuQ-MuLan", "mert": "MERT-v1-330M", "music2latent": "Music2Latent"}


class EmbedRequest(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS,
                      description=f"the query, 1 to {MAX_TEXT_CHARS} characters, not blank")
    model: str = Field(DEFAULT_MODEL, description=f"one of {', '.join(KNOWN_MODELS)}")

    @field_validator("text")
    @classmethod
    def _has_words(cls, text: str) -> str:
        # The embedder cleans queries like training captions (markup, controls, spaces out);
        # a text that cleans to nothing would embed as an empty sentence: a meaningless vector.
        if not text.strip():
            raise ValueError("text is empty or only whitespace")
        # clean_query refuses an oversized text again, should this model ever lose its max_length.
        if not clean_query(text, lowercase=False):
            raise ValueError("text has no words once markup and control characters are removed")
        return text

    @field_validator("model")
    @classmethod
    def _known(cls, model: str) -> str:
        if model not in KNOWN_MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {', '.join(KNOWN_MODELS)}")
        return model


class EmbedResponse(BaseModel):
    embedding: list[float]
    model: str
    dimension: int
    is_stub: bool = False


class ModelInfo(BaseModel):
    name: str
    dimension: int
    status: str  # "available" (loaded) or "unavailable" (a known id with no export)
    description: str


def expected_dimension(name: str) -> int:
    """The dimension of a model id's audio space (its family's production target), 0 if unknown."""
    try:
        return int(load_family_config(family_of(name)).audio.target_dim)
    except (OSError, ValueError):  # a description only; the family's YAML may be missing
        return 0


def model_infos(models: dict[str, TextEmbedder], locations: dict[str, str],
                models_dir: str | None) -> list[ModelInfo]:
    infos = []
    for name in KNOWN_MODELS:
        title = FAMILY_TITLES.get(family_of(name), name)
        model = models.get(name)
        if model is not None:
            where = f" from {locations[name]}" if name in locations else ""
            infos.append(ModelInfo(
                name=name, dimension=model.target_dim, status="available",
                description=f"text -> {title} audio space ({model.target_dim}-D); "
                            f"{model.base_model} tower{where}"))
        else:
            source = f" in {models_dir}" if models_dir else ""
            infos.append(ModelInfo(
                name=name, dimension=expected_dimension(name), status="unavailable",
                description=f"text -> {title} audio space: no {name}_text_embedder export{source}"))
    return infos


def create_app(
    models: dict[str, TextEmbedder],
    upstream: str | None = None,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 2.0,
    locations: dict[str, str] | None = None,
    models_dir: str | None = None,
    device: str = "cpu",
) -> FastAPI:
    """The service for ``models`` ({Navidrome model id: loaded embedder, already on ``device``}).

    ``upstream``: base URL every route not served here is forwarded to. ``max_batch`` /
    ``max_wait_ms``: the micro-batching limits (``max_batch=1`` turns batching off).
    """
    unknown = sorted(set(models) - set(KNOWN_MODELS))
    if unknown:
        raise ValueError(f"unknown model ids {unknown}; expected some of {list(KNOWN_MODELS)}")
    locations = dict(locations or {})
    batchers = {name: MicroBatcher(name, model.embed_texts, max_batch, max_wait_ms / 1000)
                for name, model in models.items()}
    relay = Upstream(upstream) if upstream else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for batcher in batchers.values():
            batcher.start()
        if relay is not None:
            await relay.open()
        log.info("serving %s on %s%s", sorted(models) or "no models", device,
                 f", forwarding other routes to {upstream}" if upstream else "")
        try:
            yield
        finally:
            for batcher in batchers.values():
                await batcher.stop()
            if relay is not None:
                await relay.close()

    app = FastAPI(title="musictext text service", lifespan=lifespan,
                  description="Navidrome's /embed_text contract over musictext's text embedders")

    @app.post("/embed_text", response_model=EmbedResponse)
    async def embed_text(query: EmbedRequest) -> EmbedResponse:
        batcher = batchers.get(query.model)
        if batcher is None:
            loaded = ", ".join(sorted(models)) or "none"
            raise HTTPException(503, detail=f"model {query.model!r} is not loaded: no "
                                            f"{query.model}_text_embedder export (loaded: {loaded})")
        vector = await batcher.submit(query.text)
        return EmbedResponse(embedding=vector.tolist(), model=query.model,
                             dimension=int(vector.shape[0]), is_stub=False)

    infos = model_infos(models, locations, models_dir)  # fixed for the app's life; reading YAMLs takes ms

    @app.get("/models", response_model=list[ModelInfo])
    async def list_models() -> list[ModelInfo]:
        return infos

    @app.get("/health")
    async def health() -> dict:
        return {
            "status": "healthy",
            "models": sorted(models),
            "device": device,
            "upstream": upstream,
            "batching": {name: {"batches": b.batches, "queries": b.queries, "max_batch": b.max_batch}
                         for name, b in batchers.items()},
        }

    if relay is not None:
        @app.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
        async def forward(request: Request):
            return await relay.forward(request)

    return app
