"""Network engine benchmark: cache-hit latency, request coalescing, bandwidth on a Zipf trace.

A local aiohttp origin (own process, 127.0.0.1) answers ``/obj/<i>`` after 20 ms with a JSON body
of 5–200 KB (gzip when asked, as real servers do) and one of five Cache-Control policies chosen
by ``i % 5``: ``public, max-age=300``; ``max-age=60, stale-while-revalidate=30``; ``no-cache``
with an ETag (every use revalidated: 304s); no freshness but ``Last-Modified`` 10 days ago
(heuristic freshness); ``no-store``. The origin counts requests and body bytes it sends.

Measured, side by side in one run:

- ``ratios.hit_latency_speedup`` = p50 latency of plain aiohttp GETs to the origin ÷ p50 latency
  of cache hits through the engine's Python client (``NetworkEngine.request``: the path a task or
  notebook uses; repeated hits within ``near_cache_ttl_s`` come from its near cache, the others
  are one actor call). ``results.actor_hit_p50_ms`` / ``actor_hit_speedup``: the same with the
  near cache off, so every hit is an actor call. ``results.rest_hit_p50_ms``: the same hit through
  ``POST network/optimize-request`` on the Serve app.
- ``results.coalesced_origin_requests``: origin requests made when 100 concurrent requests for one
  cold URL go through the engine; ``results.plain_origin_requests``: the same with a plain aiohttp
  session.
- ``ratios.bandwidth_reduction`` = 1 − origin body bytes with the engine ÷ origin body bytes with
  plain aiohttp, for the same Zipf(s=1.1) trace of URLs, same concurrency.
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
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import emit, parse_args, percentile, serve_aiohttp_forever

LATENCY_S = 0.020
POLICIES = [
    "public, max-age=300",
    "max-age=60, stale-while-revalidate=30",
    "no-cache",
    None,  # heuristic: Last-Modified only
    "no-store",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def run_origin(port: int, ready: mp.synchronize.Event) -> None:
    import gzip

    from aiohttp import web

    stats = {"requests": 0, "bytes": 0, "by_path": {}}
    cache: dict[int, tuple[bytes, bytes]] = {}
    last_modified = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 10 * 86400))

    async def obj(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        stats["requests"] += 1
        stats["by_path"][request.path] = stats["by_path"].get(request.path, 0) + 1
        await asyncio.sleep(LATENCY_S)
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
    args = parse_args("network", __doc__.splitlines()[0])
    quick = args.quick
    import aiohttp

    import cognopt_ray
    from cognopt_ray.config import Settings
    from cognopt_ray.network import NetworkEngine

    n_latency = 60 if quick else 300
    n_urls, n_requests = (150, 900) if quick else (400, 4000)
    tmp = Path(tempfile.mkdtemp(prefix="cognopt-netbench-"))
    port = _free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    origin = ctx.Process(target=run_origin, args=(port, ready), daemon=True)
    origin.start()
    ready.wait(30)
    base = f"http://127.0.0.1:{port}"
    redis_proc = None
    redis_url = None
    if shutil.which("redis-server"):
        rport = _free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            cwd=tmp,
        )
        redis_url = f"redis://127.0.0.1:{rport}/0"
    settings = Settings.load(storage_root=str(tmp / "root"), network={"allowlist": ["127.0.0.1"]})
    cognopt_ray.init(settings=settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: dict = {}
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
        actor_ms = hit_latencies_ms(NetworkEngine(engine.actor))  # no near cache: every hit is an actor call
        results["origin_p50_ms"] = percentile(plain_ms, 50)
        results["hit_p50_ms"] = percentile(hit_ms, 50)
        results["hit_p99_ms"] = percentile(hit_ms, 99)
        results["actor_hit_p50_ms"] = percentile(actor_ms, 50)
        results["actor_hit_speedup"] = results["origin_p50_ms"] / results["actor_hit_p50_ms"]
        rows.append(("origin via plain aiohttp", "p50 ms", results["origin_p50_ms"]))
        rows.append(("cache hit via NetworkEngine (near cache + actor)", "p50 ms", results["hit_p50_ms"]))
        rows.append(("cache hit via the actor (near cache off)", "p50 ms", results["actor_hit_p50_ms"]))

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

        async def bandwidth() -> tuple[int, int, float, float]:
            ids = [offset + i for i in trace]
            async with aiohttp.ClientSession() as s:
                await _origin_stats(s, base, reset=True)
                engine.purge(prefix=f"{base}/obj/")
                t = time.perf_counter()

                async def via_engine(u: str) -> None:
                    await engine.request_async(u)

                await _run_trace(via_engine, ids, trace_base, 8)
                engine_s = time.perf_counter() - t
                await asyncio.sleep(0.5)  # background revalidations land in the count
                engine_bytes = (await _origin_stats(s, base))["bytes"]
                await _origin_stats(s, base, reset=True)
                async with aiohttp.ClientSession() as plain:

                    async def via_plain(u: str) -> None:
                        async with plain.get(u) as r:
                            await r.read()

                    t = time.perf_counter()
                    await _run_trace(via_plain, ids, trace_base, 8)
                    plain_s = time.perf_counter() - t
                plain_bytes = (await _origin_stats(s, base))["bytes"]
            return engine_bytes, plain_bytes, engine_s, plain_s

        eb, pb, es, ps = asyncio.run(bandwidth())
        results.update(
            trace_requests=n_requests,
            trace_urls=n_urls,
            origin_bytes_engine=eb,
            origin_bytes_plain=pb,
            trace_seconds_engine=es,
            trace_seconds_plain=ps,
        )
        m = engine.metrics()
        results["engine_cache_hit_rate"] = m["cache_hit_rate"]
        results["engine_bandwidth_saved_mb"] = m["bandwidth_saved_mb"]
        results["engine_compression_ratio"] = m["compression_ratio"]
        results["engine_connection_reuse_rate"] = m["connection_reuse_rate"]
        rows.append(("Zipf trace, engine", "origin bytes", eb))
        rows.append(("Zipf trace, plain aiohttp", "origin bytes", pb))

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
        "hit_latency_speedup": results["origin_p50_ms"] / results["hit_p50_ms"],
        "bandwidth_reduction": 1 - results["origin_bytes_engine"] / results["origin_bytes_plain"],
    }
    emit("network", quick, results, ratios, rows, ("case", "measure", "value"))


def _rest_hit_p50(settings, url: str, n: int) -> float:
    import requests
    from ray import serve

    from cognopt_ray.security.keys import generate_key
    from serve_apps.optimization_api import app_builder

    key, rec = generate_key(["admin"], note="benchmark")
    port = _free_port()
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
