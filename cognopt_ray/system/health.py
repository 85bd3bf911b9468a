"""Health of the parts the product depends on: Ray, each engine actor that exists, Redis.

Every component is reported as ``up``, ``degraded``, ``down`` or ``not_configured`` with a reason
when it is not plainly up. The overall status is ``ok`` when nothing is down or degraded,
``degraded`` when something is degraded (the product still answers, e.g. a cache fell back to the
in-cluster backend) and ``down`` when Ray or an engine does not answer.

:func:`check_health` asks every engine (and Redis) and is what ``GET health/details`` shows to a
key with ``read``; :func:`summary` is its open form (statuses only: no versions, counts, hosts or
reasons). :class:`HealthCache` is what the API serves from: at most one check per
``health_cache_s`` per replica, however many calls come, so open health cannot stall an engine.

Example:
    >>> summary({"status": "ok", "time": "t", "ray": {"status": "up", "version": "2"},
    ...          "engines": {"storage": {"status": "up", "items": 3}}, "redis": {"status": "up", "url": "redis://h"}})
    {'status': 'ok', 'time': 't', 'ray': {'status': 'up'}, 'engines': {'storage': {'status': 'up'}}, 'redis': {'status': 'up'}}
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ray

from cognopt_ray import memory, runtime
from cognopt_ray._private.kv import ping_redis, redact_url
from cognopt_ray.config import Settings

logger = logging.getLogger(__name__)

UP, DEGRADED, DOWN, NOT_CONFIGURED = "up", "degraded", "down", "not_configured"


def check_redis(url: str | None, timeout_s: float = 1.0) -> dict[str, Any]:
    """Ping Redis at ``url``: ``not_configured`` without a URL, else ``up`` or ``down`` with the reason."""
    if not url:
        return {"status": NOT_CONFIGURED, "reason": "COGNOPT_REDIS_URL is not set; caches use the in-cluster backend"}
    reason = ping_redis(url, timeout_s)
    if reason is None:
        return {"status": UP, "url": redact_url(url)}
    return {"status": DOWN, "url": redact_url(url), "reason": reason}


def _check_ray() -> dict[str, Any]:
    if not ray.is_initialized():
        return {"status": DOWN, "reason": "this process is not connected to Ray"}
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        return {
            "status": UP if nodes else DOWN,
            "version": ray.__version__,
            "nodes_alive": len(nodes),
            "cpus": total.get("CPU", 0.0),
            **({} if nodes else {"reason": "no alive nodes"}),
        }
    except Exception as e:  # noqa: BLE001 - any failure to read the cluster is reported as its health
        return {"status": DOWN, "reason": f"{type(e).__name__}: {e}"}


def _engine_clients() -> dict[str, Callable[[], Any]]:
    """The four engines' public clients by actor name (made only for an actor that exists)."""
    from cognopt_ray import cpu, network, storage

    return {
        cpu.ACTOR_NAME: cpu.client,
        memory.ACTOR_NAME: memory.client,
        storage.ACTOR_NAME: storage.client,
        network.ACTOR_NAME: network.client,
    }


async def _check_engine(name: str, timeout_s: float) -> dict[str, Any]:
    """One actor's health: an engine through its public client; any other actor of the namespace
    (the caches, the automation actor) through its own ``health`` method when it has one."""
    actor = runtime.get_actor(name)
    if actor is None:
        return {"status": DOWN, "reason": "actor not found"}
    make_client = _engine_clients().get(name)
    if make_client is None and not hasattr(actor, "health"):
        return {"status": UP}
    try:
        check = make_client().health_async() if make_client is not None else actor.health.remote()
        report = await asyncio.wait_for(check, timeout=timeout_s)
        return report if isinstance(report, dict) and "status" in report else {"status": UP}
    except asyncio.TimeoutError:
        return {"status": DOWN, "reason": f"no answer within {timeout_s:g} s (restarting or overloaded)"}
    except Exception as e:  # noqa: BLE001 - any failure of an engine is reported as its health
        return {"status": DOWN, "reason": f"{type(e).__name__}: {e}"}


async def check_health(settings: Settings) -> dict[str, Any]:
    """The health document served by ``GET /api/v0/optimization/health``."""
    timeout = settings.health_timeout_s
    ray_status = _check_ray()
    engines: dict[str, Any] = {}
    if ray_status["status"] == UP:
        names = [n for n in runtime.list_engine_actors() if n.startswith("cognopt.")]
        results = await asyncio.gather(*(_check_engine(n, timeout) for n in names))
        engines = {n.removeprefix("cognopt."): r for n, r in zip(names, results)}
    redis_status = await asyncio.get_running_loop().run_in_executor(None, check_redis, settings.redis_url, timeout)
    components = [ray_status, *engines.values()]
    statuses = {c["status"] for c in components}
    if DOWN in statuses:
        overall = "down"
    elif DEGRADED in statuses or redis_status["status"] == DOWN:
        overall = "degraded"
    else:
        overall = "ok"
    return {
        "status": overall,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "ray": ray_status,
        "engines": engines,
        "redis": redis_status,
    }


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The open form of a health document: the overall status and each component's status only."""
    return {
        "status": doc["status"],
        "time": doc["time"],
        "ray": {"status": doc["ray"]["status"]},
        "engines": {name: {"status": e.get("status", DOWN)} for name, e in doc.get("engines", {}).items()},
        "redis": {"status": doc["redis"]["status"]},
    }


class HealthCache:
    """The last health document of one process, refreshed at most once per ``max_age_s``.

    Callers within ``max_age_s`` of the last check get it as is; the first caller after that
    runs one check and every caller that arrives meanwhile waits for that same check (single
    flight), so the engines see at most one ``health`` call per ``max_age_s`` from this process.

    Args:
        settings: the settings passed to ``check``.
        check: the coroutine function making a document (default :func:`check_health`).
    """

    def __init__(
        self, settings: Settings, check: Callable[[Settings], Awaitable[dict[str, Any]]] | None = None
    ) -> None:
        self._settings = settings
        self._check = check or check_health
        self.max_age_s = settings.health_cache_s
        self._doc: dict[str, Any] | None = None
        self._at = 0.0
        self._lock: asyncio.Lock | None = None
        self.checks = 0  # how many checks ran (each asks every engine once)

    def _fresh(self) -> bool:
        return self._doc is not None and time.monotonic() - self._at < self.max_age_s

    async def get(self) -> dict[str, Any]:
        """The health document, at most ``max_age_s`` old."""
        if self._fresh():
            return self._doc  # type: ignore[return-value]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._fresh():  # another caller may have refreshed it while this one waited
                self.checks += 1
                try:
                    self._doc = await self._check(self._settings)
                except Exception as e:  # noqa: BLE001 - a failed check is a "down" document, cached too
                    logger.warning("health check failed: %s", e)
                    self._doc = _down_doc(f"{type(e).__name__}: {e}")
                self._at = time.monotonic()
            return self._doc  # type: ignore[return-value]


def _down_doc(reason: str) -> dict[str, Any]:
    return {
        "status": "down",
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "ray": {"status": DOWN, "reason": reason},
        "engines": {},
        "redis": {"status": DOWN, "reason": reason},
    }
