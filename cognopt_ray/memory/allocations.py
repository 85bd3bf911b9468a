"""What the pools hold: allocation records, a service's pool and its figures, and the typed requests
that change them (each checked once, where the client builds it).

An allocation id is ``<service>.<16 hex>``, so the service an allocation belongs to is known from
its id alone (:func:`split_allocation_id`), before anything is asked of the engine.

Example:
    >>> split_allocation_id("ai_models.0123456789abcdef")
    'ai_models'
    >>> AllocationRequest("ai_models", memory_type="persistent").memory_type
    'persistent'
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cognopt_ray.config import MemoryServiceSettings, check_service_name
from cognopt_ray.errors import InvalidInput, NotFound

MemoryType = Literal["transient", "persistent"]
#: Most distinct reader processes remembered per allocation (beyond it ``bytes_shared`` is a lower bound).
MAX_READERS = 1024
MEMORY_TYPES = ("transient", "persistent")
#: What ``optimize_service`` may change, by ``optimization_type``. The platform document's
#: examples name the engine as the type (``"optimization_type": "cpu"``): ``memory`` accepts any
#: pool parameter.
POOL_PARAMETERS: dict[str, frozenset[str]] = {
    "resize": frozenset({"pool_size", "block_size"}),
    "policy": frozenset({"eviction", "transient_ttl_s", "max_spill_bytes"}),
    "remove": frozenset(),
    "memory": frozenset({"pool_size", "block_size", "eviction", "transient_ttl_s", "max_spill_bytes"}),
}


def split_allocation_id(allocation_id: str) -> str:
    """The service an allocation id belongs to (ids are ``<service>.<16 hex>``); 404 when malformed."""
    if not isinstance(allocation_id, str) or "." not in allocation_id:
        raise NotFound(f"allocation {allocation_id!r} does not exist", hint="use an id returned by allocate")
    service, token = allocation_id.rsplit(".", 1)
    try:
        check_service_name(service)
    except ValueError:
        raise NotFound(f"allocation {allocation_id!r} does not exist", hint="use an id returned by allocate") from None
    if len(token) != 16 or any(c not in "0123456789abcdef" for c in token):
        raise NotFound(f"allocation {allocation_id!r} does not exist", hint="use an id returned by allocate")
    return service


def checked_service(service: str, hint: str | None = None) -> str:
    """``service`` when it is a valid service name, else :class:`InvalidInput` (400)."""
    try:
        return check_service_name(service)
    except ValueError as e:
        raise InvalidInput(str(e), hint=hint) from None


# -- typed requests: checked when built, at the client ----------------------------------------------
@dataclass(frozen=True)
class AllocationRequest:
    """How to hold a value: in whose pool, transient or persistent, pinned or not, for how long.

    Args:
        service: the pool's service name.
        memory_type: ``transient`` (evictable, may expire) or ``persistent`` (durable, never evicted).
        pin: never evict it.
        ttl_s: a transient allocation's lifetime; ``None`` = the pool's ``transient_ttl_s``.

    Raises:
        InvalidInput: a bad service name, memory type or TTL.
    """

    service: str
    memory_type: MemoryType = "transient"
    pin: bool = False
    ttl_s: float | None = None

    def __post_init__(self) -> None:
        checked_service(self.service, hint="use a service name like 'ai_models'")
        if self.memory_type not in MEMORY_TYPES:
            raise InvalidInput(f"memory_type {self.memory_type!r} is not one of {list(MEMORY_TYPES)}")
        ttl = self.ttl_s
        if ttl is not None and (not isinstance(ttl, (int, float)) or ttl < 0 or math.isnan(ttl)):
            raise InvalidInput(f"ttl_s must be a number >= 0, got {ttl!r}")
        object.__setattr__(self, "pin", bool(self.pin))


@dataclass(frozen=True)
class PoolChange:
    """A change to one service's pool (``POST memory/optimize-service``).

    Args:
        service: the pool's service name.
        optimization_type: ``resize`` (``pool_size``, ``block_size``), ``policy`` (``eviction``,
            ``transient_ttl_s``, ``max_spill_bytes``), ``remove`` (retire the pool) or ``memory``
            (any of those parameters).
        parameters: the new values.

    Raises:
        InvalidInput: a bad service name, an unknown type, or parameters that do not apply to it.
    """

    service: str
    optimization_type: str
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checked_service(self.service)
        if self.optimization_type not in POOL_PARAMETERS:
            raise InvalidInput(f"optimization_type {self.optimization_type!r} is not one of {sorted(POOL_PARAMETERS)}")
        allowed = POOL_PARAMETERS[self.optimization_type]
        params = dict(self.parameters or {})
        extra = set(params) - allowed
        if extra:
            raise InvalidInput(
                f"parameters {sorted(extra)} do not apply to {self.optimization_type!r}",
                hint=f"allowed: {sorted(allowed)}",
            )
        object.__setattr__(self, "parameters", params)

    @property
    def resizes(self) -> bool:
        return self.optimization_type in ("resize", "memory")


# -- the records the pools actor keeps ---------------------------------------------------------------
@dataclass
class Allocation:
    """One value held in a pool (its object reference is the actor's, so it outlives the caller)."""

    id: str
    service: str
    memory_type: str
    pinned: bool
    kind: str
    nbytes: int
    blocks: int
    created: float
    last_used: float
    expires: float | None
    ref: Any = field(default=None, repr=False)  # None: persistent, not re-put since the restart
    #: the distinct processes that looked it up, as ``(node id, process id)`` (at most MAX_READERS)
    readers: set[tuple[str, str]] = field(default_factory=set, repr=False, compare=False)

    def meta(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ref")
        d.pop("readers")
        return d

    def add_reader(self, reader: Any) -> None:
        """Remember the process that looked it up (``[node id, process id]``; anything else is ignored)."""
        if isinstance(reader, (tuple, list)) and len(reader) == 2 and all(isinstance(x, str) for x in reader):
            if len(self.readers) < MAX_READERS:
                self.readers.add((reader[0][:128], reader[1][:128]))

    @property
    def bytes_shared(self) -> int:
        """``nbytes × (distinct reader processes − distinct reader nodes)``: each node holds one
        object-store copy its readers share, where private copies would cost one per process."""
        return self.nbytes * max(0, len(self.readers) - len({n for n, _ in self.readers}))

    @property
    def evictable(self) -> bool:
        return self.memory_type == "transient" and not self.pinned


@dataclass
class Pool:
    """One service's pool: its settings, its allocations (least recently used first) and counters."""

    service: str
    config: MemoryServiceSettings
    allocations: OrderedDict[str, Allocation] = field(default_factory=OrderedDict)  # LRU first
    used_blocks: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    allocations_total: int = 0
    deallocations: int = 0
    rejected: int = 0
    expired_freed: int = 0
    retired_freed: int = 0

    def blocks_for(self, nbytes: int, block_size: int | None = None) -> int:
        return max(1, math.ceil(nbytes / (block_size or self.config.block_size)))

    def figures(self, spill: dict[str, int] | None = None) -> dict[str, Any]:
        cfg = self.config
        bytes_used = sum(a.nbytes for a in self.allocations.values())
        gets = self.hits + self.misses
        return {
            "service": self.service,
            "pool_size": cfg.pool_size,
            "block_size": cfg.block_size,
            "capacity_bytes": cfg.pool_size * cfg.block_size,
            "blocks_used": self.used_blocks,
            "blocks_free": cfg.pool_size - self.used_blocks,
            "bytes_used": bytes_used,
            "bytes_reserved": self.used_blocks * cfg.block_size,
            "allocations": len(self.allocations),
            "persistent": sum(1 for a in self.allocations.values() if a.memory_type == "persistent"),
            "pinned": sum(1 for a in self.allocations.values() if a.pinned),
            "allocations_total": self.allocations_total,
            "deallocations": self.deallocations,
            "evictions": self.evictions,
            "evicted_bytes": self.evicted_bytes,
            "rejected": self.rejected,
            "expired_freed": self.expired_freed,
            "retired_freed": self.retired_freed,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": (self.hits / gets) if gets else None,
            "readers": sum(len(a.readers) for a in self.allocations.values()),
            "bytes_shared": sum(a.bytes_shared for a in self.allocations.values()),
            "eviction": cfg.eviction,
            "transient_ttl_s": cfg.transient_ttl_s,
            "max_spill_bytes": cfg.max_spill_bytes,
            **(spill or {"spilled": 0, "spilled_bytes": 0, "spill_dropped": 0}),
        }


__all__ = [
    "AllocationRequest",
    "PoolChange",
    "Allocation",
    "Pool",
    "MemoryType",
    "MEMORY_TYPES",
    "POOL_PARAMETERS",
    "split_allocation_id",
    "checked_service",
]
