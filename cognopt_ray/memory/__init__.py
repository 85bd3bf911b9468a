"""The memory engine: per-service pools in Ray's object store, a shared cache, GC tuning.

========================  ============================================================
module                    holds
========================  ============================================================
``client.py``             :class:`MemoryPools` / :class:`MemoryPool`, the public client
``_actor.py``             the pools actor ``cognopt.memory`` (private)
``allocations.py``        allocation and pool records, typed requests, allocation ids
``persist.py``            durable copies of persistent allocations, the pools' state
``spill_ledger.py``       the spilled allocations and their bytes per service
``spill.py``              the default spill hooks: the storage engine's WARM tier
``gc_tuner.py``           the GC tuner of every worker (``worker_process_setup_hook``)
``gc_reports.py``         the workers' GC reports and the engine's tuning passes
``object_store.py``       object-store use per node, from the raylets
``cache.py``              :class:`SharedCache` (Redis or in-cluster)
``_values.py``            the tagged value codec (no pickle from data)
``errors.py``             :class:`PoolFull`, :class:`NotAcceptable`
========================  ============================================================

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray.memory import MemoryPools, SharedCache
    >>> cognopt_ray.init(num_cpus=2)                     # doctest: +SKIP
    >>> pool = MemoryPools.connect().pool("ai_models")   # doctest: +SKIP
    >>> aid = pool.allocate(b"x" * 1_000_000)            # doctest: +SKIP
    >>> SharedCache().set("k", b"v", ttl_s=60)           # doctest: +SKIP
    'in_cluster'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cognopt_ray import runtime as _runtime
from cognopt_ray._private import lazy as _lazy
from cognopt_ray.memory.gc_tuner import GcTuner, runtime_env_with_tuner

if TYPE_CHECKING:
    from cognopt_ray.memory.allocations import AllocationRequest, PoolChange
    from cognopt_ray.memory.cache import CACHE_ACTOR_NAME, SharedCache
    from cognopt_ray.memory.client import ACTOR_NAME, MemoryPool, MemoryPools, PortableValue, client
    from cognopt_ray.memory.errors import NotAcceptable, PoolFull

_lazy.install(
    __name__,
    {
        "AllocationRequest": ".allocations",
        "PoolChange": ".allocations",
        "CACHE_ACTOR_NAME": ".cache",
        "SharedCache": ".cache",
        "ACTOR_NAME": ".client",
        "MemoryPool": ".client",
        "MemoryPools": ".client",
        "PortableValue": ".client",
        "client": ".client",
        "NotAcceptable": ".errors",
        "PoolFull": ".errors",
    },
)

# The GC tuner reaches every worker of a job that cognopt_ray.init() starts or joins
# (cognopt_ray.runtime.init imports this package so that it is registered before Ray starts).
_runtime.add_runtime_env_hook(runtime_env_with_tuner)

__all__ = [
    "MemoryPools",
    "MemoryPool",
    "PortableValue",
    "AllocationRequest",
    "PoolChange",
    "PoolFull",
    "NotAcceptable",
    "SharedCache",
    "GcTuner",
    "client",
    "ACTOR_NAME",
    "CACHE_ACTOR_NAME",
]
