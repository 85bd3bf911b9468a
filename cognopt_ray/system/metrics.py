"""``system/metrics``: the dashboard figures, each computed from the engines' counters.

:func:`read_counters` asks the four engines for their metrics concurrently;
:func:`compute_metrics` turns those documents into the dashboard shape (docs/metrics.md). Every figure
below is a formula over measured counters (also in ``docs/metrics.md``); a figure without the
counters it needs is ``None``, never a made-up constant.

``system_overview``
    ``overall_efficiency`` = 100 × Σ wᵢ·sᵢ / Σ wᵢ over the engines whose score sᵢ is known (the
    weights renormalised over the scores present; ``None`` when no score is known), with the
    weights ``settings.system.efficiency_weights`` (default ¼ each) and the scores

    - cpu: ``cpu_efficiency`` (task CPU-seconds ÷ cluster CPU-seconds while work was pending);
    - memory: mean of ``memory_efficiency`` and ``pool_hit_rate`` (those known);
    - storage: ``1 − stored_bytes ÷ raw_bytes`` (share of the raw bytes the store did not need);
    - network: ``bytes_saved ÷ (bytes_from_origin + bytes_saved)``: the share of the wire bytes a
      plain client (same ``Accept-Encoding``) would have received that were not fetched, clipped
      to [0, 1]; ``None`` before the first request.

    ``optimization_status`` is ``active`` when every engine answered, ``degraded`` when some did
    not (their names under ``engines_unavailable``). ``last_updated`` is when the counters were read.
``cpu_optimization``
    ``cpu_efficiency``, ``load_balance_score`` (``None`` on fewer than two nodes),
    ``tasks_processed`` as the CPU engine reports them.
``memory_optimization``
    ``memory_efficiency`` = Σ bytes held ÷ Σ bytes of reserved blocks; ``pool_hit_rate`` =
    Σ pool hits ÷ Σ (hits + misses), a miss being every get that found nothing; ``cache_hit_rate``
    = shared-cache hits ÷ gets over the in-cluster and Redis backends.
``storage_optimization``
    ``compression_ratio`` = raw bytes ÷ stored bytes; ``tier_utilization[t]`` = the tier's stored
    bytes ÷ its capacity (or ÷ stored + free bytes of its volume).
``network_optimization``
    ``cache_hit_rate`` = (HIT + STALE + REVALIDATED) ÷ lookups; ``compression_ratio`` = decoded ÷
    wire bytes from origins; ``bandwidth_saved_mb`` = ``bytes_saved`` ÷ 10⁶, where ``bytes_saved``
    = Σ (wire bytes a plain client sending the same ``Accept-Encoding`` would have received −
    wire bytes received) (the formulas in :mod:`cognopt_ray.network.metrics`).
``savings``
    ``storage_bytes_saved`` = raw − stored bytes; ``network_bytes_saved`` = the network engine's
    ``bytes_saved``; ``memory_bytes_shared`` = Σ over live allocations of nbytes × (distinct
    reader processes − distinct reader nodes) (the private copies the readers would otherwise
    hold: each node keeps one object-store copy); ``origin_requests_avoided`` = HIT + STALE +
    coalesced; ``cpu_seconds_run`` = Σ run seconds of the tasks the scheduler ran (all time, the
    sums of its run histograms); ``critical_wait_s_total`` = Σ waits of CRITICAL tasks.

Every figure is ``None`` when the counters it needs are empty (no request, no live allocation,
no task, one node), never a 0.0 or 1.0 placeholder.

Example:
    >>> doc = compute_metrics({"cpu": {"cpu_efficiency": 0.5}}, now=0.0)
    >>> doc["system_overview"]["overall_efficiency"]
    50.0
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from typing import Any

from cognopt_ray.config import Settings

logger = logging.getLogger(__name__)

ENGINES = ("cpu", "memory", "storage", "network")
TIERS = ("hot", "warm", "cold", "archive")


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def _clip(x: float | None) -> float | None:
    return None if x is None else max(0.0, min(1.0, x))


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def shared_cache_hit_rate(cache: dict[str, Any] | None) -> float | None:
    """Shared-cache hits ÷ gets over the in-cluster and Redis backends (``None`` before any get)."""
    if not isinstance(cache, dict) or "error" in cache:
        return None
    ic, rd = cache.get("in_cluster") or {}, cache.get("redis") or {}
    hits = (ic.get("hits") or 0) + (rd.get("hits") or 0)
    gets = hits + (ic.get("misses") or 0) + (rd.get("misses") or 0)
    return hits / gets if gets else None


def engine_scores(c: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Each engine's score in [0, 1] (formulas in the module docstring)."""
    cpu, mem, sto, net = (c.get(e) or {} for e in ENGINES)
    raw, stored = _num(sto.get("raw_bytes")), _num(sto.get("stored_bytes"))
    saved, origin = _network_saved(net), _num(net.get("bytes_from_origin")) or 0.0
    plain = None if saved is None else origin + saved
    return {
        "cpu": _clip(_num(cpu.get("cpu_efficiency"))),
        "memory": _clip(_mean([_num(mem.get("memory_efficiency")), _num(mem.get("pool_hit_rate"))])),
        "storage": _clip(1.0 - stored / raw) if raw and stored is not None else None,
        "network": _clip(saved / plain) if saved is not None and plain and plain > 0 else None,
    }


