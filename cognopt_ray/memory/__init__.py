"""The memory engine: per-service pools in Ray's object store, a shared cache, GC tuning.

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray.memory import MemoryPools, SharedCache
    >>> cognopt_ray.init(num_cpus=2)                     # doctest: +SKIP
    >>> pool = MemoryPools.connect().pool("ai_models")   # doctest: +SKIP
    >>> aid = pool.allocate(b"x" * 1_000_000)            # doctest: +SKIP
    >>> SharedCache().set("k", b"v", ttl_s=60)           # doctest: +SKIP
    'in_cluster'
"""

from cognopt_ray.memory.cache import CACHE_ACTOR_NAME, SharedCache
from cognopt_ray.memory.gc_tuner import GcTuner
from cognopt_ray.memory.pools import ACTOR_NAME, MemoryPools, PoolFull, ServicePool, client

__all__ = ["MemoryPools", "ServicePool", "PoolFull", "SharedCache", "GcTuner", "client", "ACTOR_NAME", "CACHE_ACTOR_NAME"]
