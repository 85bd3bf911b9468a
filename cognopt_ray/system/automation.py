"""Background automation: the engines' optimisation passes on timers, started and stopped together.

One async actor, ``cognopt.system``, runs one asyncio loop per pass, each with its interval in
:class:`~cognopt_ray.config.SystemSettings` (0 switches a loop off):

==================  ===============================  =================================
loop                runs                             interval setting
==================  ===============================  =================================
``gc``              ``memory.gc``                    ``system.gc_interval_s``
``tiering``         ``storage.tiering``              ``system.tiering_interval_s``
``cache_sweep``     ``network.cache_sweep``          ``system.cache_sweep_interval_s``
``pool_sweep``      ``memory.pool_sweep``            ``system.pool_sweep_interval_s``
``scheduler_check`` ``cpu.rebalance`` + metrics      ``system.scheduler_check_interval_s``
==================  ===============================  =================================

``scheduler_check`` also reads ``system/metrics`` so the Prometheus gauges stay current. Each
loop's last run, result and error count show in ``GET /health`` under ``engines.system``.

Example:
    >>> from cognopt_ray.system import automation
    >>> automation.start()            # doctest: +SKIP
    >>> automation.status()["loops"]["gc"]["interval_s"]   # doctest: +SKIP
    300.0
    >>> automation.stop()             # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray.config import Settings

logger = logging.getLogger(__name__)

ACTOR_NAME = "cognopt.system"
LOOPS = {
    "gc": ("memory.gc", "gc_interval_s"),
    "tiering": ("storage.tiering", "tiering_interval_s"),
    "cache_sweep": ("network.cache_sweep", "cache_sweep_interval_s"),
    "pool_sweep": ("memory.pool_sweep", "pool_sweep_interval_s"),
    "scheduler_check": ("cpu.rebalance", "scheduler_check_interval_s"),
}


class _AutomationActor:
    """Holds the loops; every public method is a remote call of the module functions below."""

    def __init__(self, settings: Settings | dict[str, Any]) -> None:
        self.settings = settings if isinstance(settings, Settings) else Settings.model_validate(settings)
        runtime.adopt_in_actor(self.settings)
        self.tasks: dict[str, asyncio.Task] = {}
        self.state: dict[str, dict[str, Any]] = {
            name: {
                "pass": p,
                "interval_s": float(getattr(self.settings.system, key)),
                "enabled": False,
                "runs": 0,
                "errors": 0,
                "last_run": None,
                "last_status": None,
                "last_result": None,
            }
            for name, (p, key) in LOOPS.items()
        }
        self.started: float | None = None

    async def _run_once(self, name: str) -> dict[str, Any]:
        from cognopt_ray.system.optimize import optimize_all

        st = self.state[name]
        try:
            result = await optimize_all(self.settings, passes=[st["pass"]])
            one = result["passes"][st["pass"]]
            st["last_status"] = one["status"]
            st["last_result"] = one.get("action") or one.get("error")
            if one["status"] != "ok":
                st["errors"] += 1
            if name == "scheduler_check":
                from cognopt_ray.system.metrics import system_metrics

                await system_metrics(self.settings)  # keeps the Prometheus gauges current
        except Exception as e:  # noqa: BLE001 - a loop survives a bad pass
            st["last_status"], st["last_result"] = "error", f"{type(e).__name__}: {e}"
            st["errors"] += 1
        st["runs"] += 1
        st["last_run"] = time.time()
        return dict(st)

    async def _loop(self, name: str) -> None:
        interval = self.state[name]["interval_s"]
        while True:
            await asyncio.sleep(interval)
            await self._run_once(name)

    async def start(self) -> dict[str, Any]:
        for name, st in self.state.items():
            if st["interval_s"] > 0 and (name not in self.tasks or self.tasks[name].done()):
                self.tasks[name] = asyncio.get_running_loop().create_task(self._loop(name))
                st["enabled"] = True
        self.started = self.started or time.time()
        return await self.status()

    async def stop(self) -> dict[str, Any]:
        for name, task in list(self.tasks.items()):
            task.cancel()
            self.state[name]["enabled"] = False
        self.tasks.clear()
        self.started = None
        return await self.status()

    async def run_now(self, name: str) -> dict[str, Any]:
        if name not in self.state:
            from cognopt_ray.errors import InvalidInput

            raise InvalidInput(f"unknown automation loop {name!r}", hint=f"use one of {sorted(self.state)}")
        return await self._run_once(name)

    async def status(self) -> dict[str, Any]:
        return {
            "running": bool(self.tasks),
            "started": self.started,
            "loops": {k: dict(v) for k, v in self.state.items()},
        }

    async def health(self) -> dict[str, Any]:
        doc = await self.status()
        failing = [k for k, v in doc["loops"].items() if v["last_status"] == "error"]
        out = {"status": "degraded" if failing else "up", **doc}
        if failing:
            out["reason"] = f"last run failed: {', '.join(failing)}"
        return out


_Remote = ray.remote(_AutomationActor)


def _get(ref: Any, timeout: float) -> Any:
    from cognopt_ray._private.client import translate_error

    try:
        return ray.get(ref, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - translated, then re-raised
        raise translate_error(e, "system") from None


def _actor(settings: Settings | None = None) -> Any:
    return runtime.get_or_create_actor(_Remote, ACTOR_NAME, settings or runtime.get_settings())


def start(settings: Settings | None = None) -> dict[str, Any]:
    """Start every loop whose interval is > 0 (idempotent); returns :func:`status`."""
    return _get(_actor(settings).start.remote(), 60)


def stop() -> dict[str, Any]:
    """Stop every loop (the actor stays, so their last results stay readable)."""
    return _get(_actor().stop.remote(), 60)


def status() -> dict[str, Any]:
    """Each loop's interval, whether it runs, its last run, status and result."""
    return _get(_actor().status.remote(), 60)


def run_now(name: str) -> dict[str, Any]:
    """Run one loop's pass now (its timer is unchanged)."""
    return _get(_actor().run_now.remote(name), 600)


async def astatus() -> dict[str, Any]:
    return await _actor().status.remote()


async def astart(settings: Settings | None = None) -> dict[str, Any]:
    return await _actor(settings).start.remote()


async def astop() -> dict[str, Any]:
    return await _actor().stop.remote()


__all__ = ["ACTOR_NAME", "LOOPS", "start", "stop", "status", "run_now", "astatus", "astart", "astop"]
