"""System layer: health, the ``system/metrics`` figures and their Prometheus export, optimize-all,
cleanup to a quarantine, the automation loops and the savings report.

Example:
    >>> import asyncio, cognopt_ray
    >>> from cognopt_ray import system
    >>> settings = cognopt_ray.init()                                  # doctest: +SKIP
    >>> asyncio.run(system.system_metrics(settings))["system_overview"]  # doctest: +SKIP
    >>> asyncio.run(system.optimize_all(settings, dry_run=True))        # doctest: +SKIP
"""

from cognopt_ray.system.cleanup import Quarantine, purge_expired, restore, run_cleanup
from cognopt_ray.system.health import check_health, check_redis
from cognopt_ray.system.metrics import compute_metrics, read_counters, system_metrics
from cognopt_ray.system.optimize import PASSES, optimize_all
from cognopt_ray.system.report import build_table, min_cores, replay, system_report, to_markdown

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
