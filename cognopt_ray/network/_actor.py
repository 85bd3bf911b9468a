"""The network engine's actor (``cognopt.network``): private; use :mod:`cognopt_ray.network.client`.

The actor runs one :class:`~cognopt_ray.network.http_client.OptimizedClient`, so every request
made through it, from any task, notebook or Serve replica of the cluster, shares one cache, one
connection pool and one table of in-flight requests (coalescing across the cluster). Its cache
backend is Redis when ``redis_url`` is set, with the in-cluster actor (``cognopt.network_cache``)
as fallback; the in-cluster actor alone otherwise. Service overrides and the pool configuration
are written to ``<root>/network/state.json`` before a change is acknowledged and reloaded after a
restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import ray

from cognopt_ray._private.files import atomic_write
from cognopt_ray._private.gauges import Gauges
from cognopt_ray._private.kv import FallbackBackend, RedisBackend
from cognopt_ray.config import Settings
from cognopt_ray.network.backends import InClusterBackend
from cognopt_ray.network.http_client import NetworkRequest, NetworkResponse, OptimizedClient, PoolConfig
from cognopt_ray.network.local_socket import LocalServer

logger = logging.getLogger(__name__)

#: the network engine's Prometheus gauges (its metrics counters): name -> (description, label keys)
GAUGES = {
    "cognopt_network_requests": ("network engine: requests", ()),
    "cognopt_network_hits": ("network engine: hits", ()),
    "cognopt_network_misses": ("network engine: misses", ()),
    "cognopt_network_coalesced": ("network engine: coalesced", ()),
    "cognopt_network_origin_requests": ("network engine: origin_requests", ()),
    "cognopt_network_bytes_from_origin": ("network engine: bytes_from_origin", ()),
    "cognopt_network_bytes_served": ("network engine: bytes_served", ()),
    "cognopt_network_bytes_saved": ("network engine: bytes_saved (plain-client wire bytes - wire bytes)", ()),
    "cognopt_network_cache_hit_rate": ("network engine: cache_hit_rate", ()),
    "cognopt_network_bandwidth_saved_mb": ("network engine: bandwidth_saved_mb", ()),
    "cognopt_network_compression_ratio": ("network engine: compression_ratio", ()),
}

ACTOR_NAME = "cognopt.network"
CACHE_ACTOR_NAME = "cognopt.network_cache"


def build_backend(settings: Settings, cache_actor_name: str = CACHE_ACTOR_NAME) -> tuple[Any, InClusterBackend]:
    """The backend the settings ask for (see module docstring), and its in-cluster part.

    Called in the actor: the in-cluster cache actor it creates is detached (as every engine
    actor created from a Ray worker is), so it outlives a restart of the network actor.
    """
    net = settings.network
    in_cluster = InClusterBackend(cache_actor_name, net.cache_max_bytes)
    use_redis = net.cache_backend == "redis" or (net.cache_backend == "auto" and settings.redis_url)
    if use_redis:
        if not settings.redis_url:
            logger.warning("cache_backend=redis but redis_url is not set; using the in-cluster backend")
            return in_cluster, in_cluster
        return FallbackBackend(
            RedisBackend(settings.redis_url, net.redis_namespace, max_ttl_s=net.max_cache_ttl_s),
            in_cluster,
            net.redis_retry_s,
            what="network cache",
        ), in_cluster
    return in_cluster, in_cluster


@ray.remote
class _NetworkActor:
    """Holds the cluster's OptimizedClient. Methods are coroutines on one event loop."""

    def __init__(self, settings: Settings, cache_actor_name: str = CACHE_ACTOR_NAME) -> None:
        logging.basicConfig(level=logging.INFO)
        self.settings = settings
        self.backend, self.in_cluster = build_backend(settings, cache_actor_name)
        self.client = OptimizedClient(settings, backend=self.backend)
        self.state_path = Path(settings.root) / "network" / f"state-{cache_actor_name.removeprefix('cognopt.')}.json"
        self._load_state()
        self._maintenance: asyncio.Task | None = None
        self.gauges = Gauges(GAUGES)
        self._local: LocalServer | None = None
        self._local_lock: asyncio.Lock | None = None

    def _ensure_maintenance(self) -> None:
        interval = self.settings.network.maintenance_interval_s
        if interval > 0 and (self._maintenance is None or self._maintenance.done()):
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain(interval))

    async def _maintain(self, interval: float) -> None:
        """Background loop: drop expired in-cluster entries, export counters to Ray's metrics."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.in_cluster.actor.sweep.remote()
                self._export_metrics()
            except Exception as e:  # noqa: BLE001 - the loop must survive anything
                logger.warning("network maintenance pass failed: %s: %s", type(e).__name__, e)

    def _export_metrics(self) -> None:
        """Publish the engine's counters as Prometheus gauges (:data:`GAUGES`)."""
        snap = self.client.metrics.snapshot()

        def fill() -> None:
            for name in GAUGES:
                self.gauges.set(name, snap[name.removeprefix("cognopt_network_")])

        self.gauges.export(fill, "network")

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
        state = {
            "services": {k: v.model_dump() for k, v in self.client.services.items()},
            "pool": self.client.pool.model_dump(),
        }
        atomic_write(self.state_path, json.dumps(state, indent=1).encode())

    async def request(self, req: NetworkRequest) -> NetworkResponse:
        self._ensure_maintenance()
        return await self.client.send(req)  # type: ignore[return-value] # None only with cache_only

    async def _local_hit(self, req: NetworkRequest) -> NetworkResponse | None:
        self._ensure_maintenance()
        return await self.client.send(req, cache_only=True)

    async def local_endpoint(self) -> dict[str, Any] | None:
        """``{"node_id", "path"}`` of the Unix socket that answers hot-cache hits on this node
        (:mod:`~cognopt_ray.network.local_socket`), started on first call; None when
        ``network.local_socket`` is off."""
        if not self.settings.network.local_socket:
            return None
        if self._local_lock is None:
            self._local_lock = asyncio.Lock()
        async with self._local_lock:
            if self._local is None:
                self._local = await LocalServer.start(self._local_hit)
        return {"node_id": ray.get_runtime_context().get_node_id(), "path": self._local.path}

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

    async def metrics(self, near_hits: tuple[int, ...] = (0, 0)) -> dict[str, Any]:
        if near_hits[0]:
            await self.record_near_hits(*near_hits)
        snap = self.client.metrics.snapshot()
        try:
            snap["backend"] = await asyncio.wait_for(self.backend.stats(), timeout=10)
        except Exception as e:  # noqa: BLE001 - metrics answer even when the backend cannot
            snap["backend"] = {"error": f"{type(e).__name__}: {e}"}
        snap["pool"] = self.client.pool_stats()
        snap["services"] = {k: v.model_dump() for k, v in self.client.services.items()}
        return snap

    async def record_near_hits(self, hits: int, served: int, saved: int = 0, unmeasured: int = 0) -> None:
        """Count hits that engine clients answered from their near cache (``saved``: Σ of their
        ``plain_wire_bytes``; ``unmeasured``: hits whose saving is unknown)."""
        m = self.client.metrics
        m.requests += hits
        m.hits += hits
        m.near_hits += hits
        m.bytes_served += served
        m.bytes_saved += saved
        m.bytes_saved_unmeasured += unmeasured

    # -- the in-cluster cache (for the system layer: cleanup, optimize-all, restore) ----------
    async def cache_stats(self) -> dict[str, Any]:
        return await self.in_cluster.actor.stats.remote()

    async def take_expired(self, dry_run: bool = False) -> list[tuple[str, bytes, float]]:
        return await self.in_cluster.actor.take_expired.remote(dry_run)

    async def sweep_cache(self) -> int:
        return await self.in_cluster.actor.sweep.remote()

    async def restore_entry(self, name: str, data: bytes, ttl_s: float) -> None:
        await self.in_cluster.actor.set.remote(name, data, ttl_s)

    async def health(self) -> dict[str, Any]:
        try:
            b = await asyncio.wait_for(self.backend.health(), timeout=2)
        except Exception as e:  # noqa: BLE001 - any backend failure is reported as its health
            b = {"status": "degraded", "reason": f"cache backend: {type(e).__name__}: {e}"}
        status = "up" if b.get("status") == "up" else "degraded"
        return {"status": status, "reason": b.get("reason"), "cache_backend": b.get("backend")}


__all__ = ["ACTOR_NAME", "CACHE_ACTOR_NAME", "build_backend"]
