"""cognopt_ray: make a Ray cluster do the same work with fewer cores, less RAM, storage and bandwidth.

Example:
    >>> import cognopt_ray
    >>> settings = cognopt_ray.init(num_cpus=2)   # doctest: +SKIP
    >>> cognopt_ray.Priority.CRITICAL < cognopt_ray.Priority.BACKGROUND
    True
"""

__version__ = "0.1.0"

from cognopt_ray.config import Settings
from cognopt_ray.cpu import CPUTask, PriorityScheduler
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
from cognopt_ray.memory import MemoryPool, MemoryPools, PoolFull, SharedCache
from cognopt_ray.network import NetworkEngine, OptimizedClient
from cognopt_ray.priority import Priority
from cognopt_ray.runtime import get_settings, init, shutdown
from cognopt_ray.storage import StorageClient, TieredStore

connect = init  # joining a cluster is init(address="auto")

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
