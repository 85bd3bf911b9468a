"""``python -m cognopt_ray.jobs.optimize_all [--dry-run]``: every engine's optimisation pass on the
cluster the job runs on (``ray job submit -- python -m cognopt_ray.jobs.optimize_all``).

The summary's ``result`` holds each pass's status, action and before/after figures; the job
exits 1 when a pass failed. The run is written to the audit log as ``system.optimize_all`` with
the key id ``job``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cognopt_ray.jobs import run_job


def _work(dry_run: bool) -> dict[str, Any]:
    from cognopt_ray import get_settings
    from cognopt_ray.security import AuditLog
    from cognopt_ray.system.optimize import optimize_all

    settings = get_settings()
    result = asyncio.run(optimize_all(settings, dry_run=dry_run))
    AuditLog(settings.root).record(
        "job",
        "system.optimize_all",
        ",".join(result["passes"]),
        "dry_run" if dry_run else result["status"],
        dry_run=dry_run,
    )
    failed = {k: v["error"] for k, v in result["passes"].items() if v["status"] != "ok"}
    if failed:
        raise RuntimeError(f"passes failed: {failed}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m cognopt_ray.jobs.optimize_all")
    parser.add_argument("--dry-run", action="store_true", help="say what each pass would do, change nothing")
    args = parser.parse_args()
    run_job("optimize_all", lambda: _work(args.dry_run))
