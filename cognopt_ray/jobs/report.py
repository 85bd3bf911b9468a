"""``python -m cognopt_ray.jobs.report [--markdown]``: the savings report of the cluster the job runs
on, from the engines' counters (see :mod:`cognopt_ray.system.report`). The Markdown table is
printed first with ``--markdown``; the JSON summary is always the last line.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cognopt_ray.jobs import run_job


def _work(markdown: bool) -> dict[str, Any]:
    from cognopt_ray import get_settings
    from cognopt_ray.system.report import system_report, to_markdown

    report = asyncio.run(system_report(get_settings()))
    if markdown:
        print(to_markdown(report), flush=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m cognopt_ray.jobs.report")
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    args = parser.parse_args()
    run_job("report", lambda: _work(args.markdown))
