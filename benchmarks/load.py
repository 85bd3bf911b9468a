"""Load: 64 concurrent clients on a mix of routes of the Serve app, for 60 s (20 s with --quick).

The script starts its own local Ray (``cognopt_ray.init(num_cpus=2)``), the Serve app on
127.0.0.1 and a local aiohttp origin (own process) whose ``/obj/<i>`` answers are cacheable
(``max-age=300``). 64 aiohttp clients then loop over a fixed, weighted mix of routes, each
request checked (status and, for reads, the value written):

=====================  ======  ==========================================================
route                  weight  request
=====================  ======  ==========================================================
network_request        4       ``POST network/optimize-request`` one of 50 origin URLs
storage_store          2       ``POST storage/store`` one of the client's 8 item ids (overwrite)
storage_retrieve       3       ``GET storage/retrieve/<id>`` an id the client stored; value checked
memory_allocate        2       ``POST memory/allocate`` then, beyond 4 held, ``POST memory/deallocate``
memory_get             3       ``GET memory/allocations/<id>`` one the client holds; value checked
cpu_tasks              1       ``POST cpu/optimize-tasks`` one registered task, ``wait: true``; result checked
metrics                1       ``GET <engine>/metrics`` in turn (``system/metrics`` too when the app has it)
=====================  ======  ==========================================================

Measured:

- ``results.error_rate`` = failed requests ÷ all requests during the measured window (a request
  fails on a status other than the expected one, a wrong value, or a transport error).
- ``results.routes.<route>.p50_ms`` / ``p99_ms``: latency percentiles per route (client side,
  send to last byte), ``results.requests_per_s`` = all requests ÷ measured seconds.
- ``results.errors``: every failed request of the measured window (route, HTTP status or
  exception, seconds into the window, an excerpt of the body), at most 1,000 listed;
  ``results.errors_total`` counts them all.
- ``results.memory_growth`` = Σ resident memory (psutil RSS) of the engine actors and the Serve
  replica at the end ÷ the same sum right after the warm-up (the first 25 % of the run, at least
  5 s; 5 minutes with ``--soak``). Pids come from Ray's actor table (``ray._private.state.actors()``).
- ``--soak MINUTES`` runs the same mix for that long and samples the RSS sum every 30 s into
  ``results.rss_timeline``; ``results.memory_growth_second_half`` = end ÷ the sample half-way
  through the measured window, which is ~1.0 when memory has levelled off.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import emit, free_port, parse_args, percentile, start_json_origin

CLIENTS = 64
MIX = [
    ("network_request", 4),
    ("storage_store", 2),
    ("storage_retrieve", 3),
    ("memory_allocate", 2),
    ("memory_get", 3),
    ("cpu_tasks", 1),
    ("metrics", 1),
]
SERVICE = "load_svc"


def load_square(x: int) -> int:
    return x * x


def _pids() -> dict[str, int]:
    """Pids of the engine actors and the Serve replica, from Ray's actor table."""
    import ray

    out = {}
    for info in ray._private.state.actors().values():
        name, state, pid = info.get("Name") or "", info.get("State"), info.get("Pid")
        alive = state in ("ALIVE", 2)
        if alive and pid and (name.startswith("cognopt.") or name.startswith("SERVE_REPLICA::cognopt-load")):
            out[name] = pid
    return out


def _rss(pids: dict[str, int]) -> dict[str, int]:
    import psutil

    out = {}
    for name, pid in pids.items():
        try:
            out[name] = psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return out


