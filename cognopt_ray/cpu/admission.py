"""Queues and admission: which queued task goes to Ray next, where, alone or packed, and which
running work makes way (withdrawal of pipelined work, preemption) for a higher level.

Five FIFO queues (CRITICAL..BACKGROUND). A task is handed to Ray only when a node has a free CPU
slot by the scheduler's own accounting (node CPUs plus ``pipeline_depth``), so Ray's queues stay
shallow and a CRITICAL task waits for at most the rest of one running task.

Throughput vs latency, decided per task at admission:

- *latency mode*: while any task of a higher level is queued or running, or was seen less than
  ``latency_guard_s`` ago, a task is admitted only into a real free CPU (no pipelining) and alone
  (no pack); a blocked task also withdraws a pipelined, not yet started, lower-level task
  (``max_retries > 0`` only) so that it is next in line.
- *throughput mode* otherwise: up to ``pipeline_depth`` extra tasks per node wait in Ray's
  queue so workers never idle between tasks, and short tasks of one level are packed into one
  Ray call (``pack_budget_s`` of estimated work) to pay Ray's per-task cost once per pack.

:class:`Admission` is a mixin of :class:`~cognopt_ray.cpu._actor._SchedulerActor`; the state it
works on is set in the actor's ``__init__``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cognopt_ray.config import CpuServiceSettings
from cognopt_ray.cpu.errors import QueueFull, UnknownTask, Unschedulable
from cognopt_ray.cpu.executor import _IoPool, execute_pack
from cognopt_ray.cpu.nodes import _Node
from cognopt_ray.errors import InvalidInput
from cognopt_ray.priority import Priority

logger = logging.getLogger(__name__)

LEVELS = tuple(p.value for p in Priority)
#: How many queued entries per level the admission loop looks past a blocked head.
SCAN_LIMIT = 256
TASK_TYPES = ("cpu", "io")


class _Entry:
    __slots__ = (
        "id",
        "key",
        "blob",
        "name",
        "payload",
        "prio",
        "base",
        "cpus",
        "kind",
        "service",
        "preemptible",
        "max_retries",
        "submit_ts",
        "enq_ts",
        "fut",
        "node",
        "pack",
        "start_ts",
        "admit_ts",
        "attempts",
        "state",
        "result",
        "error",
        "end_ts",
        "seq",
        "run_level",
    )

    def __init__(self, **kw: Any) -> None:
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


class _Pack:
    """One Ray call: one task, or several short tasks of one level run one after the other."""

    __slots__ = ("entries", "cpus", "kind", "node", "ref", "prio", "admit_ts", "cancelling", "withdrawn", "pipelined")

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


class Admission:
    """Queues, admission, packing, withdrawal and preemption of the scheduler actor (a mixin)."""

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

    # -- services ---------------------------------------------------------------------------
    def _service(self, name: str | None) -> CpuServiceSettings | None:
        if name is None:
            return None
        cfg = self._service_cfg.get(name)
        if cfg is None:
            cfg = self._settings.service(name).cpu
        return cfg

    # -- admission --------------------------------------------------------------------------
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
            i = 0
            while i < len(q) and i < SCAN_LIMIT:
                # Leave the level when none of its tasks can fit (most tasks ask for whole CPUs);
                # checked first, so a saturated pool costs O(1) per level.
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
        node = self._pick_node(e.cpus, e.kind, pipeline=not self._guarded(e), deep=e.max_retries > 0)
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
        if budget <= 0 or est is None or est * 2 > budget or e.preemptible or e.kind != "cpu" or self._guarded(e):
            return []
        svc = self._service(e.service)
        cap = svc.max_workers if svc is not None and svc.max_workers else None
        room_svc = (cap - self._service_inflight.get(e.service, 0) - 1) if cap else None
        total, out = est, []
        j = i
        while j < len(q) and len(out) + 1 < self._cfg.max_pack and j - i < SCAN_LIMIT:
            c = q[j]
            ce = self._est.get(c.key)
            if (
                c.kind != "cpu"
                or c.preemptible
                or c.cpus != e.cpus
                or c.max_retries != e.max_retries
                or c.service != e.service
                or ce is None
            ):
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
        # The Ray task carries the user's function name (a pack: the first one's and "+N"), which
        # Ray's dashboard and state API show; the name is not part of the scheduling class.
        task_name = e.name if len(entries) == 1 else f"{e.name}+{len(entries) - 1}"
        if e.kind == "cpu":
            node.inflight += e.cpus
            svc = self._service(e.service)
            cores = (
                tuple(svc.cpu_affinity)
                if svc is not None and svc.cpu_affinity is not None
                else tuple(self._cfg.cpu_affinity)
            )
            spread = len(self._nodes) > 1
            ck = (e.cpus, e.max_retries, node.id if spread else None, task_name)
            rf = self._optioned.get(ck)
            if rf is None:
                opts: dict[str, Any] = {"num_cpus": e.cpus, "max_retries": e.max_retries, "name": task_name}
                if spread:
                    opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node.id, soft=True)
                rf = execute_pack.options(**opts)
                if len(self._optioned) > 4096:
                    self._optioned.clear()
                self._optioned[ck] = rf
            pk.ref = rf.remote(cores, items, self._cfg.pack_budget_s if len(items) > 1 else None)
            if pipelined and any(self._run_level[lvl] for lvl in LEVELS if lvl > pk.prio):
                # lower-level work may be ahead of this pack in the node's queue: clear the way
                self._withdraw_on(node.id, pk.prio)
                if pk.prio == Priority.CRITICAL and self._cfg.preemption:
                    self._preempt_on(node, pk)
        else:
            node.io_inflight += 1
            if node.io_pool is None:
                node.io_pool = _IoPool.options(
                    max_concurrency=self._cfg.io_pool_threads,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=True),
                    max_restarts=-1,
                ).remote()
            pk.ref = node.io_pool.run.options(name=task_name).remote(items)
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

    def _queued_in_ray(self, node_id: str) -> list[_Pack]:
        """The cpu packs of ``node_id`` that are (by our accounting) still waiting in Ray's queue.

        Ray starts a node's tasks in the order they were submitted as its CPUs free, so a pack is
        still queued when the packs admitted to that node before it, still in flight, hold all its CPUs.
        """
        node = self._nodes.get(node_id)
        if node is None:
            return []
        mine = sorted(
            (pk for pk in self._packs if pk.node == node_id and pk.kind == "cpu" and not pk.cancelling),
            key=lambda p: p.admit_ts,
        )
        ahead, out = 0.0, []
        for pk in mine:
            if ahead >= node.cpus - 1e-9:
                out.append(pk)
            ahead += pk.cpus
        return out

    def _withdraw_on(self, node_id: str, level: int) -> int:
        """Cancel every lower-level pack of ``node_id`` still in Ray's queue (all retriable), so
        that the work of ``level`` is next in line there; returns how many were cancelled.

        The cancelled tasks return to the front of their queues (:meth:`_watch`); one that had
        just started is interrupted and runs again later, which a retriable task tolerates anyway.
        """
        victims = [pk for pk in self._queued_in_ray(node_id) if pk.prio > level and pk.pipelined and pk.retriable]
        for pk in victims:
            pk.cancelling = True
            pk.withdrawn = True
            try:
                ray.cancel(pk.ref, force=False)
            except Exception as exc:  # noqa: BLE001 - already finished
                logger.debug("withdrawal of a pack failed: %s", exc)
        return len(victims)

    def _withdraw(self, level: int) -> None:
        """``level`` is blocked: clear Ray's queue of lower-level work on one node so ``level`` goes
        there next (the node with the most such work; none while a withdrawal is under way).

        Only packs admitted beyond their node's CPUs whose tasks all have ``max_retries > 0`` are
        withdrawn (deep pipelining is only for those, see ``_pick_node``).
        """
        if any(pk.cancelling and pk.withdrawn for pk in self._packs):
            return  # the cancelled ones come back first; then admission looks again
        counts: dict[str, int] = {}
        for pk in self._packs:
            if pk.pipelined and pk.kind == "cpu" and pk.prio > level and not pk.cancelling and pk.retriable:
                counts[pk.node] = counts.get(pk.node, 0) + 1
        for node_id in sorted(counts, key=counts.get, reverse=True):
            if self._withdraw_on(node_id, level):
                return

    def _preempt_on(self, node: _Node, crit: _Pack) -> None:
        """A CRITICAL pack waits in ``node``'s queue behind running work: cancel the newest running
        preemptible lower-level packs there until it fits the node's real CPUs, so it starts now."""
        ahead = [
            pk
            for pk in sorted(self._packs, key=lambda p: p.admit_ts)
            if pk.node == node.id and pk.kind == "cpu" and not pk.cancelling and pk is not crit
        ]
        need = sum(pk.cpus for pk in ahead) + crit.cpus - node.cpus
        victims = sorted(
            (p for p in ahead if p.preemptible and p.prio > Priority.CRITICAL), key=lambda p: p.admit_ts, reverse=True
        )
        self._cancel_until(victims, need)

    @staticmethod
    def _cancel_until(victims: list[_Pack], need: float) -> None:
        """Cancel ``victims`` in their order until their CPUs cover ``need``."""
        for pk in victims:
            if need <= 1e-9:
                break
            pk.cancelling = True
            need -= pk.cpus
            try:
                ray.cancel(pk.ref, force=False)
            except Exception as exc:  # noqa: BLE001 - already finished
                logger.debug("cancel of %s failed: %s", pk.entries[0].id, exc)

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
        victims = [
            pk
            for pk in self._packs
            if pk.preemptible and not pk.cancelling and pk.kind == "cpu" and pk.prio > Priority.CRITICAL
        ]
        if not victims:
            return
        victims.sort(key=lambda pk: (pk.prio, pk.admit_ts), reverse=True)
        node = self._nodes.get(victims[0].node)
        if node is None:
            return
        pending = sum(pk.cpus for pk in self._packs if pk.cancelling and pk.node == node.id)
        need = node.inflight - pending + crit.cpus - node.cpus
        self._cancel_until([pk for pk in victims if pk.node == node.id], need)
        self._preempting_for += 1

    # -- entering the queues ----------------------------------------------------------------
    def _new_entry(self, key: str, blob: bytes | None, name: str, payload: tuple, opts: dict[str, Any]) -> _Entry:
        """A queue entry for one task; ``opts`` were checked by the client (priority is a ``Priority``).

        Raises what only the scheduler can know: the service's pool kind, the live cluster's
        largest node (``Unschedulable``), a full queue (``QueueFull``), an unknown function key.
        """
        prio = Priority(opts.get("priority", Priority.MEDIUM)).value
        kind = opts.get("task_type")
        service = opts.get("service")
        if kind is None:
            svc = self._service(service)
            kind = svc.pool_kind if svc is not None else "cpu"
        if kind not in TASK_TYPES:
            raise InvalidInput(f"task_type must be one of {list(TASK_TYPES)}, got {kind!r}")
        cpus = float(opts.get("num_cpus", 1))
        if kind == "cpu":
            if not cpus > 0:
                raise InvalidInput(
                    f"num_cpus must be > 0, got {cpus:g}", hint="use task_type='io' for tasks that need no CPU slot"
                )
            biggest = self._max_node_cpus()
            if cpus > biggest:
                raise Unschedulable(
                    f"task {name!r} asks for {cpus:g} CPUs but the largest node offers {biggest:g}",
                    hint="lower num_cpus or add a node with more CPUs",
                )
        if self._queued >= self._cfg.max_queued:
            self._stats.rejected += 1
            raise QueueFull(
                f"the scheduler already holds {self._queued} queued tasks (max_queued)",
                hint="wait for work to drain or raise cpu.max_queued",
            )
        if blob is None and key not in self._specs:
            raise UnknownTask(f"function {name!r} is not known to this scheduler", hint="submit it again")
        now = time.time()
        submit_ts = float(opts.get("submit_ts") or now)
        return _Entry(
            id=opts.get("task_id") or uuid.uuid4().hex[:16],
            key=key,
            blob=blob,
            name=name,
            payload=payload,
            prio=prio,
            base=prio,
            cpus=cpus,
            kind=kind,
            service=service,
            preemptible=bool(opts.get("preemptible", False)),
            max_retries=int(opts.get("max_retries", 3)),
            submit_ts=min(submit_ts, now),
            enq_ts=now,
            fut=asyncio.get_event_loop().create_future(),
            node=None,
            pack=None,
            start_ts=None,
            admit_ts=None,
            attempts=0,
            state="queued",
            seq=next(self._seq),
            run_level=prio,
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
