"""The public client of the memory engine's pools: :class:`MemoryPools`, and :class:`MemoryPool` for one service.

The client wraps the handle of the pools actor (``cognopt.memory``, private in
``memory/_actor.py``), checks each request once (service names, memory types, TTLs, pool
changes: :mod:`cognopt_ray.memory.allocations`) and raises the package's own exceptions for the
actor's errors (:class:`~cognopt_ray.errors.EngineUnavailable` while it restarts). Every method
has an ``_async`` twin for event loops (Serve replicas, async actors).

A ``get`` hands back the object the pool holds in Ray's object store: numpy arrays and Arrow
buffers come back zero-copy, as read-only views on the node's shared memory, so N workers of a
node that read one allocation hold one copy, not N. A client keeps each reference for
``memory.client_lease_s`` (a *lease*), so repeated gets cost one ``ray.get`` and no actor round
trip; the hits it answers that way are reported to the actor in batches.

Example:
    >>> import numpy as np, cognopt_ray
    >>> from cognopt_ray import memory
    >>> cognopt_ray.init(num_cpus=2)                        # doctest: +SKIP
    >>> pool = memory.client().pool("ai_models")            # doctest: +SKIP
    >>> aid = pool.allocate(np.ones(1 << 20))               # doctest: +SKIP
    >>> pool.get(aid).flags.writeable                       # doctest: +SKIP
    False
    >>> pool.deallocate(aid)                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ObjectLostError

from cognopt_ray import runtime
from cognopt_ray._private import values as _values
from cognopt_ray._private.client import EngineClient, process_client, translate_error
from cognopt_ray.config import Settings
from cognopt_ray.errors import EngineUnavailable
from cognopt_ray.memory._actor import ACTOR_NAME, _MemoryPoolsRemote
from cognopt_ray.memory.allocations import (
    AllocationRequest,
    MemoryType,
    PoolChange,
    checked_service,
    split_allocation_id,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PortableValue:
    """An allocation in a form any reader may be given (no pickle): what ``GET memory/allocations/{id}`` sends.

    Attributes:
        kind: ``json`` | ``bytes`` | ``numpy`` | ``arrow``.
        value: the JSON value when ``kind`` is ``json``, else ``None``.
        data: the bytes for the other kinds (numpy: raw buffer; Arrow: an IPC stream or buffer bytes).
        headers: what describes ``data`` (``X-Cognopt-Dtype``/``-Shape``, ``X-Cognopt-Encoding``).
    """

    kind: str
    value: Any = None
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


class MemoryPool:
    """One service's pool, as seen through :class:`MemoryPools` (get one with :meth:`MemoryPools.pool`).

    Example:
        >>> pool = memory.client().pool("ai_models")            # doctest: +SKIP
        >>> aid = pool.allocate(b"weights", memory_type="persistent")  # doctest: +SKIP
        >>> pool.get(aid)                                       # doctest: +SKIP
        b'weights'
    """

    def __init__(self, pools: MemoryPools, service: str) -> None:
        self._pools = pools
        self.service = checked_service(service)

    def allocate(
        self, data: Any, memory_type: MemoryType = "transient", pin: bool = False, ttl_s: float | None = None
    ) -> str:
        """Put ``data`` into this pool; returns the allocation id (see :meth:`MemoryPools.allocate`)."""
        return self._pools.allocate(self.service, data, memory_type=memory_type, pin=pin, ttl_s=ttl_s)

    async def allocate_async(
        self, data: Any, memory_type: MemoryType = "transient", pin: bool = False, ttl_s: float | None = None
    ) -> str:
        """Async twin of :meth:`allocate`."""
        return await self._pools.allocate_async(self.service, data, memory_type=memory_type, pin=pin, ttl_s=ttl_s)

    def get(self, allocation_id: str) -> Any:
        """The allocation's value (numpy / Arrow: zero-copy, read-only)."""
        return self._pools.get(allocation_id)

    async def get_async(self, allocation_id: str) -> Any:
        """Async twin of :meth:`get`."""
        return await self._pools.get_async(allocation_id)

    def deallocate(self, allocation_id: str) -> dict[str, Any]:
        """Free an allocation (see :meth:`MemoryPools.deallocate`)."""
        return self._pools.deallocate(allocation_id)

    async def deallocate_async(self, allocation_id: str) -> dict[str, Any]:
        """Async twin of :meth:`deallocate`."""
        return await self._pools.deallocate_async(allocation_id)

    def info(self) -> dict[str, Any]:
        """This pool's figures (blocks used/free, bytes, hit rate, evictions, allocations)."""
        return self._pools.pool_info(self.service)

    async def info_async(self) -> dict[str, Any]:
        """Async twin of :meth:`info`."""
        return await self._pools.pool_info_async(self.service)

    def resize(self, pool_size: int | None = None, block_size: int | None = None) -> dict[str, Any]:
        """Change this pool's ``pool_size`` and/or ``block_size`` (see :meth:`MemoryPools.optimize_service`)."""
        return self._pools.optimize_service(self.service, "resize", _resize_parameters(pool_size, block_size))

    async def resize_async(self, pool_size: int | None = None, block_size: int | None = None) -> dict[str, Any]:
        """Async twin of :meth:`resize`."""
        return await self._pools.optimize_service_async(
            self.service, "resize", _resize_parameters(pool_size, block_size)
        )


