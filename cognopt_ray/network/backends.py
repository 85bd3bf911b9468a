"""Where cached entries live: an in-cluster actor (LRU by bytes) or this process.

Every backend stores opaque bytes with a TTL (the entries of :mod:`cognopt_ray.network.entries`).
With ``redis_url`` set, :class:`~cognopt_ray._private.kv.FallbackBackend` (the package's one
Redis-with-fallback) puts Redis in front of the in-cluster backend: when Redis fails, the cache
switches to the in-cluster backend, reports itself ``degraded``, and tries Redis again every
``redis_retry_s``; no request fails because of the cache.

Example:
    >>> import asyncio
    >>> local = LocalBackend(max_bytes=1024)
    >>> asyncio.run(local.set("k", b"v" * 10, ttl=None))
    >>> asyncio.run(local.get("k"))
    b'vvvvvvvvvv'
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from cognopt_ray._private.kv import KVBackend
from cognopt_ray._private.lru import ByteLRU

logger = logging.getLogger(__name__)


# -- backends -----------------------------------------------------------------------------------------
#: The interface every backend offers (Redis and the fallback policy are :mod:`cognopt_ray._private.kv`).
CacheBackend = KVBackend


class LocalBackend:
    """A :class:`~cognopt_ray._private.lru.ByteLRU` in this process (the local client's backend)."""

    name = "local"

    def __init__(self, max_bytes: int) -> None:
        self.lru: ByteLRU[bytes] = ByteLRU(max_bytes)

    async def get(self, key: str) -> bytes | None:
        return self.lru.get(key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        self.lru.set(key, data, ttl)

    async def delete(self, key: str) -> int:
        return self.lru.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return self.lru.delete_prefix(prefix)

    async def names(self, prefix: str = "") -> list[str]:
        return self.lru.names(prefix)

    async def health(self) -> dict[str, Any]:
        return {"status": "up", "backend": self.name}

    async def stats(self) -> dict[str, Any]:
        return {"backend": self.name, **self.lru.stats()}


@ray.remote
class _CacheActor:
    """The in-cluster cache: one named actor (``cognopt.network_cache``) holding a
    :class:`~cognopt_ray._private.lru.ByteLRU`."""

    def __init__(self, max_bytes: int) -> None:
        self.lru: ByteLRU[bytes] = ByteLRU(max_bytes)

    def get(self, key: str) -> bytes | None:
        return self.lru.get(key)

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        self.lru.set(key, data, ttl)

    def delete(self, key: str) -> int:
        return self.lru.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        return self.lru.delete_prefix(prefix)

    def names(self, prefix: str = "") -> list[str]:
        return self.lru.names(prefix)

    def sweep(self) -> int:
        return self.lru.sweep()

    def take_expired(self, dry_run: bool = False) -> list[tuple[str, bytes, float]]:
        """Expired entries (dropped unless ``dry_run``); the system layer quarantines them."""
        return self.lru.take_expired(dry_run)

    def stats(self) -> dict[str, Any]:
        return self.lru.stats()

    def health(self) -> dict[str, Any]:
        return {"status": "up", "reason": None, **self.lru.stats()}


class InClusterBackend:
    """The cache actor, reached from any process of the cluster.

    Args:
        name: the actor's name (``cognopt.network_cache``).
        max_bytes: LRU size, used when this call creates the actor.
    """

    name = "in_cluster"

    def __init__(self, name: str, max_bytes: int, **options: Any) -> None:
        from cognopt_ray import runtime

        self.actor = runtime.get_or_create_actor(_CacheActor, name, max_bytes, **options)

    async def get(self, key: str) -> bytes | None:
        return await self.actor.get.remote(key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self.actor.set.remote(key, data, ttl)

    async def delete(self, key: str) -> int:
        return await self.actor.delete.remote(key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.actor.delete_prefix.remote(prefix)

    async def names(self, prefix: str = "") -> list[str]:
        return await self.actor.names.remote(prefix)

    async def health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.actor.health.remote(), timeout=2)
            return {"status": "up", "backend": self.name}
        except Exception as e:  # noqa: BLE001 - any failure of the cache actor is reported as its health
            return {"status": "down", "backend": self.name, "reason": f"{type(e).__name__}: {e}"}

    async def stats(self) -> dict[str, Any]:
        return {"backend": self.name, **(await self.actor.stats.remote())}


__all__ = ["LocalBackend", "InClusterBackend", "CacheBackend"]
