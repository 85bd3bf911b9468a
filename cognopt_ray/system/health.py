"""Health of the parts the product depends on: Ray, each engine actor that exists, Redis.

Every component is reported as ``up``, ``degraded``, ``down`` or ``not_configured`` with a reason
when it is not plainly up. The overall status is ``ok`` when nothing is down or degraded,
``degraded`` when something is degraded (the product still answers, e.g. a cache fell back to the
in-cluster backend) and ``down`` when Ray or an engine does not answer.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray.config import Settings

UP, DEGRADED, DOWN, NOT_CONFIGURED = "up", "degraded", "down", "not_configured"


def check_redis(url: str | None, timeout_s: float = 1.0) -> dict[str, Any]:
    """Ping Redis at ``url``: ``not_configured`` without a URL, else ``up`` or ``down`` with the reason."""
    if not url:
        return {"status": NOT_CONFIGURED, "reason": "COGNOPT_REDIS_URL is not set; caches use the in-cluster backend"}
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
        return {"status": UP, "url": _redact(url)}
    except Exception as e:  # noqa: BLE001 - any failure is "down" with its reason
        return {"status": DOWN, "url": _redact(url), "reason": f"{type(e).__name__}: {e}"}
    finally:
        client.close()


def _redact(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


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
    except Exception as e:  # noqa: BLE001
        return {"status": DOWN, "reason": f"{type(e).__name__}: {e}"}


async def _check_engine(name: str, timeout_s: float) -> dict[str, Any]:
    actor = runtime.get_actor(name)
    if actor is None:
        return {"status": DOWN, "reason": "actor not found"}
    if not hasattr(actor, "health"):
        return {"status": UP}
    try:
        report = await asyncio.wait_for(actor.health.remote(), timeout=timeout_s)
        return report if isinstance(report, dict) and "status" in report else {"status": UP}
    except asyncio.TimeoutError:
        return {"status": DOWN, "reason": f"no answer within {timeout_s:g} s (restarting or overloaded)"}
    except Exception as e:  # noqa: BLE001
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
