"""Where cached responses live: Redis, an in-cluster actor (LRU by bytes), or this process.

All variants of one URL are one entry (``Vary`` is the secondary key inside it), serialised by
:func:`pack` (a JSON header + the bodies, zstd-compressed, AES-GCM-encrypted when an encryption key
is configured) so every backend stores opaque bytes with a TTL.

:class:`FallbackBackend` puts Redis in front of the in-cluster backend: when Redis fails, the
cache switches to the in-cluster backend, reports itself ``degraded``, and tries Redis again every
``redis_retry_s``; no request fails because of the cache.

Example:
    >>> lru = LocalLRU(max_bytes=1024)
    >>> lru.set("k", b"v" * 10, ttl=None)
    >>> lru.get("k")
    b'vvvvvvvvvv'
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import struct
import time
from collections import OrderedDict
from typing import Any, Protocol

import ray
import zstandard

from cognopt_ray.network.rules import StoredResponse

logger = logging.getLogger(__name__)

_MAGIC = b"CNC1"
_ENC_MAGIC = b"CNE1"


# -- serialisation --------------------------------------------------------------------------------
def pack(variants: list[StoredResponse], *, key: bytes | None = None, level: int = 3) -> bytes:
    """Serialise the variants of one URL (zstd, then AES-GCM when ``key`` is given)."""
    meta = []
    for v in variants:
        meta.append({"url": v.url, "status": v.status, "headers": v.headers, "request_time": v.request_time,
                     "response_time": v.response_time, "vary": v.vary, "strategy": v.strategy,
                     "hf": v.heuristic_fraction, "len": len(v.body)})
    head = json.dumps(meta, separators=(",", ":")).encode()
    raw = struct.pack(">I", len(head)) + head + b"".join(v.body for v in variants)
    data = _MAGIC + zstandard.ZstdCompressor(level=level).compress(raw)
    if key is not None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(12)
        data = _ENC_MAGIC + nonce + AESGCM(key).encrypt(nonce, data, _ENC_MAGIC)
    return data


def unpack(data: bytes, *, key: bytes | None = None) -> list[StoredResponse]:
    """The inverse of :func:`pack`; raises ValueError on anything malformed or tampered with."""
    if data.startswith(_ENC_MAGIC):
        if key is None:
            raise ValueError("entry is encrypted and no encryption key is configured")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            data = AESGCM(key).decrypt(data[4:16], data[16:], _ENC_MAGIC)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"entry does not decrypt: {type(e).__name__}") from None
    if not data.startswith(_MAGIC):
        raise ValueError("not a cache entry")
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data[4:])
    (n,) = struct.unpack(">I", raw[:4])
    meta = json.loads(raw[4:4 + n])
    pos = 4 + n
    out = []
    for m in meta:
        body = raw[pos:pos + m["len"]]
        pos += m["len"]
        out.append(StoredResponse(m["url"], m["status"], [tuple(h) for h in m["headers"]], body, m["request_time"],
                                  m["response_time"], m["vary"], m["strategy"], m.get("hf", 0.1)))
    return out


def encryption_key(settings: Any) -> bytes | None:
    """The AES-GCM key from ``settings.encryption_key`` (None when not configured)."""
    secret = getattr(settings, "encryption_key", None)
    return base64.b64decode(secret.get_secret_value()) if secret is not None else None


# -- backends -----------------------------------------------------------------------------------------
class CacheBackend(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, data: bytes, ttl: float | None) -> None: ...
    async def delete(self, key: str) -> int: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def health(self) -> dict[str, Any]: ...
    async def stats(self) -> dict[str, Any]: ...


class LocalLRU:
    """An LRU of byte strings bounded by their total size, with per-entry expiry.

    Args:
        max_bytes: total size of the values kept; the least recently used go first.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self.bytes = 0
        self.evictions = 0
        self.expired = 0

    def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        data, expires = item
        if expires is not None and expires <= time.time():
            self._drop(key)
            self.expired += 1
            return None
        self._data.move_to_end(key)
        return data

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        if len(data) > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (data, None if ttl is None else time.time() + ttl)
        self.bytes += len(data)
        while self.bytes > self.max_bytes and self._data:
            old, _ = next(iter(self._data.items()))
            self._drop(old)
            self.evictions += 1

    def _drop(self, key: str) -> None:
        data, _ = self._data.pop(key)
        self.bytes -= len(data)

    def delete(self, key: str) -> int:
        if key in self._data:
            self._drop(key)
            return 1
        return 0

    def delete_prefix(self, prefix: str) -> int:
        keys = [k for k in self._data if k.startswith(prefix)]
        for k in keys:
            self._drop(k)
        return len(keys)

    def sweep(self) -> int:
        """Drop expired entries; returns how many."""
        now = time.time()
        keys = [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]
        for k in keys:
            self._drop(k)
        self.expired += len(keys)
        return len(keys)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._data), "bytes": self.bytes, "max_bytes": self.max_bytes,
                "evictions": self.evictions, "expired": self.expired}

    def take_expired(self, dry_run: bool = False) -> list[tuple[str, bytes, float]]:
        """Expired entries as ``(key, data, expired_at)``; dropped (counted as expired) unless ``dry_run``."""
        now = time.time()
        out = [(k, d, exp) for k, (d, exp) in self._data.items() if exp is not None and exp <= now]
        if not dry_run:
            for k, _d, _e in out:
                self._drop(k)
            self.expired += len(out)
        return out


