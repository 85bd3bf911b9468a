"""The client's near cache: fresh answers kept in the calling process for at most ``ttl_s``.

Repeated GETs of a fresh answer are served here without a call to the actor, never past the
answer's freshness; the hits are reported to the engine later so its metrics count them.

Example:
    >>> near = NearCache(ttl_s=1.0, max_bytes=1 << 20)
    >>> near.enabled
    True
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from cognopt_ray._private.lru import ByteLRU
from cognopt_ray.network.http_client import NetworkResponse

#: What an entry costs beyond its body (headers and bookkeeping).
_ENTRY_OVERHEAD = 512


class NearCache:
    """A :class:`~cognopt_ray._private.lru.ByteLRU` of responses with the hits it served since the last report.

    Args:
        ttl_s: longest time an answer is kept (0 disables the cache).
        max_bytes: total size of the bodies kept (0 disables the cache).
    """

    def __init__(self, ttl_s: float, max_bytes: int) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._lru: ByteLRU[tuple[NetworkResponse, float]] = ByteLRU(max_bytes, clock=time.monotonic)
        self._lock = threading.Lock()
        self.pending_hits = 0
        self.pending_bytes = 0
        self.pending_saved = 0  # Σ plain_wire_bytes of the hits (what a plain client would have received)
        self.pending_unmeasured = 0  # hits whose plain_wire_bytes is unknown
        self.last_flush = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and self.max_bytes > 0

    def get(self, key: str) -> NetworkResponse | None:
        """The kept answer of ``key`` with its ``Age`` and freshness brought up to now, or None."""
        with self._lock:
            item = self._lru.get(key)
            if item is None:
                return None
            resp, stored = item
            self.pending_hits += 1
            self.pending_bytes += len(resp.body)
            if resp.plain_wire_bytes is None:
                self.pending_unmeasured += 1
            else:
                self.pending_saved += resp.plain_wire_bytes
        elapsed = time.monotonic() - stored
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
        return resp.model_copy(
            update={
                "headers": headers,
                "cache_status": "HIT",
                "coalesced": False,
                "fresh_for_s": max(0.0, resp.fresh_for_s - elapsed),
            }
        )

    def put(self, key: str, resp: NetworkResponse) -> None:
        with self._lock:
            self._lru.set(
                key, (resp, time.monotonic()), min(self.ttl_s, resp.fresh_for_s), size=len(resp.body) + _ENTRY_OVERHEAD
            )

    def drop_url(self, url: str | None = None, prefix: str | None = None) -> None:
        """Forget the answers of ``url`` or of every URL starting with ``prefix``."""
        with self._lock:
            self._lru.delete_where(
                lambda k: (
                    (url is not None and _url_of(k) == url) or (prefix is not None and _url_of(k).startswith(prefix))
                )
            )

    def take_pending(self) -> tuple[int, int, int, int]:
        """The hits, bytes served, bytes saved and hits with an unknown saving since the last call
        (reset to zero)."""
        with self._lock:
            out = (self.pending_hits, self.pending_bytes, self.pending_saved, self.pending_unmeasured)
            self.pending_hits = self.pending_bytes = self.pending_saved = self.pending_unmeasured = 0
            self.last_flush = time.monotonic()
            return out


def near_key(url: str, method: str, headers: Any, body: Any, kw: dict[str, Any]) -> str | None:
    """The near-cache key of a request (None when it may not be answered from the near cache)."""
    if (method or "GET").upper() != "GET" or body:
        return None
    try:
        items = sorted(
            (str(k).lower(), str(v)) for k, v in (headers.items() if isinstance(headers, dict) else headers or [])
        )
    except (TypeError, ValueError):
        return None
    if any(k in ("cache-control", "pragma") for k, _ in items):
        return None
    rest = [
        items,
        kw.get("service"),
        kw.get("cache_strategy"),
        kw.get("compression_level"),
        kw.get("follow_redirects", True),
    ]
    return f"{url}\x00{json.dumps(rest, separators=(',', ':'))}"


def _url_of(key: str) -> str:
    return key.split("\x00", 1)[0]


__all__ = ["NearCache", "near_key"]
