"""The public client of the CPU engine: :class:`PriorityScheduler`, :class:`CPUTask`, :class:`NamedTask`.

Every value a caller gives is checked here, once, and parsed into one form (a priority into a
:class:`~cognopt_ray.priority.Priority`) before it reaches the ``cognopt.cpu`` actor.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient, process_client
from cognopt_ray.config import check_service_name
from cognopt_ray.cpu.errors import Unschedulable
from cognopt_ray.cpu.executor import function_blob
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

    Every field but ``fn`` is checked when the object is made (a priority is parsed into a
    :class:`~cognopt_ray.priority.Priority`); ``num_cpus`` is checked against the cluster at submit.

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
        self.args = tuple(self.args)
        self.kwargs = dict(self.kwargs)
        self.priority = _priority(self.priority)
        self.service = _service(self.service)
        self.num_cpus = _number(self.num_cpus)
        _task_type(self.task_type)

    def _options(self, submit_ts: float) -> dict[str, Any]:
        """The scheduler options of this task, as the actor takes them."""
        return {
            "priority": self.priority,
            "num_cpus": self.num_cpus,
            "task_type": self.task_type,
            "service": self.service,
            "preemptible": bool(self.preemptible),
            "max_retries": int(self.max_retries),
            "submit_ts": submit_ts,
        }


class NamedTask(CPUTask):
    """One call of a *registered* task for :meth:`PriorityScheduler.submit_tracked`.

    The fields of :class:`CPUTask`, with the name the task was registered under in place of
    ``fn``; all are checked when the object is made, so a bad batch fails before anything is
    queued.

    Example:
        >>> t = NamedTask("resize", (640,), priority="critical", service="ai_models")
        >>> t.name, t.priority
        ('resize', <Priority.CRITICAL: 1>)
    """

    def __post_init__(self) -> None:
        _check_task_name(self.fn)
        super().__post_init__()

    @property
    def name(self) -> str:
        """The registered task's name."""
        return self.fn

    @classmethod
    def of(cls, item: NamedTask | tuple) -> NamedTask:
        """``item`` itself, or a ``NamedTask`` from a tuple ``(name, args, kwargs, options)``."""
        if isinstance(item, NamedTask):
            return item
        try:
            name, args, kwargs, options = item
            return cls(name, tuple(args), dict(kwargs), **options)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"a tracked task is (name, args, kwargs, options) or a NamedTask: {e}") from None

    def _wire(self, submit_ts: float) -> tuple[str, tuple, dict[str, Any]]:
        return self.name, (self.args, self.kwargs), self._options(submit_ts)


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


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"num_cpus must be a number, got {value!r}") from None