def _network_saved(net: dict[str, Any]) -> float | None:
    """The network engine's ``bytes_saved``; ``None`` before its first request."""
    return _num(net.get("bytes_saved")) if net.get("requests") else None


def memory_bytes_shared(mem: dict[str, Any]) -> int | None:
    """Σ over the pools of ``bytes_shared``; ``None`` when no allocation is live."""
    pools = (mem.get("pools") or {}).values()
    if not any(p.get("allocations") for p in pools):
        return None
    return int(sum(p.get("bytes_shared") or 0 for p in pools))


def overall_efficiency(scores: dict[str, float | None], weights: dict[str, float]) -> float | None:
    """100 × Σ wᵢ·sᵢ / Σ wᵢ over the engines with a known score; ``None`` when none is known."""
    known = [(weights.get(e, 0.0), s) for e, s in scores.items() if s is not None and weights.get(e, 0.0) > 0]
    total = sum(w for w, _ in known)
    return round(100.0 * sum(w * s for w, s in known) / total, 2) if total else None


def _savings(c: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cpu, mem, sto, net = (c.get(e) or {} for e in ENGINES)
    run = [h or {} for h in (cpu.get("run_time_s") or {}).values()]
    crit = (cpu.get("wait_time_s") or {}).get("critical") or {}
    raw, stored = sto.get("raw_bytes"), sto.get("stored_bytes")
    saved = _network_saved(net)
    ran = sum(h.get("count") or 0 for h in run)
    return {
        "storage_bytes_saved": (raw - stored) if raw and stored is not None else None,
        "network_bytes_saved": None if saved is None else int(saved),
        "memory_bytes_shared": memory_bytes_shared(mem),
        "origin_requests_avoided": net.get("origin_requests_avoided"),  # a count: 0 is a measurement
        "cpu_seconds_run": round(sum(h.get("sum_s") or 0.0 for h in run), 6) if ran else None,
        "critical_wait_s_total": crit.get("sum_s") if crit.get("count") else None,
    }


def compute_metrics(
    counters: dict[str, dict[str, Any]], *, now: float | None = None, weights: dict[str, float] | None = None
) -> dict[str, Any]:
    """The ``system/metrics`` document from the engines' metrics documents.

    Args:
        counters: ``{"cpu": ..., "memory": ..., "storage": ..., "network": ...}``; an engine that
            did not answer is missing or ``{"error": "..."}``.
        now: when the counters were read (epoch seconds); defaults to now.
        weights: ``overall_efficiency`` weights per engine (default ¼ each).
    """
    now = time.time() if now is None else now
    weights = weights or {e: 0.25 for e in ENGINES}
    ok = {e: d for e, d in counters.items() if isinstance(d, dict) and "error" not in d}
    down = sorted(e for e in ENGINES if e not in ok)
    cpu, mem, sto, net = (ok.get(e) or {} for e in ENGINES)
    scores = engine_scores(ok)
    tiers = sto.get("tiers") or {}
    return {
        "system_overview": {
            "overall_efficiency": overall_efficiency(scores, weights),
            "optimization_status": "active" if not down else "degraded",
            "last_updated": _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "engine_scores": scores,
            "weights": weights,
            **({"engines_unavailable": down} if down else {}),
        },
        "cpu_optimization": {
            "cpu_efficiency": _num(cpu.get("cpu_efficiency")),
            "load_balance_score": _num(cpu.get("load_balance_score")),
            "tasks_processed": cpu.get("tasks_processed"),
        },
        "memory_optimization": {
            "memory_efficiency": _num(mem.get("memory_efficiency")),
            "pool_hit_rate": _num(mem.get("pool_hit_rate")),
            "cache_hit_rate": shared_cache_hit_rate(mem.get("cache")),
        },
        "storage_optimization": {
            "compression_ratio": _num(sto.get("compression_ratio")),
            "tier_utilization": {t: _num((tiers.get(t) or {}).get("utilization")) for t in TIERS},
        },
        "network_optimization": {
            # no lookup yet: not measured (the engine's snapshot says 0.0 then)
            "cache_hit_rate": _num(net.get("cache_hit_rate")) if net.get("cache_lookups") else None,
            "compression_ratio": _num(net.get("compression_ratio")) if net.get("bytes_from_origin") else None,
            "bandwidth_saved_mb": _num(net.get("bandwidth_saved_mb")),
        },
        "savings": _savings(ok),
    }


# -- reading the engines -----------------------------------------------------------------------------
def engine_clients() -> dict[str, Any]:
    """This process's client of each engine (creating the engine actors that do not exist yet)."""
    from cognopt_ray import cpu, memory, network, storage

    return {"cpu": cpu.client(), "memory": memory.client(), "storage": storage.client(), "network": network.client()}


async def _read(engine: str, timeout_s: float) -> dict[str, Any]:
    try:
        clients = await asyncio.get_running_loop().run_in_executor(None, engine_clients)
        c = clients[engine]
        doc = await asyncio.wait_for(c.metrics_async(), timeout=timeout_s)
        return doc if isinstance(doc, dict) else {"error": f"unexpected answer {type(doc).__name__}"}
    except Exception as e:  # noqa: BLE001 - one engine down must not hide the others
        logger.warning("reading %s metrics failed: %s", engine, e)
        return {"error": f"{type(e).__name__}: {e}"}


async def read_counters(timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    """The four engines' metrics documents, read concurrently (``{"error": ...}`` for one that failed)."""
    docs = await asyncio.gather(*(_read(e, timeout_s) for e in ENGINES))
    return dict(zip(ENGINES, docs))


async def system_metrics(settings: Settings, *, export: bool = True) -> dict[str, Any]:
    """Read the counters now and return the ``system/metrics`` document (and export it to Prometheus)."""
    counters = await read_counters()
    now = time.time()
    doc = compute_metrics(counters, now=now, weights=settings.system.efficiency_weights)
    if export:
        from cognopt_ray.system.prometheus import export_metrics

        export_metrics(doc, counters)
    return doc


__all__ = [
    "compute_metrics",
    "engine_scores",
    "overall_efficiency",
    "read_counters",
    "system_metrics",
    "shared_cache_hit_rate",
    "memory_bytes_shared",
    "engine_clients",
    "ENGINES",
]
