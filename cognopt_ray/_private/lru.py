"""The one byte-bounded LRU with per-entry expiry, used by every cache of the package.

The memory engine's in-cluster shared cache, the network engine's in-cluster and local backends,
the network client's near cache and the hot layer of the network cache's entries are all a :class:`ByteLRU`:
entries are kept in least-recently-used order, bounded by their total size (``max_bytes``) and
optionally by their number (``max_entries``); each may carry a TTL, after which it is gone.

Example:
    >>> lru = ByteLRU(max_bytes=20)
    >>> lru.set("a", b"x" * 10, ttl=None), lru.set("b", b"y" * 10, ttl=None)
    (True, True)
    >>> lru.set("c", b"z" * 10, ttl=None)   # "a" is the least recently used: it goes
    True
    >>> lru.get("a") is None, lru.stats()["evictions"]
    (True, 1)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """An LRU bounded by the total size of its values, with an optional TTL per entry.

    Not thread-safe: an actor (one thread) or a caller holding a lock uses it.

    Args:
        max_bytes: total size of the values kept; the least recently used go first.
        max_entries: at most this many entries (``None``: no bound).
        clock: seconds, for expiry (``time.time``; ``time.monotonic`` for process-local caches).
    """

    def __init__(
        self, max_bytes: int, max_entries: int | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[V, float | None, int]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.sets = self.evictions = self.expired = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def keys(self) -> Iterator[str]:
        """The keys, least recently used first (expired ones included until swept)."""
        return iter(list(self._data))

    # -- reading ----------------------------------------------------------------------------------
    def get(self, key: str) -> V | None:
        """The value of ``key`` (now the most recently used), or None when missing or expired."""
        item = self._data.get(key)
        if item is not None and item[1] is not None and item[1] <= self.clock():
            self._drop(key)
            self.expired += 1
            item = None
        if item is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return item[0]

    def names(self, prefix: str = "") -> list[str]:
        return [k for k in self._data if k.startswith(prefix)]

    # -- writing ----------------------------------------------------------------------------------
    def set(self, key: str, value: V, ttl: float | None, *, size: int | None = None) -> bool:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (``None``: until evicted).

        ``size`` defaults to ``len(value)``. A value larger than ``max_bytes`` is not kept (and
        the key's older value is dropped); returns whether it was kept.
        """
        n = len(value) if size is None else size  # type: ignore[arg-type]
        self._drop(key)
        if n > self.max_bytes:
            return False
        while self._data and (
            self.bytes + n > self.max_bytes or (self.max_entries is not None and len(self._data) >= self.max_entries)
        ):
            self._drop(next(iter(self._data)))
            self.evictions += 1
        self._data[key] = (value, None if ttl is None else self.clock() + ttl, n)
        self.bytes += n
        self.sets += 1
        return True

    def _drop(self, key: str) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self.bytes -= item[2]
        return True

    def delete(self, key: str) -> int:
        """Drop ``key``; 1 when it was there, else 0."""
        return int(self._drop(key))

    def delete_prefix(self, prefix: str) -> int:
        """Drop every key that starts with ``prefix``; returns how many."""
        return self.delete_where(lambda k: k.startswith(prefix))

    def delete_where(self, pred: Callable[[str], bool]) -> int:
        """Drop every key for which ``pred(key)`` is true; returns how many."""
        keys = [k for k in self._data if pred(k)]
        for k in keys:
            self._drop(k)
        return len(keys)

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    # -- expiry -----------------------------------------------------------------------------------
    def take_expired(self, dry_run: bool = False) -> list[tuple[str, V, float]]:
        """Expired entries as ``(key, value, expired_at)``; dropped (counted as expired) unless ``dry_run``."""
        now = self.clock()
        out = [(k, v, exp) for k, (v, exp, _n) in self._data.items() if exp is not None and exp <= now]
        if not dry_run:
            for k, _v, _e in out:
                self._drop(k)
            self.expired += len(out)
        return out

    def sweep(self) -> int:
        """Drop expired entries; returns how many."""
        return len(self.take_expired())

    def stats(self) -> dict[str, Any]:
        """``entries``, ``bytes``, ``max_bytes``, ``evictions``, ``expired``, ``hits``, ``misses``, ``sets``."""
        return {
            "entries": len(self._data),
            "bytes": self.bytes,
            "max_bytes": self.max_bytes,
            "evictions": self.evictions,
            "expired": self.expired,
            "hits": self.hits,
            "misses": self.misses,
            "sets": self.sets,
        }


__all__ = ["ByteLRU"]
