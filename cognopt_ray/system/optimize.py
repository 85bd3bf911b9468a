"""``system/optimize-all``: every engine's optimisation pass, concurrently, with before/after figures.

The passes:

- ``memory.gc``: the GC tuner's pass (thresholds and probe pause times before/after);
- ``memory.pool_sweep``: free expired transient allocations and those of removed services;
- ``storage.tiering``: a lifecycle pass (migrations between tiers by age and access);
- ``network.cache_sweep``: drop expired entries of the in-cluster HTTP cache;
- ``cpu.rebalance``: the scheduler balances continuously (least-loaded node first, aging); this
  pass reads its view of the cluster and reports load balance, queue depth and the
  recommendations its figures trigger (it moves nothing).

With ``dry_run`` nothing changes: each pass says what it would do (the tiering pass computes its
migrations without moving anything, the sweeps count what they would drop).

Example:
    >>> result = asyncio.run(optimize_all(settings, dry_run=True))   # doctest: +SKIP
    >>> sorted(result["passes"])                                      # doctest: +SKIP
    ['cpu.rebalance', 'memory.gc', 'memory.pool_sweep', 'network.cache_sweep', 'storage.tiering']
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from cognopt_ray.config import Settings

logger = logging.getLogger(__name__)

PASSES = ("memory.gc", "memory.pool_sweep", "storage.tiering", "network.cache_sweep", "cpu.rebalance")


def _memory_gc(dry_run: bool) -> dict[str, Any]:
    from cognopt_ray import memory

    pools = memory.client()
    before = pools.metrics(include_cache=False)["gc"]
    if dry_run:
        return {
            "action": "would run a GC tuning pass in the engine and every worker's tuner",
            "before": before,
            "after": before,
        }
    r = pools.optimize_gc()
    return {
        "action": f"GC tuning pass: {r.get('decision')}",
        "before": {
            "thresholds": r["thresholds_before"],
            "pause_p99_ms": r["pause_p99_ms_before"],
            "collections": r["collections_before"],
        },
        "after": {
            "thresholds": r["thresholds_after"],
            "pause_p99_ms": r["pause_p99_ms_after"],
            "collections": r["collections_after"],
        },
        "detail": r,
    }


def _pool_figures(m: dict[str, Any]) -> dict[str, Any]:
    t = m["totals"]
    return {"allocations": t["allocations"], "bytes_used": t["bytes_used"], "bytes_reserved": t["bytes_reserved"]}


def _memory_sweep(dry_run: bool) -> dict[str, Any]:
    from cognopt_ray import memory

    pools = memory.client()
    before = _pool_figures(pools.metrics(include_cache=False))
    expired = pools.expired_allocations()
    if dry_run:
        return {
            "action": f"would free {len(expired)} allocations",
            "before": before,
            "after": before,
            "would_free": [m["id"] for m in expired],
        }
    r = pools.sweep()
    after = _pool_figures(pools.metrics(include_cache=False))
    return {
        "action": f"freed {r['expired_freed']} expired and {r['retired_freed']} retired allocations",
        "before": before,
        "after": after,
        "detail": r,
    }


def _tier_bytes(m: dict[str, Any]) -> dict[str, Any]:
    return {t: {"items": v["items"], "stored_bytes": v["stored_bytes"]} for t, v in m["tiers"].items()}


def _storage_tiering(dry_run: bool) -> dict[str, Any]:
    from cognopt_ray import storage

    store = storage.client()
    before = _tier_bytes(store.metrics())
    r = store.optimize_tiering(dry_run=dry_run)
    after = before if dry_run else _tier_bytes(store.metrics())
    n = len(r.get("migrated", []))
    return {
        "action": f"{'would migrate' if dry_run else 'migrated'} {n} items",
        "before": before,
        "after": after,
        "detail": r,
    }


async def _network_sweep(dry_run: bool) -> dict[str, Any]:
    from cognopt_ray import network

    net = await asyncio.get_running_loop().run_in_executor(None, network.client)
    before = await net.cache_stats_async()
    if dry_run:
        expired = await net.expired_entries_async()
        return {"action": f"would drop {len(expired)} expired entries", "before": before, "after": before}
    dropped = await net.sweep_cache_async()
    after = await net.cache_stats_async()
    return {"action": f"dropped {dropped} expired entries", "before": before, "after": after}


def _cpu_figures(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "load_balance_score": m.get("load_balance_score"),
        "cpu_efficiency": m.get("cpu_efficiency"),
        "queued": m.get("queued"),
        "running": m.get("running"),
        "nodes": len(m.get("nodes") or []),
    }


def _cpu_rebalance(dry_run: bool) -> dict[str, Any]:
    from cognopt_ray import cpu

    sched = cpu.client()
    before = sched.metrics()
    if not dry_run:
        sched.cluster()  # the scheduler's view of nodes and their CPUs (it tracks them itself)
    after = before if dry_run else sched.metrics()
    recs = after.get("recommendations") or []
    return {
        "action": "the scheduler balances continuously; figures and recommendations reported",
        "before": _cpu_figures(before),
        "after": _cpu_figures(after),
        "recommendations": recs,
    }


async def _timed(name: str, fn: Callable[[], Any]) -> tuple[str, dict[str, Any]]:
    t0 = time.perf_counter()
    try:
        res = fn()
        if asyncio.iscoroutine(res) or isinstance(res, asyncio.Future):
            res = await res
        return name, {"status": "ok", "seconds": round(time.perf_counter() - t0, 4), **res}
    except Exception as e:  # noqa: BLE001 - one engine's failure is reported, the others still run
        logger.warning("optimize-all pass %s failed: %s", name, e)
        return name, {
            "status": "error",
            "seconds": round(time.perf_counter() - t0, 4),
            "error": f"{type(e).__name__}: {e}",
        }


async def optimize_all(
    settings: Settings | None = None, *, dry_run: bool = False, passes: list[str] | None = None
) -> dict[str, Any]:
    """Run the engines' optimisation passes concurrently.

    Args:
        settings: unused today beyond the defaults; kept for symmetry with the other system calls.
        dry_run: report what each pass would do, change nothing.
        passes: a subset of :data:`PASSES` (default all).

    Returns:
        ``{"dry_run", "started", "seconds", "status": "ok"|"partial", "passes": {name: {...}}}``;
        each pass has ``status``, ``action``, ``before``, ``after``.
    """
    from cognopt_ray.errors import InvalidInput

    chosen = list(passes) if passes else list(PASSES)
    bad = [p for p in chosen if p not in PASSES]
    if bad:
        raise InvalidInput(f"unknown passes {bad}", hint=f"use some of {list(PASSES)}")
    loop = asyncio.get_running_loop()
    funcs: dict[str, Callable[[], Any]] = {
        "memory.gc": lambda: loop.run_in_executor(None, _memory_gc, dry_run),
        "memory.pool_sweep": lambda: loop.run_in_executor(None, _memory_sweep, dry_run),
        "storage.tiering": lambda: loop.run_in_executor(None, _storage_tiering, dry_run),
        "network.cache_sweep": lambda: _network_sweep(dry_run),
        "cpu.rebalance": lambda: loop.run_in_executor(None, _cpu_rebalance, dry_run),
    }
    started = time.time()
    results = dict(await asyncio.gather(*(_timed(n, funcs[n]) for n in chosen)))
    status = "ok" if all(r["status"] == "ok" for r in results.values()) else "partial"
    return {
        "dry_run": dry_run,
        "started": started,
        "seconds": round(time.time() - started, 4),
        "status": status,
        "passes": results,
    }


__all__ = ["PASSES", "optimize_all"]
