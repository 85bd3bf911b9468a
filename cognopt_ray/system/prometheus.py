"""Export the ``system/metrics`` figures through ``ray.util.metrics`` (Ray's Prometheus pipeline).

Each figure becomes a gauge named ``cognopt_system_<name>`` with an ``engine`` label, and
per-service figures carry a ``service`` label too; Ray's metrics agent on the node publishes
them on its Prometheus endpoint (``ray_`` is prepended there: ``ray_cognopt_system_…``) within
one report interval. The engines export their own counters the same way (``cognopt_cpu_*``,
``cognopt_memory_pool_*``, ``cognopt_network_*``).

The gauges live in the process that computed the metrics (a Serve replica, the automation actor,
a job); :func:`export_metrics` never raises.

Example:
    >>> export_metrics({"system_overview": {"overall_efficiency": 80.0}}, {})   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from cognopt_ray._private.gauges import Gauges

logger = logging.getLogger(__name__)

#: name -> (description, tag keys); every exported gauge is listed here (the Grafana test reads it).
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "cognopt_system_overall_efficiency": ("weighted efficiency of the engines, percent", ("engine",)),
    "cognopt_system_engine_score": ("each engine's score in [0, 1] that overall_efficiency weighs", ("engine",)),
    "cognopt_system_engine_up": ("1 when the engine answered the last metrics read, else 0", ("engine",)),
    "cognopt_system_cpu_efficiency": ("task CPU-seconds / cluster CPU-seconds while work was pending", ("engine",)),
    "cognopt_system_cpu_load_balance_score": ("1 - coefficient of variation of per-node load", ("engine",)),
    "cognopt_system_cpu_tasks_processed": ("tasks the scheduler finished", ("engine",)),
    "cognopt_system_cpu_wait_p99_seconds": ("p99 queue wait in the window per priority", ("engine", "priority")),
    "cognopt_system_memory_efficiency": ("bytes held / bytes of reserved blocks", ("engine",)),
    "cognopt_system_memory_pool_hit_rate": (
        "pool hits / (hits + misses), a miss = a get that found nothing",
        ("engine",),
    ),
    "cognopt_system_memory_cache_hit_rate": ("shared cache hits / gets", ("engine",)),
    "cognopt_system_memory_service_bytes_used": ("bytes held by a service's pool", ("engine", "service")),
    "cognopt_system_memory_service_hits": ("gets answered from a service's pool", ("engine", "service")),
    "cognopt_system_storage_compression_ratio": ("raw bytes / stored bytes", ("engine",)),
    "cognopt_system_storage_tier_utilization": ("stored bytes / tier capacity", ("engine", "tier")),
    "cognopt_system_storage_tier_raw_bytes": ("raw bytes of the items in a tier", ("engine", "tier")),
    "cognopt_system_storage_tier_stored_bytes": ("bytes a tier stores", ("engine", "tier")),
    "cognopt_system_network_cache_hit_rate": ("(HIT+STALE+REVALIDATED) / lookups", ("engine",)),
    "cognopt_system_network_compression_ratio": ("decoded / wire bytes from origins", ("engine",)),
    "cognopt_system_network_bandwidth_saved_mb": ("(plain-client wire bytes - wire bytes received) / 1e6", ("engine",)),
    "cognopt_system_savings_bytes": ("bytes saved by kind (storage, network, memory)", ("engine", "kind")),
    "cognopt_system_network_origin_requests_avoided": (
        "requests answered without their own origin request",
        ("engine",),
    ),
}

_GAUGES = Gauges(GAUGES)
_set = _GAUGES.set


def export_metrics(doc: dict[str, Any], counters: dict[str, dict[str, Any]]) -> None:
    """Set every gauge from a ``system/metrics`` document and the engine documents it came from."""
    _GAUGES.export(lambda: _export(doc, counters), "system")


def _export(doc: dict[str, Any], counters: dict[str, dict[str, Any]]) -> None:
    ov = doc.get("system_overview", {})
    _set("cognopt_system_overall_efficiency", ov.get("overall_efficiency"), engine="system")
    for engine, score in (ov.get("engine_scores") or {}).items():
        _set("cognopt_system_engine_score", score, engine=engine)
    for engine, d in counters.items():
        _set("cognopt_system_engine_up", 0 if (not isinstance(d, dict) or "error" in d) else 1, engine=engine)
    cpu = doc.get("cpu_optimization", {})
    _set("cognopt_system_cpu_efficiency", cpu.get("cpu_efficiency"), engine="cpu")
    _set("cognopt_system_cpu_load_balance_score", cpu.get("load_balance_score"), engine="cpu")
    _set("cognopt_system_cpu_tasks_processed", cpu.get("tasks_processed"), engine="cpu")
    for prio, h in ((counters.get("cpu") or {}).get("wait_time_s") or {}).items():
        _set("cognopt_system_cpu_wait_p99_seconds", (h or {}).get("p99_s"), engine="cpu", priority=prio)
    mem = doc.get("memory_optimization", {})
    _set("cognopt_system_memory_efficiency", mem.get("memory_efficiency"), engine="memory")
    _set("cognopt_system_memory_pool_hit_rate", mem.get("pool_hit_rate"), engine="memory")
    _set("cognopt_system_memory_cache_hit_rate", mem.get("cache_hit_rate"), engine="memory")
    for service, pool in ((counters.get("memory") or {}).get("pools") or {}).items():
        _set("cognopt_system_memory_service_bytes_used", pool.get("bytes_used"), engine="memory", service=service)
        _set("cognopt_system_memory_service_hits", pool.get("hits"), engine="memory", service=service)
    sto = doc.get("storage_optimization", {})
    _set("cognopt_system_storage_compression_ratio", sto.get("compression_ratio"), engine="storage")
    for tier, t in ((counters.get("storage") or {}).get("tiers") or {}).items():
        _set("cognopt_system_storage_tier_utilization", t.get("utilization"), engine="storage", tier=tier)
        _set("cognopt_system_storage_tier_raw_bytes", t.get("raw_bytes"), engine="storage", tier=tier)
        _set("cognopt_system_storage_tier_stored_bytes", t.get("stored_bytes"), engine="storage", tier=tier)
    net = doc.get("network_optimization", {})
    _set("cognopt_system_network_cache_hit_rate", net.get("cache_hit_rate"), engine="network")
    _set("cognopt_system_network_compression_ratio", net.get("compression_ratio"), engine="network")
    _set("cognopt_system_network_bandwidth_saved_mb", net.get("bandwidth_saved_mb"), engine="network")
    sav = doc.get("savings", {})
    _set("cognopt_system_savings_bytes", sav.get("storage_bytes_saved"), engine="storage", kind="storage")
    _set("cognopt_system_savings_bytes", sav.get("network_bytes_saved"), engine="network", kind="network")
    _set("cognopt_system_savings_bytes", sav.get("memory_bytes_shared"), engine="memory", kind="memory")
    _set("cognopt_system_network_origin_requests_avoided", sav.get("origin_requests_avoided"), engine="network")


__all__ = ["GAUGES", "export_metrics"]
