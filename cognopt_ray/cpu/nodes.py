"""The scheduler's view of the cluster: one record per alive node, placement, the node monitors.

:class:`NodeView` is a mixin of :class:`~cognopt_ray.cpu._actor._SchedulerActor`: it keeps
``self._nodes`` (set in the actor's ``__init__``) in step with ``ray.nodes()``, samples each
node's load through a :class:`_NodeMonitor` actor pinned to it, and picks the least-loaded node
with room for a task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

logger = logging.getLogger(__name__)


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


def node_doc(n: _Node) -> dict[str, Any]:
    """A node as the scheduler sees it (``cluster()`` and ``metrics()["nodes"]``)."""
    return {
        "node_id": n.id,
        "ip": n.ip,
        "cpus": n.cpus,
        "inflight_cpus": n.inflight,
        "io_inflight": n.io_inflight,
        "cpu_percent": n.load,
    }


class NodeView:
    """Nodes, placement and load sampling of the scheduler actor (a mixin; state in its ``__init__``)."""

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
            except Exception as e:  # noqa: BLE001 - the monitor loop survives a failed refresh and retries
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
            self._metrics.update(
                {p: len(q) for p, q in self._queues.items()}, self._stats.processed, len(self._running)
            )

    def _pick_node(
        self, cpus: float, kind: str, relaxed: bool = False, pipeline: bool = True, deep: bool = True
    ) -> _Node | None:
        """The least-loaded node with room: by in-flight share of its CPUs, then psutil load.

        Room is the node's CPUs plus its pipeline depth, or its CPUs alone when ``pipeline`` is off;
        a task that cannot be withdrawn (``deep`` off: ``max_retries=0``) is pipelined no deeper
        than ``pipeline_depth``.
        """
        best, best_score = None, None
        base = float(self._cfg.pipeline_depth)
        for node in self._nodes.values():
            if kind == "cpu":
                if cpus > node.cpus:
                    continue
                extra = (node.depth if deep else min(node.depth, base)) if pipeline else 0.0
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

    def _room(self) -> tuple[float, int]:
        """The most free CPU slots on one node and the most free io threads on one node."""
        cpu = io = 0
        for n in self._nodes.values():
            cpu = max(cpu, n.cpus + n.depth - n.inflight)
            io = max(io, self._cfg.io_pool_threads - n.io_inflight)
        return cpu, io


@ray.remote(num_cpus=0)
class _NodeMonitor:
    """Samples this node's CPU load with psutil (one per node, created by the scheduler)."""

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(None)

    def sample(self) -> dict[str, Any]:
        ps = self._psutil
        load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "cpu_percent": ps.cpu_percent(None),
            "load1": load1,
            "cpu_count": ps.cpu_count(),
            "time": time.time(),
        }
