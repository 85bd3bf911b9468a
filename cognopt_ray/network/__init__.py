"""The network engine: HTTP response cache (RFC 9111 / RFC 5861), request coalescing, pooled
aiohttp client, SSRF guard, compression and the static-asset (CDN) pipeline.

Layout: :mod:`~cognopt_ray.network.client` (the public client, :func:`client`), ``_actor`` (the
private actor), :mod:`~cognopt_ray.network.http_client` (the HTTP core, :class:`OptimizedClient`),
:mod:`~cognopt_ray.network.rules` (RFC 9111 rules), :mod:`~cognopt_ray.network.entries` (cache
entries), :mod:`~cognopt_ray.network.backends` (where entries live), ``near_cache``, ``guard``
(SSRF), ``origin`` (the origin fetch), ``proxying`` (the reverse proxy's conditionals, ranges and
``Cache-Status``), ``encoding``, ``assets`` (CDN), ``metrics``, ``errors``.

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray import network
    >>> cognopt_ray.init(num_cpus=2)                          # doctest: +SKIP
    >>> network.client().request("https://example.org/").cache_status   # doctest: +SKIP
    'MISS'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cognopt_ray._private import lazy as _lazy

if TYPE_CHECKING:
    from cognopt_ray.network.client import ACTOR_NAME, CACHE_ACTOR_NAME, NetworkEngine, client
    from cognopt_ray.network.errors import BadGateway, OriginTimeout, UrlRefused
    from cognopt_ray.network.guard import SsrfGuard
    from cognopt_ray.network.http_client import NetworkRequest, NetworkResponse, OptimizedClient, PoolConfig

_lazy.install(
    __name__,
    {
        "ACTOR_NAME": ".client",
        "CACHE_ACTOR_NAME": ".client",
        "NetworkEngine": ".client",
        "client": ".client",
        "BadGateway": ".errors",
        "OriginTimeout": ".errors",
        "UrlRefused": ".errors",
        "SsrfGuard": ".guard",
        "NetworkRequest": ".http_client",
        "NetworkResponse": ".http_client",
        "OptimizedClient": ".http_client",
        "PoolConfig": ".http_client",
    },
)

__all__ = [
    "client",
    "NetworkEngine",
    "OptimizedClient",
    "NetworkResponse",
    "NetworkRequest",
    "PoolConfig",
    "SsrfGuard",
    "UrlRefused",
    "BadGateway",
    "OriginTimeout",
    "ACTOR_NAME",
    "CACHE_ACTOR_NAME",
]