class Failed(Exception):
    """One failed request: its HTTP status (None for a transport error) and what it answered."""

    def __init__(self, status: int | None, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status
        self.body = body[:300]


def _expect(ok: bool, status: int, body: object) -> None:
    if not ok:
        raise Failed(status, str(body))


class Client:
    def __init__(self, n: int, api: str, headers: dict, origin: str, metric_paths: list[str]) -> None:
        self.n = n
        self.api = api
        self.headers = headers
        self.origin = origin
        self.metric_paths = metric_paths
        self.items: dict[str, int] = {}
        self.allocs: list[tuple[str, int]] = []
        self.rand = random.Random(n)
        self.counter = 0

    async def one(self, session, route: str) -> None:
        r = self.rand
        self.counter += 1
        if route == "storage_retrieve" and not self.items:
            route = "storage_store"
        if route == "memory_get" and not self.allocs:
            route = "memory_allocate"
        if route == "network_request":
            body = {"url": f"{self.origin}/obj/{r.randrange(50)}", "service_name": SERVICE}
            async with session.post(f"{self.api}/network/optimize-request", json=body) as resp:
                doc = await resp.json(content_type=None)
                _expect(resp.status == 200 and doc["status"] == 200, resp.status, doc)
        elif route == "storage_store":
            item = f"load-{self.n}-{r.randrange(8)}"
            value = self.counter
            body = {
                "item_id": item,
                "data": {"v": value, "pad": "y" * 500},
                "service_name": SERVICE,
                "storage_tier": "warm",
            }
            async with session.post(f"{self.api}/storage/store", json=body) as resp:
                text = await resp.text()
                _expect(resp.status == 201, resp.status, text)
            self.items[item] = value
        elif route == "storage_retrieve":
            item = r.choice(sorted(self.items))
            async with session.get(f"{self.api}/storage/retrieve/{item}") as resp:
                doc = await resp.json(content_type=None)
                _expect(resp.status == 200 and doc.get("v") == self.items[item], resp.status, doc)
        elif route == "memory_allocate":
            value = self.counter
            body = {"service_name": SERVICE, "data": {"v": value, "pad": "z" * 500}}
            async with session.post(f"{self.api}/memory/allocate", json=body) as resp:
                doc = await resp.json(content_type=None)
                _expect(resp.status == 201, resp.status, doc)
            self.allocs.append((doc["allocation_id"], value))
            if len(self.allocs) > 4:
                aid, _ = self.allocs.pop(0)
                async with session.post(f"{self.api}/memory/deallocate", json={"allocation_id": aid}) as resp:
                    body = await resp.text()
                    _expect(resp.status == 200, resp.status, body)
        elif route == "memory_get":
            aid, value = r.choice(self.allocs)
            async with session.get(f"{self.api}/memory/allocations/{aid}") as resp:
                doc = await resp.json(content_type=None)
                _expect(resp.status == 200 and doc.get("v") == value, resp.status, doc)
        elif route == "cpu_tasks":
            x = r.randrange(1000)
            body = {
                "tasks": [{"name": "load_square", "args": [x], "num_cpus": 0.25}],
                "wait": True,
                "timeout_s": 60,
                "service_name": SERVICE,
            }
            async with session.post(f"{self.api}/cpu/optimize-tasks", json=body) as resp:
                doc = await resp.json(content_type=None)
                _expect(resp.status == 200 and doc["tasks"][0].get("result") == x * x, resp.status, doc)
        elif route == "metrics":
            path = self.metric_paths[self.counter % len(self.metric_paths)]
            async with session.get(f"{self.api}/{path}") as resp:
                body = await resp.text()
                _expect(resp.status == 200, resp.status, f"{path}: {body}")


MAX_LISTED_ERRORS = 1000


async def drive(
    api: str,
    key: str,
    origin: str,
    metric_paths: list[str],
    duration: float,
    warmup: float,
    on_warm,
    on_sample=None,
    sample_every_s: float = 30.0,
) -> dict:
    import aiohttp

    routes = [name for name, w in MIX for _ in range(w)]
    lat: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    failures: list[dict] = []
    t_start = time.perf_counter()
    t_measure = t_start + warmup
    t_end = t_measure + duration

    async def client(n: int) -> None:
        c = Client(n, api, {"Authorization": f"Bearer {key}"}, origin, metric_paths)
        timeout = aiohttp.ClientTimeout(total=120)
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(headers=c.headers, timeout=timeout, connector=conn) as s:
            while True:
                now = time.perf_counter()
                if now >= t_end:
                    return
                route = c.rand.choice(routes)
                t0 = time.perf_counter()
                failure = None
                try:
                    await c.one(s, route)
                except Failed as e:
                    failure = {"status": e.status, "body": e.body}
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    failure = {"status": None, "body": f"{type(e).__name__}: {str(e)[:280]}"}
                t1 = time.perf_counter()
                if t0 >= t_measure:
                    lat[route].append((t1 - t0) * 1000)
                    if failure is not None:
                        errors[route] += 1
                        if len(failures) < MAX_LISTED_ERRORS:
                            failures.append({"route": route, "at_s": round(t0 - t_measure, 2), **failure})

    async def watch() -> None:
        await asyncio.sleep(max(0.0, t_measure - time.perf_counter()))
        await asyncio.to_thread(on_warm)
        if on_sample is None:
            return
        while True:
            await asyncio.sleep(min(sample_every_s, max(0.0, t_end - time.perf_counter())))
            now = time.perf_counter()
            await asyncio.to_thread(on_sample, now - t_measure)
            if now >= t_end - 0.5:
                return

    await asyncio.gather(watch(), *(client(n) for n in range(CLIENTS)))
    return {"lat": lat, "errors": errors, "failures": failures, "seconds": t_end - t_measure}


def main() -> None:
    args = parse_args(
        "load",
        __doc__.splitlines()[0],
        [
            (
                "--soak",
                {
                    "type": float,
                    "default": None,
                    "metavar": "MINUTES",
                    "help": "run for MINUTES and sample resident memory every 30 s",
                },
            )
        ],
    )
    quick = args.quick
    soak = args.soak
    duration = soak * 60.0 if soak else (20.0 if quick else 60.0)
    warmup = 300.0 if soak else max(5.0, duration * 0.25)

    import requests
    from ray import serve

    import cognopt_ray
    from cognopt_ray import cpu
    from cognopt_ray.config import Settings
    from cognopt_ray.security.keys import generate_key
    from serve_apps.optimization_api import app_builder

    tmp = Path(tempfile.mkdtemp(prefix="cognopt-load-"))
    origin_proc, origin = start_json_origin(pad=2000)

    key, rec = generate_key(["admin"], note="load benchmark")
    overrides = {
        "storage_root": str(tmp / "root"),
        "api_keys": [rec.model_dump(mode="json")],
        "network": {"allowlist": ["127.0.0.1"]},
        "storage": {"progress": False, "min_free_bytes": 0},
        "services": {SERVICE: {"memory": {"pool_size": 1024, "block_size": 4096}}},
    }
    settings = Settings.load(**overrides)
    cognopt_ray.init(settings=settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    try:
        cpu.register_task("load_square", load_square)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app_builder({"settings": overrides}), name="cognopt-load", route_prefix="/")
        api = f"http://127.0.0.1:{port}/api/v0/optimization"
        schema = requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=60).json()
        metric_paths = [
            p
            for p in ("cpu/metrics", "memory/metrics", "storage/metrics", "network/metrics", "system/metrics")
            if f"/api/v0/optimization/{p}" in schema["paths"]
        ]
        h = {"Authorization": f"Bearer {key}"}
        for p in metric_paths:  # every engine up before the clock starts
            deadline = time.time() + 300
            while requests.get(f"{api}/{p}", headers=h, timeout=150).status_code != 200:
                assert time.time() < deadline, p
                time.sleep(1)
        rss_warm: dict[str, int] = {}
        timeline: list[dict] = []

        def on_warm() -> None:
            rss_warm.update(_rss(_pids()))

        def on_sample(t_s: float) -> None:
            rss = _rss(_pids())
            timeline.append(
                {
                    "t_s": round(t_s, 1),
                    "total_mb": round(sum(rss.values()) / 2**20, 1),
                    "mb": {n: round(v / 2**20, 1) for n, v in sorted(rss.items())},
                }
            )

        out = asyncio.run(drive(api, key, origin, metric_paths, duration, warmup, on_warm, on_sample if soak else None))
        rss_end = _rss(_pids())
    finally:
        serve.shutdown()
        cognopt_ray.shutdown(kill_engines=True)
        origin_proc.terminate()

    lat, errors = out["lat"], out["errors"]
    total = sum(len(v) for v in lat.values())
    failed = sum(errors.values())
    common = sorted(set(rss_warm) & set(rss_end))
    growth = sum(rss_end[n] for n in common) / max(1, sum(rss_warm[n] for n in common))
    routes = {
        r: {"requests": len(v), "errors": errors.get(r, 0), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
        for r, v in sorted(lat.items())
    }
    results = {
        "baseline": (
            "none: a load test of the Serve app (every answer checked); its figures are the error rate "
            "and the memory growth, not a ratio against an alternative"
        ),
        "clients": CLIENTS,
        "seconds": round(out["seconds"], 1),
        "requests": total,
        "requests_per_s": total / out["seconds"],
        "error_rate": failed / max(1, total),
        "memory_growth": growth,
        "errors_total": failed,
        "errors": out["failures"],
        "rss_mb_after_warmup": {n: round(rss_warm[n] / 2**20, 1) for n in common},
        "rss_mb_end": {n: round(rss_end[n] / 2**20, 1) for n in common},
        "routes": routes,
    }
    if soak:
        results["soak_minutes"] = soak
        results["rss_timeline"] = timeline
        if len(timeline) >= 2:
            mid = min(timeline, key=lambda x: abs(x["t_s"] - out["seconds"] / 2))
            results["memory_growth_second_half"] = timeline[-1]["total_mb"] / max(1e-9, mid["total_mb"])
    for f in out["failures"][:10]:
        print(f"failed: {f['route']} at {f['at_s']} s: {f['status']} {f['body'][:200]}")
    rows = [(r, d["requests"], d["errors"], d["p50_ms"], d["p99_ms"]) for r, d in routes.items()]
    rows.append(("all", total, failed, float("nan"), float("nan")))
    print(
        f"{total} requests in {out['seconds']:.0f} s = {results['requests_per_s']:.1f}/s, "
        f"error rate {results['error_rate']:.4f}, memory growth {growth:.3f} over {len(common)} processes"
    )
    emit("load", quick, results, {}, rows, ("route", "requests", "errors", "p50_ms", "p99_ms"))


if __name__ == "__main__":
    main()