def _task_type(value: Any) -> str | None:
    if value not in (None, "cpu", "io"):
        raise InvalidInput(f"task_type must be 'cpu' or 'io', got {value!r}")
    return value


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

    def _check_cpus(self, task: CPUTask) -> None:
        """The checks that need the cluster: a cpu task's ``num_cpus`` is > 0 and fits a node."""
        cpus = task.num_cpus
        if task.task_type == "io":
            return
        if not cpus > 0:
            raise InvalidInput(
                f"num_cpus must be > 0, got {cpus:g}", hint="use task_type='io' for tasks that need no CPU slot"
            )
        if cpus > self._max_cpus:  # ask the scheduler only then; it checks every task against the live cluster too
            biggest = self._max_cpus = float(self._call("cluster")["max_node_cpus"])
            if cpus > biggest:
                raise Unschedulable(
                    f"a task asking for {cpus:g} CPUs can never run: the largest node offers {biggest:g}",
                    hint="lower num_cpus or add a node with more CPUs",
                )

    def _wire(self, task: CPUTask, submit_ts: float) -> tuple[str, bytes, str, tuple, dict[str, Any]]:
        """What ``run``/``run_batch`` of the actor take for ``task`` (after the cluster checks)."""
        self._check_cpus(task)
        key, blob = self._blob(task.fn)
        return key, blob, _name(task.fn), (task.args, task.kwargs), task._options(submit_ts)

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
        task = CPUTask(
            fn,
            args,
            kwargs,
            priority=priority,
            num_cpus=num_cpus,
            task_type=task_type,
            service=service,
            preemptible=preemptible,
            max_retries=max_retries,
        )
        method = self._run_retry if max_retries and self._retry else self._run_once
        return method.remote(*self._wire(task, time.time()))

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
            specs.append((*self._wire(t, now), bool(t.max_retries)))
        size = max(1, chunk_size or self._chunk)
        refs: list[ray.ObjectRef] = []
        for i in range(0, len(specs), size):
            chunk = specs[i : i + size]
            retry = self._retry and all(c[5] for c in chunk)
            body = [c[:5] for c in chunk]
            if len(body) == 1:
                method = self._run_retry if retry else self._run_once
                refs.append(method.remote(*body[0]))
            else:
                out = self._actor.run_batch.options(
                    num_returns=len(body), max_task_retries=RESTART_RETRIES if retry else 0
                ).remote(body)
                refs.extend(out)
        return refs

    def run_all(self, tasks: Sequence[CPUTask], timeout: float | None = None) -> list[Any]:
        """Run ``tasks`` by priority across the cluster and wait for their results (input order).

        Args:
            tasks: :class:`CPUTask` items or tuples, as for :meth:`submit_batch`.
            timeout: seconds to wait for all results (``None``: no limit).

        Raises:
            The first failing task's exception; ``ray.exceptions.GetTimeoutError`` after ``timeout``.
        """
        return ray.get(self.submit_batch(tasks), timeout=timeout)

    async def run_all_async(self, tasks: Sequence[CPUTask]) -> list[Any]:
        """The async twin of :meth:`run_all` (awaits the refs; no timeout)."""
        refs = self.submit_batch(tasks)
        return list(await asyncio.gather(*refs))

    async def optimize_async_processing(self, tasks: Sequence[CPUTask]) -> list[Any]:
        """The spec's name for :meth:`run_all_async`: results of ``tasks`` in input order."""
        return await self.run_all_async(tasks)

    # -- registered tasks (REST) --------------------------------------------------------------
    @staticmethod
    def _registration(name: str, fn: Callable[..., Any]) -> tuple[str, str, bytes]:
        _check_task_name(name)
        if not callable(fn):
            raise InvalidInput(f"fn must be callable, got {type(fn).__name__}")
        key, blob = function_blob(fn)
        return name, key, blob

    def register_task(self, name: str, fn: Callable[..., Any]) -> None:
        """Make ``fn`` callable by ``name`` over REST (durable across scheduler restarts).

        The pickled function is stored signed under the storage root; the scheduler loads only
        files this installation signed.

        Raises:
            InvalidInput: a bad name (1-128 of ``A-Z a-z 0-9 _ . -``, starting with a letter) or
                an ``fn`` that is not callable.
        """
        self._call("register", *self._registration(name, fn))

    async def register_task_async(self, name: str, fn: Callable[..., Any]) -> None:
        """The async twin of :meth:`register_task`."""
        await self._acall("register", *self._registration(name, fn))

    def registered_tasks(self) -> list[str]:
        """The names of the registered tasks, sorted."""
        return self._call("registered")

    async def registered_tasks_async(self) -> list[str]:
        """The async twin of :meth:`registered_tasks`."""
        return await self._acall("registered")

    def submit_named(self, task: NamedTask | str, *args: Any, **kwargs: Any) -> ray.ObjectRef:
        """Run a registered task; returns an ``ObjectRef`` to its value (awaitable too).

        Args:
            task: the registered name, called with ``*args, **kwargs`` at MEDIUM priority; or a
                :class:`NamedTask` carrying its arguments and options (then give no others).

        Raises:
            InvalidInput: a bad name or option (nothing is queued).
            UnknownTask: from the ref, when no task is registered under that name.
        """
        if isinstance(task, NamedTask):
            if args or kwargs:
                raise InvalidInput("a NamedTask carries its own arguments", hint="put them into the NamedTask")
        else:
            task = NamedTask(task, args, kwargs)
        return self._actor.run_named.remote(*task._wire(time.time()))

    @staticmethod
    def _tracked_payload(tasks: Iterable[NamedTask | tuple]) -> list[tuple[str, tuple, dict[str, Any]]]:
        now = time.time()
        return [NamedTask.of(t)._wire(now) for t in tasks]

    def submit_tracked(self, tasks: Iterable[NamedTask | tuple]) -> list[str]:
        """Queue registered tasks and return their ids at once (``POST cpu/optimize-tasks``).

        Args:
            tasks: :class:`NamedTask` items, or tuples ``(name, args, kwargs, options)`` whose
                options are ``NamedTask`` fields (``priority``, ``num_cpus``, ...).

        Returns:
            One id per task, for :meth:`task` and :meth:`wait_tracked`; the last
            ``cpu.results_kept`` finished tasks keep their records.

        Raises:
            InvalidInput: a bad field; UnknownTask: a name nobody registered. Either way nothing
                of the batch is queued.
        """
        return self._call("submit_tracked", self._tracked_payload(tasks))

    async def submit_tracked_async(self, tasks: Iterable[NamedTask | tuple]) -> list[str]:
        """The async twin of :meth:`submit_tracked`."""
        return await self._acall("submit_tracked", self._tracked_payload(tasks))

    def task(self, task_id: str) -> dict[str, Any]:
        """Status (and result when finished) of a task submitted with :meth:`submit_tracked`.

        Raises:
            UnknownTask: no record has that id (never submitted, or trimmed).
        """
        return self._call("task_status", task_id)

    async def task_async(self, task_id: str) -> dict[str, Any]:
        """The async twin of :meth:`task`."""
        return await self._acall("task_status", task_id)

    def wait_tracked(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        """Wait until the tracked tasks ``ids`` finish, or ``timeout_s``; their records in order.

        Raises:
            UnknownTask: one of the ids has no record.
        """
        return self._call("wait_tracked", list(ids), float(timeout_s), _timeout=timeout_s + 30)

    async def wait_tracked_async(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        """The async twin of :meth:`wait_tracked`."""
        return await self._acall("wait_tracked", list(ids), float(timeout_s), _timeout=timeout_s + 30)

    # -- configuration and figures ----------------------------------------------------------
    def configure_service(self, name: str, **settings: Any) -> dict[str, Any]:
        """Change service ``name``'s cpu settings; the settings not given stay as they are.

        The change is durable (written under the storage root) and applies to queued tasks at once.

        Args:
            name: the service.
            **settings: any of ``max_workers`` (most tasks of the service running at once, 0: no
                cap), ``priority_threshold`` (while tasks of this level or higher are queued, the
                service's lower-level tasks wait; ``Priority``, 1..5 or a level name),
                ``pool_kind`` (``"cpu"`` or ``"io"``, for its tasks without a task_type),
                ``cpu_affinity`` (cores its cpu tasks are pinned to; ``[]``: none).

        Returns:
            ``{"service_name", "before", "after"}`` with the service's settings.

        Raises:
            InvalidInput: a bad service name, setting or value, or none given (nothing changes).
        """
        return self._call("configure_service", *_service_change(name, settings))

    async def configure_service_async(self, name: str, **settings: Any) -> dict[str, Any]:
        """The async twin of :meth:`configure_service`."""
        return await self._acall("configure_service", *_service_change(name, settings))

    def service_settings(self, name: str) -> dict[str, Any]:
        """The cpu settings in force for service ``name`` (configured, else from Settings)."""
        return self._call("service_settings", _checked_service(name))

    async def service_settings_async(self, name: str) -> dict[str, Any]:
        """The async twin of :meth:`service_settings`."""
        return await self._acall("service_settings", _checked_service(name))

    def metrics(self) -> dict[str, Any]:
        """Queue depth and wait times per priority, per-node utilisation, counters, recommendations."""
        return self._call("metrics")

    async def metrics_async(self) -> dict[str, Any]:
        """The async twin of :meth:`metrics`."""
        return await self._acall("metrics")

    def cluster(self) -> dict[str, Any]:
        """The nodes as the scheduler sees them: CPUs, in-flight work, load; ``max_node_cpus``."""
        return self._call("cluster")

    async def cluster_async(self) -> dict[str, Any]:
        """The async twin of :meth:`cluster`."""
        return await self._acall("cluster")

    def health(self) -> dict[str, Any]:
        """``{"status": "up", ...}``, or ``"degraded"`` with a reason when no node offers CPUs."""
        return self._call("health")

    async def health_async(self) -> dict[str, Any]:
        """The async twin of :meth:`health`."""
        return await self._acall("health")


def client() -> PriorityScheduler:
    """This process's :class:`PriorityScheduler` (gets or creates the ``cognopt.cpu`` actor)."""
    return process_client(ACTOR_NAME, PriorityScheduler)


#: The settings ``configure_service`` changes.
SERVICE_SETTINGS = ("max_workers", "priority_threshold", "pool_kind", "cpu_affinity")


def _service_change(name: str, settings: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(service, changes)`` for the actor; the threshold parsed here into a level name."""
    unknown = sorted(set(settings) - set(SERVICE_SETTINGS))
    if unknown:
        raise InvalidInput(f"unknown cpu settings {unknown}", hint=f"use {', '.join(SERVICE_SETTINGS)}")
    changes = {k: v for k, v in settings.items() if v is not None}
    if not changes:
        raise InvalidInput("no cpu setting to change", hint=f"give {', '.join(SERVICE_SETTINGS)}")
    if "priority_threshold" in changes:
        changes["priority_threshold"] = _priority(changes["priority_threshold"]).name.lower()
    return _checked_service(name), changes


def _checked_service(name: str) -> str:
    checked = _service(name)
    if checked is None:
        raise InvalidInput("a service name is required")
    return checked


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _check_task_name(name: str) -> str:
    if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$", name):
        raise InvalidInput(
            f"task name {name!r} is invalid: use 1-128 characters A-Z a-z 0-9 _ . -, starting with a letter"
        )
    return name


def _actor_cls() -> Any:
    from cognopt_ray.cpu._actor import _SchedulerActor

    return _SchedulerActor