_READERS: dict[tuple[int, bool], list[str]] = {}


def reader_id() -> list[str]:
    """This process as the pools see a reader: ``[node id, Ray worker id:pid]`` (host and pid when
    Ray is not connected; never starts Ray), for ``bytes_shared``. A forked child is another reader."""
    key = (os.getpid(), ray.is_initialized())
    found = _READERS.get(key)
    if found is None:
        node, worker = socket.gethostname(), str(key[0])
        if key[1]:
            try:
                ctx = ray.get_runtime_context()
                node, worker = ctx.get_node_id(), f"{ctx.get_worker_id()}:{key[0]}"
            except Exception:  # noqa: BLE001 - keep host and pid
                pass
        found = _READERS[key] = [str(node), worker]
    return found


def _resize_parameters(pool_size: int | None, block_size: int | None) -> dict[str, Any]:
    return {k: v for k, v in {"pool_size": pool_size, "block_size": block_size}.items() if v is not None}


class MemoryPools(EngineClient):
    """Client of the memory engine's pools (actor ``cognopt.memory``).

    Args:
        handle: the actor handle; use :meth:`connect` (or :func:`client`) to get or create it.
        lease_s: how long a reference handed out by the actor is reused (0 = ask on every get).

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
    def connect(
        cls, settings: Settings | None = None, *, name: str = ACTOR_NAME, state_dir: str | None = None, **options: Any
    ) -> MemoryPools:
        """Get or create the pools actor ``name`` (``state_dir`` defaults to ``<root>/memory``)."""
        settings = settings or runtime.get_settings()
        handle = runtime.get_or_create_actor(_MemoryPoolsRemote, name, settings, state_dir, **options)
        return cls(handle, lease_s=settings.memory.client_lease_s)

    @staticmethod
    def service_of(allocation_id: str) -> str:
        """The service an allocation id belongs to, read from the id alone.

        Raises:
            NotFound: the id is not of the form ``<service>.<16 hex>`` (so no allocation has it).
        """
        return split_allocation_id(allocation_id)

    def pool(self, service: str) -> MemoryPool:
        """``service``'s pool (created with its configured size on first use). Raises InvalidInput for a bad name."""
        return MemoryPool(self, service)

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
            except Exception:
                logger.debug("could not report leased hits", exc_info=True)

    def _lookup(self, allocation_id: str) -> tuple[Any, str]:
        leased = self._leased(allocation_id)
        if leased is not None:
            return leased
        ref, kind = self._call("lookup", allocation_id, reader_id())
        self._lease(allocation_id, ref, kind)
        return ref, kind

    async def _lookup_async(self, allocation_id: str) -> tuple[Any, str]:
        leased = self._leased(allocation_id)
        if leased is not None:
            return leased
        ref, kind = await self._acall("lookup", allocation_id, reader_id())
        self._lease(allocation_id, ref, kind)
        return ref, kind

    def _resolve(self, ref: Any) -> Any:
        try:
            return ray.get(ref, timeout=self._timeout_s)
        except ObjectLostError:
            raise
        except Exception as e:  # noqa: BLE001 - every actor error becomes the package's own
            raise translate_error(e, self.engine) from None

    # -- allocations -----------------------------------------------------------------------------
    def allocate(
        self,
        service: str,
        data: Any,
        *,
        memory_type: MemoryType = "transient",
        pin: bool = False,
        ttl_s: float | None = None,
    ) -> str:
        """Put ``data`` into ``service``'s pool; returns the allocation id.

        Args:
            service: the pool's service name.
            data: any value; bytes, numpy arrays and Arrow objects are read back zero-copy.
            memory_type: ``transient`` (evictable, may expire) or ``persistent`` (durable, never evicted).
            pin: never evict it.
            ttl_s: a transient allocation's lifetime; ``None`` = the pool's ``transient_ttl_s``.

        Raises:
            PayloadTooLarge: the data needs more blocks than the whole pool has.
            PoolFull: no free blocks and nothing evictable.
            InvalidInput: bad service name, memory type or TTL.
            Conflict: the service's pool was removed.
        """
        return self.allocate_info(service, data, memory_type=memory_type, pin=pin, ttl_s=ttl_s)["allocation_id"]

    async def allocate_async(
        self,
        service: str,
        data: Any,
        *,
        memory_type: MemoryType = "transient",
        pin: bool = False,
        ttl_s: float | None = None,
    ) -> str:
        """Async twin of :meth:`allocate`."""
        doc = await self.allocate_info_async(service, data, memory_type=memory_type, pin=pin, ttl_s=ttl_s)
        return doc["allocation_id"]

    def allocate_info(
        self,
        service: str,
        data: Any,
        *,
        memory_type: MemoryType = "transient",
        pin: bool = False,
        ttl_s: float | None = None,
    ) -> dict[str, Any]:
        """Like :meth:`allocate`, returning the whole record (kind, nbytes, blocks, evicted ids, expiry)."""
        return self._call("allocate", AllocationRequest(service, memory_type, pin, ttl_s), data)

    async def allocate_info_async(
        self,
        service: str,
        data: Any,
        *,
        memory_type: MemoryType = "transient",
        pin: bool = False,
        ttl_s: float | None = None,
    ) -> dict[str, Any]:
        """Async twin of :meth:`allocate_info`."""
        return await self._acall("allocate", AllocationRequest(service, memory_type, pin, ttl_s), data)

    def get(self, allocation_id: str) -> Any:
        """The allocation's value; numpy arrays and Arrow buffers are zero-copy read-only views.

        Raises:
            NotFound: unknown, freed, expired, or evicted with no copy kept.
            IntegrityError: its spilled or durable copy is not one this installation wrote.
        """
        return self.get_with_kind(allocation_id)[0]

    async def get_async(self, allocation_id: str) -> Any:
        """Async twin of :meth:`get`."""
        return (await self.get_with_kind_async(allocation_id))[0]

    def get_with_kind(self, allocation_id: str) -> tuple[Any, str]:
        """The allocation's value and its kind (``bytes`` | ``numpy`` | ``arrow`` | ``json`` | ``object``)."""
        ref, kind = self._lookup(allocation_id)
        try:
            return self._resolve(ref), kind
        except ObjectLostError:
            # A lease outlived the actor that owned the object (it restarted): ask it again.
            self._forget(allocation_id)
            ref, kind = self._lookup(allocation_id)
            return self._resolve(ref), kind

    async def get_with_kind_async(self, allocation_id: str) -> tuple[Any, str]:
        """Async twin of :meth:`get_with_kind`."""
        for attempt in (0, 1):
            ref, kind = await self._lookup_async(allocation_id)
            try:
                return await ref, kind
            except ObjectLostError:
                self._forget(allocation_id)
                if attempt:
                    raise EngineUnavailable(f"allocation {allocation_id!r} is being reloaded", hint="retry") from None
            except Exception as e:  # noqa: BLE001 - every actor error becomes the package's own
                raise translate_error(e, self.engine) from None
        raise AssertionError("unreachable")

    def get_portable(self, allocation_id: str) -> PortableValue:
        """The allocation in a form any reader may be given, never a pickle (what REST sends).

        Raises:
            NotAcceptable: it holds a Python object (or a numpy object array): read it with :meth:`get`.
        """
        return _portable(*self.get_with_kind(allocation_id))

    async def get_portable_async(self, allocation_id: str) -> PortableValue:
        """Async twin of :meth:`get_portable`."""
        return _portable(*await self.get_with_kind_async(allocation_id))

    def deallocate(self, allocation_id: str) -> dict[str, Any]:
        """Free an allocation (and its spilled copy). Raises :class:`NotFound` for unknown or already freed ids."""
        self._forget(allocation_id)
        return self._call("deallocate", allocation_id)

    async def deallocate_async(self, allocation_id: str) -> dict[str, Any]:
        """Async twin of :meth:`deallocate`."""
        self._forget(allocation_id)
        return await self._acall("deallocate", allocation_id)

    def describe(self, allocation_id: str) -> dict[str, Any]:
        """An allocation's record (service, memory type, pinned, kind, nbytes, blocks, times)."""
        return self._call("describe", allocation_id)

    async def describe_async(self, allocation_id: str) -> dict[str, Any]:
        """Async twin of :meth:`describe`."""
        return await self._acall("describe", allocation_id)

    # -- pools -----------------------------------------------------------------------------------
    def pool_info(self, service: str) -> dict[str, Any]:
        """One pool's figures (the pool is created with its configured size if it did not exist)."""
        return self._call("pool_figures", checked_service(service))

    async def pool_info_async(self, service: str) -> dict[str, Any]:
        """Async twin of :meth:`pool_info`."""
        return await self._acall("pool_figures", checked_service(service))

    def optimize_service(
        self, service: str, optimization_type: str, parameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resize, re-policy or remove ``service``'s pool; returns its figures before and after.

        Args:
            service: the pool's service name.
            optimization_type: ``resize`` (``pool_size``, ``block_size``), ``policy`` (``eviction``,
                ``transient_ttl_s``, ``max_spill_bytes``), ``remove`` or ``memory`` (any parameter).
            parameters: the new values.

        Raises:
            InvalidInput: a bad name, type or parameter.
            Conflict: a shrink that pinned or persistent data would not fit in (nothing changes).
        """
        return self._call("optimize_service", PoolChange(service, optimization_type, parameters or {}))

    async def optimize_service_async(
        self, service: str, optimization_type: str, parameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Async twin of :meth:`optimize_service`."""
        return await self._acall("optimize_service", PoolChange(service, optimization_type, parameters or {}))

    def metrics(self, include_cache: bool = True) -> dict[str, Any]:
        """Pools, totals, cleanup, object store per node, GC and (optionally) shared-cache figures."""
        self.flush_touches()
        doc = self._call("metrics")
        if include_cache:
            from cognopt_ray.memory.cache import cache_figures

            doc["cache"] = cache_figures()
        return doc

    async def metrics_async(self, include_cache: bool = True) -> dict[str, Any]:
        """Async twin of :meth:`metrics`."""
        self.flush_touches()
        doc = await self._acall("metrics")
        if include_cache:
            from cognopt_ray.memory.cache import acache_figures

            doc["cache"] = await acache_figures()
        return doc

    def health(self) -> dict[str, Any]:
        """``status`` up, the number of pools and allocations, workers reporting GC, full pools."""
        return self._call("health")

    async def health_async(self) -> dict[str, Any]:
        """Async twin of :meth:`health`."""
        return await self._acall("health")

    # -- GC ----------------------------------------------------------------------------------------
    def optimize_gc(self) -> dict[str, Any]:
        """Run a GC tuning pass in the engine now: thresholds and probe pause times before/after."""
        return self._call("optimize_gc")

    async def optimize_gc_async(self) -> dict[str, Any]:
        """Async twin of :meth:`optimize_gc`."""
        return await self._acall("optimize_gc")

    def gc_reports(self) -> list[dict[str, Any]]:
        """The latest GC report of each worker (thresholds, collections, pause statistics)."""
        return self._call("gc_reports")

    async def gc_reports_async(self) -> list[dict[str, Any]]:
        """Async twin of :meth:`gc_reports`."""
        return await self._acall("gc_reports")

    # -- cleanup -----------------------------------------------------------------------------------
    def sweep(self) -> dict[str, Any]:
        """Run the cleanup sweep now: expired transient allocations, allocations of removed services."""
        return self._call("sweep")

    async def sweep_async(self) -> dict[str, Any]:
        """Async twin of :meth:`sweep`."""
        return await self._acall("sweep")

    def expired_allocations(self) -> list[dict[str, Any]]:
        """Allocations the next sweep would free (expired transient ones, those of removed services)."""
        return self._call("expired_allocations")

    async def expired_allocations_async(self) -> list[dict[str, Any]]:
        """Async twin of :meth:`expired_allocations`."""
        return await self._acall("expired_allocations")

    def take_allocations(self, allocation_ids: list[str]) -> list[tuple[dict[str, Any], Any]]:
        """Free those allocations (if still sweepable) and return ``(meta, value)`` of each (for a quarantine)."""
        return self._call("take_allocations", list(allocation_ids))

    async def take_allocations_async(self, allocation_ids: list[str]) -> list[tuple[dict[str, Any], Any]]:
        """Async twin of :meth:`take_allocations`."""
        return await self._acall("take_allocations", list(allocation_ids))

    def restore_allocation(self, meta: dict[str, Any], value: Any, ttl_s: float | None = None) -> dict[str, Any]:
        """Put an allocation taken by :meth:`take_allocations` back under its id (a fresh TTL if transient)."""
        return self._call("restore_allocation", meta, value, ttl_s)

    async def restore_allocation_async(
        self, meta: dict[str, Any], value: Any, ttl_s: float | None = None
    ) -> dict[str, Any]:
        """Async twin of :meth:`restore_allocation`."""
        return await self._acall("restore_allocation", meta, value, ttl_s)

    def set_evict_hooks(
        self,
        evict_to: Callable[..., Any] | None,
        load_evicted: Callable[..., Any] | None = None,
        delete_evicted: Callable[..., Any] | None = None,
    ) -> None:
        """Send evicted transient allocations to ``evict_to(service, id, value, meta)`` (which may return
        the bytes it stored), answer gets of evicted ids with ``load_evicted(service, id)`` (raise
        ``KeyError`` for none) and delete a copy with ``delete_evicted(service, id)``.
        Not durable across actor restarts: use the ``memory.evict_to``/``load_evicted``/``delete_evicted``
        settings for that."""
        self._call("set_evict_hooks", evict_to, load_evicted, delete_evicted)

    async def set_evict_hooks_async(
        self,
        evict_to: Callable[..., Any] | None,
        load_evicted: Callable[..., Any] | None = None,
        delete_evicted: Callable[..., Any] | None = None,
    ) -> None:
        """Async twin of :meth:`set_evict_hooks`."""
        await self._acall("set_evict_hooks", evict_to, load_evicted, delete_evicted)


def _portable(value: Any, kind: str) -> PortableValue:
    if kind == "json":
        return PortableValue(kind, value=value)
    data, headers = _values.to_http_bytes(value, kind)
    return PortableValue(kind, data=data, headers=headers)


def client() -> MemoryPools:
    """This process's :class:`MemoryPools` on ``cognopt.memory`` (created on first use)."""
    return process_client(ACTOR_NAME, MemoryPools.connect)


__all__ = ["MemoryPools", "MemoryPool", "PortableValue", "client", "ACTOR_NAME"]
