"""System layer: health, the ``system/metrics`` figures and their Prometheus export, optimize-all,
cleanup to a quarantine, the automation loops and the savings report.

Example:
    >>> import asyncio, cognopt_ray
    >>> from cognopt_ray import system
    >>> settings = cognopt_ray.init()                                  # doctest: +SKIP
    >>> asyncio.run(system.system_metrics(settings))["system_overview"]  # doctest: +SKIP
    >>> asyncio.run(system.optimize_all(settings, dry_run=True))        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cognopt_ray._private import lazy as _lazy

if TYPE_CHECKING:
    from cognopt_ray.system.cleanup import Quarantine, purge_expired, restore, run_cleanup
    from cognopt_ray.system.health import check_health, check_redis
    from cognopt_ray.system.metrics import compute_metrics, read_counters, system_metrics
    from cognopt_ray.system.optimize import PASSES, optimize_all
    from cognopt_ray.system.report import build_table, min_cores, replay, system_report, to_markdown

_lazy.install(
    __name__,
    {
        "Quarantine": ".cleanup",
        "purge_expired": ".cleanup",
        "restore": ".cleanup",
        "run_cleanup": ".cleanup",
        "check_health": ".health",
        "check_redis": ".health",
        "compute_metrics": ".metrics",
        "read_counters": ".metrics",
        "system_metrics": ".metrics",
        "PASSES": ".optimize",
        "optimize_all": ".optimize",
        "build_table": ".report",
        "min_cores": ".report",
        "replay": ".report",
        "system_report": ".report",
        "to_markdown": ".report",
    },
)

__all__ = [
    "check_health",
    "check_redis",
    "compute_metrics",
    "read_counters",
    "system_metrics",
    "PASSES",
    "optimize_all",
    "Quarantine",
    "run_cleanup",
    "restore",
    "purge_expired",
    "build_table",
    "min_cores",
    "replay",
    "system_report",
    "to_markdown",
]
