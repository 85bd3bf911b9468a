"""The scheduler actor: strict priority before Ray sees a task, capped in-flight work, placement.

One async actor (``cognopt.cpu``) keeps five FIFO queues (CRITICAL..BACKGROUND). A task is handed
to Ray only when a node has a free CPU slot by the scheduler's own accounting (node CPUs plus
``pipeline_depth``), so Ray's queues stay shallow and a CRITICAL task waits for at most the rest
of one running task. The caller's ``ray.get`` is on the actor call itself, which resolves when the
task finishes, so the caller owns its result and a restarted scheduler is retried by Ray.

Throughput vs latency, decided per task at admission:

- *latency mode*: while any task of a higher level is queued or running, or was seen less than
  ``latency_guard_s`` ago, a task is admitted only into a real free CPU (no pipelining) and alone
  (no pack); a blocked task also withdraws a pipelined, not yet started, lower-level task
  (``max_retries > 0`` only) so that it is next in line.
- *throughput mode* otherwise: up to ``pipeline_depth`` extra tasks per node wait in Ray's
  queue so workers never idle between tasks, and short tasks of one level are packed into one
  Ray call (``pack_budget_s`` of estimated work) to pay Ray's per-task cost once per pack.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
import uuid
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as rex
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cognopt_ray._private.sealer import Signer
from cognopt_ray.config import CpuServiceSettings, Settings, check_service_name
from cognopt_ray.cpu.errors import QueueFull, TaskLost, Unschedulable, UnknownTask
from cognopt_ray.cpu.monitor import EngineStats
from cognopt_ray.cpu.pools import _IoPool, _NodeMonitor, execute_pack
from cognopt_ray.errors import IntegrityError, InvalidInput
from cognopt_ray.priority import Priority

logger = logging.getLogger(__name__)

LEVELS = tuple(p.value for p in Priority)
#: How many queued entries per level the admission loop looks past a blocked head.
SCAN_LIMIT = 256
TASK_TYPES = ("cpu", "io")
#: Purpose of the HMAC sub-key that signs registered task files (``<root>/cpu/tasks/*.pkl``).
TASKS_PURPOSE = b"cognopt tasks"


class _Node:
    __slots__ = ("id", "cpus", "inflight", "io_inflight", "load", "ip", "io_pool", "monitor", "turn_s", "depth")

    def __init__(self, node_id: str, cpus: float, ip: str) -> None:
        self.id = node_id
        self.cpus = cpus
        self.turn_s = 0.05  # EWMA of start -> completion seen by the scheduler, cpu tasks
        self.depth = 1.0
        self.inflight = 0.0
        self.io_inflight = 0
        self.load = 0.0
        self.ip = ip
        self.io_pool: Any = None
        self.monitor: Any = None

    def observe(self, turn_s: float, base: int, budget_s: float, cap: int) -> None:
        """Adapt the pipeline depth: extra queued work per node stays within ``budget_s``."""
        self.turn_s = 0.8 * self.turn_s + 0.2 * max(turn_s, 1e-4)
        self.depth = float(max(base, min(cap, int(budget_s * self.cpus / self.turn_s))))


class _Entry:
    __slots__ = (
        "id", "key", "blob", "name", "payload", "prio", "base", "cpus", "kind", "service", "preemptible",
        "max_retries", "submit_ts", "enq_ts", "fut", "node", "pack", "start_ts", "admit_ts", "attempts",
        "state", "result", "error", "end_ts", "seq", "run_level",
    )

    def __init__(self, **kw: Any) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class _Pack:
    """One Ray call: one task, or several short tasks of one level run one after the other."""

    __slots__ = ("entries", "cpus", "kind", "node", "ref", "prio", "admit_ts", "cancelling", "withdrawn",
                 "pipelined")

    def __init__(self, entries: list[_Entry], node: str, pipelined: bool) -> None:
        first = entries[0]
        self.entries = entries
        self.cpus = first.cpus
        self.kind = first.kind
        self.node: str | None = node
        self.ref: Any = None
        self.prio = max(e.prio for e in entries)
        self.admit_ts = time.time()
        self.cancelling = False  # ray.cancel sent (preemption or withdrawal)
        self.withdrawn = False  # cancelled before it started: re-queue, not counted as preempted
        self.pipelined = pipelined  # admitted beyond the node's real CPUs

    @property
    def preemptible(self) -> bool:
        return len(self.entries) == 1 and bool(self.entries[0].preemptible)

    @property
    def retriable(self) -> bool:
        return all(e.max_retries for e in self.entries)


@ray.remote(max_concurrency=1_000_000)
class _SchedulerActor:
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
                except Exception as e:  # noqa: BLE001
                    logger.warning("ignoring registered task file %s: %s", f, e)

    def _task_signer(self) -> Signer:
        signer = getattr(self, "_signer", None)
        if signer is None:
            signer = self._signer = Signer.from_settings(self._settings, TASKS_PURPOSE)
        return signer

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    # -- nodes ------------------------------------------------------------------------------
    def _refresh_nodes_sync(self) -> None:
        self._apply_nodes(ray.nodes())

    def _apply_nodes(self, nodes: list[dict[str, Any]]) -> None:
        alive = {}
        for n in nodes:
            if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0:
                alive[n["NodeID"]] = (float(n["Resources"]["CPU"]), n.get("NodeManagerAddress", ""))
        for nid, (cpus, ip) in alive.items():
            node = self._nodes.get(nid)
            if node is None:
                self._nodes[nid] = _Node(nid, cpus, ip)
                self._nodes[nid].depth = float(self._cfg.pipeline_depth)
                logger.info("cpu engine: node %s joined with %g CPUs", nid[:12], cpus)
            else:
                node.cpus = cpus
        gone = [nid for nid in self._nodes if nid not in alive]
        for nid in gone:
            node = self._nodes.pop(nid)
            logger.warning("cpu engine: node %s left; its running tasks are retried elsewhere", nid[:12])
            for pk in self._packs:
                if pk.node == nid:
                    # Ray retries a retriable task on another node; account it to the least-loaded one.
                    target = self._pick_node(pk.cpus if pk.kind == "cpu" else 0.0, pk.kind, relaxed=True)
                    pk.node = target.id if target else None
                    for e in pk.entries:
                        e.node = pk.node
                    if target is not None:
                        if pk.kind == "cpu":
                            target.inflight += pk.cpus
                        else:
                            target.io_inflight += 1
            del node
        if gone or alive:
            self._pump()

    async def _node_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._cfg.node_refresh_s)
            try:
                nodes = await loop.run_in_executor(None, ray.nodes)
                self._apply_nodes(nodes)
            except Exception as e:  # noqa: BLE001
                logger.warning("cpu engine: node refresh failed: %s", e)

    async def _monitor_loop(self) -> None:
        last = time.time()
        while True:
            await asyncio.sleep(self._cfg.monitor_interval_s)
            now = time.time()
            cluster = sum(n.cpus for n in self._nodes.values())
            self._stats.tick(now, now - last, cluster, self._queued > 0 or bool(self._running))
            last = now
            calls = []
            for node in list(self._nodes.values()):
                if node.monitor is None:
                    node.monitor = _NodeMonitor.options(
                        scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
                        max_restarts=0,
                    ).remote()
                calls.append((node, node.monitor.sample.remote()))
            for node, ref in calls:
                try:
                    sample = await asyncio.wait_for(ref, timeout=max(1.0, self._cfg.monitor_interval_s))
                    node.load = float(sample["cpu_percent"])
                    self._stats.node_sample(node.id, now, node.load)
                except asyncio.TimeoutError:
                    continue  # a slow monitor (a loaded node, a worker still starting) is kept
                except Exception:  # noqa: BLE001 - a monitor that died is recreated next tick
                    node.monitor = None
            self._metrics.update(self)

    async def _aging_loop(self) -> None:
        interval = self._cfg.aging_interval_s
        while True:
            await asyncio.sleep(max(0.01, interval / 4))
            now = time.time()
            moved = False
            for level in LEVELS[2:]:  # aged tasks rise to HIGH at most: CRITICAL stays strict
                q = self._queues[level]
                while q and now - q[0].enq_ts >= interval:
                    e = q.popleft()
                    self._count(e, level, -1)
                    e.prio = level - 1
                    e.enq_ts = now
                    self._queues[level - 1].append(e)
                    self._count(e, level - 1, 1)
                    self._stats.aged += 1
                    moved = True
            if moved:
                self._pump()

    # -- placement --------------------------------------------------------------------------
    def _pick_node(self, cpus: float, kind: str, relaxed: bool = False, pipeline: bool = True) -> _Node | None:
        """The least-loaded node with room: by in-flight share of its CPUs, then psutil load.

        Room is the node's CPUs plus its pipeline depth, or its CPUs alone when ``pipeline`` is off.
        """
        best, best_score = None, None
        for node in self._nodes.values():
            if kind == "cpu":
                if cpus > node.cpus:
                    continue
                extra = node.depth if pipeline else 0.0
                if not relaxed and node.inflight + cpus > node.cpus + extra + 1e-9:
                    continue
                score = (node.inflight / node.cpus, node.load)
            else:
                if not relaxed and node.io_inflight >= self._cfg.io_pool_threads:
                    continue
                score = (node.io_inflight / self._cfg.io_pool_threads, node.load)
            if best_score is None or score < best_score:
                best, best_score = node, score
        return best

    def _max_node_cpus(self) -> float:
        return max((n.cpus for n in self._nodes.values()), default=0.0)

    # -- services ---------------------------------------------------------------------------
    def _service(self, name: str | None) -> CpuServiceSettings | None:
        if name is None:
            return None
        cfg = self._service_cfg.get(name)
        if cfg is None:
            cfg = self._settings.service(name).cpu
        return cfg

    # -- admission --------------------------------------------------------------------------
    def _room(self) -> tuple[float, int]:
        """The most free CPU slots on one node and the most free io threads on one node."""
        cpu = io = 0
        for n in self._nodes.values():
            cpu = max(cpu, n.cpus + n.depth - n.inflight)
            io = max(io, self._cfg.io_pool_threads - n.io_inflight)
        return cpu, io

    def _pump(self) -> None:
        """Admit queued tasks, highest priority first, while some node has room.

        A pool with no free slot on any node is skipped without looking at its tasks, so a
        saturated scheduler spends O(1) per completion; otherwise at most ``SCAN_LIMIT`` tasks per
        level are examined past a blocked head.
        """
        if not self._queued:
            return
        blocked_critical = False
        blocked_level = None
        top = self._top_level()
        self._hot = self._hot_level(time.time())
        cpu_room, io_room = self._room()
        for level in LEVELS:
            q = self._queues[level]
            if not q:
                continue
            # Skip a whole level when none of its tasks can fit: most tasks ask for whole CPUs.
            if cpu_room < 1.0 - 1e-9 and not self._small[level] and (io_room <= 0 or not self._io_q[level]):
                if level == Priority.CRITICAL:
                    blocked_critical = True
                if blocked_level is None and len(q) > self._io_q[level]:
                    blocked_level = level
                continue
            i = 0
            while i < len(q) and i < SCAN_LIMIT:
                if cpu_room < 1.0 - 1e-9 and not self._small[level] and (io_room <= 0 or not self._io_q[level]):
                    if level == Priority.CRITICAL:
                        blocked_critical = True
                    if blocked_level is None and len(q) > self._io_q[level]:
                        blocked_level = level
                    break
                e = q[i]
                if (e.kind == "cpu" and e.cpus > cpu_room + 1e-9) or (e.kind == "io" and io_room <= 0):
                    if level == Priority.CRITICAL and e.kind == "cpu":
                        blocked_critical = True
                    if e.kind == "cpu" and blocked_level is None:
                        blocked_level = level
                    i += 1
                    continue
                verdict = self._admissible(e, top)
                if verdict is None:
                    del q[i]
                    self._count(e, level, -1)
                    self._launch(e, self._chosen, q, i)
                    if not self._queued:
                        return
                    cpu_room, io_room = self._room()
                    continue
                if verdict == "capacity":
                    if level == Priority.CRITICAL:
                        blocked_critical = True
                    if e.kind == "cpu" and blocked_level is None:
                        blocked_level = level
                i += 1
        if blocked_level is not None:
            self._withdraw(blocked_level)
        if blocked_critical and self._cfg.preemption:
            self._preempt()

    def _top_level(self) -> int:
        for level in LEVELS:
            if self._queues[level]:
                return level
        return LEVELS[-1] + 1

    def _admissible(self, e: _Entry, top: int) -> str | None:
        svc = self._service(e.service)
        if svc is not None:
            threshold = Priority.parse(svc.priority_threshold).value
            if e.prio > threshold and top <= threshold:
                return "threshold"
            if svc.max_workers and self._service_inflight.get(e.service, 0) >= svc.max_workers:
                self._stats.cap_hit(e.service, time.time())
                return "service_cap"
        node = self._pick_node(e.cpus, e.kind, pipeline=not self._guarded(e))
        if node is None:
            return "capacity"
        self._chosen = node
        return None

    def _hot_level(self, now: float) -> int:
        """The highest level (lowest number) with tasks queued or running or seen within the guard."""
        guard = self._cfg.latency_guard_s
        for level in LEVELS:
            if self._queues[level] or self._run_level[level] or now - self._last_seen[level] < guard:
                return level
        return LEVELS[-1] + 1

    def _guarded(self, e: _Entry) -> bool:
        """Latency mode for ``e``: higher-level work is around, so no pipelining and no packing."""
        return e.prio > self._hot

    def _spec(self, key: str, blob: bytes | None) -> Any:
        """How a function travels to the workers: its pickle, or a ref to it when it is large."""
        spec = self._specs.get(key)
        if spec is None:
            if blob is None:
                raise UnknownTask(f"function {key!r} is not known to this scheduler", hint="submit it again")
            spec = blob if len(blob) <= 64 * 1024 else [ray.put(blob)]
            if len(self._specs) >= 4096:
                self._specs.pop(next(iter(self._specs)))
            self._specs[key] = spec
        return spec

    def _pack_more(self, e: _Entry, q: deque, i: int) -> list[_Entry]:
        """Queued tasks of ``e``'s level that may share its Ray call (throughput mode only).

        Packing needs a measured run time for every member (``_est``, an EWMA per function) and
        stops at ``pack_budget_s`` of estimated work or ``max_pack`` tasks; preemptible tasks,
        io tasks and tasks of another shape (CPUs, retries, service) are never packed.
        """
        budget = self._cfg.pack_budget_s
        est = self._est.get(e.key)
        if (budget <= 0 or est is None or est * 2 > budget or e.preemptible or e.kind != "cpu"
                or self._guarded(e)):
            return []
        svc = self._service(e.service)
        cap = svc.max_workers if svc is not None and svc.max_workers else None
        room_svc = (cap - self._service_inflight.get(e.service, 0) - 1) if cap else None
        total, out = est, []
        j = i
        while j < len(q) and len(out) + 1 < self._cfg.max_pack and j - i < SCAN_LIMIT:
            c = q[j]
            ce = self._est.get(c.key)
            if (c.kind != "cpu" or c.preemptible or c.cpus != e.cpus or c.max_retries != e.max_retries
                    or c.service != e.service or ce is None):
                j += 1
                continue
            if total + ce > budget or (room_svc is not None and room_svc <= 0):
                break
            total += ce
            if room_svc is not None:
                room_svc -= 1
            out.append(c)
            del q[j]
            self._count(c, c.prio, -1)
        return out

    def _launch(self, e: _Entry, node: _Node, q: deque | None = None, i: int = 0) -> None:
        entries = [e] + (self._pack_more(e, q, i) if q is not None else [])
        now = time.time()
        pipelined = e.kind == "cpu" and node.inflight + e.cpus > node.cpus + 1e-9
        pk = _Pack(entries, node.id, pipelined)
        items = []
        for x in entries:
            x.node = node.id
            x.pack = pk
            x.admit_ts = now
            x.state = "running"
            x.attempts += 1
            x.run_level = x.prio
            self._run_level[x.prio] += 1
            self._last_seen[x.prio] = now
            args, kwargs = x.payload
            items.append((x.key, self._spec(x.key, x.blob), x.name, args, kwargs))
            if x.service is not None:
                self._service_inflight[x.service] = self._service_inflight.get(x.service, 0) + 1
            self._running[x.id] = x
            if x.prio == Priority.CRITICAL and self._preempting_for:
                self._preempting_for -= 1
        if e.kind == "cpu":
            node.inflight += e.cpus
            svc = self._service(e.service)
            cores = tuple(svc.cpu_affinity) if svc is not None and svc.cpu_affinity is not None else tuple(self._cfg.cpu_affinity)
            spread = len(self._nodes) > 1
            ck = (e.cpus, e.max_retries, node.id if spread else None)
            rf = self._optioned.get(ck)
            if rf is None:
                opts: dict[str, Any] = {"num_cpus": e.cpus, "max_retries": e.max_retries}
                if spread:
                    opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node.id, soft=True)
                rf = execute_pack.options(**opts)
                if len(self._optioned) > 4096:
                    self._optioned.clear()
                self._optioned[ck] = rf
            pk.ref = rf.remote(cores, items)
        else:
            node.io_inflight += 1
            if node.io_pool is None:
                node.io_pool = _IoPool.options(
                    max_concurrency=self._cfg.io_pool_threads,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=True),
                    max_restarts=-1,
                ).remote()
            pk.ref = node.io_pool.run.remote(items)
        self._packs.add(pk)
        self._stats.calls += 1
        if len(entries) > 1:
            self._stats.packed += len(entries)
        asyncio.get_event_loop().create_task(self._watch(pk))

    def _release(self, pk: _Pack) -> None:
        self._packs.discard(pk)
        node = self._nodes.get(pk.node) if pk.node else None
        if node is not None:
            if pk.kind == "cpu":
                node.inflight = max(0.0, node.inflight - pk.cpus)
            else:
                node.io_inflight = max(0, node.io_inflight - 1)
        now = time.time()
        for e in pk.entries:
            self._running.pop(e.id, None)
            self._run_level[e.run_level] = max(0, self._run_level[e.run_level] - 1)
            self._last_seen[e.run_level] = now
            if e.service is not None:
                self._service_inflight[e.service] = max(0, self._service_inflight.get(e.service, 1) - 1)
            e.node = None
            e.pack = None
        pk.node = None

    def _withdraw(self, level: int) -> None:
        """Cancel one pipelined, not yet started pack of a lower level so ``level`` is next in line.

        Only packs admitted beyond their node's CPUs (so waiting in Ray's queue behind running
        work) whose tasks all have ``max_retries > 0`` are withdrawn; the newest goes first. The
        cancelled tasks return to the front of their queues; if one had just started, it is
        interrupted and runs again later, which a retriable task must tolerate anyway.
        """
        if any(pk.cancelling and pk.withdrawn for pk in self._packs):
            return  # one withdrawal at a time
        victims = [pk for pk in self._packs
                   if pk.pipelined and pk.kind == "cpu" and pk.prio > level and not pk.cancelling and pk.retriable]
        if not victims:
            return
        pk = max(victims, key=lambda p: p.admit_ts)
        pk.cancelling = True
        pk.withdrawn = True
        try:
            ray.cancel(pk.ref, force=False)
        except Exception as exc:  # noqa: BLE001 - already finished
            logger.debug("withdrawal of a pack failed: %s", exc)

    def _preempt(self) -> None:
        """Cancel preemptible tasks so that a blocked CRITICAL task can *start* at once.

        Victims are the lowest-level preemptible tasks, newest first (least work lost), on one
        node, until that node's in-flight CPUs plus the CRITICAL task's fit its real CPUs (not
        the pipelined extra, since a pipelined task would start before the CRITICAL one).
        """
        waiting = [e for e in self._queues[Priority.CRITICAL] if e.kind == "cpu"]
        if len(waiting) <= self._preempting_for:
            return
        crit = waiting[self._preempting_for]
        victims = [pk for pk in self._packs
                   if pk.preemptible and not pk.cancelling and pk.kind == "cpu" and pk.prio > Priority.CRITICAL]
        if not victims:
            return
        victims.sort(key=lambda pk: (pk.prio, pk.admit_ts), reverse=True)
        node = self._nodes.get(victims[0].node)
        if node is None:
            return
        pending = sum(pk.cpus for pk in self._packs if pk.cancelling and pk.node == node.id)
        need = node.inflight - pending + crit.cpus - node.cpus
        for pk in victims:
            if need <= 1e-9:
                break
            if pk.node != node.id:
                continue
            pk.cancelling = True
            need -= pk.cpus
            try:
                ray.cancel(pk.ref, force=False)
            except Exception as exc:  # noqa: BLE001 - already finished
                logger.debug("cancel of %s failed: %s", pk.entries[0].id, exc)
        self._preempting_for += 1

    # -- the task's life --------------------------------------------------------------------
    def _new_entry(self, key: str, blob: bytes | None, name: str, payload: tuple, opts: dict[str, Any]) -> _Entry:
        try:
            prio = Priority.parse(opts.get("priority", Priority.MEDIUM)).value
        except ValueError as err:
            raise InvalidInput(str(err), hint="use 1..5 or critical/high/medium/low/background") from None
        kind = opts.get("task_type")
        service = opts.get("service")
        if service is not None:
            try:
                check_service_name(service)
            except ValueError as err:
                raise InvalidInput(str(err)) from None
        if kind is None:
            svc = self._service(service)
            kind = svc.pool_kind if svc is not None else "cpu"
        if kind not in TASK_TYPES:
            raise InvalidInput(f"task_type must be one of {list(TASK_TYPES)}, got {kind!r}")
        cpus = float(opts.get("num_cpus", 1))
        if kind == "cpu":
            if not cpus > 0:
                raise InvalidInput(f"num_cpus must be > 0, got {cpus:g}", hint="use task_type='io' for tasks that need no CPU slot")
            biggest = self._max_node_cpus()
            if cpus > biggest:
                raise Unschedulable(
                    f"task {name!r} asks for {cpus:g} CPUs but the largest node offers {biggest:g}",
                    hint="lower num_cpus or add a node with more CPUs",
                )
        if self._queued >= self._cfg.max_queued:
            self._stats.rejected += 1
            raise QueueFull(f"the scheduler already holds {self._queued} queued tasks (max_queued)",
                            hint="wait for work to drain or raise cpu.max_queued")
        if blob is None and key not in self._specs:
            raise UnknownTask(f"function {name!r} is not known to this scheduler", hint="submit it again")
        now = time.time()
        submit_ts = float(opts.get("submit_ts") or now)
        return _Entry(
            id=opts.get("task_id") or uuid.uuid4().hex[:16], key=key, blob=blob, name=name, payload=payload,
            prio=prio, base=prio, cpus=cpus, kind=kind, service=service,
            preemptible=bool(opts.get("preemptible", False)), max_retries=int(opts.get("max_retries", 3)),
            submit_ts=min(submit_ts, now), enq_ts=now, fut=asyncio.get_event_loop().create_future(), node=None,
            pack=None, start_ts=None, admit_ts=None, attempts=0, state="queued", seq=next(self._seq), run_level=prio,
        )

    def _enqueue(self, e: _Entry, front: bool = False) -> None:
        e.state = "queued"
        self._last_seen[e.prio] = time.time()
        if front:
            self._queues[e.prio].appendleft(e)
        else:
            self._queues[e.prio].append(e)
        self._count(e, e.prio, 1)

    def _count(self, e: _Entry, level: int, delta: int) -> None:
        self._queued += delta
        if e.kind == "io":
            self._io_q[level] += delta
        elif e.cpus < 1.0 - 1e-9:
            self._small[level] += delta

    async def _execute(self, e: _Entry, queued: bool = False) -> Any:
        """Queue ``e`` (unless ``queued``) and return the task's value (or raise its error)."""
        if not queued:
            self._ensure_loops()
            self._stats.submitted += 1
            self._enqueue(e)
            self._pump()
        return await asyncio.shield(e.fut)

    async def _watch(self, pk: _Pack) -> None:
        """Wait for one Ray call and deliver each of its tasks' outcomes."""
        try:
            results = await pk.ref
        except rex.TaskCancelledError:
            self._release(pk)
            if pk.cancelling:  # preempted or withdrawn by us: back to the front of the queues
                for e in reversed(pk.entries):
                    if pk.withdrawn:
                        self._stats.withdrawn += 1
                    else:
                        self._stats.preempted += 1
                    self._enqueue(e, front=True)
            else:
                for e in pk.entries:
                    err = rex.TaskCancelledError()
                    self._finish(e, None, None, "cancelled", error=err)
                    _deliver(e, exc=err)
            self._pump()
            return
        except (rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError, rex.RayActorError) as err:
            self._release(pk)
            for e in pk.entries:
                self._stats.lost += 1
                lost = TaskLost(
                    f"task {e.name!r} ({e.id}) was lost: {type(err).__name__} (its worker or node died and it "
                    f"was not retried, max_retries={e.max_retries})",
                    hint="submit it again, or give it max_retries > 0 so Ray retries it on another node",
                )
                self._finish(e, None, None, "lost", error=lost)
                _deliver(e, exc=lost)
            self._pump()
            return
        except BaseException as err:  # noqa: BLE001 - a system error reaches every caller of the pack
            self._release(pk)
            for e in pk.entries:
                self._stats.failed += 1
                self._finish(e, None, None, "failed", error=err)
                _deliver(e, exc=err)
            self._pump()
            return
        node = pk.node
        if pk.kind == "cpu" and node in self._nodes and results:
            cfg = self._cfg
            self._nodes[node].observe(time.time() - results[0][0], cfg.pipeline_depth, cfg.pipeline_budget_s,
                                      cfg.max_pipeline_depth)
        self._release(pk)
        for e, (start, end, ok, value) in zip(pk.entries, results):
            run_s = max(0.0, end - start)
            # fast attack, slow decay: one long run stops packing at once, short runs win it back
            old = self._est.get(e.key)
            self._est[e.key] = run_s if old is None else max(run_s, 0.7 * old + 0.3 * run_s)
            if ok:
                self._finish(e, start, end, "finished", node, value=value)
                _deliver(e, value=value)
            else:
                self._stats.failed += 1
                self._finish(e, start, end, "failed", node, error=value)
                _deliver(e, exc=value)
        if len(self._est) > 8192:
            self._est.clear()
        self._pump()

    def _finish(self, e: _Entry, start: float | None, end: float | None, state: str, node: str | None = None, *,
                value: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome, then the state: a reader that sees a final state sees its value too.

        The record's result (or error text) is written *before* ``state`` leaves queued/running, in
        the same synchronous step, so ``wait_tracked``/``task_status`` can never read a finished
        task without its result (they run on the same event loop; nothing awaits in between)."""
        now = time.time()
        if e.id in self._records:  # only tracked tasks keep their outcome after delivery
            if state == "finished":
                e.result = value
            elif error is not None:
                e.error = _error_text(error)
        e.state = state
        e.end_ts = end or now
        if start is not None:
            e.start_ts = start
            self._stats.wait[e.base].add(start - e.submit_ts, now)
            run_s = max(0.0, (end or now) - start)
            self._stats.run[e.base].add(run_s, now)
            if e.kind == "cpu":
                self._stats.task_finished(node, e.cpus, run_s, now)
            self._stats.processed += 1

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

    async def _execute_quiet(self, e: _Entry) -> Any:
        try:
            return await self._execute(e, queued=True)
        except rex.RayTaskError as err:
            return err
        except BaseException as err:  # noqa: BLE001 - delivered through its own ref
            return rex.RayTaskError(e.name, f"{type(err).__name__}: {err}", err)

    async def run_named(self, name: str, payload: tuple, opts: dict[str, Any]) -> Any:
        """Run the registered task ``name``."""
        key, blob = self._lookup(name)
        return await self.run(key, blob, name, payload, opts)

    def _lookup(self, name: str) -> tuple[str, bytes]:
        found = self._registry.get(name)
        if found is None:
            raise UnknownTask(f"no task is registered as {name!r}",
                              hint="register it with cognopt_ray.cpu.register_task(name, fn)")
        return found

    async def register(self, name: str, key: str, blob: bytes) -> None:
        """Register ``blob`` (a pickled function) as ``name``, durably."""
        old = self._registry.get(name)
        folder = self._state_dir / "tasks"
        try:
            self._write_atomic(folder / f"{name}@{key}.pkl", self._task_signer().sign(blob, f"{name}@{key}".encode()))
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
        drop = [tid for tid, e in self._records.items() if e.state not in ("queued", "running")][:excess]
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
            raise UnknownTask(f"no task has id {task_id!r}",
                              hint="ids are kept for the last cpu.results_kept tasks submitted over REST")
        return self._status(e)

    @staticmethod
    def _status(e: _Entry) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": e.id, "name": e.name, "state": e.state, "priority": Priority(e.base).name.lower(),
            "effective_priority": Priority(e.prio).name.lower(), "task_type": e.kind, "service": e.service,
            "num_cpus": e.cpus, "attempts": e.attempts, "submitted_at": e.submit_ts, "started_at": e.start_ts,
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
            check_service_name(name)
            merged = {**self._service(name).model_dump(), **changes}
            cfg = CpuServiceSettings.model_validate(merged)
        except ValueError as err:
            raise InvalidInput(f"invalid cpu settings for service {name!r}: {err}") from None
        before = self._service(name).model_dump()
        self._service_cfg[name] = cfg
        try:
            self._write_atomic(
                self._state_dir / "services.json",
                json.dumps({k: v.model_dump() for k, v in self._service_cfg.items()}, indent=1).encode(),
            )
        except OSError as e:
            logger.warning("service settings kept in memory only: %s", e)
        self._pump()
        return {"service_name": name, "before": before, "after": cfg.model_dump()}

    def service_settings(self, name: str) -> dict[str, Any]:
        try:
            check_service_name(name)
        except ValueError as err:
            raise InvalidInput(str(err)) from None
        return self._service(name).model_dump()

    def cluster(self) -> dict[str, Any]:
        """Nodes as the scheduler sees them."""
        return {
            "max_node_cpus": self._max_node_cpus(),
            "total_cpus": sum(n.cpus for n in self._nodes.values()),
            "nodes": [{"node_id": n.id, "ip": n.ip, "cpus": n.cpus, "inflight_cpus": n.inflight,
                       "io_inflight": n.io_inflight, "cpu_percent": n.load} for n in self._nodes.values()],
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
            "nodes": [{"node_id": n.id, "ip": n.ip, "cpus": n.cpus, "inflight_cpus": n.inflight,
                       "io_inflight": n.io_inflight, "cpu_percent": n.load,
                       "cpu_percent_mean": util.get(n.id), "task_busy_share": busy.get(n.id)}
                      for n in self._nodes.values()],
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


def _error_text(err: BaseException) -> str:
    if isinstance(err, rex.RayTaskError):
        err = err.as_instanceof_cause()
    return f"{type(err).__name__}: {err}"


def _deliver(e: _Entry, value: Any = None, exc: BaseException | None = None) -> None:
    """Resolve the caller's future once (a caller that went away has nothing to resolve)."""
    if e.fut is None or e.fut.done():
        return
    if exc is not None:
        if isinstance(exc, rex.RayTaskError):
            exc = exc.as_instanceof_cause()  # ``except ValueError`` works for the caller, as with Ray
        e.fut.set_exception(exc)
    else:
        e.fut.set_result(value)


class _RayMetrics:
    """The engine's counters exported through ``ray.util.metrics`` (Ray's Prometheus pipeline)."""

    def __init__(self) -> None:
        try:
            from ray.util.metrics import Gauge

            self._depth = Gauge("cognopt_cpu_queue_depth", "queued tasks per priority", tag_keys=("priority",))
            self._processed = Gauge("cognopt_cpu_tasks_processed", "tasks finished since the scheduler started")
            self._running = Gauge("cognopt_cpu_tasks_running", "tasks handed to Ray and not finished")
        except Exception:  # noqa: BLE001 - metrics are optional
            self._depth = None

    def update(self, sched: _SchedulerActor) -> None:
        if self._depth is None:
            return
        try:
            for p, q in sched._queues.items():
                self._depth.set(len(q), tags={"priority": Priority(p).name.lower()})
            self._processed.set(sched._stats.processed)
            self._running.set(len(sched._running))
        except Exception:  # noqa: BLE001
            pass

