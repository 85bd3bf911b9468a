"""What crosses the HTTP client's edges: the pool settings, the response, and the request headers.

:class:`NetworkResponse` is what :meth:`OptimizedClient.request
<cognopt_ray.network.http_client.OptimizedClient.request>` returns; :class:`PoolConfig` the
connection pool's limits; the small records are the client's hand-offs between
the cache, coalescing and the origin fetch. Request headers are checked here, once
(:func:`clean_headers`).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from pydantic import BaseModel, Field
from yarl import URL

from cognopt_ray.network.errors import BadGateway, InvalidRequest
from cognopt_ray.network.rules import StoredResponse, header

CacheStatus = Literal["HIT", "MISS", "REVALIDATED", "STALE", "BYPASS"]
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
REDIRECTS = (301, 302, 303, 307, 308)
#: Request headers a caller may not set (the client owns them).
_OWNED_REQUEST_HEADERS = {
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "accept-encoding",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "trailer",
    "expect",
}
#: Response headers that describe the transfer, not the (decoded) body.
TRANSFER_HEADERS = (
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-encoding",
    "content-length",
    "proxy-connection",
    "trailer",
    "upgrade",
    "te",
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: The total timeout of the request being served (``timeout_s``), seen by every hop it makes.
request_timeout: contextvars.ContextVar[float | None] = contextvars.ContextVar("cognopt_request_timeout", default=None)
#: Whether a response without freshness information gets the strategy's lifetime (the request's
#: :attr:`NetworkRequest.default_lifetime`), seen when the response is stored.
default_lifetime: contextvars.ContextVar[bool] = contextvars.ContextVar("cognopt_default_lifetime", default=True)


class PoolConfig(BaseModel):
    """The connection pool: aiohttp ``TCPConnector`` limits."""

    limit: int = Field(default=100, ge=0, le=100_000, description="total connections; 0 = no limit")
    limit_per_host: int = Field(default=20, ge=0, le=100_000, description="connections per host; 0 = no limit")
    keepalive_timeout_s: float = Field(default=30.0, gt=0, le=3600)


class NetworkResponse(BaseModel):
    """What a request through the engine returns.

    ``cache_status``: ``HIT`` (fresh from the cache), ``MISS`` (from the origin), ``REVALIDATED``
    (stored body confirmed by a 304), ``STALE`` (served stale under stale-while-revalidate or
    stale-if-error), ``BYPASS`` (the cache was not used: unsafe method, ``no_cache``, no-store).
    """

    request_id: str | None = None
    url: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    cache_status: CacheStatus
    coalesced: bool = False
    redirects: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    fresh_for_s: float = Field(
        default=0.0, description="seconds the answer stays fresh in the cache (0 = not stored or stale)"
    )
    plain_wire_bytes: int | None = Field(
        default=None,
        description="wire bytes of this body a plain client sending the same Accept-Encoding would have "
        "received (None = unknown); what a near-cache hit of it saves",
    )
    stored: bool = Field(default=False, description="this answer was stored in the cache by this request")

    def header(self, name: str) -> str | None:
        return header(self.headers, name)

    def json(self) -> Any:  # type: ignore[override]
        import json

        return json.loads(self.body)


@dataclass
class NetworkRequest:
    """One request through the engine, as it crosses route → client → actor → engine.

    Attributes:
        url: the absolute URL (checked by the SSRF guard, like every redirect hop).
        method: any method in proxy mode (an unknown one passes through uncached); else one of
            :data:`METHODS`.
        headers: ``(name, value)`` pairs (checked by :func:`clean_headers`).
        body: the request body.
        service: the cache partition and settings the request is made for.
        cache_strategy: less caching than the service's strategy, never more.
        compression_level: the encodings offered to the origin (default: the service's).
        follow_redirects: follow 3xx answers, each hop checked by the SSRF guard (the proxy
            passes them to its client unless the upstream says ``follow_redirects``).
        request_id: echoed in the response.
        timeout_s: shortens the total origin timeout.
        proxy: answer as a caching reverse proxy: the client's ``If-None-Match`` /
            ``If-Modified-Since`` and ``Range`` are answered from the cache (304, 206, 416),
            ``HEAD`` from a stored ``GET``, any method accepted.
        default_lifetime: a response without freshness information is fresh for the strategy's
            lifetime (off for a plain RFC 9111 cache).
    """

    url: str
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    service: str | None = None
    cache_strategy: str | None = None
    compression_level: str | None = None
    follow_redirects: bool = True
    request_id: str | None = None
    timeout_s: float | None = None
    proxy: bool = False
    default_lifetime: bool = True


@dataclass
class OriginReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    request_time: float
    response_time: float
    wire: int = 0  #: body bytes as they came over the wire
    accept: str = ""  #: the Accept-Encoding they were asked for with


@dataclass
class Outcome:
    """One hop's answer. ``plain_wire``: the wire bytes a plain client (same Accept-Encoding) would
    have received for it (None = unknown); ``wire``: the bytes received from the origin for it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    cache_status: CacheStatus
    coalesced: bool = False
    fresh_for: float = 0.0
    plain_wire: int | None = 0
    wire: int = 0
    stored: bool = False


def from_origin(origin: OriginReply, status: CacheStatus, fresh_for: float = 0.0, *, stored: bool = False) -> Outcome:
    """The origin's answer as it is: a plain client would have received the same bytes (saving 0)."""
    return Outcome(
        origin.status,
        origin.headers,
        origin.body,
        status,
        fresh_for=fresh_for,
        plain_wire=origin.wire,
        wire=origin.wire,
        stored=stored,
    )


def from_entry(
    entry: StoredResponse,
    status: CacheStatus,
    now: float | None = None,
    *,
    warning: str | None = None,
    plain_wire: int | None = 0,
    wire: int = 0,
    fresh: bool = False,
    stored: bool = False,
) -> Outcome:
    """A stored entry's answer (``Age`` set, a ``Warning`` added when given)."""
    headers = entry.response_headers(now) + ([("Warning", warning)] if warning else [])
    fresh_for = entry_fresh_for(entry) if fresh else 0.0
    return Outcome(
        entry.status, headers, entry.body, status, fresh_for=fresh_for, plain_wire=plain_wire, wire=wire, stored=stored
    )


@dataclass
class PoolSlot:
    session: aiohttp.ClientSession
    inflight: int = 0
    retired: bool = False


@dataclass
class Inflight:
    future: asyncio.Future
    waiters: int = 0


def too_large(url: URL, limit: int) -> BadGateway:
    return BadGateway(
        f"the response of {str(url)[:200]!r} is over the limit of {limit} bytes",
        hint="raise settings.network.max_response_bytes",
        rule="max-response-bytes",
    )


def entry_fresh_for(entry: StoredResponse | None) -> float:
    if entry is None or entry.vary:  # variants are selected by the engine, not by a near cache
        return 0.0
    return max(0.0, entry.lifetime() - entry.current_age())


def check_method(method: str, *, any_method: bool) -> str:
    """The method upper-cased; any token (at most 32 characters) with ``any_method``, else one of :data:`METHODS`."""
    m = (method or "GET").upper()
    if any_method:
        if len(m) > 32 or not _TOKEN.match(m):
            raise InvalidRequest(f"method {m[:40]!r} is not an HTTP token", hint="use a method like GET or M-SEARCH")
        return m
    if m not in METHODS:
        raise InvalidRequest(f"method {m!r} is not supported", hint=f"use one of {', '.join(METHODS)}")
    return m


def clean_headers(headers: dict[str, str] | list | None) -> list[tuple[str, str]]:
    items = list(headers.items()) if isinstance(headers, dict) else [tuple(h) for h in (headers or [])]
    out = []
    for item in items:
        if len(item) != 2:
            raise InvalidRequest("headers must be name/value pairs")
        k, v = item
        if not isinstance(k, str) or not isinstance(v, str) or not _TOKEN.match(k) or any(c in v for c in "\r\n\x00"):
            raise InvalidRequest(
                f"header {str(k)[:100]!r} has an invalid name or value",
                hint="header names are tokens; values must not contain CR, LF or NUL",
            )
        if k.lower() in _OWNED_REQUEST_HEADERS:
            continue
        out.append((k, v))
    return out


__all__ = ["NetworkResponse", "NetworkRequest", "PoolConfig", "METHODS", "CacheStatus", "check_method"]
