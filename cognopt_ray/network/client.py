"""The network engine's public client: :class:`NetworkEngine` over the actor ``cognopt.network``.

Every method has a sync form and an ``_async`` twin (for event loops: Serve routes, notebooks,
async tasks). The client checks nothing the engine checks again: it forwards the call and turns
Ray's errors into the package's own (:class:`~cognopt_ray.errors.EngineUnavailable` while the
actor restarts; the engine's :mod:`~cognopt_ray.network.errors` as raised).

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray import network
    >>> cognopt_ray.init(num_cpus=2)                                    # doctest: +SKIP
    >>> net = network.client()                                          # doctest: +SKIP
    >>> r = net.request("https://example.org/", cache_strategy="short_term")   # doctest: +SKIP
    >>> r.cache_status, net.metrics()["cache_hit_rate"]                 # doctest: +SKIP
    ('MISS', 0.0)
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient, process_client
from cognopt_ray.config import Settings
from cognopt_ray.network._actor import ACTOR_NAME, CACHE_ACTOR_NAME, _NetworkActor
from cognopt_ray.network.http_client import NetworkResponse
from cognopt_ray.network.local_socket import LocalChannel
from cognopt_ray.network.messages import NetworkRequest
from cognopt_ray.network.near_cache import NearCache, near_key
from cognopt_ray.network.rules import NEVER_STORED_HEADERS, without

logger = logging.getLogger(__name__)


class NetworkEngine(EngineClient):
    """Client of the network engine actor: sync methods and their ``_async`` twins.

    Repeated GETs of a fresh answer are served from a small near cache in this process (at most
    ``settings.network.near_cache_ttl_s``, default 1 s, and never past the answer's freshness);
    they are counted in the engine's metrics as hits. On the actor's node, a ``GET``/``HEAD``
    first asks the actor over its Unix socket whether it is a fresh hit of its hot cache
    (:mod:`~cognopt_ray.network.local_socket`); anything else is an actor call.

    Args:
        handle: the actor handle (see :meth:`get_or_create`).
        near_cache_ttl_s / near_cache_max_bytes: the near cache (0 disables it).
        local_socket: use the same-node socket path when the actor offers one.

    Example:
        >>> net = NetworkEngine.get_or_create()                     # doctest: +SKIP
        >>> net.request("https://example.org/").cache_status         # doctest: +SKIP
        'MISS'
        >>> net.request("https://example.org/").cache_status         # doctest: +SKIP
        'HIT'
    """

    engine = "network"

    def __init__(
        self,
        handle: Any,
        *,
        near_cache_ttl_s: float = 0.0,
        near_cache_max_bytes: int = 16 << 20,
        local_socket: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(handle, **kwargs)
        self._near = NearCache(near_cache_ttl_s, near_cache_max_bytes)
        self.local: LocalChannel | None = None
        if local_socket:
            self.local = LocalChannel(
                lambda: self._call("local_endpoint", _timeout=10),
                lambda: self._acall("local_endpoint", _timeout=10),
                lambda: ray.get_runtime_context().get_node_id(),
            )

    @classmethod
    def get_or_create(
        cls, settings: Settings | None = None, *, name: str = ACTOR_NAME, cache_actor_name: str = CACHE_ACTOR_NAME
    ) -> NetworkEngine:
        """The engine named ``name`` (created with ``settings`` if it does not exist yet).

        Args:
            settings: defaults to :func:`cognopt_ray.runtime.get_settings`.
            name: the actor's name.
            cache_actor_name: the name of its in-cluster cache actor.
        """
        settings = settings or runtime.get_settings()
        handle = runtime.get_or_create_actor(_NetworkActor, name, settings, cache_actor_name)
        return cls(
            handle,
            near_cache_ttl_s=settings.network.near_cache_ttl_s,
            near_cache_max_bytes=settings.network.near_cache_max_bytes,
            local_socket=settings.network.local_socket,
        )

    # -- the near cache ---------------------------------------------------------------------------
    def _near_lookup(
        self, url: str, method: str, headers: Any, body: Any, kw: dict[str, Any]
    ) -> tuple[str | None, NetworkResponse | None]:
        if not self._near.enabled:
            return None, None
        t0 = time.perf_counter()
        key = near_key(url, method, headers, body, kw)
        hit = self._near.get(key) if key is not None else None
        if hit is not None:
            hit = hit.model_copy(
                update={
                    "request_id": kw.get("request_id"),
                    "timings_ms": {"total": (time.perf_counter() - t0) * 1000, "near_cache": 1.0},
                }
            )
            if time.monotonic() - self._near.last_flush > 1.0:
                self._flush_near()
        return key, hit

    def _near_store(self, key: str | None, resp: NetworkResponse, method: str, url: str) -> None:
        if (method or "GET").upper() != "GET":
            self._near.drop_url(url)
        elif key is not None and resp.fresh_for_s > 0 and resp.cache_status in ("HIT", "MISS", "REVALIDATED"):
            # a MISS carries the origin's Set-Cookie for this caller only: never replayed to the next
            self._near.put(key, resp.model_copy(update={"headers": without(resp.headers, *NEVER_STORED_HEADERS)}))

    def _flush_near(self) -> None:
        pending = self._near.take_pending()
        if pending[0]:
            try:
                self._actor.record_near_hits.remote(*pending)
            except Exception:
                logger.debug("could not report near-cache hits", exc_info=True)

    # -- requests ---------------------------------------------------------------------------------
    def request(
        self,
        url: str,
        method: str = "GET",
        headers: Any = None,
        body: bytes | str | None = None,
        *,
        service: str | None = None,
        cache_strategy: str | None = None,
        compression_level: str | None = None,
        follow_redirects: bool = True,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> NetworkResponse:
        """Perform a request through the engine's guard, cache, coalescing and pool.

        Args:
            url: the URL (the SSRF guard checks it and every redirect hop).
            method: ``GET``, ``HEAD``, ``POST``, ``PUT``, ``PATCH``, ``DELETE`` or ``OPTIONS``.
            headers: a dict or a list of ``(name, value)`` pairs.
            body: the request body.
            service: the service the request is made for (its cache partition and settings).
            cache_strategy: less caching than the service's strategy, never more (clamped to it).
            compression_level: ``none``, ``fast``, ``balanced`` or ``max`` (default: the service's).
            follow_redirects: follow 3xx answers (each hop checked by the guard).
            request_id: echoed in the response.
            timeout_s: shortens the total origin timeout for this request (never lengthens it).

        Returns:
            The :class:`~cognopt_ray.network.http_client.NetworkResponse`, with its ``cache_status``.

        Raises:
            InvalidRequest: invalid method, URL, header, strategy or level (422).
            UrlRefused: the SSRF guard refused the URL or a redirect hop (403).
            OriginTimeout: the origin timed out (504).
            BadGateway: the origin failed, sent too much or redirected too often (502).
        """
        kw = _options(service, cache_strategy, compression_level, follow_redirects, request_id, timeout_s)
        key, hit = self._near_lookup(url, method, headers, body, kw)
        if hit is not None:
            return hit
        req = _request(url, method, headers, body, kw)
        resp = (self.local.call(req) if self.local else None) or self._call("request", req)
        self._near_store(key, resp, method, url)
        return resp

    async def request_async(
        self,
        url: str,
        method: str = "GET",
        headers: Any = None,
        body: bytes | str | None = None,
        *,
        service: str | None = None,
        cache_strategy: str | None = None,
        compression_level: str | None = None,
        follow_redirects: bool = True,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> NetworkResponse:
        """Async twin of :meth:`request`."""
        kw = _options(service, cache_strategy, compression_level, follow_redirects, request_id, timeout_s)
        key, hit = self._near_lookup(url, method, headers, body, kw)
        if hit is not None:
            return hit
        req = _request(url, method, headers, body, kw)
        resp = (await self.local.acall(req) if self.local else None) or await self._acall("request", req)
        self._near_store(key, resp, method, url)
        return resp

    def send(self, req: NetworkRequest) -> NetworkResponse:
        """Perform a typed :class:`~cognopt_ray.network.messages.NetworkRequest` (the proxy's path:
        no near cache, so the engine answers every conditional and range itself).

        Raises:
            as :meth:`request`.
        """
        if (req.method or "GET").upper() not in ("GET", "HEAD"):
            self._near.drop_url(req.url)
        return self._call("request", req)

    async def send_async(self, req: NetworkRequest) -> NetworkResponse:
        """Async twin of :meth:`send`."""
        if (req.method or "GET").upper() not in ("GET", "HEAD"):
            self._near.drop_url(req.url)
        return await self._acall("request", req)

    # -- pool and services ------------------------------------------------------------------------
    def configure_pooling(self, **params: Any) -> dict[str, Any]:
        """Reconfigure the pool (``limit``, ``limit_per_host``, ``keepalive_timeout_s``).

        Returns ``{"before": ..., "after": ...}``; requests in flight finish on the old pool.

        Raises:
            InvalidInput: a value out of range; the pool is unchanged.
        """
        return self._call("configure_pooling", **params)

    async def configure_pooling_async(self, **params: Any) -> dict[str, Any]:
        """Async twin of :meth:`configure_pooling`."""
        return await self._acall("configure_pooling", **params)

    def optimize_service(self, service: str, **params: Any) -> dict[str, Any]:
        """Set a service's ``cache_strategy``, ``compression_level``, ``compress_request_bodies``.

        Returns ``{"service_name", "before", "after"}``; the change is durable when it returns.

        Raises:
            InvalidInput: unknown service name, parameter or value; nothing changes.
        """
        return self._call("set_service", service, params)

    async def optimize_service_async(self, service: str, **params: Any) -> dict[str, Any]:
        """Async twin of :meth:`optimize_service`."""
        return await self._acall("set_service", service, params)

    def service_settings(self, service: str) -> dict[str, Any]:
        """The effective network settings of ``service`` (runtime overrides first)."""
        return self._call("get_service", service)

    async def service_settings_async(self, service: str) -> dict[str, Any]:
        """Async twin of :meth:`service_settings`."""
        return await self._acall("get_service", service)

    # -- the cache --------------------------------------------------------------------------------
    def purge(self, url: str | None = None, prefix: str | None = None) -> int:
        """Drop every service's cached entries of ``url``, or of every URL starting with ``prefix``.

        Returns how many entries were dropped.

        Raises:
            InvalidInput: neither or both of ``url`` and ``prefix``.
        """
        self._near.drop_url(url, prefix)
        return self._call("purge", url, prefix)

    async def purge_async(self, url: str | None = None, prefix: str | None = None) -> int:
        """Async twin of :meth:`purge`."""
        self._near.drop_url(url, prefix)
        return await self._acall("purge", url, prefix)

    def cache_stats(self) -> dict[str, Any]:
        """Figures of the in-cluster cache actor: entries, bytes, evictions, expired, hits, misses."""
        return self._call("cache_stats")

    async def cache_stats_async(self) -> dict[str, Any]:
        """Async twin of :meth:`cache_stats`."""
        return await self._acall("cache_stats")

    def expired_entries(self, *, take: bool = False) -> list[tuple[str, bytes, float]]:
        """The expired entries of the in-cluster cache as ``(name, data, expired_at)``.

        With ``take`` they are also removed (the system layer's cleanup quarantines them); Redis
        expires its own keys.
        """
        return self._call("take_expired", not take)

    async def expired_entries_async(self, *, take: bool = False) -> list[tuple[str, bytes, float]]:
        """Async twin of :meth:`expired_entries`."""
        return await self._acall("take_expired", not take)

    def sweep_cache(self) -> int:
        """Drop the expired entries of the in-cluster cache now; returns how many."""
        return self._call("sweep_cache")

    async def sweep_cache_async(self) -> int:
        """Async twin of :meth:`sweep_cache`."""
        return await self._acall("sweep_cache")

    def restore_entry(self, name: str, data: bytes, ttl_s: float = 3600.0) -> None:
        """Put an entry taken by :meth:`expired_entries` back into the in-cluster cache for ``ttl_s``.

        Its HTTP freshness is what it was: a stale entry is revalidated on its next use.
        """
        self._call("restore_entry", name, data, ttl_s)

    async def restore_entry_async(self, name: str, data: bytes, ttl_s: float = 3600.0) -> None:
        """Async twin of :meth:`restore_entry`."""
        await self._acall("restore_entry", name, data, ttl_s)

    # -- figures ----------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Counters and derived figures (see :mod:`cognopt_ray.network.metrics`), with the backend's,
        the pool's and the service overrides."""
        return self._call("metrics", self._near.take_pending())

    async def metrics_async(self) -> dict[str, Any]:
        """Async twin of :meth:`metrics`."""
        return await self._acall("metrics", self._near.take_pending())

    def health(self) -> dict[str, Any]:
        """``{"status": "up" | "degraded", "reason", "cache_backend"}`` (degraded while Redis is down)."""
        return self._call("health")

    async def health_async(self) -> dict[str, Any]:
        """Async twin of :meth:`health`."""
        return await self._acall("health")


def _options(
    service: str | None,
    cache_strategy: str | None,
    compression_level: str | None,
    follow_redirects: bool,
    request_id: str | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    return {
        "service": service,
        "cache_strategy": cache_strategy,
        "compression_level": compression_level,
        "follow_redirects": follow_redirects,
        "request_id": request_id,
        "timeout_s": timeout_s,
    }


def _request(url: str, method: str, headers: Any, body: bytes | str | None, kw: dict[str, Any]) -> NetworkRequest:
    pairs = list(headers.items()) if isinstance(headers, dict) else [tuple(h) for h in (headers or [])]
    return NetworkRequest(url, method, pairs, body.encode() if isinstance(body, str) else body, **kw)


def client() -> NetworkEngine:
    """The cluster's network engine (``cognopt.network``), created on first use; one per process."""
    return process_client(ACTOR_NAME, NetworkEngine.get_or_create)


__all__ = ["NetworkEngine", "client", "ACTOR_NAME", "CACHE_ACTOR_NAME"]
