"""The pools actor (``cognopt.memory``): every service's pool, held in Ray's object store.

Private: callers use :class:`cognopt_ray.memory.MemoryPools` (``memory/client.py``), which checks
each request once, wraps this actor's handle and turns its errors into the package's own.

Each service has a pool of ``pool_size`` blocks of ``block_size`` bytes. An allocation is one
object in Ray's object store, put there by this actor, so the actor owns it and it outlives the
caller; it takes ``ceil(nbytes / block_size)`` blocks of its pool. ``lookup`` hands the caller
the object's reference and the caller reads it with ``ray.get``: numpy arrays and Arrow buffers
come back zero-copy, as read-only views on the node's shared memory.

A full pool evicts its least-recently-used unpinned *transient* allocations (through the
``evict_to`` hook when one is set, with the bytes spilled counted in
:class:`~cognopt_ray.memory.spill_ledger.SpillLedger`, else they are dropped and counted); pinned
and persistent allocations are never evicted. Persistent allocations also have a durable copy
(:mod:`cognopt_ray.memory.persist`), so they are readable again after the actor restarts.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private import values as _values
from cognopt_ray.config import MemoryServiceSettings, Settings
from cognopt_ray.errors import Conflict, IntegrityError, InvalidInput, NotFound, PayloadTooLarge
from cognopt_ray.memory import figures
from cognopt_ray.memory.allocations import Allocation, AllocationRequest, Pool, PoolChange
from cognopt_ray.memory.errors import PoolFull
from cognopt_ray.memory.gc_reports import GcReports
from cognopt_ray.memory.persist import DurableCopies, PoolState
from cognopt_ray.memory.spill_ledger import Spilled, SpillLedger

logger = logging.getLogger(__name__)

ACTOR_NAME = "cognopt.memory"
#: How many evicted / freed allocation ids are remembered (for misses and clear 404 messages).
TOMBSTONES = 10_000


def _import_hook(path: str | None) -> Callable[..., Any] | None:
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class _MemoryPoolsActor:
    """State of every pool; one per cluster, named ``cognopt.memory`` (see :class:`~cognopt_ray.memory.MemoryPools`)."""

    def __init__(self, settings: Settings | dict[str, Any], state_dir: str | None = None) -> None:
        self.settings = settings if isinstance(settings, Settings) else Settings.model_validate(settings)
        runtime.adopt_in_actor(self.settings)  # the spill hooks reach the storage engine with these settings
        ms = self.settings.memory
        self.dir = Path(state_dir) if state_dir else self.settings.root / "memory"
        self.copies = DurableCopies(self.dir / "allocations", self.settings)
        self.state = PoolState(self.dir / "pools.json")
        self.pools: dict[str, Pool] = {}
        self.index: dict[str, Allocation] = {}
        self.evicted: OrderedDict[str, str] = OrderedDict()  # id -> service
        self.freed: OrderedDict[str, str] = OrderedDict()
        self.evict_to = _import_hook(ms.evict_to)
        self.load_evicted = _import_hook(ms.load_evicted)
        self.spill = SpillLedger(self.dir / "spilled.json", _import_hook(ms.delete_evicted))
        for alloc_id, entry in self.spill.entries.items():  # a restarted engine still answers them
            self._remember(self.evicted, alloc_id, entry.service)
        self.sweeps = 0
        self.last_sweep: float | None = None
        self.sweep_task: asyncio.Task | None = None
        self.gc = GcReports()
        self.reloaded = 0
        self.unpooled_misses = 0  # misses of ids whose service has no pool
        self.object_store = figures.ObjectStoreUse()
        self.gauges = figures.PoolGauges()
        self._reload()

    def _reload(self) -> None:
        """Take the persistent allocations back from their durable copies (values are read on first get)."""
        for alloc in self.copies.records():
            pool = self._pool(alloc.service)
            alloc.blocks = pool.blocks_for(alloc.nbytes)
            pool.allocations[alloc.id] = alloc
            pool.used_blocks += alloc.blocks
            self.index[alloc.id] = alloc
            self.reloaded += 1
        if self.reloaded:
            logger.info("memory engine reloaded %d persistent allocations", self.reloaded)

    # -- pools ---------------------------------------------------------------------------------
    def _config(self, service: str) -> MemoryServiceSettings:
        base = self.settings.service(service).memory
        over = self.state.overrides.get(service)
        return base.model_copy(update=over) if over else base.model_copy()

    def _pool(self, service: str) -> Pool:
        pool = self.pools.get(service)
        if pool is None:
            pool = self.pools[service] = Pool(service, self._config(service))
        return pool

    def _figures(self, pool: Pool) -> dict[str, Any]:
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
                self.gauges.export({name: self._figures(p) for name, p in self.pools.items()})
            except Exception:
                logger.exception("memory sweep failed")

    def _remember(self, book: OrderedDict, alloc_id: str, service: str) -> None:
        book[alloc_id] = service
        while len(book) > TOMBSTONES:
            book.popitem(last=False)

    def _drop(self, pool: Pool, alloc: Allocation) -> None:
        pool.allocations.pop(alloc.id, None)
        self.index.pop(alloc.id, None)
        pool.used_blocks -= alloc.blocks
        alloc.ref = None
        if alloc.memory_type == "persistent":
            self.copies.delete(alloc.id)

    def _evict(self, pool: Pool, alloc: Allocation) -> None:
        limit = pool.config.max_spill_bytes
        if self.evict_to is not None and alloc.ref is not None and limit > 0:
            if alloc.nbytes > limit:  # would not fit the service's spill budget at all
                self.spill.count_dropped(pool.service)
            else:
                try:
                    stored = self.evict_to(pool.service, alloc.id, ray.get(alloc.ref), alloc.meta())
                    entry = Spilled(
                        pool.service,
                        alloc.nbytes,
                        stored if isinstance(stored, int) else alloc.nbytes,
                        alloc.expires,
                        time.time(),
                    )
                    self.spill.add(alloc.id, entry, limit)
                except Exception:
                    logger.exception("evict_to hook failed for %s; the allocation is dropped", alloc.id)
        self._drop(pool, alloc)
        pool.evictions += 1
        pool.evicted_bytes += alloc.nbytes
        self._remember(self.evicted, alloc.id, pool.service)

    def _make_room(self, pool: Pool, need: int, *, capacity: int | None = None, for_what: str) -> list[str]:
        """Evict LRU evictable allocations until ``need`` blocks are free; all-or-nothing."""
        capacity = pool.config.pool_size if capacity is None else capacity
        free = capacity - pool.used_blocks
        if free >= need:
            return []
        victims: list[Allocation] = []
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
                service=pool.service,
                blocks_needed=need,
                blocks_free=capacity - pool.used_blocks,
            )
        for v in victims:
            self._evict(pool, v)
        self.spill.save()
        return [v.id for v in victims]

    # -- allocations ---------------------------------------------------------------------------
    async def allocate(self, request: AllocationRequest, value: Any) -> dict[str, Any]:
        """Hold ``value`` as ``request`` says (checked by the client); evicts LRU transient data for room."""
        self._ensure_sweeper()
        service, memory_type, ttl_s = request.service, request.memory_type, request.ttl_s
        if service in self.state.retired:
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
                service=service,
                pool_bytes=pool.config.pool_size * pool.config.block_size,
            )
        evicted = self._make_room(pool, need, for_what=f"an allocation of {nbytes} bytes")
        now = time.time()
        ttl = ttl_s if ttl_s is not None else (pool.config.transient_ttl_s or None)
        alloc = Allocation(
            id=f"{service}.{secrets.token_hex(8)}",
            service=service,
            memory_type=memory_type,
            pinned=request.pin,
            kind=kind,
            nbytes=nbytes,
            blocks=need,
            created=now,
            last_used=now,
            expires=(now + ttl) if (ttl and memory_type == "transient") else None,
        )
        if memory_type == "persistent":
            self.copies.save(alloc, value)  # durable before it is acknowledged
        alloc.ref = ray.put(value)  # owned by this actor: outlives the caller
        pool.allocations[alloc.id] = alloc
        pool.used_blocks += need
        pool.allocations_total += 1
        self.index[alloc.id] = alloc
        return {
            "allocation_id": alloc.id,
            "service_name": service,
            "memory_type": memory_type,
            "pinned": alloc.pinned,
            "kind": kind,
            "nbytes": nbytes,
            "blocks": need,
            "evicted": evicted,
            "expires": alloc.expires,
        }

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

    def _miss(self, allocation_id: str) -> None:
        """Count a get that found nothing, in the pool its id names (if that pool exists)."""
        service = allocation_id.rsplit(".", 1)[0] if isinstance(allocation_id, str) else ""
        pool = self.pools.get(service)
        if pool is not None:
            pool.misses += 1
        else:
            self.unpooled_misses += 1

    async def lookup(self, allocation_id: str, reader: Any = None) -> tuple[Any, str]:
        """The object reference of an allocation (a hit) and its kind; ``reader`` names the calling
        process (``[node id, process id]``, for ``bytes_shared``). Every get that finds nothing
        is a miss."""
        try:
            return self._lookup(allocation_id, reader)
        except NotFound:
            self._miss(allocation_id)
            raise

    def _lookup(self, allocation_id: str, reader: Any) -> tuple[Any, str]:
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
                if spilled is not None and self.load_evicted is not None:
                    try:
                        value = self.load_evicted(service, allocation_id)
                        pool.misses += 1  # the pool had nothing, though the spilled copy answers
                        return ray.put(value), _values.classify(value)
                    except KeyError:
                        pass
                    except IntegrityError:
                        pool.misses += 1
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
        alloc.add_reader(reader)
        if alloc.ref is None:  # persistent allocation after a restart: re-put from its durable copy
            alloc.ref = ray.put(self.copies.load(alloc))
        return alloc.ref, alloc.kind

    def _unknown(self, allocation_id: str) -> NotFound:
        if allocation_id in self.freed:
            return NotFound(f"allocation {allocation_id!r} was already freed", hint="allocate the data again")
        return NotFound(f"allocation {allocation_id!r} does not exist", hint="use an id returned by allocate")

    def _free_spilled(self, pool: Pool, allocation_id: str, why: str) -> Spilled | None:
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
                return {
                    "allocation_id": allocation_id,
                    "service_name": service,
                    "blocks_freed": 0,
                    "nbytes": entry.nbytes if entry else 0,
                    "spilled": True,
                }
            if service is not None:
                raise NotFound(f"allocation {allocation_id!r} was evicted and is already freed")
            raise self._unknown(allocation_id)
        pool = self.pools[alloc.service]
        self._drop(pool, alloc)
        pool.deallocations += 1
        self._remember(self.freed, alloc.id, alloc.service)
        return {
            "allocation_id": allocation_id,
            "service_name": alloc.service,
            "blocks_freed": alloc.blocks,
            "nbytes": alloc.nbytes,
            "spilled": False,
        }

    async def describe(self, allocation_id: str) -> dict[str, Any]:
        alloc = self.index.get(allocation_id)
        if alloc is None:
            raise self._unknown(allocation_id)
        return alloc.meta()

    # -- configuration -----------------------------------------------------------------------
    async def optimize_service(self, change: PoolChange) -> dict[str, Any]:
        """Resize (``pool_size``, ``block_size``), re-policy (``eviction``, ``transient_ttl_s``,
        ``max_spill_bytes``) or remove a pool, as ``change`` (checked by the client) says.

        Never drops pinned or persistent data: a resize that could not hold them is refused
        (409) and changes nothing; transient allocations that no longer fit are evicted LRU first.
        """
        service, optimization_type, parameters = change.service, change.optimization_type, change.parameters
        if optimization_type == "remove":
            self.state.retired.add(service)
            self.state.save()
            held = len(self.pools[service].allocations) if service in self.pools else 0
            return {
                "service_name": service,
                "removed": True,
                "allocations_to_free": held,
                "note": "the cleanup sweep frees its allocations",
            }
        pool = self._pool(service)
        before = self._figures(pool)
        old = pool.config
        try:
            new = MemoryServiceSettings.model_validate({**old.model_dump(), **parameters})
        except Exception as e:  # noqa: BLE001 - pydantic error, reworded
            raise InvalidInput(f"invalid parameters for pool {service!r}: {e}") from None
        evicted: list[str] = []
        if change.resizes:
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
        self.state.retired.discard(service)
        self.state.overrides[service] = {**self.state.overrides.get(service, {}), **parameters}
        self.state.save()
        return {
            "service_name": service,
            "optimization_type": optimization_type,
            "before": before,
            "after": self._figures(pool),
            "evicted": evicted,
        }

    async def set_evict_hooks(
        self,
        evict_to: Callable[..., Any] | None,
        load_evicted: Callable[..., Any] | None,
        delete_evicted: Callable[..., Any] | None = None,
    ) -> None:
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
                if pool.service in self.state.retired:
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
        for service in self.state.retired:  # ... and go with their removed pool
            for alloc_id in self.spill.of(service):
                self._free_spilled(self._pool(service), alloc_id, "retired")
                spilled_freed += 1
        self.spill.save()
        self.sweeps += 1
        self.last_sweep = now
        return {
            "expired_freed": expired,
            "retired_freed": retired,
            "spilled_freed": spilled_freed,
            "sweeps": self.sweeps,
        }

    async def sweep(self) -> dict[str, Any]:
        """Run the cleanup sweep now: expired transient allocations, allocations of removed services."""
        return self._sweep()

    def _sweepable(self, now: float) -> list[Allocation]:
        return [
            a
            for p in self.pools.values()
            for a in p.allocations.values()
            if p.service in self.state.retired or (a.expires is not None and a.expires <= now)
        ]

    async def expired_allocations(self) -> list[dict[str, Any]]:
        """What the next sweep would free: expired transient allocations and those of removed services."""
        now = time.time()
        return [
            {**a.meta(), "reason": "retired_service" if a.service in self.state.retired else "expired"}
            for a in self._sweepable(now)
        ]

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
            value = (await alloc.ref) if alloc.ref is not None else self.copies.load(alloc)
            pool = self.pools[alloc.service]
            meta = alloc.meta()
            self._drop(pool, alloc)
            if alloc.service in self.state.retired:
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
        if service in self.state.retired:
            raise Conflict(f"service {service!r} was removed", hint="re-create its pool with optimize-service 'resize'")
        pool = self._pool(service)
        kind = _values.classify(value)
        nbytes = _values.nbytes_of(value, kind)
        need = pool.blocks_for(nbytes)
        self._make_room(pool, need, for_what=f"restoring allocation {alloc_id}")
        now = time.time()
        ttl = ttl_s if ttl_s is not None else (pool.config.transient_ttl_s or None)
        alloc = Allocation(
            id=alloc_id,
            service=service,
            memory_type=meta.get("memory_type", "transient"),
            pinned=bool(meta.get("pinned")),
            kind=kind,
            nbytes=nbytes,
            blocks=need,
            created=now,
            last_used=now,
            expires=(now + ttl) if (ttl and meta.get("memory_type", "transient") == "transient") else None,
        )
        if alloc.memory_type == "persistent":
            self.copies.save(alloc, value)
        alloc.ref = ray.put(value)
        pool.allocations[alloc.id] = alloc
        pool.used_blocks += need
        self.index[alloc.id] = alloc
        self.freed.pop(alloc_id, None)
        return {"allocation_id": alloc_id, "service_name": service, "nbytes": nbytes, "expires": alloc.expires}

    # -- figures -------------------------------------------------------------------------------
    async def metrics(self) -> dict[str, Any]:
        """Per-pool figures, totals, the cleanup sweep and object-store use per node.

        The totals and rates are computed by :func:`cognopt_ray.memory.figures.totals` (formulas there).
        """
        self._ensure_sweeper()
        pools = {name: self._figures(p) for name, p in sorted(self.pools.items())}
        self.gauges.export(pools)
        return {
            "pools": pools,
            **figures.totals(pools, self.unpooled_misses),
            "cleanup": {
                "sweeps": self.sweeps,
                "last_sweep": self.last_sweep,
                "interval_s": self.settings.memory.sweep_interval_s,
                **figures.cleanup_totals(pools),
                "retired_services": sorted(self.state.retired),
            },
            "object_store": self.object_store.read(),
            "gc": self.gc.summary(),
            "reloaded_persistent": self.reloaded,
            "evict_to": getattr(self.evict_to, "__qualname__", None) if self.evict_to else None,
        }

    # -- GC --------------------------------------------------------------------------------------
    async def report_gc(self, worker: str, report: dict[str, Any]) -> None:
        """Called by every worker's GC tuner each ``gc_interval_s``."""
        self.gc.add(worker, report)

    async def optimize_gc(self) -> dict[str, Any]:
        """Run a GC tuning pass now in the engine's process (see :meth:`GcReports.run_pass`)."""
        return self.gc.run_pass(self.settings.memory)

    async def gc_reports(self) -> list[dict[str, Any]]:
        """The latest GC report of each worker."""
        return list(self.gc.reports.values())

    async def pool_figures(self, service: str) -> dict[str, Any]:
        """One pool's figures (the pool is created with its configured size if it did not exist)."""
        return self._figures(self._pool(service))

    # -- health ----------------------------------------------------------------------------------
    async def health(self) -> dict[str, Any]:
        self._ensure_sweeper()
        full = [n for n, p in self.pools.items() if p.config.pool_size - p.used_blocks == 0]
        doc: dict[str, Any] = {
            "status": "up",
            "pools": len(self.pools),
            "allocations": len(self.index),
            "gc_workers_reporting": len(self.gc.reports),
        }
        if full:
            doc["full_pools"] = sorted(full)
        return doc


_MemoryPoolsRemote = ray.remote(_MemoryPoolsActor)
