"""The memory engine's figures: totals over the pools, their Prometheus gauges, object-store use.

Every figure is computed from the pools' counters (:meth:`cognopt_ray.memory.allocations.Pool.figures`)
by the formula in the docstring of the function that returns it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cognopt_ray._private.gauges import Gauges
from cognopt_ray.memory.object_store import object_store_by_node

logger = logging.getLogger("cognopt_ray.memory")

#: seconds one reading of the object store per node is reused
OBJECT_STORE_CACHE_S = 2.0


def totals(pools: dict[str, dict[str, Any]], unpooled_misses: int = 0) -> dict[str, Any]:
    """Totals over every pool's figures.

    - ``pool_hit_rate`` = Σ hits / Σ (hits + misses) over all pools, where a hit is a get
      answered from the pool and a miss a get that found nothing (an unknown, freed, evicted or
      expired id; ``unpooled_misses`` are those whose service has no pool); ``None`` before any get.
    - ``memory_efficiency`` = Σ bytes held / Σ (blocks used × block_size): the share of the
      reserved blocks that holds data (1.0 = no block waste); ``None`` when nothing is held.
    - ``bytes_shared`` = Σ over live allocations of nbytes × (distinct reader processes −
      distinct reader nodes) (:attr:`Allocation.bytes_shared
      <cognopt_ray.memory.allocations.Allocation.bytes_shared>`); ``None`` when nothing is held.
    """
    hits = sum(p["hits"] for p in pools.values())
    misses = sum(p["misses"] for p in pools.values()) + unpooled_misses
    n_alloc = sum(p["allocations"] for p in pools.values())
    held = sum(p["bytes_used"] for p in pools.values())
    reserved = sum(p["bytes_reserved"] for p in pools.values())
    return {
        "totals": {
            "allocations": n_alloc,
            "bytes_used": held,
            "bytes_reserved": reserved,
            "evictions": sum(p["evictions"] for p in pools.values()),
            "hits": hits,
            "misses": misses,
            "readers": sum(p.get("readers", 0) for p in pools.values()),
            "bytes_shared": sum(p.get("bytes_shared", 0) for p in pools.values()) if n_alloc else None,
        },
        "pool_hit_rate": (hits / (hits + misses)) if (hits + misses) else None,
        "memory_efficiency": (held / reserved) if reserved else None,
    }


def cleanup_totals(pools: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Σ over the pools of what the sweep and the spill path did."""
    keys = ("expired_freed", "spilled", "spilled_bytes", "spill_dropped", "retired_freed")
    return {k: sum(p[k] for p in pools.values()) for k in keys}


#: the pools' Prometheus gauges, each with a ``service`` label: figure -> description
POOL_GAUGES = {
    "blocks_used": "blocks in use",
    "blocks_free": "free blocks",
    "bytes_used": "bytes held",
    "allocations": "live allocations",
    "evictions": "evictions since start",
    "hits": "gets answered from the pool",
    "misses": "gets that found nothing (unknown, freed, evicted or expired id)",
    "bytes_shared": "bytes x (reader processes - reader nodes) over live allocations",
}


#: the memory engine's Prometheus gauges: name -> (description, label keys)
GAUGES = {f"cognopt_memory_pool_{k}": (f"memory pool: {d}", ("service",)) for k, d in POOL_GAUGES.items()}


class PoolGauges:
    """The pool figures as Prometheus gauges (``cognopt_memory_pool_*``, a ``service`` label)."""

    def __init__(self) -> None:
        self.gauges = Gauges(GAUGES)

    def export(self, pools: dict[str, dict[str, Any]]) -> None:
        """Set every gauge from the pools' figures; never raises."""

        def fill() -> None:
            for service, fig in pools.items():
                for key in POOL_GAUGES:
                    self.gauges.set(f"cognopt_memory_pool_{key}", fig[key], service=service)

        self.gauges.export(fill, "memory")


class ObjectStoreUse:
    """Object-store use per node, read at most every :data:`OBJECT_STORE_CACHE_S` seconds."""

    def __init__(self) -> None:
        self._cache: tuple[float, list[dict[str, Any]]] | None = None

    def read(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._cache and now - self._cache[0] < OBJECT_STORE_CACHE_S:
            return self._cache[1]
        nodes = object_store_by_node()
        self._cache = (now, nodes)
        return nodes
