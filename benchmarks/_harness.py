"""What every benchmark shares: arguments, percentiles, the table and the closing JSON line.

Each script ends with :func:`emit`, which prints a readable table and then, as the very last line
of stdout, ``{"benchmark", "quick", "results", "ratios"}`` (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_json_origin(port: int, ready: Any, pad: int = 2000) -> None:
    """A local origin (child process target): ``GET /obj/{i}`` answers ``{"obj": i, "pad": "x"*pad}``,
    cacheable for 300 s."""
    from aiohttp import web

    async def obj(request):
        i = request.match_info["i"]
        return web.Response(
            text=f'{{"obj": {i}, "pad": "{"x" * pad}"}}',
            content_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    app = web.Application()
    app.router.add_get("/obj/{i}", obj)
    serve_aiohttp_forever(app, port, ready)


def start_json_origin(pad: int) -> tuple[Any, str]:
    """:func:`run_json_origin` in a spawned child process; returns the process and its base URL once it listens."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    port = free_port()
    proc = ctx.Process(target=run_json_origin, args=(port, ready, pad), daemon=True)
    proc.start()
    ready.wait(30)
    return proc, f"http://127.0.0.1:{port}"


def serve_aiohttp_forever(app: Any, port: int, ready: Any) -> None:
    """Serve the aiohttp ``app`` on 127.0.0.1:``port`` until the process ends; ``ready.set()`` once
    it listens (run it in a thread or a child process as a benchmark's local origin)."""
    import asyncio

    from aiohttp import web

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def parse_args(name: str, description: str, extra: Iterable[tuple[str, dict]] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, under 90 s on 2 cores")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args()


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    k = (len(data) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["s"]`` holds the elapsed seconds."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def emit(
    name: str,
    quick: bool,
    results: dict[str, Any],
    ratios: dict[str, float],
    rows: Sequence[Sequence[Any]] = (),
    header: Sequence[str] = (),
) -> None:
    """Print the table (if any), the ratios, and the JSON line last."""
    if rows:
        print(table(rows, header))
        print()
    if ratios:
        print(table([(k, v) for k, v in ratios.items()], ("ratio", "value")))
    sys.stdout.flush()
    print(json.dumps({"benchmark": name, "quick": quick, "results": results, "ratios": ratios}, default=float))
