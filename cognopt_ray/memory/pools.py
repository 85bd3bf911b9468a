"""Per-service memory pools held in the Ray object store by one named actor (``cognopt.memory``).

Each service has a pool of ``pool_size`` blocks of ``block_size`` bytes. An allocation is one
object in Ray's object store, put there by the pool actor, so the actor owns it and it outlives
the caller; it takes ``ceil(nbytes / block_size)`` blocks of its pool. ``get`` hands the caller
the object's reference and the caller reads it with ``ray.get``: numpy arrays and Arrow buffers
come back zero-copy, as read-only views on the node's shared memory, so N workers of a node that
read one allocation hold one copy, not N.

A full pool evicts its least-recently-used unpinned *transient* allocations (through the
``evict_to`` hook when one is set, else they are dropped and counted); pinned and persistent
allocations are never evicted. Persistent allocations are also written under the storage root
(temp + fsync + rename, checksummed), so they are readable again after the actor restarts.

Example:
    >>> import numpy as np, cognopt_ray
    >>> from cognopt_ray.memory import MemoryPools
    >>> cognopt_ray.init(num_cpus=2)                        # doctest: +SKIP
    >>> pool = MemoryPools.connect().pool("ai_models")      # doctest: +SKIP
    >>> aid = pool.allocate(np.ones(1 << 20))               # doctest: +SKIP
    >>> pool.get(aid).flags.writeable                       # doctest: +SKIP
    False
    >>> pool.deallocate(aid)                                # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import ray
from ray.exceptions import ObjectLostError

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient, process_client, translate_error
from cognopt_ray._private.files import atomic_write, fsync_dir
from cognopt_ray._private.sealer import MAGIC as SEALED_MAGIC, Sealer, Signer
from cognopt_ray.config import MemoryServiceSettings, Settings, check_service_name
from cognopt_ray.errors import Conflict, EngineUnavailable, IntegrityError, InvalidInput, NotFound, PayloadTooLarge
from cognopt_ray.memory import _values
from cognopt_ray.memory._spilled import Spilled, SpillLedger
from cognopt_ray.memory.gc_tuner import GcTuner, current_tuner, probe_pauses

logger = logging.getLogger(__name__)

ACTOR_NAME = "cognopt.memory"
MemoryType = Literal["transient", "persistent"]
MEMORY_TYPES = ("transient", "persistent")
#: How many evicted / freed allocation ids are remembered (for misses and clear 404 messages).
TOMBSTONES = 10_000
#: A worker's GC report older than this is dropped from the engine's view.
GC_REPORT_MAX_AGE_S = 300.0


class PoolFull(Conflict):
    """A pool has no room for an allocation and nothing it may evict (HTTP 409)."""

    title = "Pool full"


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


def _import_hook(path: str | None) -> Callable[..., Any] | None:
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class _Allocation:
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

    def meta(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("ref")
        return d

    @property
    def evictable(self) -> bool:
        return self.memory_type == "transient" and not self.pinned


@dataclass
class _Pool:
    service: str
    config: MemoryServiceSettings
    allocations: "OrderedDict[str, _Allocation]" = field(default_factory=OrderedDict)  # LRU first
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
            "eviction": cfg.eviction,
            "transient_ttl_s": cfg.transient_ttl_s,
            "max_spill_bytes": cfg.max_spill_bytes,
            **(spill or {"spilled": 0, "spilled_bytes": 0, "spill_dropped": 0}),
        }


class _MemoryPoolsActor:
    """State of every pool; one per cluster, named ``cognopt.memory`` (see :class:`MemoryPools`)."""

    def __init__(self, settings: Settings | dict[str, Any], state_dir: str | None = None) -> None:
        self.settings = settings if isinstance(settings, Settings) else Settings.model_validate(settings)
        runtime.adopt_in_actor(self.settings)  # the spill hooks reach the storage engine with these settings
        ms = self.settings.memory
        self.dir = Path(state_dir) if state_dir else self.settings.root / "memory"
        self.alloc_dir = self.dir / "allocations"
        self.alloc_dir.mkdir(parents=True, exist_ok=True)
        key = self.settings.encryption_key
        # Durable copies of persistent allocations are sealed (AES-GCM) when a key is configured.
        self._sealer = Sealer(key.get_secret_value(), b"cognopt memory") if key is not None else None
        # ... and always signed (HMAC of the installation secret), checked before they are decoded.
        self._signer = Signer.from_settings(self.settings, _values.VALUES_PURPOSE)
        self.pools: dict[str, _Pool] = {}
        self.index: dict[str, _Allocation] = {}
        self.evicted: OrderedDict[str, str] = OrderedDict()  # id -> service
        self.freed: OrderedDict[str, str] = OrderedDict()
        self.retired: set[str] = set()
        self.overrides: dict[str, dict[str, Any]] = {}
        self.evict_to = _import_hook(ms.evict_to)
        self.load_evicted = _import_hook(ms.load_evicted)
        self.spill = SpillLedger(self.dir / "spilled.json", _import_hook(ms.delete_evicted))
        for alloc_id, entry in self.spill.entries.items():  # a restarted engine still answers them
            self._remember(self.evicted, alloc_id, entry.service)
        self.sweeps = 0
        self.last_sweep: float | None = None
        self.sweep_task: asyncio.Task | None = None
        self.gc_reports: dict[str, dict[str, Any]] = {}
        self.gc_passes: list[dict[str, Any]] = []
        self.reloaded = 0
        self.store_cache: tuple[float, list[dict[str, Any]]] | None = None
        self._gauges: dict[str, Any] | None = None
        self._load_state()

    # -- durable state -----------------------------------------------------------------------
    def _state_file(self) -> Path:
        return self.dir / "pools.json"

    def _save_state(self) -> None:
        doc = {"overrides": self.overrides, "retired": sorted(self.retired)}
        atomic_write(self._state_file(), json.dumps(doc, indent=1).encode())

    def _load_state(self) -> None:
        if self._state_file().is_file():
            doc = json.loads(self._state_file().read_text())
            self.overrides = doc.get("overrides", {})
            self.retired = set(doc.get("retired", []))
        for meta_path in sorted(self.alloc_dir.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
                alloc = _Allocation(**{k: v for k, v in meta.items() if k != "sha256"})
            except Exception:  # noqa: BLE001 - a torn or foreign file is skipped, never fatal
                logger.warning("skipping unreadable allocation record %s", meta_path)
                continue
            pool = self._pool(alloc.service)
            alloc.blocks = pool.blocks_for(alloc.nbytes)
            pool.allocations[alloc.id] = alloc
            pool.used_blocks += alloc.blocks
            self.index[alloc.id] = alloc
            self.reloaded += 1
        for blob in self.alloc_dir.glob("*.bin"):  # blobs whose record never committed
            if blob.stem not in self.index:
                blob.unlink(missing_ok=True)
        for tmp in self.alloc_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if self.reloaded:
            logger.info("memory engine reloaded %d persistent allocations", self.reloaded)

    def _persist(self, alloc: _Allocation, value: Any) -> None:
        data = _values.seal_signed(value, self._signer, alloc.id.encode())
        if self._sealer is not None:  # the checksum is of the stored (sealed) bytes
            data = self._sealer.seal(data, alloc.id.encode())
        atomic_write(self.alloc_dir / f"{alloc.id}.bin", data)
        atomic_write(self.alloc_dir / f"{alloc.id}.json", json.dumps({**alloc.meta(), "sha256": _values.sha256(data)}).encode())

    def _unpersist(self, alloc_id: str) -> None:
        (self.alloc_dir / f"{alloc_id}.json").unlink(missing_ok=True)  # the record first: it is the commit
        (self.alloc_dir / f"{alloc_id}.bin").unlink(missing_ok=True)
        fsync_dir(self.alloc_dir)

    def _reload_value(self, alloc: _Allocation) -> Any:
        meta = json.loads((self.alloc_dir / f"{alloc.id}.json").read_text())
        data = (self.alloc_dir / f"{alloc.id}.bin").read_bytes()
        if _values.sha256(data) != meta.get("sha256"):
            raise IntegrityError(
                f"the durable copy of allocation {alloc.id!r} does not match its checksum",
                hint="deallocate it and allocate the data again",
            )
        if data.startswith(SEALED_MAGIC):
            if self._sealer is None:
                raise IntegrityError(f"the durable copy of allocation {alloc.id!r} is encrypted but no "
                                     "encryption_key is configured", hint="configure the encryption_key it was made with")
            data = self._sealer.open(data, alloc.id.encode())
        elif self._sealer is not None:
            raise IntegrityError(f"the durable copy of allocation {alloc.id!r} is not encrypted although an "
                                 "encryption_key is configured; it is refused, not read",
                                 hint="deallocate it and allocate the data again")
        return _values.open_signed(data, self._signer, alloc.id.encode())

    # -- pools ---------------------------------------------------------------------------------
    def _config(self, service: str) -> MemoryServiceSettings:
        base = self.settings.service(service).memory
        over = self.overrides.get(service)
        return base.model_copy(update=over) if over else base.model_copy()

    def _pool(self, service: str) -> _Pool:
        pool = self.pools.get(service)
        if pool is None:
            pool = self.pools[service] = _Pool(service, self._config(service))
        return pool

    def _figures(self, pool: _Pool) -> dict[str, Any]:
        return pool.figures(self.spill.figures(pool.service))

    def _ensure_sweeper(self) -> None:
        interval = self.settings.memory.sweep_interval_s
        if interval and self.sweep_task is None:
            self.sweep_task = asyncio.get_running_loop().create_task(self._sweep_loop(interval))

    async def _sweep_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self._sweep()
                self._export({name: self._figures(p) for name, p in self.pools.items()})
            except Exception:  # noqa: BLE001
                logger.exception("memory sweep failed")

    def _remember(self, book: OrderedDict, alloc_id: str, service: str) -> None:
        book[alloc_id] = service
        while len(book) > TOMBSTONES:
            book.popitem(last=False)

    def _drop(self, pool: _Pool, alloc: _Allocation) -> None:
        pool.allocations.pop(alloc.id, None)
        self.index.pop(alloc.id, None)
        pool.used_blocks -= alloc.blocks
        alloc.ref = None
        if alloc.memory_type == "persistent":
            self._unpersist(alloc.id)

    def _evict(self, pool: _Pool, alloc: _Allocation) -> None:
        limit = pool.config.max_spill_bytes
        if self.evict_to is not None and alloc.ref is not None and limit > 0:
            if alloc.nbytes > limit:  # would not fit the service's spill budget at all
                self.spill.count_dropped(pool.service)
            else:
                try:
                    stored = self.evict_to(pool.service, alloc.id, ray.get(alloc.ref), alloc.meta())
                    entry = Spilled(pool.service, alloc.nbytes, stored if isinstance(stored, int) else alloc.nbytes,
                                    alloc.expires, time.time())
                    self.spill.add(alloc.id, entry, limit)
                except Exception:  # noqa: BLE001 - eviction must not fail the allocation that caused it
                    logger.exception("evict_to hook failed for %s; the allocation is dropped", alloc.id)
        self._drop(pool, alloc)
        pool.evictions += 1
        pool.evicted_bytes += alloc.nbytes
        self._remember(self.evicted, alloc.id, pool.service)

    def _make_room(self, pool: _Pool, need: int, *, capacity: int | None = None, for_what: str) -> list[str]:
        """Evict LRU evictable allocations until ``need`` blocks are free; all-or-nothing."""
        capacity = pool.config.pool_size if capacity is None else capacity
        free = capacity - pool.used_blocks
        if free >= need:
            return []
        victims: list[_Allocation] = []
        if pool.config.eviction == "lru":
            for alloc in pool.allocations.values():  # least recently used first
                if free >= need:
                    break
                if alloc.evictable:
                    victims.append(alloc)
                    free += alloc.blocks
        if free < need:
            pool.rejected += 1
            held = pool.used_blocks - sum(a.blocks for a in pool.allocations.values() if a.evictable)
            raise PoolFull(
                f"pool {pool.service!r} is full ({pool.used_blocks}/{capacity} blocks of "
                f"{pool.config.block_size} bytes, {held} held by pinned or persistent allocations); "
                f"{for_what} needs {need} blocks",
                hint="raise pool_size (POST memory/optimize-service) or deallocate"
                + ("" if pool.config.eviction == "lru" else ", or set eviction 'lru'"),
                service=pool.service, blocks_needed=need, blocks_free=capacity - pool.used_blocks,
            )
        for v in victims:
            self._evict(pool, v)
        self.spill.save()
        return [v.id for v in victims]

    # -- allocations ---------------------------------------------------------------------------
    async def allocate(
        self, service: str, value: Any, memory_type: str = "transient", pin: bool = False, ttl_s: float | None = None
    ) -> dict[str, Any]:
        self._ensure_sweeper()
        try:
            check_service_name(service)
        except ValueError as e:
            raise InvalidInput(str(e), hint="use a service name like 'ai_models'") from None
        if memory_type not in MEMORY_TYPES:
            raise InvalidInput(f"memory_type {memory_type!r} is not one of {list(MEMORY_TYPES)}")
        if ttl_s is not None and (not isinstance(ttl_s, (int, float)) or ttl_s < 0 or math.isnan(ttl_s)):
            raise InvalidInput(f"ttl_s must be a number >= 0, got {ttl_s!r}")
        if service in self.retired:
            raise Conflict(
                f"service {service!r} was removed",
                hint="re-create its pool with optimize-service optimization_type 'resize'",
            )
        pool = self._pool(service)
        kind = _values.classify(value)
        nbytes = _values.nbytes_of(value, kind)
        need = pool.blocks_for(nbytes)
        if need > pool.config.pool_size:
            pool.rejected += 1
            raise PayloadTooLarge(
                f"data of {nbytes} bytes needs {need} blocks but pool {service!r} holds only "
                f"{pool.config.pool_size} blocks of {pool.config.block_size} bytes "
                f"({pool.config.pool_size * pool.config.block_size} bytes)",
                hint="split the data or raise the pool's pool_size/block_size (POST memory/optimize-service)",
                service=service, pool_bytes=pool.config.pool_size * pool.config.block_size,
            )
        evicted = self._make_room(pool, need, for_what=f"an allocation of {nbytes} bytes")
        now = time.time()
        ttl = ttl_s if ttl_s is not None else (pool.config.transient_ttl_s or None)
        alloc = _Allocation(
            id=f"{service}.{secrets.token_hex(8)}", service=service, memory_type=memory_type, pinned=bool(pin),
            kind=kind, nbytes=nbytes, blocks=need, created=now, last_used=now,
            expires=(now + ttl) if (ttl and memory_type == "transient") else None,
        )
        if memory_type == "persistent":
            self._persist(alloc, value)  # durable before it is acknowledged
        alloc.ref = ray.put(value)  # owned by this actor: outlives the caller
        pool.allocations[alloc.id] = alloc
        pool.used_blocks += need
        pool.allocations_total += 1
        self.index[alloc.id] = alloc
        return {"allocation_id": alloc.id, "service_name": service, "memory_type": memory_type, "pinned": alloc.pinned,
                "kind": kind, "nbytes": nbytes, "blocks": need, "evicted": evicted, "expires": alloc.expires}

    async def touch(self, counts: dict[str, int]) -> None:
        """Hits that clients answered from their lease (see ``client_lease_s``): count and LRU-touch."""
        now = time.time()
        for alloc_id, n in counts.items():
            alloc = self.index.get(alloc_id)
            if alloc is None:
                continue
            pool = self.pools[alloc.service]
            pool.hits += int(n)
            pool.allocations.move_to_end(alloc_id)
            alloc.last_used = now

    async def lookup(self, allocation_id: str) -> tuple[Any, str]:
        """The object reference of an allocation (a hit) and its kind."""
        alloc = self.index.get(allocation_id)
        if alloc is not None and alloc.expires is not None and alloc.expires <= time.time():
            pool = self.pools[alloc.service]
            self._drop(pool, alloc)
            pool.expired_freed += 1
            self._remember(self.freed, alloc.id, alloc.service)
            alloc = None
        if alloc is None:
            service = self.evicted.get(allocation_id)
            if service is not None:
                pool = self._pool(service)
                spilled = self.spill.get(allocation_id)
                if spilled is not None and spilled.expires is not None and spilled.expires <= time.time():
                    self._free_spilled(pool, allocation_id, "expired")
                    self.spill.save()
                    raise self._unknown(allocation_id)
                pool.misses += 1
                if spilled is not None and self.load_evicted is not None:
                    try:
                        value = self.load_evicted(service, allocation_id)
                        return ray.put(value), _values.classify(value)
                    except KeyError:
                        pass
                    except IntegrityError:
                        logger.warning("the spilled copy of %s failed its integrity check; refused", allocation_id)
                        raise
                raise NotFound(
                    f"allocation {allocation_id!r} was evicted from pool {service!r} when it was full"
                    + ("" if spilled is not None else " and no copy of it is kept"),
                    hint="allocate it again, pin it, use memory_type 'persistent', raise pool_size or max_spill_bytes",
                )
            raise self._unknown(allocation_id)
        pool = self.pools[alloc.service]
        pool.hits += 1
        pool.allocations.move_to_end(alloc.id)
        alloc.last_used = time.time()
        if alloc.ref is None:  # persistent allocation after a restart: re-put from its durable copy
            alloc.ref = ray.put(self._reload_value(alloc))
        return alloc.ref, alloc.kind

    def _unknown(self, allocation_id: str) -> NotFound:
        if allocation_id in self.freed:
            return NotFound(f"allocation {allocation_id!r} was already freed", hint="allocate the data again")
        return NotFound(f"allocation {allocation_id!r} does not exist", hint="use an id returned by allocate")

    def _free_spilled(self, pool: _Pool, allocation_id: str, why: str) -> Spilled | None:
        """Forget a spilled allocation and delete its copy; ``why`` is expired | retired | deallocated."""
        entry = self.spill.remove(allocation_id)
        self.evicted.pop(allocation_id, None)
        self._remember(self.freed, allocation_id, pool.service)
        if why == "expired":
            pool.expired_freed += 1
        elif why == "retired":
            pool.retired_freed += 1
        else:
            pool.deallocations += 1
        return entry

    async def deallocate(self, allocation_id: str) -> dict[str, Any]:
        alloc = self.index.get(allocation_id)
        if alloc is None:
            service = self.evicted.get(allocation_id)
            if service is not None and self.spill.get(allocation_id) is not None:
                entry = self._free_spilled(self._pool(service), allocation_id, "deallocated")
                self.spill.save()
                return {"allocation_id": allocation_id, "service_name": service, "blocks_freed": 0,
                        "nbytes": entry.nbytes if entry else 0, "spilled": True}
            if service is not None:
                raise NotFound(f"allocation {allocation_id!r} was evicted and is already freed")
            raise self._unknown(allocation_id)
        pool = self.pools[alloc.service]
        self._drop(pool, alloc)
        pool.deallocations += 1
        self._remember(self.freed, alloc.id, alloc.service)
        return {"allocation_id": allocation_id, "service_name": alloc.service, "blocks_freed": alloc.blocks,
                "nbytes": alloc.nbytes, "spilled": False}

    async def describe(self, allocation_id: str) -> dict[str, Any]:
        alloc = self.index.get(allocation_id)
        if alloc is None:
            raise self._unknown(allocation_id)
        return alloc.meta()

    # -- configuration -----------------------------------------------------------------------
    async def optimize_service(self, service: str, optimization_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Resize (``pool_size``, ``block_size``), re-policy (``eviction``, ``transient_ttl_s``) or remove a pool.

        ``optimization_type`` is ``resize``, ``policy``, ``remove``, or ``memory`` (any of the four
        parameters at once, as the platform document's examples name the engine as the type).

        Never drops pinned or persistent data: a resize that could not hold them is refused
        (409) and changes nothing; transient allocations that no longer fit are evicted LRU first.
        """
        try:
            check_service_name(service)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        parameters = dict(parameters or {})
        allowed = {"resize": {"pool_size", "block_size"}, "policy": {"eviction", "transient_ttl_s", "max_spill_bytes"},
                   "remove": set()}
        # The platform document's examples name the engine as the type ("optimization_type": "cpu"):
        # "memory" accepts any pool parameter.
        allowed["memory"] = allowed["resize"] | allowed["policy"]
        if optimization_type not in allowed:
            raise InvalidInput(f"optimization_type {optimization_type!r} is not one of {sorted(allowed)}")
        extra = set(parameters) - allowed[optimization_type]
        if extra:
            raise InvalidInput(
                f"parameters {sorted(extra)} do not apply to {optimization_type!r}",
                hint=f"allowed: {sorted(allowed[optimization_type])}",
            )
        if optimization_type == "remove":
            self.retired.add(service)
            self._save_state()
            held = len(self.pools[service].allocations) if service in self.pools else 0
            return {"service_name": service, "removed": True, "allocations_to_free": held,
                    "note": "the cleanup sweep frees its allocations"}
        pool = self._pool(service)
        before = self._figures(pool)
        old = pool.config
        try:
            new = MemoryServiceSettings.model_validate({**old.model_dump(), **parameters})
        except Exception as e:  # noqa: BLE001 - pydantic error, reworded
            raise InvalidInput(f"invalid parameters for pool {service!r}: {e}") from None
        evicted: list[str] = []
        if optimization_type in ("resize", "memory"):
            new_blocks = {a.id: pool.blocks_for(a.nbytes, new.block_size) for a in pool.allocations.values()}
            kept = sum(b for i, b in new_blocks.items() if not pool.allocations[i].evictable)
            if kept > new.pool_size:
                raise Conflict(
                    f"pool {service!r} cannot shrink to {new.pool_size} blocks of {new.block_size} bytes: "
                    f"its pinned and persistent allocations need {kept}",
                    hint="deallocate or unpin data first, or choose a larger pool_size",
                )
            total = sum(new_blocks.values())
            victims = []
            for alloc in pool.allocations.values():
                if total <= new.pool_size:
                    break
                if alloc.evictable:
                    victims.append(alloc)
                    total -= new_blocks[alloc.id]
            for v in victims:
                self._evict(pool, v)
            self.spill.save()
            evicted = [v.id for v in victims]
            for alloc in pool.allocations.values():
                alloc.blocks = new_blocks[alloc.id]
            pool.used_blocks = sum(a.blocks for a in pool.allocations.values())
        pool.config = new
        self.retired.discard(service)
        self.overrides[service] = {**self.overrides.get(service, {}), **parameters}
        self._save_state()
        return {"service_name": service, "optimization_type": optimization_type, "before": before,
                "after": self._figures(pool), "evicted": evicted}

    async def set_evict_hooks(self, evict_to: Callable[..., Any] | None, load_evicted: Callable[..., Any] | None,
                              delete_evicted: Callable[..., Any] | None = None) -> None:
        """Point eviction at another store (the storage engine's WARM tier after the merge)."""
        self.evict_to = evict_to
        self.load_evicted = load_evicted
        self.spill.delete = delete_evicted

    # -- cleanup -------------------------------------------------------------------------------
    def _sweep(self) -> dict[str, Any]:
        now = time.time()
        expired = retired = 0
        for pool in list(self.pools.values()):
            for alloc in list(pool.allocations.values()):
                if pool.service in self.retired:
                    self._drop(pool, alloc)
                    pool.retired_freed += 1
                    self._remember(self.freed, alloc.id, pool.service)
                    retired += 1
                elif alloc.expires is not None and alloc.expires <= now:
                    self._drop(pool, alloc)
                    pool.expired_freed += 1
                    self._remember(self.freed, alloc.id, pool.service)
                    expired += 1
        spilled_freed = 0
        for alloc_id in self.spill.expired(now):  # spilled copies expire too ...
            self._free_spilled(self._pool(self.spill.entries[alloc_id].service), alloc_id, "expired")
            spilled_freed += 1
        for service in self.retired:  # ... and go with their removed pool
            for alloc_id in self.spill.of(service):
                self._free_spilled(self._pool(service), alloc_id, "retired")
                spilled_freed += 1
        self.spill.save()
        self.sweeps += 1
        self.last_sweep = now
        return {"expired_freed": expired, "retired_freed": retired, "spilled_freed": spilled_freed,
                "sweeps": self.sweeps}

    async def sweep(self) -> dict[str, Any]:
        """Run the cleanup sweep now: expired transient allocations, allocations of removed services."""
        return self._sweep()

    def _sweepable(self, now: float) -> list[_Allocation]:
        return [a for p in self.pools.values() for a in p.allocations.values()
                if p.service in self.retired or (a.expires is not None and a.expires <= now)]

    async def expired_allocations(self) -> list[dict[str, Any]]:
        """What the next sweep would free: expired transient allocations and those of removed services."""
        now = time.time()
        return [{**a.meta(), "reason": "retired_service" if a.service in self.retired else "expired"}
                for a in self._sweepable(now)]

    async def take_allocations(self, allocation_ids: list[str]) -> list[tuple[dict[str, Any], Any]]:
        """Free the given allocations (still sweepable ones only) and hand back ``(meta, value)`` of each,
        so the system layer can keep them in its quarantine (``system/cleanup``)."""
        now = time.time()
        sweepable = {a.id: a for a in self._sweepable(now)}
        out: list[tuple[dict[str, Any], Any]] = []
        for alloc_id in allocation_ids:
            alloc = sweepable.get(alloc_id)
            if alloc is None:
                continue
            value = (await alloc.ref) if alloc.ref is not None else self._reload_value(alloc)
            pool = self.pools[alloc.service]
            meta = alloc.meta()
            self._drop(pool, alloc)
            if alloc.service in self.retired:
                pool.retired_freed += 1
            else:
                pool.expired_freed += 1
            self._remember(self.freed, alloc.id, alloc.service)
            out.append((meta, value))
        return out

    async def restore_allocation(self, meta: dict[str, Any], value: Any, ttl_s: float | None = None) -> dict[str, Any]:
        """Put a quarantined allocation back under its own id (``system/cleanup/restore``).

        A transient allocation gets a fresh lifetime (``ttl_s``, else its pool's ``transient_ttl_s``)."""
        alloc_id, service = meta["id"], meta["service"]
        if alloc_id in self.index:
            raise Conflict(f"allocation {alloc_id!r} exists already", hint="nothing to restore")
        if service in self.retired:
            raise Conflict(f"service {service!r} was removed", hint="re-create its pool with optimize-service 'resize'")
        pool = self._pool(service)
        kind = _values.classify(value)
        nbytes = _values.nbytes_of(value, kind)
        need = pool.blocks_for(nbytes)
        self._make_room(pool, need, for_what=f"restoring allocation {alloc_id}")
        now = time.time()
        ttl = ttl_s if ttl_s is not None else (pool.config.transient_ttl_s or None)
        alloc = _Allocation(id=alloc_id, service=service, memory_type=meta.get("memory_type", "transient"),
                            pinned=bool(meta.get("pinned")), kind=kind, nbytes=nbytes, blocks=need, created=now,
                            last_used=now, expires=(now + ttl) if (ttl and meta.get("memory_type", "transient") == "transient") else None)
        if alloc.memory_type == "persistent":
            self._persist(alloc, value)
        alloc.ref = ray.put(value)
        pool.allocations[alloc.id] = alloc
        pool.used_blocks += need
        self.index[alloc.id] = alloc
        self.freed.pop(alloc_id, None)
        return {"allocation_id": alloc_id, "service_name": service, "nbytes": nbytes, "expires": alloc.expires}

    # -- figures -------------------------------------------------------------------------------
    async def metrics(self) -> dict[str, Any]:
        """Per-pool figures, totals, the cleanup sweep and object-store use per node.

        - ``pool_hit_rate`` = Σ hits / Σ (hits + misses) over all pools, where a hit is a get
          answered from the pool and a miss a get of an allocation the pool evicted; ``None``
          before any such get.
        - ``memory_efficiency`` = Σ bytes held / Σ (blocks used × block_size): the share of the
          reserved blocks that holds data (1.0 = no block waste); ``None`` when nothing is held.
        """
        self._ensure_sweeper()
        pools = {name: self._figures(p) for name, p in sorted(self.pools.items())}
        self._export(pools)
        hits = sum(p["hits"] for p in pools.values())
        misses = sum(p["misses"] for p in pools.values())
        held = sum(p["bytes_used"] for p in pools.values())
        reserved = sum(p["bytes_reserved"] for p in pools.values())
        return {
            "pools": pools,
            "totals": {
                "allocations": sum(p["allocations"] for p in pools.values()),
                "bytes_used": held,
                "bytes_reserved": reserved,
                "evictions": sum(p["evictions"] for p in pools.values()),
                "hits": hits,
                "misses": misses,
            },
            "pool_hit_rate": (hits / (hits + misses)) if (hits + misses) else None,
            "memory_efficiency": (held / reserved) if reserved else None,
            "cleanup": {
                "sweeps": self.sweeps,
                "last_sweep": self.last_sweep,
                "interval_s": self.settings.memory.sweep_interval_s,
                "expired_freed": sum(p["expired_freed"] for p in pools.values()),
                "spilled": sum(p["spilled"] for p in pools.values()),
                "spilled_bytes": sum(p["spilled_bytes"] for p in pools.values()),
                "spill_dropped": sum(p["spill_dropped"] for p in pools.values()),
                "retired_freed": sum(p["retired_freed"] for p in pools.values()),
                "retired_services": sorted(self.retired),
            },
            "object_store": self._object_store(),
            "gc": self._gc_summary(),
            "reloaded_persistent": self.reloaded,
            "evict_to": getattr(self.evict_to, "__qualname__", None) if self.evict_to else None,
        }

    def _export(self, pools: dict[str, dict[str, Any]]) -> None:
        """Publish the pool figures as Prometheus gauges through ``ray.util.metrics``."""
        try:
            if self._gauges is None:
                from ray.util.metrics import Gauge

                names = {
                    "blocks_used": "blocks in use", "blocks_free": "free blocks", "bytes_used": "bytes held",
                    "allocations": "live allocations", "evictions": "evictions since start",
                    "hits": "gets answered from the pool", "misses": "gets of evicted allocations",
                }
                self._gauges = {k: Gauge(f"cognopt_memory_pool_{k}", description=f"memory pool: {d}",
                                         tag_keys=("service",)) for k, d in names.items()}
            for service, fig in pools.items():
                for key, gauge in self._gauges.items():
                    gauge.set(float(fig[key]), tags={"service": service})
        except Exception:  # noqa: BLE001 - metrics export must never break the engine
            logger.debug("could not export memory gauges", exc_info=True)

    def _object_store(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self.store_cache and now - self.store_cache[0] < 2.0:
            return self.store_cache[1]
        from cognopt_ray.memory.monitor import object_store_by_node

        nodes = object_store_by_node()
        self.store_cache = (now, nodes)
        return nodes

    # -- GC --------------------------------------------------------------------------------------
    async def report_gc(self, worker: str, report: dict[str, Any]) -> None:
        """Called by every worker's GC tuner each ``gc_interval_s``."""
        self.gc_reports[worker] = {**report, "worker": worker, "received": time.time()}
        cutoff = time.time() - GC_REPORT_MAX_AGE_S
        for k in [k for k, v in self.gc_reports.items() if v["received"] < cutoff]:
            del self.gc_reports[k]

    def _gc_summary(self) -> dict[str, Any]:
        reports = list(self.gc_reports.values())
        p99s = [r["pauses"]["p99_ms"] for r in reports if r.get("pauses", {}).get("p99_ms") is not None]
        return {
            "workers_reporting": len(reports),
            "collections": sum(r.get("collections", 0) for r in reports),
            "total_pause_ms": sum(r.get("total_pause_ms", 0.0) for r in reports),
            "worst_p99_ms": max(p99s) if p99s else None,
            "thresholds": sorted({tuple(r["thresholds"]) for r in reports if "thresholds" in r}),
            "passes": len(self.gc_passes),
        }

    async def optimize_gc(self) -> dict[str, Any]:
        """Run a GC tuning pass now in the engine's process and summarise every worker's reports.

        ``pause_*_before``/``after`` come from the same probe workload (see
        :func:`~cognopt_ray.memory.gc_tuner.probe_pauses`) run under the thresholds before and
        after the pass, side by side; workers apply the same rule on their next pass.
        """
        ms = self.settings.memory
        tuner = current_tuner() or GcTuner(
            min_threshold0=ms.gc_min_threshold0, max_threshold0=ms.gc_max_threshold0,
            pressure_percent=ms.gc_pressure_percent, plenty_percent=ms.gc_plenty_percent,
        ).install()
        result = tuner.tune(probe=True)
        pb, pa = result["pause_before"], result["pause_after"]
        out = {
            "thresholds_before": result["thresholds_before"],
            "thresholds_after": result["thresholds_after"],
            "pause_p50_ms_before": pb["p50_ms"],
            "pause_p99_ms_before": pb["p99_ms"],
            "pause_p50_ms_after": pa["p50_ms"],
            "pause_p99_ms_after": pa["p99_ms"],
            "collections_before": pb["count"],
            "collections_after": pa["count"],
            "decision": result["decision"],
            "memory_percent": result["memory_percent"],
            "workers": self._gc_summary(),
            "time": time.time(),
        }
        self.gc_passes = (self.gc_passes + [out])[-50:]
        return out

    async def pool_figures(self, service: str) -> dict[str, Any]:
        """One pool's figures (the pool is created with its configured size if it did not exist)."""
        try:
            check_service_name(service)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        return self._figures(self._pool(service))

    async def gc_reports_list(self) -> list[dict[str, Any]]:
        return list(self.gc_reports.values())

    # -- health ----------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        self._ensure_sweeper()
        full = [n for n, p in self.pools.items() if p.config.pool_size - p.used_blocks == 0]
        doc: dict[str, Any] = {"status": "up", "pools": len(self.pools),
                               "allocations": len(self.index), "gc_workers_reporting": len(self.gc_reports)}
        if full:
            doc["full_pools"] = sorted(full)
        return doc


_MemoryPoolsRemote = ray.remote(_MemoryPoolsActor)


class ServicePool:
    """One service's pool, as seen through :class:`MemoryPools`.

    Example:
        >>> pool = MemoryPools.connect().pool("ai_models")      # doctest: +SKIP
        >>> aid = pool.allocate(b"weights", memory_type="persistent")  # doctest: +SKIP
        >>> pool.get(aid)                                       # doctest: +SKIP
        b'weights'
    """

    def __init__(self, pools: "MemoryPools", service: str) -> None:
        self._pools = pools
        self.service = service

    def allocate(self, data: Any, memory_type: MemoryType = "transient", pin: bool = False,
                 ttl_s: float | None = None) -> str:
        """Put ``data`` into this pool; returns the allocation id."""
        return self._pools.allocate(self.service, data, memory_type=memory_type, pin=pin, ttl_s=ttl_s)

    def get(self, allocation_id: str) -> Any:
        """The allocation's value (numpy / Arrow: zero-copy, read-only)."""
        return self._pools.get(allocation_id)

    def deallocate(self, allocation_id: str) -> dict[str, Any]:
        return self._pools.deallocate(allocation_id)

    def info(self) -> dict[str, Any]:
        """This pool's figures (blocks used/free, bytes, hit rate, evictions, allocations)."""
        return self._pools._call("pool_figures", self.service)

    def resize(self, pool_size: int | None = None, block_size: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"pool_size": pool_size, "block_size": block_size}.items() if v is not None}
        return self._pools.optimize_service(self.service, "resize", params)


