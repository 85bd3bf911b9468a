"""REST overhead: our API's routes against a plain Ray Serve FastAPI app, side by side in one run.

One run, one local Ray (``cognopt_ray.init(num_cpus=2)``), one Serve instance on 127.0.0.1 with
two applications, one local aiohttp origin (own process) whose ``/obj/<i>`` answers are cacheable
(``max-age=300``), and one load generator: 64 aiohttp clients (one connection each) in this
process, 10 s per route (5 s with ``--quick``) after 1 s of warm-up that is not counted. Each
answer is checked (status and content).

The plain app (the baseline a Ray Serve user would write) is a FastAPI ingress deployment with
``max_ongoing_requests=256`` and ``num_cpus=0``, like ours, with two routes answering ≈100 bytes
of JSON:

=====================  =====================================================================
route                  request
=====================  =====================================================================
plain_noop             ``GET /plain/noop``: no work
plain_actor            ``GET /plain/actor``: one call of a plain Ray actor (``max_concurrency=1``,
                       like the storage engine) that returns the ≈100-byte document
whoami                 ``GET auth/whoami``: key check, no engine call
network_hit            ``POST network/optimize-request`` of a URL already in the cache
storage_retrieve       ``GET storage/retrieve/<id>`` of a ≈100-byte JSON item
memory_get             ``GET memory/allocations/<id>`` of a ≈100-byte JSON allocation
cpu_metrics            ``GET cpu/metrics``
=====================  =====================================================================

Our routes are called with a key of scopes ``service:rest_svc`` and ``read`` (a service's own key),
the item and the allocation belong to that service.

Measured, per route: ``results.routes.<route>.requests_per_s`` = answered requests ÷ measured
seconds, ``p50_ms`` / ``p99_ms`` (client side, send to last byte), ``errors``. Ratios:

- ``rest_noop_vs_serve`` = whoami req/s ÷ plain_noop req/s
- ``rest_hit_vs_serve_actor`` = network_hit req/s ÷ plain_actor req/s
- ``rest_retrieve_vs_serve_actor`` = storage_retrieve req/s ÷ plain_actor req/s

``--profile DIR`` also samples the API replica with py-spy (``pip install py-spy``) during each of
the routes, with their engine actor and the Serve proxy, into DIR/<route>.<actor>.txt (collapsed stacks, for flame graphs or ``sort | uniq -c``);
the sampling costs the replica some CPU, so figures of a profiled run are not comparable.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import emit, free_port, parse_args, percentile, start_json_origin

CLIENTS = 64
SERVICE = "rest_svc"
WARMUP_S = 1.0
DOC = {"ok": True, "service": "plain", "pad": "x" * 60}  # ≈100 bytes of JSON, as our small answers
ROUTES = ["plain_noop", "plain_actor", "whoami", "network_hit", "storage_retrieve", "memory_get", "cpu_metrics"]
BASELINE = (
    "a plain Ray Serve FastAPI deployment in the same Serve instance (max_ongoing_requests=256, "
    "num_cpus=0): a no-op route, and a route making one call of a plain Ray actor "
    "(max_concurrency=1), both answering ~100 bytes of JSON; same 64 aiohttp clients, same run"
)


def plain_app(actor_name: str):
    """The baseline: what a Ray Serve user writes for a no-op and a one-actor-call route."""
    import ray
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="Plain", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    @serve.ingress(api)
    class Plain:
        def __init__(self, name: str) -> None:
            self.actor = ray.get_actor(name)

        @api.get("/noop")
        async def noop(self) -> dict:
            return DOC

        @api.get("/actor")
        async def actor(self) -> dict:
            return await self.actor.ping.remote()

    return Plain.bind(actor_name)


class Echo:
    def ping(self) -> dict:
        return DOC


#: Whom ``--profile`` samples during each route, by actor name prefix (the proxy too).
PROFILED = {
    "plain_noop": ["SERVE_REPLICA::plain"],
    "plain_actor": ["SERVE_REPLICA::plain", "rest-bench-echo"],
    "whoami": ["SERVE_REPLICA::cognopt-rest"],
    "network_hit": ["SERVE_REPLICA::cognopt-rest", "cognopt.network"],
    "storage_retrieve": ["SERVE_REPLICA::cognopt-rest", "cognopt.storage"],
    "memory_get": ["SERVE_REPLICA::cognopt-rest", "cognopt.memory"],
    "cpu_metrics": ["SERVE_REPLICA::cognopt-rest", "cognopt.cpu"],
}


def _profile(folder: str, route: str, duration: float) -> list[subprocess.Popen]:
    """py-spy of the route's replica, engine actor and the Serve proxy for the measured window."""
    import ray

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    Path(folder).mkdir(parents=True, exist_ok=True)
    spies = []
    for a in ray._private.state.actors().values():
        name = a.get("Name") or ""
        if a.get("State") not in ("ALIVE", 2) or not a.get("Pid"):
            continue
        if name.startswith("SERVE_PROXY") or any(name.startswith(p) for p in PROFILED[route]):
            out = str(Path(folder) / f"{route}.{name.split('#')[0].replace('::', '-')}.txt")
            cmd = [
                exe,
                "record",
                "-p",
                str(a["Pid"]),
                "-d",
                str(int(duration + WARMUP_S)),
                "-f",
                "raw",
                "--nonblocking",
                "-o",
                out,
            ]
            spies.append(subprocess.Popen([*cmd, "-r", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return spies


class Route:
    """One route: method, URL, body, and the check of its answer."""

    def __init__(self, method: str, url: str, check, json_body=None, headers=None) -> None:
        self.method, self.url, self.check, self.json_body, self.headers = method, url, check, json_body, headers


async def measure(route: Route, duration: float) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    first_error: str | None = None
    t_measure = time.perf_counter() + WARMUP_S
    t_end = t_measure + duration

    async def client() -> None:
        nonlocal errors, first_error
        timeout = aiohttp.ClientTimeout(total=60)
        conn = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(headers=route.headers, timeout=timeout, connector=conn) as s:
            while True:
                t0 = time.perf_counter()
                if t0 >= t_end:
                    return
                ok, why = False, ""
                try:
                    async with s.request(route.method, route.url, json=route.json_body) as resp:
                        doc = await resp.json(content_type=None)
                        ok = resp.status == 200 and route.check(doc)
                        why = f"HTTP {resp.status}: {str(doc)[:200]}"
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    why = f"{type(e).__name__}: {str(e)[:200]}"
                t1 = time.perf_counter()
                if t0 >= t_measure and t1 <= t_end:
                    lat.append((t1 - t0) * 1000)
                    if not ok:
                        errors += 1
                        first_error = first_error or why

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return {
        "requests": len(lat),
        "requests_per_s": len(lat) / duration,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "errors": errors,
        "first_error": first_error,
    }


def main() -> None:
    args = parse_args(
        "rest",
        __doc__.splitlines()[0],
        [("--profile", {"default": None, "metavar": "DIR", "help": "py-spy the API replica into DIR"})],
    )
    quick = args.quick
    duration = 5.0 if quick else 10.0

    import ray
    import requests
    from ray import serve

    import cognopt_ray
    from cognopt_ray.config import Settings
    from cognopt_ray.security.keys import generate_key
    from serve_apps.optimization_api import app_builder

    tmp = Path(tempfile.mkdtemp(prefix="cognopt-rest-"))
    origin_proc, origin = start_json_origin(pad=60)

    key, rec = generate_key([f"service:{SERVICE}", "read"], note="rest benchmark")
    overrides = {
        "storage_root": str(tmp / "root"),
        "api_keys": [rec.model_dump(mode="json")],
        "network": {"allowlist": ["127.0.0.1"]},
        "storage": {"progress": False, "min_free_bytes": 0},
        "services": {SERVICE: {"memory": {"pool_size": 64, "block_size": 4096}}},
    }
    settings = Settings.load(**overrides)
    cognopt_ray.init(settings=settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    results: dict = {"clients": CLIENTS, "seconds_per_route": duration, "baseline": BASELINE, "routes": {}}
    try:
        echo = ray.remote(num_cpus=0, max_concurrency=1)(Echo).options(name="rest-bench-echo").remote()
        ray.get(echo.ping.remote())
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(plain_app("rest-bench-echo"), name="plain", route_prefix="/plain")
        serve.run(app_builder({"settings": overrides}), name="cognopt-rest", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        api = f"{base}/api/v0/optimization"
        h = {"Authorization": f"Bearer {key}"}
        for p in ("cpu/metrics", "memory/metrics", "storage/metrics", "network/metrics"):  # engines up first
            deadline = time.time() + 300
            while requests.get(f"{api}/{p}", headers=h, timeout=150).status_code != 200:
                assert time.time() < deadline, p
                time.sleep(1)
        item = {"v": 7, "pad": "y" * 80}
        r = requests.post(
            f"{api}/storage/store", json={"item_id": "rest-item", "data": item, "service_name": SERVICE}, headers=h
        )
        assert r.status_code == 201, r.text
        r = requests.post(f"{api}/memory/allocate", json={"service_name": SERVICE, "data": item}, headers=h)
        assert r.status_code == 201, r.text
        alloc = r.json()["allocation_id"]
        net_body = {"url": f"{origin}/obj/1", "service_name": SERVICE}
        r = requests.post(f"{api}/network/optimize-request", json=net_body, headers=h)
        assert r.status_code == 200 and r.json()["status"] == 200, r.text
        r = requests.post(f"{api}/network/optimize-request", json=net_body, headers=h)
        assert r.json()["cache_status"] == "HIT", r.text

        routes = {
            "plain_noop": Route("GET", f"{base}/plain/noop", lambda d: d == DOC),
            "plain_actor": Route("GET", f"{base}/plain/actor", lambda d: d == DOC),
            "whoami": Route("GET", f"{api}/auth/whoami", lambda d: d["key_id"] == rec.id, headers=h),
            "network_hit": Route(
                "POST",
                f"{api}/network/optimize-request",
                lambda d: d["status"] == 200 and d["cache_status"] == "HIT",
                json_body=net_body,
                headers=h,
            ),
            "storage_retrieve": Route("GET", f"{api}/storage/retrieve/rest-item", lambda d: d == item, headers=h),
            "memory_get": Route("GET", f"{api}/memory/allocations/{alloc}", lambda d: d == item, headers=h),
            "cpu_metrics": Route("GET", f"{api}/cpu/metrics", lambda d: isinstance(d, dict), headers=h),
        }
        for name in ROUTES:
            spies = _profile(args.profile, name, duration) if args.profile else []
            results["routes"][name] = asyncio.run(measure(routes[name], duration))
            for spy in spies:
                spy.wait(60)
            d = results["routes"][name]
            print(f"{name}: {d['requests_per_s']:.1f} req/s, p50 {d['p50_ms']:.1f} ms, errors {d['errors']}")
    finally:
        serve.shutdown()
        cognopt_ray.shutdown(kill_engines=True)
        origin_proc.terminate()

    rps = {n: d["requests_per_s"] for n, d in results["routes"].items()}
    ratios = {
        "rest_noop_vs_serve": rps["whoami"] / rps["plain_noop"],
        "rest_hit_vs_serve_actor": rps["network_hit"] / rps["plain_actor"],
        "rest_retrieve_vs_serve_actor": rps["storage_retrieve"] / rps["plain_actor"],
    }
    results["errors_total"] = sum(d["errors"] for d in results["routes"].values())
    rows = [
        (n, d["requests"], d["requests_per_s"], d["p50_ms"], d["p99_ms"], d["errors"])
        for n, d in results["routes"].items()
    ]
    emit("rest", quick, results, ratios, rows, ("route", "requests", "req/s", "p50_ms", "p99_ms", "errors"))


if __name__ == "__main__":
    main()
