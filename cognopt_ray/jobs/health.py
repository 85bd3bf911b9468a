"""``python -m cognopt_ray.jobs.health``: the whole health document (as ``GET health/details``) of the cluster the job runs on.

A job runs inside the cluster, so it gets the details that the open ``GET health`` leaves out.

Exits 1 when Ray or an engine is down (a degraded Redis is reported, not a failure).
"""

from __future__ import annotations

import asyncio

from cognopt_ray.jobs import run_job


def _work() -> dict:
    from cognopt_ray import get_settings
    from cognopt_ray.system.health import check_health

    doc = asyncio.run(check_health(get_settings()))
    if doc["status"] == "down":
        raise RuntimeError(f"cluster is down: {doc}")
    return doc


if __name__ == "__main__":
    run_job("health", _work)
