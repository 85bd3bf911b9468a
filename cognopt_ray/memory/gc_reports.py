"""The workers' GC reports as the pools actor keeps them, and the engine's own tuning passes.

Every worker's :class:`~cognopt_ray.memory.gc_tuner.GcTuner` reports its thresholds and pause
statistics each ``gc_interval_s``; reports older than :data:`GC_REPORT_MAX_AGE_S` are dropped.
``POST memory/optimize-gc`` runs a pass in the engine's own process (:meth:`GcReports.run_pass`).

Example:
    >>> reports = GcReports()
    >>> reports.add("node:1", {"collections": 3, "total_pause_ms": 1.5, "pauses": {"p99_ms": 0.9},
    ...                        "thresholds": [700, 10, 10]})
    >>> reports.summary()["workers_reporting"], reports.summary()["worst_p99_ms"]
    (1, 0.9)
"""

from __future__ import annotations

import time
from typing import Any

from cognopt_ray.config import MemoryEngineSettings
from cognopt_ray.memory.gc_tuner import GcTuner, current_tuner

#: A worker's GC report older than this is dropped from the engine's view.
GC_REPORT_MAX_AGE_S = 300.0
#: How many of the engine's own passes are remembered.
PASSES_KEPT = 50


class GcReports:
    """The latest report of each worker, and the passes run in the engine's process."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, Any]] = {}
        self.passes: list[dict[str, Any]] = []

    def add(self, worker: str, report: dict[str, Any]) -> None:
        """Keep ``worker``'s report (replacing its last one) and drop the stale ones."""
        now = time.time()
        self.reports[worker] = {**report, "worker": worker, "received": now}
        cutoff = now - GC_REPORT_MAX_AGE_S
        for k in [k for k, v in self.reports.items() if v["received"] < cutoff]:
            del self.reports[k]

    def summary(self) -> dict[str, Any]:
        """Workers reporting, their collections and pause totals, the worst p99 and the thresholds in use."""
        reports = list(self.reports.values())
        p99s = [r["pauses"]["p99_ms"] for r in reports if r.get("pauses", {}).get("p99_ms") is not None]
        return {
            "workers_reporting": len(reports),
            "collections": sum(r.get("collections", 0) for r in reports),
            "total_pause_ms": sum(r.get("total_pause_ms", 0.0) for r in reports),
            "worst_p99_ms": max(p99s) if p99s else None,
            "thresholds": sorted({tuple(r["thresholds"]) for r in reports if "thresholds" in r}),
            "passes": len(self.passes),
        }

    def run_pass(self, ms: MemoryEngineSettings) -> dict[str, Any]:
        """Run a GC tuning pass now in this process and summarise every worker's reports.

        ``pause_*_before``/``after`` come from the same probe workload (see
        :func:`~cognopt_ray.memory.gc_tuner.probe_pauses`) run under the thresholds before and
        after the pass, side by side; workers apply the same rule on their next pass.
        """
        tuner = (
            current_tuner()
            or GcTuner(
                min_threshold0=ms.gc_min_threshold0,
                max_threshold0=ms.gc_max_threshold0,
                pressure_percent=ms.gc_pressure_percent,
                plenty_percent=ms.gc_plenty_percent,
            ).install()
        )
        result = tuner.tune(probe=True)
        pb, pa = result["pause_before"], result["pause_after"]
        out = {
            "thresholds_before": result["thresholds_before"],
            "thresholds_after": result["thresholds_after"],
            "pause_p50_ms_before": pb["p50_ms"],
            "pause_p99_ms_before": pb["p99_ms"],
            "pause_p50_ms_after": pa["p50_ms"],
            "pause_p99_ms_after": pa["p99_ms"],
            "collections_before": pb["count"],
            "collections_after": pa["count"],
            "decision": result["decision"],
            "memory_percent": result["memory_percent"],
            "workers": self.summary(),
            "time": time.time(),
        }
        self.passes = (self.passes + [out])[-PASSES_KEPT:]
        return out


__all__ = ["GcReports", "GC_REPORT_MAX_AGE_S"]
