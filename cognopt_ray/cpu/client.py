"""The public client of the CPU engine: :class:`PriorityScheduler` and :class:`CPUTask`."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import ray

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient
from cognopt_ray.config import check_service_name
from cognopt_ray.cpu.errors import Unschedulable
from cognopt_ray.cpu.pools import function_blob
from cognopt_ray.errors import InvalidInput
from cognopt_ray.priority import Priority

ACTOR_NAME = "cognopt.cpu"
#: Ray re-sends a retriable task's scheduler call until the restarted scheduler takes it (-1).
#: Ray fails the call fast while the actor is "restarting", so a finite count is used up in
#: milliseconds; a scheduler that is dead for good fails the call with ``ActorDiedError``.
RESTART_RETRIES = -1


@dataclass
class CPUTask:
    """One task for :meth:`PriorityScheduler.submit_batch` / ``optimize_async_processing``.

    Example:
        >>> CPUTask(pow, (2, 10), priority="high").priority
        <Priority.HIGH: 2>
    """

    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: Priority | int | str = Priority.MEDIUM
    num_cpus: float = 1
    task_type: str | None = None
    service: str | None = None
    preemptible: bool = False
    max_retries: int = 3

    def __post_init__(self) -> None:
        self.priority = _priority(self.priority)


def _service(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return check_service_name(name)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def _priority(value: Any) -> Priority:
    try:
        return Priority.parse(value)
    except ValueError as e:
        raise InvalidInput(str(e), hint="use 1..5 or critical/high/medium/low/background") from None


class PriorityScheduler(EngineClient):
    """Run Ray tasks by priority: strict across levels, FIFO within one, aging against starvation.

    ``submit`` returns an ``ObjectRef``: ``ray.get`` it (or ``await`` it) for the task's value; a
    task that raises delivers its exception there. The caller owns that ref, so the value outlives
    the scheduler.

    Example:
        >>> import ray, cognopt_ray
        >>> from cognopt_ray.cpu import PriorityScheduler
        >>> cognopt_ray.init(num_cpus=2)                              # doctest: +SKIP
        >>> sched = PriorityScheduler()                                # doctest: +SKIP
        >>> ref = sched.submit(pow, 2, 10, priority="critical")        # doctest: +SKIP
        >>> ray.get(ref)                                               # doctest: +SKIP
        1024
    """

    engine = "cpu"

    def __init__(self, handle: Any = None, *, settings: Any = None, timeout_s: float | None = None) -> None:
        s = settings or runtime.get_settings()
        self._retry = s.cpu.retry_on_restart
        self._chunk = s.cpu.batch_chunk
        if handle is None:
            handle = runtime.get_or_create_actor(_actor_cls(), ACTOR_NAME, s.to_overrides())
        super().__init__(handle, **({"timeout_s": timeout_s} if timeout_s else {}))
        self._blobs: dict[Any, tuple[str, bytes]] = {}
        self._lock = threading.Lock()
        self._run_retry = handle.run.options(max_task_retries=RESTART_RETRIES)
        self._run_once = handle.run.options(max_task_retries=0)
        self._max_cpus = 0.0  # the largest node's CPUs, as last asked

    # -- submission -------------------------------------------------------------------------
    def _blob(self, fn: Callable[..., Any]) -> tuple[str, bytes]:
        try:
            found = self._blobs.get(fn)
        except TypeError:  # unhashable callable
            return function_blob(fn)
        if found is None:
            if not callable(fn):
                raise InvalidInput(f"fn must be callable, got {type(fn).__name__}")
            found = function_blob(fn)
            with self._lock:
                self._blobs[fn] = found
        return found

    def _check_cpus(self, num_cpus: float, task_type: str | None) -> float:
        try:
            cpus = float(num_cpus)
        except (TypeError, ValueError):
            raise InvalidInput(f"num_cpus must be a number, got {num_cpus!r}") from None
        if task_type not in (None, "cpu", "io"):
            raise InvalidInput(f"task_type must be 'cpu' or 'io', got {task_type!r}")
        if task_type == "io":
            return cpus
        if not cpus > 0:
            raise InvalidInput(f"num_cpus must be > 0, got {cpus:g}", hint="use task_type='io' for tasks that need no CPU slot")
        if cpus > self._max_cpus:  # ask the scheduler only then; it checks every task against the live cluster too
            biggest = self._max_cpus = float(self._call("cluster")["max_node_cpus"])
            if cpus > biggest:
                raise Unschedulable(
                    f"a task asking for {cpus:g} CPUs can never run: the largest node offers {biggest:g}",
                    hint="lower num_cpus or add a node with more CPUs",
                )
        return cpus

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        priority: Priority | int | str = Priority.MEDIUM,
        num_cpus: float = 1,
        task_type: str | None = None,
        service: str | None = None,
        preemptible: bool = False,
        max_retries: int = 3,
        **kwargs: Any,
    ) -> ray.ObjectRef:
        """Queue ``fn(*args, **kwargs)`` and return an ``ObjectRef`` to its value.

        Args:
            fn: any function Ray can run (pickled once per client).
            priority: ``Priority``, 1..5 or a level name.
            num_cpus: CPUs the task holds while it runs (cpu pool).
            task_type: ``"cpu"`` (a Ray task) or ``"io"`` (the node's threaded io pool, no CPU
                slot); default: the service's ``pool_kind``, else ``"cpu"``.
            service: the service this task belongs to (its max_workers, threshold, pool apply).
            preemptible: a CRITICAL task may cancel this one and it is re-run later.
            max_retries: Ray's retries on worker or node failure; 0 means a lost task is
                reported (``TaskLost``) and not re-run, also across a scheduler restart.

        Raises:
            InvalidInput: a bad priority, num_cpus or task_type (nothing is queued).
            Unschedulable: ``num_cpus`` larger than any node offers.
        """
        prio = _priority(priority)
        _service(service)
        cpus = self._check_cpus(num_cpus, task_type)
        key, blob = self._blob(fn)
        opts = {"priority": int(prio), "num_cpus": cpus, "task_type": task_type, "service": service,
                "preemptible": bool(preemptible), "max_retries": int(max_retries), "submit_ts": time.time()}
        method = self._run_retry if max_retries and self._retry else self._run_once
        return method.remote(key, blob, _name(fn), (args, kwargs), opts)

    def submit_task(self, task: CPUTask) -> ray.ObjectRef:
        """``submit`` for a :class:`CPUTask`."""
        return self.submit(task.fn, *task.args, priority=task.priority, num_cpus=task.num_cpus,
                           task_type=task.task_type, service=task.service, preemptible=task.preemptible,
                           max_retries=task.max_retries, **task.kwargs)

    def submit_batch(self, tasks: Iterable[CPUTask | tuple], *, chunk_size: int | None = None) -> list[ray.ObjectRef]:
        """Submit many tasks with one scheduler call per chunk; refs in input order.

        All tasks are checked before any is queued. Items are :class:`CPUTask` or tuples
        ``(fn, args[, kwargs[, priority]])``. Each chunk (``chunk_size``, default
        ``cpu.batch_chunk``) is one actor call with one caller-owned ref per task; a chunk's refs
        resolve together when its last task finishes, and a task that raised raises from its own
        ref only. Use :meth:`submit` when each result is wanted the moment it is ready.
        """
        items = [t if isinstance(t, CPUTask) else CPUTask(*t) for t in tasks]
        now = time.time()
        specs = []
        for t in items:
            cpus = self._check_cpus(t.num_cpus, t.task_type)
            _service(t.service)
            key, blob = self._blob(t.fn)
            opts = {"priority": int(t.priority), "num_cpus": cpus, "task_type": t.task_type, "service": t.service,
                    "preemptible": bool(t.preemptible), "max_retries": int(t.max_retries), "submit_ts": now}
            specs.append((key, blob, _name(t.fn), (t.args, t.kwargs), opts, bool(t.max_retries)))
        size = max(1, chunk_size or self._chunk)
        refs: list[ray.ObjectRef] = []
        for i in range(0, len(specs), size):
            chunk = specs[i:i + size]
            retry = self._retry and all(c[5] for c in chunk)
            body = [c[:5] for c in chunk]
            if len(body) == 1:
                method = self._run_retry if retry else self._run_once
                refs.append(method.remote(*body[0]))
            else:
                out = self._actor.run_batch.options(
                    num_returns=len(body), max_task_retries=RESTART_RETRIES if retry else 0).remote(body)
                refs.extend(out)
        return refs

    async def optimize_async_processing(self, tasks: Sequence[CPUTask]) -> list[Any]:
        """Run ``tasks`` by priority across the cluster; results in input order (the spec's API)."""
        refs = self.submit_batch(tasks)
        return list(await asyncio.gather(*refs))

    def run_all(self, tasks: Sequence[CPUTask], timeout: float | None = None) -> list[Any]:
        """The synchronous form of :meth:`optimize_async_processing`."""
        return ray.get(self.submit_batch(tasks), timeout=timeout)

    # -- registered tasks (REST) --------------------------------------------------------------
    def register_task(self, name: str, fn: Callable[..., Any]) -> None:
        """Make ``fn`` callable by ``name`` over REST (durable across scheduler restarts)."""
        _check_task_name(name)
        if not callable(fn):
            raise InvalidInput(f"fn must be callable, got {type(fn).__name__}")
        key, blob = function_blob(fn)
        self._call("register", name, key, blob)

    def registered_tasks(self) -> list[str]:
        return self._call("registered")

    def submit_named(self, name: str, *args: Any, priority: Any = Priority.MEDIUM, **options: Any) -> ray.ObjectRef:
        """Run the registered task ``name``; returns an ``ObjectRef`` to its value."""
        opts = {"priority": int(_priority(priority)), "submit_ts": time.time(), **options}
        return self._actor.run_named.remote(name, (args, {}), opts)

    def submit_tracked(self, tasks: list[tuple[str, tuple, dict[str, Any], dict[str, Any]]]) -> list[str]:
        """Queue registered tasks ``(name, args, kwargs, options)``; returns task ids at once."""
        payload = []
        for name, args, kwargs, opts in tasks:
            o = {**opts, "priority": int(_priority(opts.get("priority", Priority.MEDIUM))), "submit_ts": time.time()}
            payload.append((name, (tuple(args), dict(kwargs)), o))
        return self._call("submit_tracked", payload)

    async def asubmit_tracked(self, tasks: list[tuple[str, tuple, dict[str, Any], dict[str, Any]]]) -> list[str]:
        payload = []
        for name, args, kwargs, opts in tasks:
            o = {**opts, "priority": int(_priority(opts.get("priority", Priority.MEDIUM))), "submit_ts": time.time()}
            payload.append((name, (tuple(args), dict(kwargs)), o))
        return await self._acall("submit_tracked", payload)

    def task(self, task_id: str) -> dict[str, Any]:
        """Status (and result when finished) of a task submitted with ``submit_tracked``."""
        return self._call("task_status", task_id)

    async def atask(self, task_id: str) -> dict[str, Any]:
        return await self._acall("task_status", task_id)

    async def await_tracked(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        return await self._acall("wait_tracked", ids, timeout_s, _timeout=timeout_s + 30)

    # -- configuration and figures ----------------------------------------------------------
    def configure_service(self, name: str, **changes: Any) -> dict[str, Any]:
        """Set a service's ``max_workers``, ``priority_threshold``, ``pool_kind`` or ``cpu_affinity``."""
        return self._call("configure_service", name, changes)

    async def aconfigure_service(self, name: str, **changes: Any) -> dict[str, Any]:
        return await self._acall("configure_service", name, changes)

    def metrics(self) -> dict[str, Any]:
        """Queue depth and wait times per priority, per-node utilisation, counters, recommendations."""
        return self._call("metrics")

    async def ametrics(self) -> dict[str, Any]:
        return await self._acall("metrics")

    def cluster(self) -> dict[str, Any]:
        return self._call("cluster")

    def health(self) -> dict[str, Any]:
        return self._call("health")


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _check_task_name(name: str) -> str:
    import re

    if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$", name):
        raise InvalidInput(f"task name {name!r} is invalid: use 1-128 characters A-Z a-z 0-9 _ . -, starting with a letter")
    return name


def _actor_cls() -> Any:
    from cognopt_ray.cpu.scheduler import _SchedulerActor

    return _SchedulerActor
