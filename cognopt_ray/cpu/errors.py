"""Errors of the CPU engine, each with an HTTP status and a hint."""

from __future__ import annotations

from cognopt_ray.errors import Conflict, EngineUnavailable, InvalidInput, NotFound


class Unschedulable(InvalidInput):
    """A task asks for more CPUs than any node of the cluster offers (HTTP 422)."""

    title = "Task can never be scheduled"


class UnknownTask(NotFound):
    """No task is registered under that name, or no task has that id (HTTP 404)."""

    title = "Unknown task"


class QueueFull(Conflict):
    """The scheduler holds ``max_queued`` tasks already (HTTP 409)."""

    title = "Scheduler queue full"


class TaskLost(EngineUnavailable):
    """A task could not finish because its node or worker died and it is not retriable (HTTP 503).

    Submitting it again is safe when the task is idempotent.
    """

    title = "Task lost"


__all__ = ["Unschedulable", "UnknownTask", "QueueFull", "TaskLost"]