class LocalBackend:
    """:class:`LocalLRU` in this process (the local client's backend)."""

    name = "local"

    def __init__(self, max_bytes: int) -> None:
        self.lru = LocalLRU(max_bytes)

    async def get(self, key: str) -> bytes | None:
        return self.lru.get(key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        self.lru.set(key, data, ttl)

    async def delete(self, key: str) -> int:
        return self.lru.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        return self.lru.delete_prefix(prefix)

    async def health(self) -> dict[str, Any]:
        return {"status": "up", "backend": self.name}

    async def stats(self) -> dict[str, Any]:
        return {"backend": self.name, **self.lru.stats()}


@ray.remote
class _CacheActor:
    """The in-cluster cache: one named actor (``cognopt.network_cache``) holding a :class:`LocalLRU`."""

    def __init__(self, max_bytes: int) -> None:
        self.lru = LocalLRU(max_bytes)

    def get(self, key: str) -> bytes | None:
        return self.lru.get(key)

    def set(self, key: str, data: bytes, ttl: float | None) -> None:
        self.lru.set(key, data, ttl)

    def delete(self, key: str) -> int:
        return self.lru.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        return self.lru.delete_prefix(prefix)

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

    async def health(self) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.actor.health.remote(), timeout=2)
            return {"status": "up", "backend": self.name}
        except Exception as e:  # noqa: BLE001
            return {"status": "down", "backend": self.name, "reason": f"{type(e).__name__}: {e}"}

    async def stats(self) -> dict[str, Any]:
        return {"backend": self.name, **(await self.actor.stats.remote())}


class RedisBackend:
    """Redis, keys under ``namespace``, Redis TTL = what the entry says (None = no expiry).

    Args:
        url: ``redis://host:port/db``.
        namespace: key prefix.
        timeout_s: socket connect and read timeout (short: a slow Redis falls back quickly).
    """

    name = "redis"

    def __init__(self, url: str, namespace: str, timeout_s: float = 0.5) -> None:
        import redis.asyncio as aioredis

        self.url = url
        self.namespace = namespace
        self.client = aioredis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)

    async def get(self, key: str) -> bytes | None:
        return await self.client.get(self.namespace + key)

    async def set(self, key: str, data: bytes, ttl: float | None) -> None:
        if ttl is None:
            await self.client.set(self.namespace + key, data)
        else:
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


__all__ = ["pack", "unpack", "LocalLRU", "LocalBackend", "InClusterBackend", "RedisBackend", "FallbackBackend",
           "CacheBackend", "encryption_key"]
