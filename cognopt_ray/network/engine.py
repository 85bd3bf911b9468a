"""The network engine: one async Ray actor (``cognopt.network``) and its public client.

The actor runs one :class:`~cognopt_ray.network.client.OptimizedClient`, so every request made
through it, from any task, notebook or Serve replica of the cluster, shares one cache, one
connection pool and one table of in-flight requests (coalescing across the cluster). Its cache
backend is Redis when ``redis_url`` is set, with the in-cluster actor (``cognopt.network_cache``)
as fallback; the in-cluster actor alone otherwise. Service overrides and the pool configuration
are written to ``<root>/network/state.json`` before a change is acknowledged and reloaded after a
restart.

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray.network import NetworkEngine
    >>> cognopt_ray.init(num_cpus=2)                                    # doctest: +SKIP
    >>> net = NetworkEngine.get_or_create()                             # doctest: +SKIP
    >>> r = net.request("https://example.org/", cache_strategy="short_term")   # doctest: +SKIP
    >>> r.cache_status, net.metrics()["cache_hit_rate"]                 # doctest: +SKIP
    ('MISS', 0.0)
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient
from cognopt_ray._private.files import atomic_write
from cognopt_ray.config import Settings
from cognopt_ray.network.backends import FallbackBackend, InClusterBackend, RedisBackend
from cognopt_ray.network.client import NetworkResponse, OptimizedClient, PoolConfig
from cognopt_ray.network.rules import NEVER_STORED_HEADERS, without

logger = logging.getLogger(__name__)

ACTOR_NAME = "cognopt.network"
CACHE_ACTOR_NAME = "cognopt.network_cache"


def build_backend(settings: Settings, cache_actor_name: str = CACHE_ACTOR_NAME, detached: bool = False) -> Any:
    """The backend the settings ask for (see module docstring)."""
    net = settings.network
    opts = {"lifetime": "detached"} if detached else {}
    in_cluster = InClusterBackend(cache_actor_name, net.cache_max_bytes, **opts)
    use_redis = net.cache_backend == "redis" or (net.cache_backend == "auto" and settings.redis_url)
    if use_redis:
        if not settings.redis_url:
            logger.warning("cache_backend=redis but redis_url is not set; using the in-cluster backend")
            return in_cluster
        return FallbackBackend(RedisBackend(settings.redis_url, net.redis_namespace, max_ttl_s=net.max_cache_ttl_s),
                               in_cluster, net.redis_retry_s)
    return in_cluster


@ray.remote
class _NetworkActor:
    """Holds the cluster's OptimizedClient. Methods are coroutines on one event loop."""

    def __init__(self, settings: Settings, cache_actor_name: str = CACHE_ACTOR_NAME, detached: bool = False) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.backend = build_backend(settings, cache_actor_name, detached)
        self.client = OptimizedClient(settings, backend=self.backend)
        self.state_path = Path(settings.root) / "network" / f"state-{cache_actor_name.removeprefix('cognopt.')}.json"
        self._load_state()
        self._maintenance: asyncio.Task | None = None
        self._gauges: dict[str, Any] | None = None

    def _ensure_maintenance(self) -> None:
        interval = self.settings.network.maintenance_interval_s
        if interval > 0 and (self._maintenance is None or self._maintenance.done()):
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain(interval))

    async def _maintain(self, interval: float) -> None:
        """Background loop: drop expired in-cluster entries, export counters to Ray's metrics."""
        while True:
            await asyncio.sleep(interval)
            try:
                secondary = getattr(self.backend, "secondary", self.backend)
                if isinstance(secondary, InClusterBackend):
                    await secondary.actor.sweep.remote()
                self._export_metrics()
            except Exception as e:  # noqa: BLE001 - the loop must survive anything
                logger.warning("network maintenance pass failed: %s: %s", type(e).__name__, e)

    def _export_metrics(self) -> None:
        from ray.util.metrics import Gauge

        snap = self.client.metrics.snapshot()
        names = ("requests", "hits", "misses", "coalesced", "origin_requests", "bytes_from_origin", "bytes_served",
                 "cache_hit_rate", "bandwidth_saved_mb", "compression_ratio")
        if self._gauges is None:
            self._gauges = {n: Gauge(f"cognopt_network_{n}", description=f"network engine: {n}") for n in names}
        for n in names:
            self._gauges[n].set(float(snap[n]))

    def _load_state(self) -> None:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            logger.error("network state %s unreadable (%s); starting from settings", self.state_path, e)
            return
        for name, params in (state.get("services") or {}).items():
            self.client.set_service(name, **params)
        if state.get("pool"):
            self.client.pool = PoolConfig(**state["pool"])

    def _save_state(self) -> None:
        state = {"services": {k: v.model_dump() for k, v in self.client.services.items()},
                 "pool": self.client.pool.model_dump()}
        atomic_write(self.state_path, json.dumps(state, indent=1).encode())

    async def request(self, url: str, method: str = "GET", headers: Any = None, body: bytes | str | None = None,
                      **kw: Any) -> NetworkResponse:
        self._ensure_maintenance()
        return await self.client.request(url, method, headers, body, **kw)

    async def configure_pooling(self, **params: Any) -> dict[str, Any]:
        before = self.client.pool.model_dump()
        after = await self.client.configure_pooling(**params)
        self._save_state()
        return {"before": before, "after": after.model_dump()}

    async def set_service(self, service: str, params: dict[str, Any]) -> dict[str, Any]:
        before = self.client.service_settings(service).model_dump()
        old = self.client.services.get(service)
        after = self.client.set_service(service, **params)
        try:
            self._save_state()
        except Exception:
            if old is None:
                self.client.services.pop(service, None)
            else:
                self.client.services[service] = old
            raise
        return {"service_name": service, "before": before, "after": after.model_dump()}

    async def get_service(self, service: str) -> dict[str, Any]:
        return self.client.service_settings(service).model_dump()

    async def purge(self, url: str | None = None, prefix: str | None = None) -> int:
        return await self.client.purge(url, prefix)

    async def metrics(self, near_hits: tuple[int, int] = (0, 0)) -> dict[str, Any]:
        if near_hits[0]:
            await self.record_near_hits(*near_hits)
        snap = self.client.metrics.snapshot()
        try:
            snap["backend"] = await asyncio.wait_for(self.backend.stats(), timeout=10)
        except Exception as e:  # noqa: BLE001
            snap["backend"] = {"error": f"{type(e).__name__}: {e}"}
        snap["pool"] = self.client.pool_stats()
        snap["services"] = {k: v.model_dump() for k, v in self.client.services.items()}
        return snap

    async def record_near_hits(self, hits: int, served: int) -> None:
        """Count hits that engine clients answered from their near cache."""
        m = self.client.metrics
        m.requests += hits
        m.hits += hits
        m.near_hits += hits
        m.bytes_served += served

    async def reset_metrics(self) -> None:
        from cognopt_ray.network.metrics import NetworkMetrics

        self.client.metrics = NetworkMetrics()

    async def health(self) -> dict[str, Any]:
        try:
            b = await asyncio.wait_for(self.backend.health(), timeout=2)
        except Exception as e:  # noqa: BLE001
            b = {"status": "degraded", "reason": f"cache backend: {type(e).__name__}: {e}"}
        status = "up" if b.get("status") == "up" else "degraded"
        return {"status": status, "reason": b.get("reason"), "cache_backend": b.get("backend")}