class MemoryPools(EngineClient):
    """Client of the memory engine's pools (actor ``cognopt.memory``).

    Args:
        handle: the actor handle; use :meth:`connect` to get or create it.

    Example:
        >>> import numpy as np
        >>> pools = MemoryPools.connect()                        # doctest: +SKIP
        >>> aid = pools.allocate("ai_models", np.zeros(1 << 18))  # doctest: +SKIP
        >>> pools.get(aid).sum()                                 # doctest: +SKIP
        0.0
        >>> pools.metrics()["pools"]["ai_models"]["blocks_used"] # doctest: +SKIP
        2
    """

    engine = "memory"
    #: Most leases a client keeps (oldest dropped first).
    MAX_LEASES = 4096
    #: Seconds between two batches of lease hits sent to the actor.
    TOUCH_FLUSH_S = 0.5

    def __init__(self, handle: Any, *, lease_s: float = 1.0, **kwargs: Any) -> None:
        super().__init__(handle, **kwargs)
        self._lease_s = lease_s
        self._leases: OrderedDict[str, tuple[Any, str, float]] = OrderedDict()
        self._touches: dict[str, int] = {}
        self._touched_at = time.monotonic()
        self._lease_lock = threading.Lock()

    @classmethod
    def connect(cls, settings: Settings | None = None, *, name: str = ACTOR_NAME,
                state_dir: str | None = None, **options: Any) -> "MemoryPools":
        """Get or create the pools actor ``name`` (``state_dir`` defaults to ``<root>/memory``)."""
        settings = settings or runtime.get_settings()
        handle = runtime.get_or_create_actor(_MemoryPoolsRemote, name, settings, state_dir, **options)
        return cls(handle, lease_s=settings.memory.client_lease_s)

    # -- leases: skip the actor round trip on repeated gets ------------------------------------
    def _leased(self, allocation_id: str) -> tuple[Any, str] | None:
        if not self._lease_s:
            return None
        with self._lease_lock:
            entry = self._leases.get(allocation_id)
            if entry is None:
                return None
            if entry[2] <= time.monotonic():
                del self._leases[allocation_id]
                return None
            self._touches[allocation_id] = self._touches.get(allocation_id, 0) + 1
            flush = time.monotonic() - self._touched_at >= self.TOUCH_FLUSH_S
        if flush:
            self.flush_touches()
        return entry[0], entry[1]

    def _lease(self, allocation_id: str, ref: Any, kind: str) -> None:
        if not self._lease_s:
            return
        with self._lease_lock:
            self._leases[allocation_id] = (ref, kind, time.monotonic() + self._lease_s)
            while len(self._leases) > self.MAX_LEASES:
                self._leases.popitem(last=False)

    def _forget(self, allocation_id: str) -> None:
        with self._lease_lock:
            self._leases.pop(allocation_id, None)
            self._touches.pop(allocation_id, None)

    def flush_touches(self) -> None:
        """Send the hits answered from leases to the actor now (fire and forget)."""
        with self._lease_lock:
            touches, self._touches, self._touched_at = self._touches, {}, time.monotonic()
        if touches:
            try:
                self._actor.touch.remote(touches)
            except Exception:  # noqa: BLE001 - figures only; the actor may be restarting
                logger.debug("could not report leased hits", exc_info=True)

    def _lookup(self, allocation_id: str) -> tuple[Any, str]:
        leased = self._leased(allocation_id)
        if leased is not None:
            return leased
        ref, kind = self._call("lookup", allocation_id)
        self._lease(allocation_id, ref, kind)
        return ref, kind

    async def _alookup(self, allocation_id: str) -> tuple[Any, str]:
        leased = self._leased(allocation_id)
        if leased is not None:
            return leased
        ref, kind = await self._acall("lookup", allocation_id)
        self._lease(allocation_id, ref, kind)
        return ref, kind

    def pool(self, service: str) -> ServicePool:
        try:
            check_service_name(service)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        return ServicePool(self, service)

    def allocate(self, service: str, data: Any, *, memory_type: MemoryType = "transient", pin: bool = False,
                 ttl_s: float | None = None) -> str:
        """Put ``data`` into ``service``'s pool; returns the allocation id.

        Raises:
            PayloadTooLarge: the data needs more blocks than the whole pool has.
            PoolFull: no free blocks and nothing evictable.
            InvalidInput: bad service name, memory type or TTL.
        """
        return self.allocate_info(service, data, memory_type=memory_type, pin=pin, ttl_s=ttl_s)["allocation_id"]

    def allocate_info(self, service: str, data: Any, *, memory_type: MemoryType = "transient", pin: bool = False,
                      ttl_s: float | None = None) -> dict[str, Any]:
        """Like :meth:`allocate`, returning the whole record (blocks, nbytes, evicted ids)."""
        return self._call("allocate", service, data, memory_type, pin, ttl_s)

    async def aallocate_info(self, service: str, data: Any, *, memory_type: MemoryType = "transient",
                             pin: bool = False, ttl_s: float | None = None) -> dict[str, Any]:
        return await self._acall("allocate", service, data, memory_type, pin, ttl_s)

    def get(self, allocation_id: str) -> Any:
        """The allocation's value; numpy arrays and Arrow buffers are zero-copy read-only views."""
        return self.get_with_kind(allocation_id)[0]

    def get_with_kind(self, allocation_id: str) -> tuple[Any, str]:
        ref, kind = self._lookup(allocation_id)
        try:
            return self._resolve(ref), kind
        except ObjectLostError:
            # A lease outlived the actor that owned the object (it restarted): ask it again.
            self._forget(allocation_id)
            ref, kind = self._lookup(allocation_id)
            return self._resolve(ref), kind

    async def aget_with_kind(self, allocation_id: str) -> tuple[Any, str]:
        for attempt in (0, 1):
            ref, kind = await self._alookup(allocation_id)
            try:
                return await ref, kind
            except ObjectLostError:
                self._forget(allocation_id)
                if attempt:
                    raise EngineUnavailable(f"allocation {allocation_id!r} is being reloaded", hint="retry") from None
            except Exception as e:  # noqa: BLE001
                raise translate_error(e, self.engine) from None
        raise AssertionError("unreachable")

    def _resolve(self, ref: Any) -> Any:
        try:
            return ray.get(ref, timeout=self._timeout_s)
        except ObjectLostError:
            raise
        except Exception as e:  # noqa: BLE001
            raise translate_error(e, self.engine) from None

    def deallocate(self, allocation_id: str) -> dict[str, Any]:
        """Free an allocation. Raises :class:`NotFound` for unknown or already freed ids."""
        self._forget(allocation_id)
        return self._call("deallocate", allocation_id)

    async def adeallocate(self, allocation_id: str) -> dict[str, Any]:
        self._forget(allocation_id)
        return await self._acall("deallocate", allocation_id)

    def describe(self, allocation_id: str) -> dict[str, Any]:
        return self._call("describe", allocation_id)

    def metrics(self, include_cache: bool = True) -> dict[str, Any]:
        """Pools, totals, cleanup, object store per node, GC and (optionally) shared-cache figures."""
        self.flush_touches()
        doc = self._call("metrics")
        if include_cache:
            from cognopt_ray.memory.cache import cache_figures

            doc["cache"] = cache_figures()
        return doc

    async def ametrics(self, include_cache: bool = True) -> dict[str, Any]:
        self.flush_touches()
        doc = await self._acall("metrics")
        if include_cache:
            from cognopt_ray.memory.cache import acache_figures

            doc["cache"] = await acache_figures()
        return doc

    def optimize_service(self, service: str, optimization_type: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        return self._call("optimize_service", service, optimization_type, parameters or {})

    async def aoptimize_service(self, service: str, optimization_type: str,
                                parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._acall("optimize_service", service, optimization_type, parameters or {})

    def optimize_gc(self) -> dict[str, Any]:
        return self._call("optimize_gc")

    async def aoptimize_gc(self) -> dict[str, Any]:
        return await self._acall("optimize_gc")

    def sweep(self) -> dict[str, Any]:
        return self._call("sweep")

    def expired_allocations(self) -> list[dict[str, Any]]:
        """Allocations the next sweep would free (expired transient ones, those of removed services)."""
        return self._call("expired_allocations")

    def take_allocations(self, allocation_ids: list[str]) -> list[tuple[dict[str, Any], Any]]:
        """Free those allocations (if still sweepable) and return ``(meta, value)`` of each (for a quarantine)."""
        return self._call("take_allocations", list(allocation_ids))

    def restore_allocation(self, meta: dict[str, Any], value: Any, ttl_s: float | None = None) -> dict[str, Any]:
        """Put an allocation taken by :meth:`take_allocations` back under its id."""
        return self._call("restore_allocation", meta, value, ttl_s)

    def gc_reports(self) -> list[dict[str, Any]]:
        return self._call("gc_reports_list")

    def set_evict_hooks(self, evict_to: Callable[..., Any] | None, load_evicted: Callable[..., Any] | None = None,
                        delete_evicted: Callable[..., Any] | None = None) -> None:
        """Send evicted transient allocations to ``evict_to(service, id, value, meta)`` (which may return
        the bytes it stored), answer gets of evicted ids with ``load_evicted(service, id)`` (raise
        ``KeyError`` for none) and delete a copy with ``delete_evicted(service, id)``.
        Not durable across actor restarts: use the ``memory.evict_to``/``load_evicted``/``delete_evicted``
        settings for that."""
        self._call("set_evict_hooks", evict_to, load_evicted, delete_evicted)

    def health(self) -> dict[str, Any]:
        return self._call("health")


def client() -> MemoryPools:
    """This process's :class:`MemoryPools` on ``cognopt.memory`` (created on first use)."""
    return process_client(ACTOR_NAME, MemoryPools.connect)


__all__ = ["MemoryPools", "ServicePool", "PoolFull", "client", "split_allocation_id", "ACTOR_NAME"]
