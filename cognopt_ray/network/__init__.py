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

from cognopt_ray._private.client import process_client
from cognopt_ray.network.client import NetworkResponse, OptimizedClient, PoolConfig
from cognopt_ray.network.engine import ACTOR_NAME, CACHE_ACTOR_NAME, NetworkEngine
from cognopt_ray.network.errors import BadGateway, OriginTimeout, UrlRefused
from cognopt_ray.network.guard import SsrfGuard


def client() -> NetworkEngine:
    """The cluster's network engine (``cognopt.network``), created on first use; cached per process."""
    return process_client(ACTOR_NAME, NetworkEngine.get_or_create)


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
