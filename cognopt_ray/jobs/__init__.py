"""Entry points for ``ray job submit``: ``python -m cognopt_ray.jobs.<name>``.

Each job joins the cluster with ``init(address="auto")`` (``RAY_ADDRESS`` is set by Ray for
submitted jobs), does its work, prints a JSON summary as the last line of stdout and exits 0; on
failure it prints the reason to stderr, a JSON summary with ``"ok": false`` and exits 1.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def run_job(name: str, work: Callable[[], dict[str, Any]], *, address: str = "auto") -> None:
    """Run ``work`` inside the cluster and exit with its JSON summary (never returns)."""
    import cognopt_ray

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.time()
    try:
        cognopt_ray.init(address=address)
        result = work()
        summary = {"job": name, "ok": True, "seconds": round(time.time() - started, 3), "result": result}
        code = 0
    except Exception as e:  # noqa: BLE001 - the job reports every failure and exits non-zero
        traceback.print_exc(file=sys.stderr)
        print(f"{name} failed: {type(e).__name__}: {e}", file=sys.stderr)
        summary = {
            "job": name,
            "ok": False,
            "seconds": round(time.time() - started, 3),
            "error": f"{type(e).__name__}: {e}",
        }
        code = 1
    sys.stdout.flush()
    print(json.dumps(summary, default=str), flush=True)
    sys.exit(code)
