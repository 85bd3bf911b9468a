"""A task's outcome: wait for its Ray call, record what happened, deliver it to the caller.

:class:`Outcomes` is a mixin of :class:`~cognopt_ray.cpu._actor._SchedulerActor`. A cancelled
call whose tasks were withdrawn or preempted by the scheduler goes back to the front of its
queues; a lost worker or node makes :class:`~cognopt_ray.cpu.errors.TaskLost`; everything else is
the task's own value or exception, delivered through the caller's future.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray import exceptions as rex

from cognopt_ray.cpu.admission import _Entry, _Pack
from cognopt_ray.cpu.errors import TaskLost


class Outcomes:
    """Waiting on Ray's calls and delivering each task's value or error (a mixin)."""

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
            self._nodes[node].observe(
                time.time() - results[0][0], cfg.pipeline_depth, cfg.pipeline_budget_s, cfg.max_pipeline_depth
            )
        self._release(pk)
        for e in reversed(pk.entries[len(results) :]):  # a pack stopped at its budget: the rest again
            self._enqueue(e, front=True)
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

    def _finish(
        self,
        e: _Entry,
        start: float | None,
        end: float | None,
        state: str,
        node: str | None = None,
        *,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
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

    async def _execute_quiet(self, e: _Entry) -> Any:
        try:
            return await self._execute(e, queued=True)
        except rex.RayTaskError as err:
            return err
        except BaseException as err:  # noqa: BLE001 - delivered through its own ref
            return rex.RayTaskError(e.name, f"{type(err).__name__}: {err}", err)


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
