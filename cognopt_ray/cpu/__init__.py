"""The CPU engine: priority scheduling on Ray, pools by task type, load balancing, affinity.

Example:
    >>> import ray, cognopt_ray
    >>> from cognopt_ray.cpu import PriorityScheduler, register_task
    >>> cognopt_ray.init(num_cpus=2)                          # doctest: +SKIP
    >>> sched = PriorityScheduler()                            # doctest: +SKIP
    >>> ray.get(sched.submit(sum, [1, 2, 3], priority="high"))  # doctest: +SKIP
    6
    >>> register_task("add", lambda a, b: a + b)               # doctest: +SKIP
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from cognopt_ray.cpu.client import ACTOR_NAME, CPUTask, PriorityScheduler
from cognopt_ray.cpu.errors import QueueFull, TaskLost, Unschedulable, UnknownTask

_client: PriorityScheduler | None = None
_client_lock = threading.Lock()


def client() -> PriorityScheduler:
    """This process's :class:`PriorityScheduler` (gets or creates the ``cognopt.cpu`` actor)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = PriorityScheduler()
        return _client


def register_task(name: str, fn: Callable[..., Any]) -> None:
    """Register ``fn`` under ``name``: the only code ``POST cpu/optimize-tasks`` can run."""
    client().register_task(name, fn)


async def optimize_async_processing(tasks: Sequence[CPUTask]) -> list[Any]:
    """Run ``tasks`` by priority across the cluster and return their results in input order."""
    return await client().optimize_async_processing(tasks)


def _reset_client() -> None:
    global _client
    with _client_lock:
        _client = None


__all__ = [
    "ACTOR_NAME",
    "CPUTask",
    "PriorityScheduler",
    "client",
    "register_task",
    "optimize_async_processing",
    "QueueFull",
    "TaskLost",
    "Unschedulable",
    "UnknownTask",
]
