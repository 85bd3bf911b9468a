"""The shared cache: ``get``/``set``/``delete`` with TTL over Redis or an in-cluster actor.

One interface, two backends:

- **Redis** when ``COGNOPT_REDIS_URL`` (``settings.redis_url``) is set: redis-py, one connection
  pool per process and URL, the TTL set atomically with the value (``SET key value PX ttl``).
- **In-cluster**: the actor ``cognopt.memory_cache``, LRU by bytes (``memory.cache_max_bytes``),
  used when Redis is not configured and as the fallback when it is.

When Redis is unreachable, every call goes to the in-cluster backend instead (no call fails
because Redis is gone), ``health`` says ``degraded`` with the reason, and after
``cache_redis_retry_s`` the next call tries Redis again; when it answers, the cache is back on
Redis (the package's one fallback policy, :class:`~cognopt_ray._private.kv.RedisState`). Entries written during the outage stay readable: a Redis miss also looks in the in-cluster
backend once this process has used it.

Values are ``bytes``, ``str``, JSON values, numpy arrays or Arrow tables/arrays, stored in the
package's one tagged codec (:mod:`cognopt_ray._private.values`; numpy via ``numpy.save`` with
``allow_pickle=False``) without its pickle tag, so nothing read from a shared Redis is unpickled.

Example:
    >>> from cognopt_ray.memory import SharedCache
    >>> cache = SharedCache()                     # doctest: +SKIP
    >>> cache.set("model:v3:vocab", b"...", ttl_s=600)   # doctest: +SKIP
    >>> cache.get("model:v3:vocab")               # doctest: +SKIP
    b'...'
    >>> cache.health()["status"]                  # doctest: +SKIP
    'up'
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private import values as _values
from cognopt_ray._private.client import translate_error
from cognopt_ray._private.kv import RedisState, ping_redis, redact_url
from cognopt_ray._private.lru import ByteLRU
from cognopt_ray.config import Settings
from cognopt_ray.errors import InvalidInput

logger = logging.getLogger(__name__)

CACHE_ACTOR_NAME = "cognopt.memory_cache"
KEY_PREFIX = "cognopt:memcache:"
MAX_KEY_LEN = 512
_MISSING = object()


# -- encoding: the one tagged codec (cognopt_ray._private.values); the cache never writes pickles ---
encode = _values.encode
decode = _values.decode


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LEN or "\x00" in key:
        raise InvalidInput(
            f"cache key {str(key)[:40]!r} is invalid",
            hint=f"use a non-empty string of at most {MAX_KEY_LEN} characters",
        )
    return key


def _check_ttl(ttl_s: Any) -> None:
    if ttl_s is not None and (not isinstance(ttl_s, (int, float)) or isinstance(ttl_s, bool) or not ttl_s >= 0):
        raise InvalidInput(f"ttl_s must be a number >= 0 (0 = no expiry), got {ttl_s!r}")


# -- in-cluster backend --------------------------------------------------------------------------------
class _InClusterCacheActor:
    """LRU-by-bytes cache with TTLs; also keeps the Redis state every client reports (for health)."""

    def __init__(self, settings: Settings | dict[str, Any]) -> None:
        self.settings = settings if isinstance(settings, Settings) else Settings.model_validate(settings)
        self.max_bytes = self.settings.memory.cache_max_bytes
        self.lru: ByteLRU[bytes] = ByteLRU(self.max_bytes)
        self.redis: dict[str, dict[str, Any]] = {}  # url -> {"status", "reason", "since"}
        self.client_counts: dict[str, int] = {}

    def get(self, key: str) -> bytes | None:
        return self.lru.get(key)

    def set(self, key: str, data: bytes, ttl_s: float | None) -> bool:
        """Keep ``data`` for ``ttl_s`` seconds (``None`` or 0: until evicted); False when too large."""
        return self.lru.set(key, data, ttl_s or None)

    def delete(self, key: str) -> bool:
        return bool(self.lru.delete(key))

    def note_redis(self, url: str, status: str, reason: str | None) -> None:
        """A client tells what it saw of Redis at ``url`` (on every change of state)."""
        prev = self.redis.get(url, {})
        if prev.get("status") != status:
            self.redis[url] = {"status": status, "reason": reason, "since": time.time()}

    def add_counts(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.client_counts[k] = self.client_counts.get(k, 0) + int(v)

    def stats(self) -> dict[str, Any]:
        """In-cluster figures and the Redis figures the clients reported.

        ``hit_rate`` = hits / (hits + misses) of each backend (``None`` before any get).
        """
        lru = self.lru.stats()
        gets = lru["hits"] + lru["misses"]
        rh, rm = self.client_counts.get("redis_hits", 0), self.client_counts.get("redis_misses", 0)
        return {
            "in_cluster": {**lru, "hit_rate": (lru["hits"] / gets) if gets else None},
            "redis": {
                "hits": rh,
                "misses": rm,
                "sets": self.client_counts.get("redis_sets", 0),
                "errors": self.client_counts.get("redis_errors", 0),
                "fallbacks": self.client_counts.get("fallbacks", 0),
                "hit_rate": (rh / (rh + rm)) if (rh + rm) else None,
                "urls": {redact_url(u): s for u, s in self.redis.items()},
            },
        }

    def health(self) -> dict[str, Any]:
        """``degraded`` while a Redis that clients use is unreachable (checked now), with the reason."""
        down = []
        for url, state in list(self.redis.items()):
            if state.get("status") != "down":
                continue
            reason = ping_redis(url, timeout_s=0.5)
            if reason is None:
                self.redis[url] = {"status": "up", "reason": None, "since": time.time()}
            else:
                down.append(f"Redis at {redact_url(url)} is unreachable ({reason})")
        doc: dict[str, Any] = {"status": "up", "entries": len(self.lru), "bytes": self.lru.bytes}
        if down:
            doc.update(
                status="degraded", reason="; ".join(down) + "; the shared cache is serving from the in-cluster backend"
            )
        return doc


_CacheRemote = ray.remote(_InClusterCacheActor)


# -- Redis connection pools: one per process and URL ---------------------------------------------
_redis_pools: dict[tuple[str, float], Any] = {}
_redis_lock = threading.Lock()


def _redis_client(url: str, timeout_s: float) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with _redis_lock:
        pool = _redis_pools.get((url, timeout_s))
        if pool is None:
            pool = redis.ConnectionPool.from_url(
                url,
                socket_connect_timeout=timeout_s,
                socket_timeout=timeout_s,
                retry=Retry(NoBackoff(), 0),
            )
            _redis_pools[(url, timeout_s)] = pool
    return redis.Redis(connection_pool=pool)


class SharedCache:
    """A cache shared by every process of the cluster: Redis when configured, else in-cluster.

    Args:
        settings: defaults to :func:`cognopt_ray.runtime.get_settings`.
        namespace: prefix of the keys in Redis.
        actor_name: name of the in-cluster backend actor.

    Example:
        >>> cache = SharedCache()                       # doctest: +SKIP
        >>> cache.set("k", {"a": 1}, ttl_s=60); cache.get("k")   # doctest: +SKIP
        {'a': 1}
    """

    def __init__(
        self, settings: Settings | None = None, *, namespace: str = KEY_PREFIX, actor_name: str = CACHE_ACTOR_NAME
    ) -> None:
        self.settings = settings or runtime.get_settings()
        self.ms = self.settings.memory
        self.url = self.settings.redis_url
        self.namespace = namespace
        self.actor_name = actor_name
        self._actor: Any = None
        self._lock = threading.Lock()
        self._redis = RedisState(self.url, self.ms.cache_redis_retry_s, what="shared cache") if self.url else None
        self._counts: dict[str, int] = {}
        self._pushed_at = time.monotonic()
        self.counts: dict[str, int] = {}
        if self.url is not None and ray.is_initialized():
            # Start the in-cluster fallback now: when Redis fails, the first fallback call must not
            # wait for a worker process to boot (seconds on a busy node) while callers time out.
            try:
                self._cluster()
            except Exception as e:  # noqa: BLE001 - created on first use instead
                logger.debug("in-cluster cache not started ahead: %s", e)

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """``redis`` or ``in_cluster``: where the next call goes."""
        return "redis" if self._redis is not None and self._redis.should_try() else "in_cluster"

    def _cluster(self) -> Any:
        if self._actor is None:
            with self._lock:
                if self._actor is None:
                    self._actor = runtime.get_or_create_actor(_CacheRemote, self.actor_name, self.settings)
        return self._actor

    def _count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n
        self._counts[name] = self._counts.get(name, 0) + n
        if time.monotonic() - self._pushed_at >= 2.0:
            self._flush_counts()

    def _flush_counts(self) -> None:
        counts, self._counts, self._pushed_at = self._counts, {}, time.monotonic()
        if counts:
            try:
                self._cluster().add_counts.remote(counts)
            except Exception:
                logger.debug("could not push cache counters", exc_info=True)

    def _cluster_call(self, method: str, *args: Any) -> Any:
        try:
            return ray.get(getattr(self._cluster(), method).remote(*args), timeout=30)
        except Exception as e:  # noqa: BLE001 - every actor error becomes the package's own
            raise translate_error(e, "memory") from None

    def _redis_call(self, fn: Any) -> Any:
        """Run ``fn(redis_client)``; ``_MISSING`` when Redis is (or just went) down."""
        state = self._redis
        if state is None or not state.should_try():
            return _MISSING
        import redis

        try:
            result = fn(_redis_client(state.url, self.ms.cache_redis_timeout_s))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
            self._count("redis_errors")
            if state.failed(e):
                self._count("fallbacks")
                self._note("down", state.reason)
            return _MISSING
        if state.recovered():
            self._note("up", None)
        return result

    @property
    def _used_fallback(self) -> bool:
        """Whether this process has used the in-cluster backend while Redis was down."""
        return self._redis is not None and self._redis.used_fallback

    def _note(self, status: str, reason: str | None) -> None:
        try:
            self._cluster().note_redis.remote(self.url, status, reason)
        except Exception:
            logger.debug("could not report Redis state", exc_info=True)

    # -- the interface -------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when missing or expired."""
        k = self.namespace + _check_key(key)
        data = self._redis_call(lambda r: r.get(k))
        if data is not _MISSING:
            if data is not None:
                self._count("redis_hits")
                return decode(data)
            self._count("redis_misses")
            if not self._used_fallback:
                return default
        data = self._cluster_call("get", k)
        self._count("in_cluster_hits" if data is not None else "in_cluster_misses")
        return decode(data) if data is not None else default

    def set(self, key: str, value: Any, ttl_s: float | None = None) -> str:
        """Store ``value`` under ``key`` for ``ttl_s`` seconds (default ``cache_default_ttl_s``; 0 = no expiry).

        Returns the backend that took the value.
        """
        k = self.namespace + _check_key(key)
        _check_ttl(ttl_s)
        data = encode(value)
        ttl = self.ms.cache_default_ttl_s if ttl_s is None else ttl_s
        px = int(ttl * 1000) if ttl else None
        ok = self._redis_call(lambda r: r.set(k, data, px=px) if px else r.set(k, data))
        if ok is not _MISSING:
            self._count("redis_sets")
            if self._used_fallback:  # an older value may sit in the fallback: drop it
                self._cluster_call("delete", k)
            return "redis"
        self._cluster_call("set", k, data, ttl or None)
        self._count("in_cluster_sets")
        return "in_cluster"

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        k = self.namespace + _check_key(key)
        n = self._redis_call(lambda r: r.delete(k))
        existed = bool(n) if n is not _MISSING else False
        if n is _MISSING or self._used_fallback:
            existed = bool(self._cluster_call("delete", k)) or existed
        return existed

    def health(self) -> dict[str, Any]:
        """``up`` on the configured backend; ``degraded`` with the reason while Redis is unreachable."""
        if self._redis is None:
            return {"status": "up", "backend": "in_cluster", "reason": "COGNOPT_REDIS_URL is not set"}
        return self._redis.health()

    def stats(self) -> dict[str, Any]:
        """This process's counters (hits/misses/sets per backend) and the hit rate of each backend."""
        c = dict(self.counts)

        def rate(prefix: str) -> float | None:
            h, m = c.get(f"{prefix}_hits", 0), c.get(f"{prefix}_misses", 0)
            return (h / (h + m)) if (h + m) else None

        return {
            "backend": self.backend,
            "counts": c,
            "redis_hit_rate": rate("redis"),
            "in_cluster_hit_rate": rate("in_cluster"),
        }

    def flush_stats(self) -> None:
        """Push this process's counters to the in-cluster actor now (they are pushed every 2 s anyway)."""
        self._flush_counts()


def cache_figures() -> dict[str, Any] | None:
    """Cluster-wide cache figures from the in-cluster actor (``None`` when no cache was used)."""
    actor = runtime.get_actor(CACHE_ACTOR_NAME)
    if actor is None:
        return None
    try:
        return ray.get(actor.stats.remote(), timeout=10)
    except Exception as e:  # noqa: BLE001 - stats answer even when the in-cluster cache cannot
        return {"error": str(translate_error(e, "memory"))}


async def acache_figures() -> dict[str, Any] | None:
    actor = runtime.get_actor(CACHE_ACTOR_NAME)
    if actor is None:
        return None
    try:
        return await actor.stats.remote()
    except Exception as e:  # noqa: BLE001 - stats answer even when the in-cluster cache cannot
        return {"error": str(translate_error(e, "memory"))}


__all__ = ["SharedCache", "CACHE_ACTOR_NAME", "cache_figures", "encode", "decode"]
