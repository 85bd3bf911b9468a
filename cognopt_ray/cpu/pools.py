"""Where tasks run: the ``cpu`` pool (Ray tasks with ``num_cpus``, optional core pinning) and the
``io`` pool (a threaded actor per node whose calls take no CPU slot), plus the per-node monitor.

Both pools return ``(start_time, value)`` so the scheduler learns when a task really started
(``time.time()`` in the worker) without an extra message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable, Iterable

import ray
from ray import cloudpickle

logger = logging.getLogger(__name__)


def function_blob(fn: Callable[..., Any]) -> tuple[str, bytes]:
    """``(key, pickled)`` for ``fn``; the key is a content hash, so equal code shares one key."""
    blob = cloudpickle.dumps(fn)
    return hashlib.sha1(blob).hexdigest()[:20], blob


def _pin(cores: frozenset[int] | None) -> set[int] | None:
    """Pin this process to ``cores`` (those that exist here); returns the previous set to restore."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    wanted = {c for c in cores if c < (os.cpu_count() or 1)}
    if not wanted or wanted == allowed:
        return None
    os.sched_setaffinity(0, wanted)
    return allowed


def make_cpu_task(fn: Callable[..., Any], cores: Iterable[int] | None = None) -> Callable[..., Any]:
    """The function a ``cpu``-pool Ray task runs: pin (optionally), time, call ``fn``, unpin."""
    pinned = frozenset(cores) if cores else None

    def run(*args: Any, **kwargs: Any) -> tuple[float, Any]:
        start = time.time()
        previous = _pin(pinned)
        try:
            return start, fn(*args, **kwargs)
        finally:
            if previous is not None:
                os.sched_setaffinity(0, previous)

    name = getattr(fn, "__name__", "task")
    run.__name__ = name
    run.__qualname__ = getattr(fn, "__qualname__", name)
    run.__module__ = getattr(fn, "__module__", __name__)
    return run


class RemoteFunctionCache:
    """Ray remote functions per (function key, affinity): each is exported to the cluster once."""

    def __init__(self, limit: int = 4096) -> None:
        self._fns: dict[tuple[str, tuple[int, ...]], Any] = {}
        self._callables: dict[str, Callable[..., Any]] = {}
        self._limit = limit

    def callable(self, key: str, blob: bytes | None) -> Callable[..., Any]:
        fn = self._callables.get(key)
        if fn is None:
            if blob is None:
                raise KeyError(key)
            fn = cloudpickle.loads(blob)
            if len(self._callables) >= self._limit:
                self._callables.pop(next(iter(self._callables)))
            self._callables[key] = fn
        return fn

    def remote(self, key: str, blob: bytes | None, cores: tuple[int, ...] = ()) -> Any:
        rf = self._fns.get((key, cores))
        if rf is None:
            fn = self.callable(key, blob)
            rf = ray.remote(make_cpu_task(fn, cores))
            if len(self._fns) >= self._limit:
                self._fns.pop(next(iter(self._fns)))
            self._fns[(key, cores)] = rf
        return rf


@ray.remote(num_cpus=0)
class _IoPool:
    """A threaded actor that runs ``io`` tasks; ``max_concurrency`` threads, no CPU slot per task."""

    def __init__(self) -> None:
        self._fns = RemoteFunctionCache()
        self._lock = threading.Lock()

    def run(self, key: str, blob: bytes, args: tuple, kwargs: dict) -> tuple[float, Any]:
        with self._lock:
            fn = self._fns.callable(key, blob)
        start = time.time()
        return start, fn(*args, **kwargs)

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()


@ray.remote(num_cpus=0)
class _NodeMonitor:
    """Samples this node's CPU load with psutil (one per node, created by the scheduler)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(None)

    def sample(self) -> dict[str, Any]:
        ps = self._psutil
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "cpu_percent": ps.cpu_percent(None),
            "load1": load1,
            "cpu_count": ps.cpu_count(),
            "time": time.time(),
        }
