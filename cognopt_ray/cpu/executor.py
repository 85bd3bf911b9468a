"""Where tasks run: the ``cpu`` pool (Ray tasks with ``num_cpus``, optional core pinning) and the
``io`` pool (a threaded actor per node whose calls take no CPU slot).

Every cpu task runs through ONE Ray remote function, :data:`execute_pack`, which receives the
user's function as a content-keyed pickle (unpickled once per worker process). So all tasks with
the same resource shape share one Ray scheduling class: a CRITICAL task of a different function
than the BACKGROUND work reuses the same leased workers instead of waiting for Ray to rotate
leases between classes. One call may run a *pack* of several short queued tasks one after the
other (the scheduler decides; see ``CpuEngineSettings.pack_budget_s``).

Both pools return, per task, ``(start, end, ok, value_or_error)`` so the scheduler learns when each
task really started and ended (``time.time()`` in the worker) without an extra message.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import ray
from ray import cloudpickle
from ray import exceptions as rex

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


#: Functions unpickled in this worker process, by content key (bounded).
_WORKER_FNS: dict[str, Callable[..., Any]] = {}
_WORKER_FNS_LOCK = threading.Lock()
_WORKER_FNS_LIMIT = 1024

#: One item of a pack: (key, blob or [ObjectRef of the blob], name, args, kwargs).
Item = tuple[str, Any, str, tuple, dict]


def _load(key: str, spec: Any) -> Callable[..., Any]:
    fn = _WORKER_FNS.get(key)
    if fn is None:
        blob = spec if isinstance(spec, (bytes, bytearray)) else ray.get(spec[0])
        fn = cloudpickle.loads(blob)
        with _WORKER_FNS_LOCK:
            if len(_WORKER_FNS) >= _WORKER_FNS_LIMIT:
                _WORKER_FNS.pop(next(iter(_WORKER_FNS)))
            _WORKER_FNS[key] = fn
    return fn


def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Top-level ObjectRef arguments are passed as their values, as Ray does for ``f.remote(ref)``."""
    if any(isinstance(a, ray.ObjectRef) for a in args):
        args = tuple(ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args)
    if any(isinstance(v, ray.ObjectRef) for v in kwargs.values()):
        kwargs = {k: ray.get(v) if isinstance(v, ray.ObjectRef) else v for k, v in kwargs.items()}
    return args, kwargs


def run_items(
    cores: tuple[int, ...], items: list[Item], budget_s: float | None = None
) -> list[tuple[float, float, bool, Any]]:
    """Run ``items`` one after the other (pinned to ``cores`` when given).

    Returns ``(start, end, ok, value)`` per item; a task that raises yields ``ok=False`` and a
    ``RayTaskError`` carrying its exception and traceback, so one failing task of a pack fails
    alone. A cancellation (``KeyboardInterrupt``) is not caught: it cancels the whole call.
    With ``budget_s``, no further item starts once the pack has run that long: the result is
    shorter than ``items`` and the scheduler queues the rest again (a pack whose run-time estimate
    was wrong holds its CPU for at most the budget plus one task).
    """
    previous = _pin(frozenset(cores) if cores else None)
    out: list[tuple[float, float, bool, Any]] = []
    began = time.time()
    try:
        for key, spec, name, args, kwargs in items:
            start = time.time()
            if budget_s is not None and out and start - began >= budget_s:
                break
            try:
                fn = _load(key, spec)
                a, kw = _resolve(args, kwargs)
                value = fn(*a, **kw)
                out.append((start, time.time(), True, value))
            except Exception as exc:  # noqa: BLE001 - delivered to that task's caller
                err = rex.RayTaskError(name, traceback.format_exc(), exc, pid=os.getpid())
                out.append((start, time.time(), False, err))
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)
    return out


#: The one remote function every cpu-pool task runs through (options set num_cpus, retries, node).
execute_pack = ray.remote(run_items)


@ray.remote(num_cpus=0)
class _IoPool:
    """A threaded actor that runs ``io`` tasks; ``max_concurrency`` threads, no CPU slot per task."""

    def run(self, items: list[Item]) -> list[tuple[float, float, bool, Any]]:
        return run_items((), items)

    def ping(self) -> str:
        return ray.get_runtime_context().get_node_id()
