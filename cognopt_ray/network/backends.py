"""Where cached responses live: Redis, an in-cluster actor (LRU by bytes), or this process.

All variants of one URL for one service are one entry (``Vary`` is the secondary key inside it),
serialised by :func:`pack` (a JSON header naming the entry's cache key + the bodies,
zstd-compressed, sealed by the one :class:`~cognopt_ray._private.sealer.Sealer` with the sub-key
``b"cognopt network cache"`` and associated data bound to the entry's name when an encryption key
is configured) so every backend stores opaque bytes with a TTL. :func:`unpack` decompresses at
most a bounded number of bytes and refuses anything it cannot vouch for (:class:`BadEntry`).

:class:`FallbackBackend` puts Redis in front of the in-cluster backend: when Redis fails, the
cache switches to the in-cluster backend, reports itself ``degraded``, and tries Redis again every
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
import json
import logging
import struct
import time
from typing import Any, Protocol

import ray
import zstandard

from cognopt_ray._private import bounded
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
class CacheBackend(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, data: bytes, ttl: float | None) -> None: ...
    async def delete(self, key: str) -> int: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def names(self, prefix: str = "") -> list[str]: ...
    async def health(self) -> dict[str, Any]: ...
    async def stats(self) -> dict[str, Any]: ...


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


class RedisBackend:
    """Redis, keys under ``namespace``; every key gets a TTL: what the entry says, at most ``max_ttl_s``.

    Args:
        url: ``redis://host:port/db``.
        namespace: key prefix.
        timeout_s: socket connect and read timeout (short: a slow Redis falls back quickly).
        max_ttl_s: the longest TTL written (``settings.network.max_cache_ttl_s``); entries without
            an expiry of their own get this one.
    """

    name = "redis"

    def __init__(self, url: str, namespace: str, timeout_s: float = 0.5, max_ttl_s: float = 30 * 86400.0) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.namespace = namespace
        self.max_ttl_s = max_ttl_s
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(self.namespace + key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        ttl = self.max_ttl_s if ttl is None else min(ttl, self.max_ttl_s)
        await self.client.set(self.namespace + key, data, px=max(1, int(ttl * 1000)))

    async def delete(self, key: str) -> int:
        return int(await self.client.delete(self.namespace + key))

    async def delete_prefix(self, prefix: str) -> int:
        pattern = _glob_escape(self.namespace + prefix) + "*"
        n = 0
        batch: list[bytes] = []
        async for k in self.client.scan_iter(match=pattern, count=500):
            batch.append(k)
            if len(batch) >= 500:
                n += int(await self.client.delete(*batch))
                batch = []
        if batch:
            n += int(await self.client.delete(*batch))
        return n

    async def names(self, prefix: str = "") -> list[str]:
        n = len(self.namespace)
        pattern = _glob_escape(self.namespace + prefix) + "*"
        return [k.decode(errors="replace")[n:] async for k in self.client.scan_iter(match=pattern, count=500)]

    async def ping(self) -> None:
        await self.client.ping()

    async def health(self) -> dict[str, Any]:
        try:
            await self.ping()
            return {"status": "up", "backend": self.name}
        except Exception as e:  # noqa: BLE001
            return {"status": "down", "backend": self.name, "reason": f"{type(e).__name__}: {e}"}

    async def stats(self) -> dict[str, Any]:
        return {"backend": self.name}


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class FallbackBackend:
    """Redis first; the in-cluster backend while Redis fails; Redis again once it answers.

    Args:
        primary: the Redis backend.
        secondary: the backend used while the primary is down.
        retry_s: while down, how often the primary is tried again.
    """

    name = "redis+fallback"

    def __init__(self, primary: RedisBackend, secondary: CacheBackend, retry_s: float = 2.0) -> None:
        self.primary = primary
        self.secondary = secondary
        self.retry_s = retry_s
        self.down_since: float | None = None
        self.last_error: str | None = None
        self._next_try = 0.0
        self.fallbacks = 0

    @property
    def using_fallback(self) -> bool:
        return self.down_since is not None

    async def _primary_ok(self) -> bool:
        if self.down_since is None:
            return True
        if time.time() < self._next_try:
            return False
        self._next_try = time.time() + self.retry_s
        try:
            await self.primary.ping()
        except Exception as e:  # noqa: BLE001
            self.last_error = f"{type(e).__name__}: {e}"
            return False
        logger.warning("Redis is back after %.1f s; network cache uses it again", time.time() - self.down_since)
        self.down_since = None
        self.last_error = None
        return True

    def _failed(self, e: BaseException) -> None:
        if self.down_since is None:
            logger.warning("Redis failed (%s: %s); network cache falls back to the in-cluster backend", type(e).__name__, e)
            self.down_since = time.time()
        self.fallbacks += 1
        self.last_error = f"{type(e).__name__}: {e}"
        self._next_try = time.time() + self.retry_s

    async def _run(self, op: str, *args: Any) -> Any:
        if await self._primary_ok():
            try:
                return await getattr(self.primary, op)(*args)
            except Exception as e:  # noqa: BLE001 - any Redis failure means: fall back
                self._failed(e)
        return await getattr(self.secondary, op)(*args)

    async def get(self, key: str) -> bytes | None:
        return await self._run("get", key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        await self._run("set", key, data, ttl)

    async def delete(self, key: str) -> int:
        n = await self._run("delete", key)
        # the fallback may hold entries written while Redis was down
        return n + (await self.secondary.delete(key) if not self.using_fallback else 0)

    async def delete_prefix(self, prefix: str) -> int:
        n = await self._run("delete_prefix", prefix)
        return n + (await self.secondary.delete_prefix(prefix) if not self.using_fallback else 0)

    async def names(self, prefix: str = "") -> list[str]:
        names = await self._run("names", prefix)
        return sorted(set(names) | set(await self.secondary.names(prefix))) if not self.using_fallback else names

    async def health(self) -> dict[str, Any]:
        if self.down_since is None:
            try:
                await self.primary.ping()
            except Exception as e:  # noqa: BLE001
                self._failed(e)
        else:
            await self._primary_ok()
        if self.down_since is not None:
            return {"status": "degraded", "backend": "in_cluster",
                    "reason": f"Redis is down ({self.last_error}); using the in-cluster cache since "
                              f"{time.strftime('%H:%M:%S', time.gmtime(self.down_since))} UTC"}
        return {"status": "up", "backend": "redis"}

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "in_cluster (Redis down)" if self.using_fallback else "redis",
                               "fallbacks": self.fallbacks}
        try:
            out["secondary"] = await self.secondary.stats()
        except Exception as e:  # noqa: BLE001
            out["secondary"] = {"error": f"{type(e).__name__}: {e}"}
        return out


__all__ = ["pack", "unpack", "entry_key_of", "BadEntry", "LocalBackend", "InClusterBackend", "RedisBackend",
           "FallbackBackend", "CacheBackend"]
