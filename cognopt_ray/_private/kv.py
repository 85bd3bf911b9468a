"""The one Redis-with-fallback: Redis when configured and up, the in-cluster actor otherwise.

Both shared caches of the package (the memory engine's :class:`~cognopt_ray.memory.SharedCache`
and the network engine's HTTP cache) put Redis in front of an in-cluster actor (a
:class:`~cognopt_ray._private.lru.ByteLRU` by bytes). :class:`RedisState` is the one policy they
follow: when Redis fails, calls go to the in-cluster backend (no call fails because Redis is
gone), ``health`` says ``degraded`` with the reason, and every ``retry_s`` the next call tries
Redis again; when it answers, the cache is back on Redis.

:class:`RedisBackend` and :class:`FallbackBackend` are the asyncio form (the network actor's
event loop); the memory cache drives a :class:`RedisState` with redis-py's sync client.

Example:
    >>> state = RedisState("redis://127.0.0.1:6379/0", retry_s=2.0, what="test cache")
    >>> state.should_try(), state.health()["status"]
    (True, 'up')
    >>> state.failed(ConnectionError("refused"))
    True
    >>> state.should_try(), state.health()["status"]
    (False, 'degraded')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)


def redact_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***`` (for logs and health documents)."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def ping_redis(url: str, timeout_s: float) -> str | None:
    """Ping the Redis at ``url`` once (sync); None when it answered, else why not."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
        return None
    except Exception as e:  # noqa: BLE001 - any failure is "down" with its reason
        return f"{type(e).__name__}: {e}"
    finally:
        client.close()


class RedisState:
    """Whether the Redis at ``url`` is up for this process, and when to try it again.

    Args:
        url: the Redis URL (redacted wherever it is shown).
        retry_s: while Redis is down, how long before a call tries it again.
        what: the cache's name, for logs ("shared cache", "network cache").
        clock: monotonic seconds (for the retry delay).
    """

    def __init__(self, url: str, retry_s: float, *, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.retry_s = retry_s
        self.what = what
        self.clock = clock
        self.up = True
        self.reason: str | None = None
        #: wall-clock time Redis was first seen down (None while up)
        self.down_since: float | None = None
        #: True once this process has written to the fallback (its entries may hide there)
        self.used_fallback = False
        self.errors = 0
        self.fallbacks = 0
        self._retry_at = 0.0

    def should_try(self) -> bool:
        """Whether the next call goes to Redis: it is up, or its retry delay has passed."""
        return self.up or self.clock() >= self._retry_at

    def failed(self, e: BaseException) -> bool:
        """Redis failed a call with ``e``: fall back until the retry delay passes.

        Returns True when this is the change from up to down (counted in ``fallbacks``).
        """
        first = self.up
        self.up = False
        self.reason = f"{type(e).__name__}: {e}"
        self.used_fallback = True
        self.errors += 1
        self._retry_at = self.clock() + self.retry_s
        if first:
            self.fallbacks += 1
            self.down_since = time.time()
            logger.warning(
                "Redis at %s unreachable (%s); %s falls back to the in-cluster backend",
                redact_url(self.url),
                self.reason,
                self.what,
            )
        return first

    def recovered(self) -> bool:
        """Redis answered a call; returns True when it was down until now."""
        if self.up:
            return False
        logger.warning(
            "Redis at %s is back after %.1f s; %s uses it again",
            redact_url(self.url),
            time.time() - (self.down_since or time.time()),
            self.what,
        )
        self.up, self.reason, self.down_since = True, None, None
        return True

    def health(self) -> dict[str, Any]:
        """``{"status": "up", "backend": "redis"}``, or ``degraded`` with the reason while Redis is down."""
        if self.up:
            return {"status": "up", "backend": "redis"}
        since = time.strftime("%H:%M:%S", time.gmtime(self.down_since or time.time()))
        return {
            "status": "degraded",
            "backend": "in_cluster",
            "reason": f"Redis at {redact_url(self.url)} is unreachable ({self.reason}); "
            f"serving from the in-cluster backend since {since} UTC",
        }


# -- the asyncio form ----------------------------------------------------------------------------------
class KVBackend(Protocol):
    """An async store of byte strings with TTLs (the network cache's backends)."""

    name: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, data: bytes, ttl: float | None) -> None: ...
    async def delete(self, key: str) -> int: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def names(self, prefix: str = "") -> list[str]: ...
    async def health(self) -> dict[str, Any]: ...
    async def stats(self) -> dict[str, Any]: ...


class RedisBackend:
    """Redis, keys under ``namespace``; every key gets a TTL: what the caller says, at most ``max_ttl_s``.

    Args:
        url: ``redis://host:port/db``.
        namespace: key prefix.
        timeout_s: socket connect and read timeout (short: a slow Redis falls back quickly).
        max_ttl_s: the longest TTL written; entries without an expiry of their own get this one.
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
        except Exception as e:  # noqa: BLE001 - any failure of the primary is reported as its health
            return {"status": "down", "backend": self.name, "reason": f"{type(e).__name__}: {e}"}

    async def stats(self) -> dict[str, Any]:
        return {"backend": self.name}


def _glob_escape(s: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in s)


class FallbackBackend:
    """Redis first; the in-cluster backend while Redis fails (see :class:`RedisState`).

    Args:
        primary: the Redis backend.
        secondary: the backend used while the primary is down.
        retry_s: while down, how often the primary is tried again.
        what: the cache's name, for logs.
    """

    name = "redis+fallback"

    def __init__(
        self, primary: RedisBackend, secondary: KVBackend, retry_s: float = 2.0, *, what: str = "the cache"
    ) -> None:
        self.primary = primary
        self.secondary = secondary
        self.state = RedisState(primary.url, retry_s, what=what)

    @property
    def using_fallback(self) -> bool:
        return not self.state.up

    async def _primary_ok(self) -> bool:
        if self.state.up:
            return True
        if not self.state.should_try():
            return False
        try:
            await self.primary.ping()
        except Exception as e:  # noqa: BLE001 - any failure of the primary means: stay on the fallback
            self.state.failed(e)
            return False
        self.state.recovered()
        return True

    async def _run(self, op: str, *args: Any) -> Any:
        if await self._primary_ok():
            try:
                return await getattr(self.primary, op)(*args)
            except Exception as e:  # noqa: BLE001 - any Redis failure means: fall back
                self.state.failed(e)
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
        if self.state.up:
            try:
                await self.primary.ping()
            except Exception as e:  # noqa: BLE001 - any failure of the primary means: switch to the fallback
                self.state.failed(e)
        else:
            await self._primary_ok()
        return self.state.health()

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": "in_cluster (Redis down)" if self.using_fallback else "redis",
            "fallbacks": self.state.fallbacks,
            "errors": self.state.errors,
        }
        try:
            out["secondary"] = await self.secondary.stats()
        except Exception as e:  # noqa: BLE001 - stats answer even when the fallback cannot
            out["secondary"] = {"error": f"{type(e).__name__}: {e}"}
        return out


__all__ = ["RedisState", "RedisBackend", "FallbackBackend", "KVBackend", "redact_url", "ping_redis"]
