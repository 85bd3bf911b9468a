"""Steady load from threads while an actor is killed: count what was acknowledged, bound every call.

``run_with_kill`` runs ``op(i)`` in ``threads`` threads, kills ``actor`` once ``warmup`` calls
were acknowledged, and keeps the load on until ``after`` more calls were acknowledged after the
kill (the engine came back) or ``max_s`` passed. Every call runs under a watchdog: a call that
takes longer than ``bound_s`` is a hang and fails the test. Errors are sorted into *clear*
(a :class:`CognoptError`, which carries a status, a message and a hint) and *unclear* (anything
else: a raw Ray error, a traceback from the engine's internals).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from cognopt_ray.errors import CognoptError


@dataclass
class LoadReport:
    acked: dict[int, Any] = field(default_factory=dict)  # call number -> what the call returned
    clear_errors: list[str] = field(default_factory=list)
    unclear_errors: list[str] = field(default_factory=list)
    hangs: list[int] = field(default_factory=list)
    acked_after_kill: int = 0
    killed_at: float | None = None
    calls: int = 0

    def summary(self) -> str:
        return (
            f"{self.calls} calls, {len(self.acked)} acknowledged ({self.acked_after_kill} after the kill), "
            f"{len(self.clear_errors)} clear errors, {len(self.unclear_errors)} unclear, {len(self.hangs)} hangs"
        )


def run_with_kill(
    op: Callable[[int], Any],
    kill: Callable[[], None],
    *,
    threads: int = 3,
    warmup: int = 10,
    after: int = 10,
    bound_s: float = 60.0,
    max_s: float = 150.0,
) -> LoadReport:
    rep = LoadReport()
    lock = threading.Lock()
    counter = iter(range(10**9))
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=threads * 2)

    def worker() -> None:
        while not stop.is_set():
            with lock:
                i = next(counter)
                rep.calls += 1
            fut = pool.submit(op, i)
            try:
                value = fut.result(timeout=bound_s)
            except FutureTimeout:
                with lock:
                    rep.hangs.append(i)
                return
            except CognoptError as e:
                with lock:
                    rep.clear_errors.append(f"{type(e).__name__}: {e.message}")
                time.sleep(0.05)
                continue
            except Exception as e:  # noqa: BLE001 - the harness counts every unexpected error
                with lock:
                    rep.unclear_errors.append(f"{type(e).__name__}: {str(e)[:300]}")
                time.sleep(0.05)
                continue
            with lock:
                rep.acked[i] = value
                if rep.killed_at is not None:
                    rep.acked_after_kill += 1

    runners = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    t0 = time.time()
    for t in runners:
        t.start()
    try:
        while len(rep.acked) < warmup:
            assert time.time() - t0 < max_s, f"no warm-up: {rep.summary()}"
            time.sleep(0.02)
        kill()
        rep.killed_at = time.time()
        while rep.acked_after_kill < after and time.time() - t0 < max_s and not rep.hangs:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in runners:
            t.join(bound_s + 5)
        pool.shutdown(wait=False, cancel_futures=True)
    return rep


def assert_healthy_run(rep: LoadReport, after: int = 10) -> None:
    assert not rep.hangs, f"calls hung: {rep.summary()}"
    assert not rep.unclear_errors, f"unclear errors: {rep.unclear_errors[:5]} ({rep.summary()})"
    assert rep.acked_after_kill >= after, f"the engine did not come back: {rep.summary()}; {rep.clear_errors[-3:]}"


def wait_up(fn: Callable[[], Any], timeout: float = 600, interval: float = 1.0) -> Any:
    """Call ``fn`` until it stops raising a retryable ``CognoptError`` (a new actor's worker may
    take long to start on a busy machine)."""
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except CognoptError as e:
            if not e.retryable or time.time() > deadline:
                raise
            time.sleep(interval)
