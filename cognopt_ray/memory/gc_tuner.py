"""GC tuning in every Ray worker: measure each collection's pause, adjust thresholds by memory pressure.

The tuner reaches every worker through ``runtime_env={"worker_process_setup_hook":
"cognopt_ray.memory.gc_tuner.setup_worker"}``, which :func:`cognopt_ray.init` adds to the job's
runtime_env through the hook the memory package registers with the runtime
(:func:`runtime_env_with_tuner`, :func:`merge_setup_hook`). In each worker it

- times every collection with ``gc.callbacks`` (``start``/``stop`` phases, ``perf_counter``);
- every ``gc_interval_s`` runs a tuning pass: with memory plentiful (system use, psutil, at or
  below ``gc_plenty_percent``) and collections taking a noticeable share of time, it doubles
  ``threshold0`` (fewer, larger young collections); under pressure (use at or above
  ``gc_pressure_percent``) it halves it (collect more often, free garbage cycles sooner);
- optionally calls ``gc.freeze()`` once after warm-up (``gc_freeze_after_s``), moving the objects
  of imports and set-up out of every later collection;
- reports its thresholds and pause statistics to the memory engine (``cognopt.memory``).

Python 3.14 replaced the generational collector by an incremental one: ``threshold0`` still
sets how many allocations trigger a young collection, ``threshold1`` became the share of the old
generation scanned per increment and ``threshold2`` is ignored. The tuner therefore only ever
changes ``threshold0`` and leaves the others as the interpreter has them.

Example:
    >>> tuner = GcTuner(min_threshold0=700, max_threshold0=50_000)
    >>> _ = tuner.install()
    >>> report = tuner.tune(memory_percent=30.0)
    >>> len(report["thresholds_before"]) == len(report["thresholds_after"]) == 3
    True
    >>> tuner.uninstall()
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: The hook string :func:`cognopt_ray.init` puts in the job's runtime_env.
SETUP_HOOK = "cognopt_ray.memory.gc_tuner.setup_worker"
#: True on interpreters with the incremental collector (3.14+), where only threshold0 keeps its meaning.
INCREMENTAL_GC = sys.version_info >= (3, 14)
#: Share of wall time spent in GC pauses above which pauses "dominate" (0.5 %).
PAUSE_SHARE_HIGH = 0.005
#: Young collections per second above which collections are "frequent".
COLLECTIONS_PER_S_HIGH = 20.0


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


class GcTuner:
    """Times collections and tunes ``gc`` thresholds in this process.

    Args:
        min_threshold0: lowest ``threshold0`` the tuner sets (CPython's default is 700; 2000 on 3.14).
        max_threshold0: highest ``threshold0`` the tuner sets.
        pressure_percent: system memory use (percent) at or above which it collects more often.
        plenty_percent: memory use at or below which memory is plentiful.
        window: how many recent pauses are kept for the statistics.

    Example:
        >>> t = GcTuner()
        >>> _ = t.install(); _ = gc.collect()
        >>> t.pause_stats()["count"] >= 1
        True
        >>> t.uninstall()
    """

    def __init__(
        self,
        *,
        min_threshold0: int = 700,
        max_threshold0: int = 50_000,
        pressure_percent: float = 85.0,
        plenty_percent: float = 60.0,
        window: int = 2048,
    ) -> None:
        if min_threshold0 > max_threshold0:
            raise ValueError("min_threshold0 must not exceed max_threshold0")
        self.min_threshold0 = min_threshold0
        self.max_threshold0 = max_threshold0
        self.pressure_percent = pressure_percent
        self.plenty_percent = plenty_percent
        self._pauses: deque[tuple[float, int, float]] = deque(maxlen=window)  # (end time, generation, seconds)
        self._lock = threading.Lock()
        self._start: float | None = None
        self._installed = False
        self.collections = 0
        self.total_pause_s = 0.0
        self.passes = 0
        self.last_pass_at = time.monotonic()
        self.started_at = time.monotonic()
        self.frozen = False
        self.last_decision: str | None = None

    # -- measuring ---------------------------------------------------------------------------
    def _callback(self, phase: str, info: Mapping[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif phase == "stop" and self._start is not None:
            now = time.perf_counter()
            pause = now - self._start
            self._start = None
            self._pauses.append((time.monotonic(), int(info.get("generation", 0)), pause))
            self.collections += 1
            self.total_pause_s += pause

    def install(self) -> GcTuner:
        """Start timing collections (idempotent)."""
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True
        return self

    def uninstall(self) -> None:
        """Stop timing collections."""
        if self._installed:
            try:
                gc.callbacks.remove(self._callback)
            except ValueError:
                pass
            self._installed = False

    def pause_stats(self, since: float | None = None) -> dict[str, Any]:
        """Pause statistics of the kept window (or of pauses that ended after ``since``, monotonic).

        ``p50_ms``/``p99_ms``/``max_ms`` are percentiles of the measured pause of each collection
        (time between the ``start`` and ``stop`` callbacks); ``None`` when no collection happened.
        """
        pauses = [p for (t, _g, p) in list(self._pauses) if since is None or t >= since]
        by_gen: dict[str, int] = {}
        for t, g, _p in list(self._pauses):
            if since is None or t >= since:
                by_gen[str(g)] = by_gen.get(str(g), 0) + 1
        ms = [p * 1000.0 for p in pauses]
        return {
            "count": len(ms),
            "p50_ms": _percentile(ms, 50),
            "p99_ms": _percentile(ms, 99),
            "max_ms": max(ms) if ms else None,
            "total_ms": sum(ms),
            "by_generation": by_gen,
        }

    # -- deciding ----------------------------------------------------------------------------
    def decide(self, memory_percent: float, pause_share: float, young_per_s: float) -> tuple[int, str]:
        """The new ``threshold0`` and why, from memory use and how much GC costs right now.

        - use >= ``pressure_percent``: halve threshold0 (never below the minimum);
        - use <= ``plenty_percent`` and (pause share >= 0.5 % of wall time or >= 20 young
          collections/s): double it (never above the maximum);
        - otherwise keep it.
        """
        t0 = gc.get_threshold()[0]
        if memory_percent >= self.pressure_percent:
            new = max(self.min_threshold0, t0 // 2)
            why = f"memory use {memory_percent:.0f}% >= {self.pressure_percent:.0f}%: collect more often"
        elif memory_percent <= self.plenty_percent and (
            pause_share >= PAUSE_SHARE_HIGH or young_per_s >= COLLECTIONS_PER_S_HIGH
        ):
            new = min(self.max_threshold0, max(t0 * 2, self.min_threshold0))
            why = (
                f"memory plentiful ({memory_percent:.0f}%) and GC costly ({pause_share * 100:.2f}% of time, "
                f"{young_per_s:.1f} young collections/s): fewer, larger collections"
            )
        else:
            new = min(max(t0, self.min_threshold0), self.max_threshold0)
            why = f"memory use {memory_percent:.0f}%, GC {pause_share * 100:.2f}% of time: keep"
        return new, why

    def tune(self, memory_percent: float | None = None, *, probe: bool = False) -> dict[str, Any]:
        """Run one tuning pass now.

        Args:
            memory_percent: system memory use; measured with psutil when not given.
            probe: also run :func:`probe_pauses` under the old and the new thresholds, so
                ``pause_before``/``pause_after`` compare the same workload side by side.

        Returns:
            ``thresholds_before``/``after``, ``decision``, ``memory_percent`` and the pause
            statistics before/after: without ``probe``, ``pause_before`` are the pauses since
            the previous pass (under the old thresholds) and ``pause_after`` is empty until
            collections happen under the new ones.
        """
        if memory_percent is None:
            memory_percent = _memory_percent()
        now = time.monotonic()
        elapsed = max(now - self.last_pass_at, 1e-3)
        window = self.pause_stats(since=self.last_pass_at)
        pause_share = (window["total_ms"] / 1000.0) / elapsed
        young_per_s = window["by_generation"].get("0", 0) / elapsed
        before = gc.get_threshold()
        new0, why = self.decide(memory_percent, pause_share, young_per_s)
        probe_before = probe_pauses(before) if probe else None
        gc.set_threshold(new0, *before[1:])
        after = gc.get_threshold()
        probe_after = probe_pauses(after) if probe else None
        self.passes += 1
        self.last_pass_at = time.monotonic()
        self.last_decision = why
        logger.debug("gc tuning pass: %s -> %s (%s)", before, after, why)
        return {
            "thresholds_before": list(before),
            "thresholds_after": list(after),
            "decision": why,
            "memory_percent": memory_percent,
            "pause_share": pause_share,
            "young_collections_per_s": young_per_s,
            "pause_before": probe_before if probe else window,
            "pause_after": probe_after if probe else self.pause_stats(since=self.last_pass_at),
            "measured_by": "probe" if probe else "window",
        }

    def freeze(self) -> None:
        """``gc.freeze()``: move every live object to the permanent generation (after warm-up)."""
        gc.collect()
        gc.freeze()
        self.frozen = True

    def report(self) -> dict[str, Any]:
        """What a worker sends to the engine."""
        return {
            "pid": os.getpid(),
            "thresholds": list(gc.get_threshold()),
            "collections": self.collections,
            "total_pause_ms": self.total_pause_s * 1000.0,
            "pauses": self.pause_stats(),
            "passes": self.passes,
            "frozen": self.frozen,
            "frozen_objects": gc.get_freeze_count(),
            "last_decision": self.last_decision,
            "incremental_gc": INCREMENTAL_GC,
            "python": sys.version.split()[0],
        }


def probe_pauses(thresholds: tuple[int, ...] | list[int], *, objects: int = 60_000, rounds: int = 3) -> dict[str, Any]:
    """Measure GC pauses of a fixed workload under ``thresholds`` (restores the current ones after).

    The workload allocates ``objects`` small containers per round, keeping every other one alive
    (a cache-like heap), so young collections run and find both garbage and survivors. Returns
    the pause statistics of the collections it triggered (count, p50/p99/max in ms) and the
    probe's wall time.
    """
    saved = gc.get_threshold()
    pauses: list[float] = []
    start: list[float] = []

    def cb(phase: str, info: Mapping[str, Any]) -> None:
        if phase == "start":
            start.append(time.perf_counter())
        elif start:
            pauses.append((time.perf_counter() - start.pop()) * 1000.0)

    gc.collect()
    gc.callbacks.append(cb)
    t = time.perf_counter()
    try:
        gc.set_threshold(*thresholds)
        for _ in range(rounds):
            keep = []
            for i in range(objects):
                item = [i, {"k": i}]
                if i % 2:
                    keep.append(item)
            del keep
    finally:
        gc.set_threshold(*saved)
        gc.callbacks.remove(cb)
    wall = (time.perf_counter() - t) * 1000.0
    return {
        "count": len(pauses),
        "p50_ms": _percentile(pauses, 50),
        "p99_ms": _percentile(pauses, 99),
        "max_ms": max(pauses) if pauses else None,
        "total_ms": sum(pauses),
        "wall_ms": wall,
        "thresholds": list(thresholds),
    }


def _memory_percent() -> float:
    import psutil

    return float(psutil.virtual_memory().percent)


# -- the worker hook -------------------------------------------------------------------------------
_tuner: GcTuner | None = None
_thread: threading.Thread | None = None
_hook_lock = threading.Lock()


def current_tuner() -> GcTuner | None:
    """The tuner installed in this process by :func:`setup_worker`, if any."""
    return _tuner


def setup_worker() -> None:
    """``worker_process_setup_hook``: install the tuner and its reporting thread in this worker.

    Never raises: a failure here would stop the worker from starting, so it is logged instead.
    """
    global _tuner, _thread
    try:
        with _hook_lock:
            if _tuner is not None:
                return
            from cognopt_ray.config import Settings

            try:
                ms = Settings.load().memory
            except Exception:  # noqa: BLE001 - bad env in a worker: run with the defaults
                from cognopt_ray.config import MemoryEngineSettings

                ms = MemoryEngineSettings()
            if not ms.gc_tuning:
                return
            _tuner = GcTuner(
                min_threshold0=ms.gc_min_threshold0,
                max_threshold0=ms.gc_max_threshold0,
                pressure_percent=ms.gc_pressure_percent,
                plenty_percent=ms.gc_plenty_percent,
            ).install()
            _thread = threading.Thread(
                target=_worker_loop,
                args=(_tuner, ms.gc_interval_s, ms.gc_freeze_after_s),
                name="cognopt-gc-tuner",
                daemon=True,
            )
            _thread.start()
    except Exception:
        logger.exception("cognopt GC tuner could not be installed in this worker")


def _worker_loop(tuner: GcTuner, interval_s: float, freeze_after_s: float) -> None:
    handle = None
    while True:
        time.sleep(interval_s)
        try:
            if freeze_after_s and not tuner.frozen and time.monotonic() - tuner.started_at >= freeze_after_s:
                tuner.freeze()
            tuner.tune()
            handle = handle or _engine_handle()
            if handle is not None:
                handle.report_gc.remote(_worker_key(), tuner.report())
        except Exception:
            handle = None
            logger.debug("gc tuner report failed", exc_info=True)


def _engine_handle() -> Any | None:
    import ray

    if not ray.is_initialized():
        return None
    try:
        return ray.get_actor("cognopt.memory", namespace="cognopt")
    except ValueError:
        return None


def _worker_key() -> str:
    try:
        import ray

        ctx = ray.get_runtime_context()
        return f"{ctx.get_node_id()[:12]}:{os.getpid()}"
    except Exception:  # noqa: BLE001 - outside Ray there is no node id: use the pid alone
        return f"local:{os.getpid()}"


def merge_setup_hook(runtime_env: Any) -> Any:
    """Return ``runtime_env`` with the GC tuner's setup hook, without clobbering the user's.

    A ``None`` runtime_env becomes ``{"worker_process_setup_hook": SETUP_HOOK}``; a dict (or
    ``ray.runtime_env.RuntimeEnv``) gets the hook added when it has none. When the user already
    set a hook, theirs is kept (call :func:`setup_worker` from it to have both) and this is logged.
    """
    if runtime_env is None:
        return {"worker_process_setup_hook": SETUP_HOOK}
    if not isinstance(runtime_env, Mapping):
        return runtime_env
    if runtime_env.get("worker_process_setup_hook"):
        if runtime_env.get("worker_process_setup_hook") != SETUP_HOOK:
            logger.info(
                "runtime_env already has a worker_process_setup_hook; the GC tuner is not added "
                "(call cognopt_ray.memory.gc_tuner.setup_worker() from your hook to have both)"
            )
        return runtime_env
    merged = dict(runtime_env)
    merged["worker_process_setup_hook"] = SETUP_HOOK
    return merged


def runtime_env_with_tuner(settings: Any, runtime_env: Any) -> Any:
    """The runtime_env hook the memory package gives :mod:`cognopt_ray.runtime`: ``runtime_env``
    with the tuner's setup hook (:func:`merge_setup_hook`) when ``memory.gc_tuning`` is on."""
    return merge_setup_hook(runtime_env) if settings.memory.gc_tuning else runtime_env


__all__ = [
    "GcTuner",
    "probe_pauses",
    "setup_worker",
    "current_tuner",
    "merge_setup_hook",
    "runtime_env_with_tuner",
    "SETUP_HOOK",
    "INCREMENTAL_GC",
]
