"""The network engine: HTTP response cache (RFC 9111 / RFC 5861), request coalescing, pooled
aiohttp client, SSRF guard, compression and the static-asset (CDN) pipeline.

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray import network
    >>> cognopt_ray.init(num_cpus=2)                          # doctest: +SKIP
    >>> network.client().request("https://example.org/").cache_status   # doctest: +SKIP
    'MISS'
"""

from __future__ import annotations

import threading

from cognopt_ray.network.client import NetworkResponse, OptimizedClient, PoolConfig
from cognopt_ray.network.engine import ACTOR_NAME, CACHE_ACTOR_NAME, NetworkEngine
from cognopt_ray.network.errors import BadGateway, OriginTimeout, UrlRefused
from cognopt_ray.network.guard import SsrfGuard

_lock = threading.Lock()
_client: NetworkEngine | None = None


def client() -> NetworkEngine:
    """The cluster's network engine (``cognopt.network``), created on first use; cached per process."""
    global _client
    with _lock:
        if _client is None:
            _client = NetworkEngine.get_or_create()
        return _client


__all__ = [
    "client",
    "NetworkEngine",
    "OptimizedClient",
    "NetworkResponse",
    "PoolConfig",
    "SsrfGuard",
    "UrlRefused",
    "BadGateway",
    "OriginTimeout",
    "ACTOR_NAME",
    "CACHE_ACTOR_NAME",
]
