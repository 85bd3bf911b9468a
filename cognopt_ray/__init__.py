"""cognopt_ray: make a Ray cluster do the same work with fewer cores, less RAM, storage and bandwidth.

Public names are imported on first use (:mod:`cognopt_ray._private.lazy`): ``import cognopt_ray``
loads neither Ray nor the engines, so a command such as ``cognopt backup`` starts fast;
``cognopt_ray.init`` or ``from cognopt_ray.cpu import PriorityScheduler`` imports what it needs.

Example:
    >>> import cognopt_ray
    >>> settings = cognopt_ray.init(num_cpus=2)   # doctest: +SKIP
    >>> cognopt_ray.Priority.CRITICAL < cognopt_ray.Priority.BACKGROUND
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cognopt_ray._private import lazy as _lazy
from cognopt_ray.errors import (
    CognoptError,
    ConfigError,
    Conflict,
    EngineUnavailable,
    Forbidden,
    InsufficientStorage,
    IntegrityError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from cognopt_ray.priority import Priority

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cognopt_ray.config import Settings
    from cognopt_ray.cpu import CPUTask, PriorityScheduler
    from cognopt_ray.memory import MemoryPool, MemoryPools, PoolFull, SharedCache
    from cognopt_ray.network import NetworkEngine, OptimizedClient
    from cognopt_ray.runtime import get_settings, init, shutdown
    from cognopt_ray.storage import StorageClient, TieredStore

    connect = init

_lazy.install(
    __name__,
    {
        "Settings": ".config",
        "CPUTask": ".cpu",
        "PriorityScheduler": ".cpu",
        "MemoryPool": ".memory",
        "MemoryPools": ".memory",
        "PoolFull": ".memory",
        "SharedCache": ".memory",
        "NetworkEngine": ".network",
        "OptimizedClient": ".network",
        "get_settings": ".runtime",
        "init": ".runtime",
        "connect": ".runtime:init",  # joining a cluster is init(address="auto")
        "shutdown": ".runtime",
        "StorageClient": ".storage",
        "TieredStore": ".storage",
    },
)


__all__ = [
    "__version__",
    "init",
    "connect",
    "shutdown",
    "get_settings",
    "Settings",
    "Priority",
    "NetworkEngine",
    "OptimizedClient",
    "PriorityScheduler",
    "CPUTask",
    "CognoptError",
    "ConfigError",
    "Conflict",
    "EngineUnavailable",
    "Forbidden",
    "InsufficientStorage",
    "IntegrityError",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "Unauthorized",
    "MemoryPools",
    "MemoryPool",
    "SharedCache",
    "PoolFull",
    "StorageClient",
    "TieredStore",
]
