"""The CPU engine's actor (``cognopt.cpu``): its state and its public actor methods.

One async actor orders tasks by priority before Ray sees them (:mod:`~cognopt_ray.cpu.admission`),
places them on the least-loaded node (:mod:`~cognopt_ray.cpu.nodes`) and delivers each task's
outcome (:mod:`~cognopt_ray.cpu.outcomes`); its figures are in :mod:`~cognopt_ray.cpu.stats`.
The caller's ``ray.get`` is on the actor call itself, which resolves when the task finishes, so
the caller owns its result and a restarted scheduler is retried by Ray. Call it through
:class:`~cognopt_ray.cpu.client.PriorityScheduler`, never directly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections import OrderedDict, deque
from typing import Any

import ray

from cognopt_ray._private.files import atomic_write
from cognopt_ray._private.sealer import Signer
from cognopt_ray.config import CpuServiceSettings, Settings
from cognopt_ray.cpu.admission import LEVELS, Admission, _Entry, _Pack
from cognopt_ray.cpu.errors import UnknownTask
from cognopt_ray.cpu.nodes import NodeView, _Node, node_doc
from cognopt_ray.cpu.outcomes import Outcomes, _error_text
from cognopt_ray.cpu.stats import EngineStats, _RayMetrics
from cognopt_ray.errors import IntegrityError, InvalidInput
from cognopt_ray.priority import Priority

logger = logging.getLogger(__name__)

#: Purpose of the HMAC sub-key that signs registered task files (``<root>/cpu/tasks/*.pkl``).
TASKS_PURPOSE = b"cognopt tasks"


@ray.remote(max_concurrency=1_000_000)
class _SchedulerActor(Admission, NodeView, Outcomes):
    """Holds the queues, the node table and the statistics of the CPU engine."""

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self._settings = Settings.model_validate(settings) if settings else Settings.load()
        cfg = self._settings.cpu
        self._cfg = cfg
        self._queues: dict[int, deque[_Entry]] = {p: deque() for p in LEVELS}
        self._queued = 0
        self._small = {p: 0 for p in LEVELS}  # queued cpu tasks asking for less than one CPU
        self._io_q = {p: 0 for p in LEVELS}  # queued io tasks
        self._running: dict[str, _Entry] = {}
        self._packs: set[_Pack] = set()
        self._run_level = {p: 0 for p in LEVELS}  # running tasks per (effective) level
        self._last_seen = {p: 0.0 for p in LEVELS}  # last time a task of the level was queued or running
        self._est: dict[str, float] = {}  # EWMA run time per function key (packing)
        self._specs: dict[str, Any] = {}  # function key -> blob, or [ObjectRef] for big ones
        self._nodes: dict[str, _Node] = {}
        self._optioned: dict[tuple, Any] = {}
        self._stats = EngineStats(window_s=cfg.metrics_window_s)
        self._seq = itertools.count()
        self._service_cfg: dict[str, CpuServiceSettings] = {}
        self._service_inflight: dict[str, int] = {}
        self._records: OrderedDict[str, _Entry] = OrderedDict()
        self._tracked_tasks: set[asyncio.Task] = set()
        self._registry: dict[str, tuple[str, bytes]] = {}
        self._preempting_for = 0  # CRITICAL tasks for which victims are being cancelled
        self._hot = LEVELS[-1] + 1  # see _hot_level, recomputed by every _pump
        self._started = time.time()
        self._incarnation = uuid.uuid4().hex[:8]
        self._state_dir = self._settings.root / "cpu"
        self._load_state()
        self._refresh_nodes_sync()
        self._loops: list[asyncio.Task] = []
        self._loops_started = False
        self._metrics = _RayMetrics()

    # -- lifecycle --------------------------------------------------------------------------
    def _ensure_loops(self) -> None:
        if self._loops_started:
            return
        self._loops_started = True
        loop = asyncio.get_event_loop()
        self._loops.append(loop.create_task(self._node_loop()))
        self._loops.append(loop.create_task(self._monitor_loop()))
        if self._cfg.aging_interval_s > 0:
            self._loops.append(loop.create_task(self._aging_loop()))

    def _load_state(self) -> None:
        try:
            self._state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # read-only root: run without persistence
            logger.warning("cpu engine state dir %s unusable: %s", self._state_dir, e)
            return
        services = self._state_dir / "services.json"
        if services.is_file():
            try:
                for name, cfg in json.loads(services.read_text()).items():
                    self._service_cfg[name] = CpuServiceSettings.model_validate(cfg)
            except Exception as e:  # noqa: BLE001 - a bad file must not stop the engine
                logger.warning("ignoring unreadable %s: %s", services, e)
        tasks = self._state_dir / "tasks"
        if tasks.is_dir():
            for f in sorted(tasks.glob("*.pkl")):
                try:
                    name, key = f.stem.split("@", 1)
                    # cloudpickled code: only files this installation signed, checked before any load
                    blob = self._task_signer().open(f.read_bytes(), f.stem.encode())
                    self._registry[name] = (key, blob)
                except IntegrityError as e:
                    logger.warning("refusing registered task file %s (%s); register the task again", f, e)
                except Exception as e:  # noqa: BLE001 - one unreadable task file must not stop the engine
                    logger.warning("ignoring registered task file %s: %s", f, e)

    def _task_signer(self) -> Signer:
        signer = getattr(self, "_signer", None)
        if signer is None:
            signer = self._signer = Signer.from_settings(self._settings, TASKS_PURPOSE)
        return signer

    # -- public actor methods ---------------------------------------------------------------
    async def run(self, key: str, blob: bytes | None, name: str, payload: tuple, opts: dict[str, Any]) -> Any:
        """Run one task by priority and return its value (or raise its exception)."""
        e = self._new_entry(key, blob, name, payload, opts)
        return await self._execute(e)

    async def run_batch(self, items: list[tuple[str, bytes | None, str, tuple, dict[str, Any]]]) -> tuple:
        """Run a chunk of tasks; called with ``num_returns=len(items)``, one caller-owned ref each.

        Every item is checked before any is queued. A task that fails yields a ``RayTaskError``
        in its position, which Ray stores as an error, so ``ray.get`` of that one ref raises the
        task's exception while the others return their values.
        """
        entries = [self._new_entry(*item) for item in items]
        self._ensure_loops()
        for e in entries:
            self._stats.submitted += 1
            self._enqueue(e)
        self._pump()
        return tuple(await asyncio.gather(*(self._execute_quiet(e) for e in entries)))

    async def run_named(self, name: str, payload: tuple, opts: dict[str, Any]) -> Any:
        """Run the registered task ``name``."""
        key, blob = self._lookup(name)
        return await self.run(key, blob, name, payload, opts)

    def _lookup(self, name: str) -> tuple[str, bytes]:
        found = self._registry.get(name)
        if found is None:
            raise UnknownTask(
                f"no task is registered as {name!r}", hint="register it with cognopt_ray.cpu.register_task(name, fn)"
            )
        return found

    async def register(self, name: str, key: str, blob: bytes) -> None:
        """Register ``blob`` (a pickled function) as ``name``, durably."""
        old = self._registry.get(name)
        folder = self._state_dir / "tasks"
        try:
            atomic_write(folder / f"{name}@{key}.pkl", self._task_signer().sign(blob, f"{name}@{key}".encode()))
            if old is not None and old[0] != key:
                (folder / f"{name}@{old[0]}.pkl").unlink(missing_ok=True)
        except OSError as e:
            logger.warning("registered task %r kept in memory only: %s", name, e)
        self._registry[name] = (key, blob)

    def registered(self) -> list[str]:
        return sorted(self._registry)

    async def submit_tracked(self, tasks: list[tuple[str, tuple, dict[str, Any]]]) -> list[str]:
        """Queue registered tasks by name; returns their ids at once (REST ``wait=false``).

        All names and options are checked before any task is queued, so a bad batch changes nothing.
        """
        entries = []
        for name, payload, opts in tasks:
            key, blob = self._lookup(name)
            entries.append(self._new_entry(key, blob, name, payload, opts))
        for e in entries:
            self._records[e.id] = e
            task = asyncio.get_event_loop().create_task(self._tracked(e))
            self._tracked_tasks.add(task)  # the loop holds tasks weakly
            task.add_done_callback(self._tracked_tasks.discard)
        self._trim_records()
        return [e.id for e in entries]

    async def _tracked(self, e: _Entry) -> None:
        """Run a tracked task; :meth:`_finish` records its outcome before its state changes."""
        try:
            await self._execute(e)
        except BaseException as err:  # noqa: BLE001 - stored for GET cpu/tasks/{id}
            if e.state in ("queued", "running"):  # failed before reaching a Ray call
                e.error = _error_text(err)
                e.state = "failed"

    def _trim_records(self) -> None:
        """Keep at most ``results_kept`` finished records (oldest dropped first); records of tasks
        still queued or running are kept whatever their age, and do not stop the trimming."""
        excess = len(self._records) - self._cfg.results_kept
        if excess <= 0:
            return
        # oldest first, and the scan stops at the ``excess``-th finished record (this runs on every submission)
        finished = (tid for tid, e in self._records.items() if e.state not in ("queued", "running"))
        drop = list(itertools.islice(finished, excess))
        for tid in drop:
            self._records.pop(tid)

    async def wait_tracked(self, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        """Wait until the tasks finish (or ``timeout_s``) and return their records."""
        for tid in ids:
            if tid not in self._records:
                raise UnknownTask(f"no task has id {tid!r}")
        entries = [self._records[t] for t in ids]
        waiting = [e.fut for e in entries if e.state in ("queued", "running") and e.fut is not None]
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, timeout_s))
        return [self._status(e) for e in entries]

    def task_status(self, task_id: str) -> dict[str, Any]:
        e = self._records.get(task_id)
        if e is None:
            raise UnknownTask(
                f"no task has id {task_id!r}",
                hint="ids are kept for the last cpu.results_kept tasks submitted over REST",
            )
        return self._status(e)

    @staticmethod
    def _status(e: _Entry) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": e.id,
            "name": e.name,
            "state": e.state,
            "priority": Priority(e.base).name.lower(),
            "effective_priority": Priority(e.prio).name.lower(),
            "task_type": e.kind,
            "service": e.service,
            "num_cpus": e.cpus,
            "attempts": e.attempts,
            "submitted_at": e.submit_ts,
            "started_at": e.start_ts,
            "finished_at": e.end_ts,
            "wait_s": (e.start_ts - e.submit_ts) if e.start_ts else None,
        }
        if e.state == "finished":
            out["result"] = e.result
        if e.error:
            out["error"] = e.error
        return out

    async def configure_service(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change a service's max_workers / priority_threshold / pool_kind / cpu_affinity, durably."""
        try:
            merged = {**self._service(name).model_dump(), **changes}
            cfg = CpuServiceSettings.model_validate(merged)
        except ValueError as err:
            raise InvalidInput(f"invalid cpu settings for service {name!r}: {err}") from None
        before = self._service(name).model_dump()
        self._service_cfg[name] = cfg
        try:
            atomic_write(
                self._state_dir / "services.json",
                json.dumps({k: v.model_dump() for k, v in self._service_cfg.items()}, indent=1).encode(),
            )
        except OSError as e:
            logger.warning("service settings kept in memory only: %s", e)
        self._pump()
        return {"service_name": name, "before": before, "after": cfg.model_dump()}

    def service_settings(self, name: str) -> dict[str, Any]:
        """The cpu settings in force for service ``name`` (checked by the client)."""
        return self._service(name).model_dump()

    def cluster(self) -> dict[str, Any]:
        """Nodes as the scheduler sees them."""
        return {
            "max_node_cpus": self._max_node_cpus(),
            "total_cpus": sum(n.cpus for n in self._nodes.values()),
            "nodes": [node_doc(n) for n in self._nodes.values()],
        }

    def metrics(self) -> dict[str, Any]:
        """Queue depths, wait/run histograms per priority, counters, per-node figures, advice."""
        now = time.time()
        since = now - self._stats.window_s
        node_cpus = {n.id: n.cpus for n in self._nodes.values()}
        util = self._stats.node_utilisation(now)
        busy = self._stats.node_busy_share(now, node_cpus)
        services = {}
        for name in set(self._service_cfg) | set(self._service_inflight) | set(self._stats.cap_hits):
            cfg = self._service(name)
            services[name] = {**cfg.model_dump(), "inflight": self._service_inflight.get(name, 0)}
        st = self._stats
        return {
            "time": now,
            "window_s": st.window_s,
            "window_span_s": st.window_span_s(now),
            "queue_depth": {Priority(p).name.lower(): len(q) for p, q in self._queues.items()},
            "queued": self._queued,
            "running": len(self._running),
            "wait_time_s": {Priority(p).name.lower(): h.summary(since) for p, h in st.wait.items()},
            "run_time_s": {Priority(p).name.lower(): h.summary(since) for p, h in st.run.items()},
            "tasks_submitted": st.submitted,
            "tasks_processed": st.processed,
            "tasks_failed": st.failed,
            "tasks_preempted": st.preempted,
            "tasks_withdrawn": st.withdrawn,
            "tasks_packed": st.packed,
            "ray_calls": st.calls,
            "tasks_lost": st.lost,
            "tasks_rejected": st.rejected,
            "tasks_aged": st.aged,
            "cpu_efficiency": st.cpu_efficiency(now),
            "load_balance_score": st.load_balance_score(now, node_cpus),
            "nodes": [
                {**node_doc(n), "cpu_percent_mean": util.get(n.id), "task_busy_share": busy.get(n.id)}
                for n in self._nodes.values()
            ],
            "services": services,
            "pipeline_depth": self._cfg.pipeline_depth,
            "pack_budget_s": self._cfg.pack_budget_s,
            "latency_guard_s": self._cfg.latency_guard_s,
            "aging_interval_s": self._cfg.aging_interval_s,
            "recommendations": st.recommendations(now, self._cfg.wait_targets_s, node_cpus, self._queued, services),
            "incarnation": self._incarnation,
        }

    def health(self) -> dict[str, Any]:
        if not self._nodes:
            return {"status": "degraded", "reason": "no alive node offers CPUs; cpu tasks wait"}
        return {"status": "up", "nodes": len(self._nodes), "queued": self._queued, "running": len(self._running)}

    def ping(self) -> str:
        return self._incarnation
