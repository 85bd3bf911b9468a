"""Where cached responses live: Redis, an in-cluster actor (LRU by bytes), or this process.

All variants of one URL for one service are one entry (``Vary`` is the secondary key inside it),
serialised by :func:`pack` (a JSON header naming the entry's cache key + the bodies,
zstd-compressed, sealed by the one :class:`~cognopt_ray._private.sealer.Sealer` with the sub-key
``b"cognopt network cache"`` and associated data bound to the entry's name when an encryption key
is configured) so every backend stores opaque bytes with a TTL. :func:`unpack` decompresses at
most a bounded number of bytes and refuses anything it cannot vouch for (:class:`BadEntry`).

:class:`~cognopt_ray._private.kv.FallbackBackend` (the package's one Redis-with-fallback) puts
Redis in front of the in-cluster backend: when Redis fails, the cache switches to the in-cluster
backend, reports itself ``degraded``, and tries Redis again every ``redis_retry_s``; no request
fails because of the cache.

Example:
    >>> import asyncio
    >>> local = LocalBackend(max_bytes=1024)
    >>> asyncio.run(local.set("k", b"v" * 10, ttl=None))
    >>> asyncio.run(local.get("k"))
    b'vvvvvvvvvv'
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any

import ray
import zstandard

from cognopt_ray._private import bounded
from cognopt_ray._private.kv import FallbackBackend, KVBackend, RedisBackend
from cognopt_ray._private.lru import ByteLRU
from cognopt_ray._private.sealer import Sealer, is_sealed
from cognopt_ray.errors import IntegrityError
from cognopt_ray.network.rules import StoredResponse

logger = logging.getLogger(__name__)

_MAGIC = b"CNC2"


class BadEntry(ValueError):
    """A stored entry that is refused: malformed, tampered with, too large once decoded, written
    under another key, or unsealed where a sealed one is expected. It is treated as a miss."""


def pack(variants: list[StoredResponse], cache_key: str, *, sealer: Sealer | None = None,
         aad: bytes = b"", level: int = 3, max_raw: int | None = None) -> bytes:
    """Serialise the variants of one cache entry: a JSON header naming ``cache_key`` + the bodies,
    zstd-compressed, then sealed by ``sealer`` (AES-GCM, ``aad`` bound) when one is given.

    Raises:
        BadEntry: the serialised entry would be over ``max_raw`` bytes before compression.
    """
    meta = []
    for v in variants:
        meta.append({"url": v.url, "status": v.status, "headers": v.headers, "request_time": v.request_time,
                     "response_time": v.response_time, "vary": v.vary, "strategy": v.strategy,
                     "hf": v.heuristic_fraction, "len": len(v.body)})
    head = json.dumps({"key": cache_key, "variants": meta}, separators=(",", ":")).encode()
    size = 4 + len(head) + sum(len(v.body) for v in variants)
    if max_raw is not None and size > max_raw:
        raise BadEntry(f"entry of {size} bytes is over {max_raw}")
    raw = struct.pack(">I", len(head)) + head + b"".join(v.body for v in variants)
    data = _MAGIC + zstandard.ZstdCompressor(level=level).compress(raw)
    return sealer.seal(data, aad) if sealer is not None else data


def unpack(data: bytes, cache_key: str, *, sealer: Sealer | None = None, aad: bytes = b"",
           max_raw: int | None = None) -> list[StoredResponse]:
    """The inverse of :func:`pack`, decompressing at most ``max_raw`` bytes.

    With a ``sealer`` only a sealed entry whose ``aad`` checks is read; without one a sealed entry
    cannot be. The entry must name ``cache_key`` (an entry copied under another key is refused).

    Raises:
        BadEntry: anything malformed, tampered with, unsealed where sealed is expected, or too large.
    """
    if sealer is not None:
        if not is_sealed(data):
            raise BadEntry("entry is not sealed and an encryption key is configured; refused")
        try:
            data = sealer.open(data, aad)
        except IntegrityError as e:
            raise BadEntry(f"entry does not open: {e.message}") from None
    elif is_sealed(data):
        raise BadEntry("entry is sealed and no encryption key is configured")
    if not data.startswith(_MAGIC):
        raise BadEntry("not a cache entry")
    try:
        raw = bounded.zstd(memoryview(data)[4:], max_raw)
        (n,) = struct.unpack(">I", raw[:4])
        doc = json.loads(raw[4:4 + n])
        if doc.get("key") != cache_key:
            raise BadEntry("entry was written under another cache key")
        pos = 4 + n
        out = []
        for m in doc["variants"]:
            body = raw[pos:pos + m["len"]]
            pos += m["len"]
            out.append(StoredResponse(m["url"], m["status"], [tuple(h) for h in m["headers"]], body,
                                      m["request_time"], m["response_time"], m["vary"], m["strategy"], m.get("hf", 0.1)))
        return out
    except BadEntry:
        raise
    except (ValueError, KeyError, TypeError, struct.error, AttributeError) as e:
        raise BadEntry(f"malformed entry: {type(e).__name__}: {e}") from None


def entry_key_of(data: bytes, *, sealer: Sealer | None = None, aad: bytes = b"", max_raw: int | None = None) -> str | None:
    """The cache key an entry names (None when it cannot be read)."""
    try:
        if sealer is not None:
            data = sealer.open(data, aad)
        if not data.startswith(_MAGIC):
            return None
        raw = bounded.zstd(memoryview(data)[4:], max_raw)
        (n,) = struct.unpack(">I", raw[:4])
        key = json.loads(raw[4:4 + n]).get("key")
        return key if isinstance(key, str) else None
    except (ValueError, IntegrityError, struct.error, AttributeError):
        return None


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
        except Exception as e:  # noqa: BLE001
            return {"status": "down", "backend": self.name, "reason": f"{type(e).__name__}: {e}"}

    async def stats(self) -> dict[str, Any]:
        return {"backend": self.name, **(await self.actor.stats.remote())}


__all__ = ["pack", "unpack", "entry_key_of", "BadEntry", "LocalBackend", "InClusterBackend", "RedisBackend",
           "FallbackBackend", "CacheBackend"]
