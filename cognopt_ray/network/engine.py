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
from pathlib import Path
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient
from cognopt_ray._private.files import atomic_write
from cognopt_ray.config import Settings
from cognopt_ray.network.backends import FallbackBackend, InClusterBackend, RedisBackend
from cognopt_ray.network.client import NetworkResponse, OptimizedClient, PoolConfig

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
        return FallbackBackend(RedisBackend(settings.redis_url, net.redis_namespace), in_cluster, net.redis_retry_s)
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
        self._sweeper: asyncio.Task | None = None

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

    async def metrics(self) -> dict[str, Any]:
        snap = self.client.metrics.snapshot()
        try:
            snap["backend"] = await asyncio.wait_for(self.backend.stats(), timeout=2)
        except Exception as e:  # noqa: BLE001
            snap["backend"] = {"error": f"{type(e).__name__}: {e}"}
        snap["pool"] = self.client.pool_stats()
        snap["services"] = {k: v.model_dump() for k, v in self.client.services.items()}
        return snap

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


class NetworkEngine(EngineClient):
    """Client of the network engine actor: sync and async methods.

    Args:
        handle: the actor handle (see :meth:`get_or_create`).

    Example:
        >>> net = NetworkEngine.get_or_create()                     # doctest: +SKIP
        >>> net.request("https://example.org/").cache_status         # doctest: +SKIP
        'MISS'
        >>> net.request("https://example.org/").cache_status         # doctest: +SKIP
        'HIT'
    """

    engine = "network"

    @classmethod
    def get_or_create(cls, settings: Settings | None = None, *, name: str = ACTOR_NAME,
                      cache_actor_name: str = CACHE_ACTOR_NAME) -> "NetworkEngine":
        """The engine named ``name`` (created with ``settings`` if it does not exist yet)."""
        settings = settings or runtime.get_settings()
        detached = runtime._state.detached
        handle = runtime.get_or_create_actor(_NetworkActor, name, settings,
                                             cache_actor_name, detached)
        return cls(handle)

    # requests
    def request(self, url: str, method: str = "GET", headers: Any = None, body: bytes | str | None = None,
                **kw: Any) -> NetworkResponse:
        """Perform a request through the engine (see :meth:`OptimizedClient.request`)."""
        return self._call("request", url, method, headers, body, **kw)

    async def arequest(self, url: str, method: str = "GET", headers: Any = None, body: bytes | str | None = None,
                       **kw: Any) -> NetworkResponse:
        return await self._acall("request", url, method, headers, body, **kw)

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
        return self._call("purge", url, prefix)

    async def apurge(self, url: str | None = None, prefix: str | None = None) -> int:
        return await self._acall("purge", url, prefix)

    def metrics(self) -> dict[str, Any]:
        """Counters and derived figures (see :mod:`cognopt_ray.network.metrics`)."""
        return self._call("metrics")

    async def ametrics(self) -> dict[str, Any]:
        return await self._acall("metrics")

    def health(self) -> dict[str, Any]:
        return self._call("health")


__all__ = ["NetworkEngine", "ACTOR_NAME", "CACHE_ACTOR_NAME", "build_backend"]
