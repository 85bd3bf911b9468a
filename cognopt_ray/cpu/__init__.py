"""The CPU engine: priority scheduling on Ray, pools by task type, load balancing, affinity.

Example:
    >>> import ray, cognopt_ray
    >>> from cognopt_ray.cpu import PriorityScheduler, register_task
    >>> cognopt_ray.init(num_cpus=2)                          # doctest: +SKIP
    >>> sched = PriorityScheduler()                            # doctest: +SKIP
    >>> ray.get(sched.submit(sum, [1, 2, 3], priority="high"))  # doctest: +SKIP
    6
    >>> register_task("add", lambda a, b: a + b)               # doctest: +SKIP

Layout: ``client.py`` (the public client), ``_actor.py`` (the ``cognopt.cpu`` actor),
``admission.py`` (queues, admission, packing, withdrawal, preemption), ``nodes.py`` (node view,
placement, node monitors), ``outcomes.py`` (a task's outcome), ``executor.py`` (where tasks run),
``stats.py`` (figures and advice), ``errors.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cognopt_ray._private import lazy as _lazy

if TYPE_CHECKING:
    from cognopt_ray.cpu.client import ACTOR_NAME, CPUTask, NamedTask, PriorityScheduler, client
    from cognopt_ray.cpu.errors import QueueFull, TaskLost, UnknownTask, Unschedulable

_lazy.install(
    __name__,
    {
        "ACTOR_NAME": ".client",
        "CPUTask": ".client",
        "NamedTask": ".client",
        "PriorityScheduler": ".client",
        "client": ".client",
        "QueueFull": ".errors",
        "TaskLost": ".errors",
        "UnknownTask": ".errors",
        "Unschedulable": ".errors",
    },
)


def register_task(name: str, fn: Callable[..., Any]) -> None:
    """Register ``fn`` under ``name``: the only code ``POST cpu/optimize-tasks`` can run."""
    from cognopt_ray.cpu.client import client

    client().register_task(name, fn)


async def optimize_async_processing(tasks: Sequence[CPUTask]) -> list[Any]:
    """Run ``tasks`` by priority across the cluster and return their results in input order."""
    from cognopt_ray.cpu.client import client

    return await client().run_all_async(tasks)


__all__ = [
    "ACTOR_NAME",
    "CPUTask",
    "NamedTask",
    "PriorityScheduler",
    "client",
    "register_task",
    "optimize_async_processing",
    "QueueFull",
    "TaskLost",
    "Unschedulable",
    "UnknownTask",
]
