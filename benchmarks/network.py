"""Network engine benchmark: cache-hit latency, request coalescing, bandwidth on a Zipf trace.

A local aiohttp origin (own process, 127.0.0.1) answers ``/obj/<i>`` after ``--origin-latency-ms``
(default 5 ms, reported as ``results.origin_latency_ms``) with a JSON body of 5–200 KB (gzip when
asked, as real servers do) and one of five Cache-Control policies chosen by ``i % 5``:
``public, max-age=300``; ``max-age=60, stale-while-revalidate=30``; ``no-cache`` with an ETag
(every use revalidated: 304s); no freshness but ``Last-Modified`` 10 days ago (heuristic
freshness); ``no-store``. The origin counts requests and body bytes it sends (wire bytes).

Baseline: requests-cache (SQLite backend, ``cache_control=True`` so it follows the origin's
Cache-Control and revalidates with ETag / Last-Modified) — the HTTP cache a Python user would
pick — with one ``CachedSession`` shared by the same 8 threads that drive the engine, on the
same Zipf(s=1.1) trace. Measured, side by side in one run:

- ``ratios.origin_requests_vs_requests_cache`` = origin requests with the engine ÷ with
  requests-cache (≤ 1 means the engine never asks the origin more often).
- ``ratios.bandwidth_reduction_vs_requests_cache`` = 1 − origin wire bytes with the engine ÷ with
  requests-cache.
- ``ratios.hit_latency_speedup`` = p50 of plain aiohttp GETs to the origin ÷ p50 of cache hits
  through the engine's actor (the Python client with its near cache off, on the actor's node:
  every hit is one round trip to the actor over its Unix socket, ``results.actor_hit_p50_ms``).
  ``results.actor_hit_ray_call_p50_ms``: the same hits as Ray actor calls (the socket path off,
  as from another node); ``results.ray_actor_call_p50_ms``: a no-op call to a plain async Ray
  actor in the same run, what one actor call costs on this machine.
  ``results.near_hit_speedup``: the same with the client's
  near cache on (an in-process dict for repeated hits, ``results.hit_p50_ms``);
  ``results.requests_cache_hit_p50_ms``: a requests-cache hit (SQLite read) for comparison;
  ``results.rest_hit_p50_ms``: the hit through ``POST network/optimize-request`` on Serve.
- ``results.coalesced_origin_requests``: origin requests made when 100 concurrent requests for one
  cold URL go through the engine; ``results.plain_origin_requests``: the same with a plain aiohttp
  session.
- Secondary, against no cache at all: ``results.bandwidth_reduction_vs_no_cache`` = 1 − engine
  wire bytes ÷ plain aiohttp's wire bytes (gzip on both sides) on the same trace.
- ``results.hit_throughput_rps_redis`` / ``_in_cluster``: cache hits per second through the
  engine (32 concurrent async calls) with each backend, near and hot caches off so that every
  hit reads the backend; ``_default``: the same with the default settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import multiprocessing as mp
import random
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import emit, free_port, parse_args, percentile, serve_aiohttp_forever

BASELINE = (
    "requests-cache 1.x (SQLite backend, cache_control=True) shared by the same 8 threads on the same "
    "Zipf trace; latency against plain aiohttp GETs to the origin"
)
POLICIES = [
    "public, max-age=300",
    "max-age=60, stale-while-revalidate=30",
    "no-cache",
    None,  # heuristic: Last-Modified only
    "no-store",
]


def _body(i: int) -> bytes:
    rnd = random.Random(i)
    size = 5_000 + (i * 7919) % 195_000
    words = ["alpha", "beta", "gamma", "delta", "omega", "ray", "cache", "node", "task", "value"]
    items, n = [], 0
    while n < size:
        item = {
            "id": rnd.randrange(10**9),
            "name": rnd.choice(words) + str(rnd.randrange(1000)),
            "score": round(rnd.random(), 6),
            "tags": rnd.sample(words, 3),
        }
        items.append(item)
        n += 90
    return json.dumps({"object": i, "items": items}).encode()[:size].ljust(size, b" ")


def run_origin(port: int, ready: mp.synchronize.Event, latency_s: float) -> None:
    import gzip

    from aiohttp import web

    stats = {"requests": 0, "bytes": 0, "by_path": {}}
    cache: dict[int, tuple[bytes, bytes]] = {}
    last_modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 10 * 86400))

    async def obj(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        stats["requests"] += 1
        stats["by_path"][request.path] = stats["by_path"].get(request.path, 0) + 1
        await asyncio.sleep(latency_s)
        if i not in cache:
            raw = _body(i)
            cache[i] = (raw, gzip.compress(raw, 6))
        raw, gz = cache[i]
        etag = '"' + hashlib.sha1(raw).hexdigest()[:16] + '"'
        headers = {
            "ETag": etag,
            "Content-Type": "application/json",
            "Last-Modified": last_modified,
            "Date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()),
        }
        policy = POLICIES[i % len(POLICIES)]
        if policy:
            headers["Cache-Control"] = policy
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        body = raw
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            body = gz
            headers["Content-Encoding"] = "gzip"
        stats["bytes"] += len(body)
        return web.Response(body=body, headers=headers)

    async def get_stats(_: web.Request) -> web.Response:
        return web.json_response(stats)

    async def reset(_: web.Request) -> web.Response:
        stats.update(requests=0, bytes=0, by_path={})
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/obj/{i}", obj)
    app.router.add_get("/_stats", get_stats)
    app.router.add_post("/_reset", reset)
    serve_aiohttp_forever(app, port, ready)


async def _origin_stats(session, base: str, reset: bool = False) -> dict:
    if reset:
        async with session.post(f"{base}/_reset") as r:
            return await r.json()
    async with session.get(f"{base}/_stats") as r:
        return await r.json()


def zipf_trace(n_urls: int, n_requests: int, s: float = 1.1, seed: int = 7) -> list[int]:
    rnd = random.Random(seed)
    weights = [1 / (k**s) for k in range(1, n_urls + 1)]
    ids = list(range(n_urls))
    rnd.shuffle(ids)  # popularity independent of the policy (i % 5)
    return rnd.choices(ids, weights=weights, k=n_requests)


async def _run_trace(fetch, trace: list[int], base: str, concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await fetch(f"{base}/obj/{i}")

    await asyncio.gather(*(one(i) for i in trace))


def main() -> None:
    args = parse_args(
        "network",
        __doc__.splitlines()[0],
        extra=[("--origin-latency-ms", {"type": float, "default": 5.0, "help": "the origin's added latency (ms)"})],
    )
    quick = args.quick
    latency_s = args.origin_latency_ms / 1000.0
    import aiohttp
    import requests
    import requests_cache

    import cognopt_ray
    from cognopt_ray.config import Settings
    from cognopt_ray.network import NetworkEngine

    n_latency = 60 if quick else 300
    n_urls, n_requests = (150, 900) if quick else (400, 4000)
    tmp = Path(tempfile.mkdtemp(prefix="cognopt-netbench-"))
    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    origin = ctx.Process(target=run_origin, args=(port, ready, latency_s), daemon=True)
    origin.start()
    ready.wait(30)
    base = f"http://127.0.0.1:{port}"
    redis_proc = None
    redis_url = None
    if shutil.which("redis-server"):
        rport = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            cwd=tmp,
        )
        redis_url = f"redis://127.0.0.1:{rport}/0"
    settings = Settings.load(storage_root=str(tmp / "root"), network={"allowlist": ["127.0.0.1"]})
    cognopt_ray.init(settings=settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: dict = {"baseline": BASELINE, "origin_latency_ms": args.origin_latency_ms}
    rows = []
    try:
        engine = NetworkEngine.get_or_create(settings)

        async def phase_plain_latency() -> list[float]:
            out = []
            async with aiohttp.ClientSession() as s:
                for _ in range(n_latency):
                    t = time.perf_counter()
                    async with s.get(f"{base}/obj/0") as r:
                        await r.read()
                    out.append((time.perf_counter() - t) * 1000)
            return out

        plain_ms = asyncio.run(phase_plain_latency())
        url0 = f"{base}/obj/0"  # policy "public, max-age=300", 5 KB
        assert engine.request(url0).cache_status in ("MISS", "HIT")

        def hit_latencies_ms(client: NetworkEngine) -> list[float]:
            out = []
            for _ in range(n_latency):
                t = time.perf_counter()
                r = client.request(url0)
                out.append((time.perf_counter() - t) * 1000)
                assert r.cache_status == "HIT", r.cache_status
            return out

        hit_ms = hit_latencies_ms(engine)
        actor_ms = hit_latencies_ms(NetworkEngine(engine.actor))  # no near cache: every hit asks the actor
        ray_call_ms = hit_latencies_ms(NetworkEngine(engine.actor, local_socket=False))  # as from another node
        results["ray_actor_call_p50_ms"] = _ray_actor_call_p50(n_latency)
        results["actor_hit_ray_call_p50_ms"] = percentile(ray_call_ms, 50)
        results["origin_p50_ms"] = percentile(plain_ms, 50)
        results["hit_p50_ms"] = percentile(hit_ms, 50)
        results["hit_p99_ms"] = percentile(hit_ms, 99)
        results["actor_hit_p50_ms"] = percentile(actor_ms, 50)
        results["near_hit_speedup"] = results["origin_p50_ms"] / results["hit_p50_ms"]
        rows.append(("origin via plain aiohttp", "p50 ms", results["origin_p50_ms"]))
        rows.append(("cache hit via NetworkEngine (near cache + actor)", "p50 ms", results["hit_p50_ms"]))
        rows.append(("cache hit via the actor (near cache off)", "p50 ms", results["actor_hit_p50_ms"]))
        rows.append(("cache hit as a Ray actor call (socket off)", "p50 ms", results["actor_hit_ray_call_p50_ms"]))
        rows.append(("no-op call to a plain async Ray actor", "p50 ms", results["ray_actor_call_p50_ms"]))

        # -- coalescing: 100 concurrent requests for one cold URL -------------------------------------
        async def coalescing() -> tuple[int, int]:
            async with aiohttp.ClientSession() as s:
                await _origin_stats(s, base, reset=True)
                cold = f"{base}/obj/5"  # max-age=300
                await asyncio.gather(*(engine.request_async(cold) for _ in range(100)))
                engine_n = (await _origin_stats(s, base))["by_path"].get("/obj/5", 0)
                await _origin_stats(s, base, reset=True)
                conn = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=conn) as plain:

                    async def get() -> None:
                        async with plain.get(f"{base}/obj/10") as r:
                            await r.read()

                    await asyncio.gather(*(get() for _ in range(100)))
                plain_n = (await _origin_stats(s, base))["by_path"].get("/obj/10", 0)
                return engine_n, plain_n

        results["coalesced_origin_requests"], results["plain_origin_requests"] = asyncio.run(coalescing())
        rows.append(("100 concurrent cold requests, engine", "origin requests", results["coalesced_origin_requests"]))
        rows.append(
            ("100 concurrent cold requests, plain aiohttp", "origin requests", results["plain_origin_requests"])
        )

        # -- bandwidth on a Zipf trace -----------------------------------------------------------------
        trace = zipf_trace(n_urls, n_requests)
        trace_base = base
        offset = 1000  # fresh URLs for the trace: /obj/1000+i

        ids = [offset + i for i in trace]
        urls = [f"{trace_base}/obj/{i}" for i in ids]
        ctl = requests.Session()

        def stats(reset: bool = False) -> dict:
            if reset:
                return ctl.post(f"{base}/_reset").json()
            return ctl.get(f"{base}/_stats").json()

        def threaded(fetch) -> tuple[int, int, float]:
            """The trace through 8 threads; returns (origin requests, origin wire bytes, seconds)."""
            stats(reset=True)
            t = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(fetch, urls))
            took = time.perf_counter() - t
            time.sleep(0.5)  # background revalidations land in the count
            st = stats()
            return st["requests"], st["bytes"], took

        engine.purge(prefix=f"{base}/obj/")
        e_req, eb, es = threaded(lambda u: engine.request(u))
        rc_session = requests_cache.CachedSession(
            str(tmp / "requests-cache"), backend="sqlite", cache_control=True, expire_after=-1
        )
        rc_req, rcb, rcs = threaded(lambda u: rc_session.get(u, timeout=60).content)

        async def plain_trace() -> tuple[int, float]:
            async with aiohttp.ClientSession() as plain:

                async def via_plain(u: str) -> None:
                    async with plain.get(u) as r:
                        await r.read()

                t = time.perf_counter()
                await _run_trace(via_plain, ids, trace_base, 8)
                return time.perf_counter() - t

        stats(reset=True)
        ps = asyncio.run(plain_trace())
        st = stats()
        p_req, pb = st["requests"], st["bytes"]
        # a requests-cache hit, for the latency comparison
        _ = rc_session.get(url0).content
        rc_hit_ms = []
        for _ in range(n_latency):
            t = time.perf_counter()
            r = rc_session.get(url0)
            rc_hit_ms.append((time.perf_counter() - t) * 1000)
            assert r.from_cache, "requests-cache did not answer from its cache"
        results["requests_cache_hit_p50_ms"] = percentile(rc_hit_ms, 50)
        rc_session.close()
        results.update(
            trace_requests=n_requests,
            trace_urls=n_urls,
            origin_requests_engine=e_req,
            origin_requests_requests_cache=rc_req,
            origin_requests_plain=p_req,
            origin_bytes_engine=eb,
            origin_bytes_requests_cache=rcb,
            origin_bytes_plain=pb,
            trace_seconds_engine=es,
            trace_seconds_requests_cache=rcs,
            trace_seconds_plain=ps,
            bandwidth_reduction_vs_no_cache=1 - eb / pb,
        )
        m = engine.metrics()
        results["engine_cache_hit_rate"] = m["cache_hit_rate"]
        results["engine_bandwidth_saved_mb"] = m["bandwidth_saved_mb"]
        results["engine_compression_ratio"] = m["compression_ratio"]
        results["engine_connection_reuse_rate"] = m["connection_reuse_rate"]
        rows.append(("Zipf trace, engine", "origin requests / wire bytes", f"{e_req} / {eb}"))
        rows.append(("Zipf trace, requests-cache (SQLite)", "origin requests / wire bytes", f"{rc_req} / {rcb}"))
        rows.append(("Zipf trace, plain aiohttp (no cache)", "origin requests / wire bytes", f"{p_req} / {pb}"))

        # -- hit throughput per backend ------------------------------------------------------------------
        def throughput(eng: NetworkEngine, seconds: float) -> float:
            eng.request(url0)

            async def run() -> float:
                n = 0
                stop = time.perf_counter() + seconds

                async def worker() -> None:
                    nonlocal n
                    while time.perf_counter() < stop:
                        await eng.request_async(url0)
                        n += 1

                t = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(32)))
                return n / (time.perf_counter() - t)

            return asyncio.run(run())

        secs = 2.0 if quick else 5.0
        results["hit_throughput_rps_default"] = throughput(engine, secs)
        rows.append(("hit throughput, default (near + hot cache)", "req/s", results["hit_throughput_rps_default"]))
        # backends compared with the near and hot caches off: every hit reads the backend
        bare = {"allowlist": ["127.0.0.1"], "hot_cache_max_bytes": 0, "near_cache_ttl_s": 0}
        ic = Settings.load(storage_root=str(tmp / "root"), network={**bare, "cache_backend": "in_cluster"})
        eng_ic = NetworkEngine.get_or_create(
            ic, name="cognopt.network_bench_ic", cache_actor_name="cognopt.network_bench_ic_cache"
        )
        results["hit_throughput_rps_in_cluster"] = throughput(eng_ic, secs)
        rows.append(("hit throughput, in-cluster backend", "req/s", results["hit_throughput_rps_in_cluster"]))
        if redis_url:
            rs = Settings.load(storage_root=str(tmp / "root"), redis_url=redis_url, network=bare)
            eng_r = NetworkEngine.get_or_create(
                rs, name="cognopt.network_bench_redis", cache_actor_name="cognopt.network_bench_redis_cache"
            )
            results["hit_throughput_rps_redis"] = throughput(eng_r, secs)
            rows.append(("hit throughput, Redis backend", "req/s", results["hit_throughput_rps_redis"]))

        # -- the REST route --------------------------------------------------------------------------------
        results["rest_hit_p50_ms"] = _rest_hit_p50(settings, url0, n_latency)
        rows.append(("cache hit via POST network/optimize-request", "p50 ms", results["rest_hit_p50_ms"]))
    finally:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:  # noqa: BLE001
            pass
        cognopt_ray.shutdown()
        origin.kill()
        if redis_proc:
            redis_proc.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = {
        "hit_latency_speedup": results["origin_p50_ms"] / results["actor_hit_p50_ms"],
        "origin_requests_vs_requests_cache": results["origin_requests_engine"]
        / results["origin_requests_requests_cache"],
        "bandwidth_reduction_vs_requests_cache": 1
        - results["origin_bytes_engine"] / results["origin_bytes_requests_cache"],
    }
    emit("network", quick, results, ratios, rows, ("case", "measure", "value"))


def _ray_actor_call_p50(n: int) -> float:
    """p50 ms of a no-op method of a plain async Ray actor (what one actor call costs here)."""
    import ray

    @ray.remote(num_cpus=0)
    class Noop:
        async def noop(self) -> None:
            return None

    a = Noop.remote()
    ray.get(a.noop.remote())
    out = []
    for _ in range(n):
        t = time.perf_counter()
        ray.get(a.noop.remote())
        out.append((time.perf_counter() - t) * 1000)
    ray.kill(a)
    return percentile(out, 50)


def _rest_hit_p50(settings, url: str, n: int) -> float:
    import requests
    from ray import serve

    from cognopt_ray.security.keys import generate_key
    from serve_apps.optimization_api import app_builder

    key, rec = generate_key(["admin"], note="benchmark")
    port = free_port()
    overrides = settings.model_dump(mode="json", exclude={"admin_key", "encryption_key", "api_keys"})
    overrides["api_keys"] = [rec.model_dump(mode="json")]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_builder({"settings": overrides}), name="cognopt-bench", route_prefix="/")
    api = f"http://127.0.0.1:{port}/api/v0/optimization/network/optimize-request"
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {key}"
    s.post(api, json={"url": url}).raise_for_status()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = s.post(api, json={"request_id": "bench", "url": url, "cache_strategy": "medium_term"})
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200 and r.json()["cache_status"] == "HIT", r.text[:300]
    return percentile(out, 50)


if __name__ == "__main__":
    main()
