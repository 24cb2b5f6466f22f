"""Forwarding to an upstream sidecar, so Navidrome's single base URL can point at musictext.

Navidrome sends every recommendation call (audio uploads, batch jobs, ...) to one base URL. With
``--upstream`` the text service answers its own routes and relays every other request to the
existing sidecar unchanged: method, path, query string, body and end-to-end headers. Responses
come back byte for byte (still compressed if the sidecar compressed them). No streaming: the
sidecar's routes answer small JSON bodies.
"""

from __future__ import annotations

import logging

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 connection-specific headers, which a proxy must not forward; plus the ones
# the HTTP client recomputes for the new connection (host, content-length).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
RECOMPUTED = frozenset({"host", "content-length"})
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def end_to_end(pairs: list[tuple[str, str]], drop: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """Header ``pairs`` (repeats kept) without hop-by-hop ones, including those that the
    Connection header names."""
    named = {h.strip().lower() for k, v in pairs if k.lower() == "connection" for h in v.split(",")}
    skip = HOP_BY_HOP | named | drop
    return [(k, v) for k, v in pairs if k.lower() not in skip]


def relayed_response(reply: httpx.Response, content: bytes) -> Response:
    """The upstream's status, headers (repeats such as Set-Cookie kept) and raw body."""
    response = Response(content=content, status_code=reply.status_code)
    head = reply.request.method == "HEAD"  # a HEAD reply's length describes the GET body
    headers = end_to_end(reply.headers.multi_items(), frozenset() if head else RECOMPUTED)
    response.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if not head:
        response.raw_headers.append((b"content-length", str(len(content)).encode()))
    return response


class Upstream:
    """An httpx client for one upstream base URL (opened and closed with the app)."""

    def __init__(self, base_url: str, timeout_s: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        # No connection-pool limit beyond httpx's default; no retries: the caller decides.
        self.client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def target(self, request: Request) -> str:
        url = self.base_url + request.url.path
        query = request.url.query
        return f"{url}?{query}" if query else url

    async def forward(self, request: Request) -> Response:
        """Relay ``request``; 502 if the upstream cannot be reached, 504 if it times out."""
        url = self.target(request)
        body = await request.body()
        headers = end_to_end(request.headers.items(), RECOMPUTED)
        if request.client is not None:
            headers.append(("x-forwarded-for", request.client.host))
        try:
            upstream_request = self.client.build_request(request.method, url, headers=headers, content=body)
            reply = await self.client.send(upstream_request, stream=True)
            try:
                content = b"".join([chunk async for chunk in reply.aiter_raw()])
            finally:
                await reply.aclose()
        except httpx.TimeoutException as exc:
            log.warning("upstream %s timed out: %s", url, exc)
            return JSONResponse({"detail": f"upstream {self.base_url} timed out: {type(exc).__name__}"},
                                status_code=504)
        except httpx.RequestError as exc:
            log.warning("upstream %s unreachable: %s", url, exc)
            return JSONResponse(
                {"detail": f"upstream {self.base_url} unreachable: {type(exc).__name__}: {exc}"},
                status_code=502,
            )
        return relayed_response(reply, content)