class _NearCache:
    """Fresh answers kept in this process for at most ``ttl_s`` (never past their freshness)."""

    def __init__(self, ttl_s: float, max_bytes: int) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple, tuple[NetworkResponse, float, float, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.pending_hits = 0
        self.pending_bytes = 0
        self.last_flush = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.max_bytes > 0

    def get(self, key: tuple) -> NetworkResponse | None:
        now = time.monotonic()
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            resp, stored, expires, _ = item
            if now >= expires:
                self._drop(key)
                return None
            self._data.move_to_end(key)
            self.pending_hits += 1
            self.pending_bytes += len(resp.body)
        elapsed = now - stored
        headers, has_age = [], False
        for k, v in resp.headers:
            if k.lower() == "age":
                has_age = True
                try:
                    v = str(int(int(v) + elapsed))
                except ValueError:
                    pass
            headers.append((k, v))
        if not has_age:  # stored from a MISS: its age is the time since then (RFC 9111 5.1)
            headers.append(("Age", str(int(elapsed))))
        return resp.model_copy(update={"headers": headers, "cache_status": "HIT", "coalesced": False,
                                       "fresh_for_s": max(0.0, resp.fresh_for_s - elapsed)})

    def put(self, key: tuple, resp: NetworkResponse) -> None:
        size = len(resp.body) + 512
        if size > self.max_bytes:
            return
        now = time.monotonic()
        with self._lock:
            self._drop(key)
            self._data[key] = (resp, now, now + min(self.ttl_s, resp.fresh_for_s), size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._data:
                self._drop(next(iter(self._data)))

    def _drop(self, key: tuple) -> None:
        item = self._data.pop(key, None)
        if item is not None:
            self._bytes -= item[3]

    def drop_url(self, url: str | None = None, prefix: str | None = None) -> None:
        with self._lock:
            for key in [k for k in self._data if (url is not None and k[0] == url) or
                        (prefix is not None and k[0].startswith(prefix))]:
                self._drop(key)

    def take_pending(self) -> tuple[int, int]:
        with self._lock:
            out = (self.pending_hits, self.pending_bytes)
            self.pending_hits = self.pending_bytes = 0
            self.last_flush = time.monotonic()
            return out


def _near_key(url: str, method: str, headers: Any, body: Any, kw: dict[str, Any]) -> tuple | None:
    if (method or "GET").upper() != "GET" or body:
        return None
    try:
        items = sorted((str(k).lower(), str(v)) for k, v in (headers.items() if isinstance(headers, dict) else headers or []))
    except (TypeError, ValueError):
        return None
    if any(k in ("cache-control", "pragma") for k, _ in items):
        return None
    return (url, tuple(items), kw.get("service"), kw.get("cache_strategy"), kw.get("compression_level"),
            kw.get("follow_redirects", True))


class NetworkEngine(EngineClient):
    """Client of the network engine actor: sync and async methods.

    Repeated GETs of a fresh answer are served from a small near cache in this process (at most
    ``settings.network.near_cache_ttl_s``, default 1 s, and never past the answer's freshness);
    they are counted in the engine's metrics as hits.

    Args:
        handle: the actor handle (see :meth:`get_or_create`).
        near_cache_ttl_s / near_cache_max_bytes: the near cache (0 disables it).

    Example:
        >>> net = NetworkEngine.get_or_create()                     # doctest: +SKIP
        >>> net.request("https://example.org/").cache_status         # doctest: +SKIP
        'MISS'
        >>> net.request("https://example.org/").cache_status         # doctest: +SKIP
        'HIT'
    """

    engine = "network"

    def __init__(self, handle: Any, *, near_cache_ttl_s: float = 0.0, near_cache_max_bytes: int = 16 << 20,
                 **kwargs: Any) -> None:
        super().__init__(handle, **kwargs)
        self._near = _NearCache(near_cache_ttl_s, near_cache_max_bytes)

    def _near_lookup(self, url: str, method: str, headers: Any, body: Any, kw: dict[str, Any]) -> tuple[tuple | None, NetworkResponse | None]:
        if not self._near.enabled:
            return None, None
        t0 = time.perf_counter()
        key = _near_key(url, method, headers, body, kw)
        hit = self._near.get(key) if key is not None else None
        if hit is not None:
            hit = hit.model_copy(update={"request_id": kw.get("request_id"),
                                         "timings_ms": {"total": (time.perf_counter() - t0) * 1000, "near_cache": 1.0}})
            if time.monotonic() - self._near.last_flush > 1.0:
                self._flush_near()
        return key, hit

    def _near_store(self, key: tuple | None, resp: NetworkResponse, method: str, url: str) -> None:
        if (method or "GET").upper() != "GET":
            self._near.drop_url(url)
        elif key is not None and resp.fresh_for_s > 0 and resp.cache_status in ("HIT", "MISS", "REVALIDATED"):
            # a MISS carries the origin's Set-Cookie for this caller only: never replayed to the next
            self._near.put(key, resp.model_copy(update={"headers": without(resp.headers, *NEVER_STORED_HEADERS)}))

    def _flush_near(self) -> None:
        hits, served = self._near.take_pending()
        if hits:
            try:
                self._actor.record_near_hits.remote(hits, served)
            except Exception:  # noqa: BLE001 - metrics must never fail a request
                logger.debug("could not report near-cache hits", exc_info=True)

    @classmethod
    def get_or_create(cls, settings: Settings | None = None, *, name: str = ACTOR_NAME,
                      cache_actor_name: str = CACHE_ACTOR_NAME) -> "NetworkEngine":
        """The engine named ``name`` (created with ``settings`` if it does not exist yet)."""
        settings = settings or runtime.get_settings()
        detached = runtime._state.detached
        handle = runtime.get_or_create_actor(_NetworkActor, name, settings,
                                             cache_actor_name, detached)
        return cls(handle, near_cache_ttl_s=settings.network.near_cache_ttl_s,
                   near_cache_max_bytes=settings.network.near_cache_max_bytes)

    # requests
    def request(self, url: str, method: str = "GET", headers: Any = None, body: bytes | str | None = None,
                **kw: Any) -> NetworkResponse:
        """Perform a request through the engine (see :meth:`OptimizedClient.request`)."""
        key, hit = self._near_lookup(url, method, headers, body, kw)
        if hit is not None:
            return hit
        resp = self._call("request", url, method, headers, body, **kw)
        self._near_store(key, resp, method, url)
        return resp

    async def arequest(self, url: str, method: str = "GET", headers: Any = None, body: bytes | str | None = None,
                       **kw: Any) -> NetworkResponse:
        key, hit = self._near_lookup(url, method, headers, body, kw)
        if hit is not None:
            return hit
        resp = await self._acall("request", url, method, headers, body, **kw)
        self._near_store(key, resp, method, url)
        return resp

    # pool, services, cache
    def configure_pooling(self, **params: Any) -> dict[str, Any]:
        """Reconfigure the pool (``limit``, ``limit_per_host``, ``keepalive_timeout_s``)."""
        return self._call("configure_pooling", **params)

    async def aconfigure_pooling(self, **params: Any) -> dict[str, Any]:
        return await self._acall("configure_pooling", **params)

    def optimize_service(self, service: str, **params: Any) -> dict[str, Any]:
        """Set a service's ``cache_strategy``, ``compression_level``, ``compress_request_bodies``."""
        return self._call("set_service", service, params)

    async def aoptimize_service(self, service: str, **params: Any) -> dict[str, Any]:
        return await self._acall("set_service", service, params)

    def purge(self, url: str | None = None, prefix: str | None = None) -> int:
        """Drop cached entries by URL or URL prefix; returns how many."""
        self._near.drop_url(url, prefix)
        return self._call("purge", url, prefix)

    async def apurge(self, url: str | None = None, prefix: str | None = None) -> int:
        self._near.drop_url(url, prefix)
        return await self._acall("purge", url, prefix)

    def metrics(self) -> dict[str, Any]:
        """Counters and derived figures (see :mod:`cognopt_ray.network.metrics`)."""
        return self._call("metrics", self._near.take_pending())

    async def ametrics(self) -> dict[str, Any]:
        return await self._acall("metrics", self._near.take_pending())

    def health(self) -> dict[str, Any]:
        return self._call("health")


__all__ = ["NetworkEngine", "ACTOR_NAME", "CACHE_ACTOR_NAME", "build_backend"]
