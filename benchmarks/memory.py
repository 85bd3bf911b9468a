"""Memory engine benchmark: one pooled copy vs N private copies, pool get vs Redis, shared cache.

Measured side by side in one run (docs/benchmarks.md):

1. **Sharing.** ``ACTORS`` (4) actors on one node each need the same read-only float64 array
   (200 MB; 100 MB with ``--quick``). Baseline: each actor builds its own copy. Pooled: the
   driver allocates the array once in a pool, each actor reads it with ``pool.get`` and touches
   every page (the same four actors, after dropping their private copies). The USS (psutil ``memory_full_info().uss``) of the four actor processes is summed
   when idle (after imports, before the data) and when loaded.

   ``memory_saving_ratio`` = (baseline_loaded − baseline_idle)
   / (pooled_loaded − pooled_idle + object-store bytes of the allocation).

   ``results.total_ratio`` = baseline_loaded / (pooled_loaded + object-store bytes): the same
   comparison without subtracting what the idle workers cost.

2. **Pool vs Redis.** p50 of ``pool.get`` of a 1 MiB and a 64 MiB numpy array (zero-copy
   read-only view) vs ``GET`` of the same bytes from a real ``redis-server`` plus
   ``numpy.frombuffer``. ``pool_vs_redis_<size>`` = Redis p50 / pool p50 (higher is better).
   ``results.plain_get_p50_us`` is ``ray.get`` of a held reference, for reference, and
   ``results.pool_get_no_lease_p50_us_<size>`` is ``pool.get`` with ``client_lease_s=0`` (an
   actor round trip on every get).

3. **Shared cache.** p50 of ``SharedCache.get`` of a 64 KiB value on the Redis backend and on
   the in-cluster backend.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psutil
import ray
from _harness import emit, parse_args, percentile

import cognopt_ray
from cognopt_ray.config import Settings

ACTORS = 4
MiB = 1024 * 1024
SERVICE = "bench_shared"


@ray.remote(num_cpus=0)
class Reader:
    """A worker that needs the array: builds its own copy or reads the pooled one."""

    def __init__(self) -> None:
        from cognopt_ray.memory import MemoryPools

        self.pools = MemoryPools.connect()
        self.data = None
        _ = np.ones(8).sum()

    def pid(self) -> int:
        return os.getpid()

    def build(self, n: int) -> float:
        self.data = np.full(n, 1.5, dtype=np.float64)  # a private copy: every page written
        return float(self.data[::512].sum())

    def load(self, allocation_id: str) -> float:
        self.data = self.pools.get(allocation_id)  # zero-copy, read-only view on the object store
        assert not self.data.flags.writeable
        return float(self.data[::512].sum())  # touch every 4 KiB page

    def drop(self) -> None:
        self.data = None


def uss(pids: list[int]) -> int:
    return sum(psutil.Process(p).memory_full_info().uss for p in pids)


def settle() -> None:
    time.sleep(0.5)


def sharing(n_bytes: int) -> dict[str, float]:
    """The same four actors hold a private copy each, drop it, then read the pooled copy."""
    from cognopt_ray.memory import MemoryPools

    n = n_bytes // 8
    out: dict[str, float] = {}
    actors = [Reader.remote() for _ in range(ACTORS)]
    pids = ray.get([a.pid.remote() for a in actors])
    pools = MemoryPools.connect()
    settle()
    # Baseline: each actor builds its own copy.
    out["baseline_idle"] = uss(pids)
    ray.get([a.build.remote(n) for a in actors])
    settle()
    out["baseline_loaded"] = uss(pids)
    ray.get([a.drop.remote() for a in actors])  # large numpy buffers are unmapped on free
    settle()
    # Pooled: one allocation, every actor reads it.
    out["pooled_idle"] = uss(pids)
    info = pools.allocate_info(SERVICE, np.full(n, 1.5, dtype=np.float64), memory_type="transient", pin=True)
    ray.get([a.load.remote(info["allocation_id"]) for a in actors])
    settle()
    out["pooled_loaded"] = uss(pids)
    out["object_store_bytes"] = info["nbytes"]
    for a in actors:
        ray.kill(a)
    pools.deallocate(info["allocation_id"])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except Exception:  # noqa: BLE001
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def p50_us(fn, n: int) -> float:
    fn()  # warm
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e6)
    return percentile(ts, 50)


def main() -> None:
    args = parse_args("memory", __doc__.splitlines()[0])
    quick = args.quick
    share_bytes = (100 if quick else 200) * 1000 * 1000
    root = tempfile.mkdtemp(prefix="cognopt-bench-memory-")
    proc, url = start_redis(root)
    try:
        settings = Settings.load(
            storage_root=root,
            services={SERVICE: {"memory": {"pool_size": 512, "block_size": 1 * MiB}}},
            memory={"sweep_interval_s": 0},
        )
        cognopt_ray.init(settings=settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
        from cognopt_ray.memory import MemoryPools, SharedCache

        pools = MemoryPools.connect()
        share = sharing(share_bytes)
        base = share["baseline_loaded"] - share["baseline_idle"]
        pooled = share["pooled_loaded"] - share["pooled_idle"] + share["object_store_bytes"]
        memory_saving_ratio = base / pooled
        total_ratio = share["baseline_loaded"] / (share["pooled_loaded"] + share["object_store_bytes"])

        import redis

        r = redis.Redis.from_url(url)
        results: dict[str, float] = {}
        ratios: dict[str, float] = {"memory_saving_ratio": memory_saving_ratio}
        rows = []
        for label, size, reps in (("1mb", 1 * MiB, 50 if quick else 300), ("64mb", 64 * MiB, 7 if quick else 30)):
            arr = np.random.default_rng(0).random(size // 8)
            aid = pools.allocate(SERVICE, arr, pin=True)
            r.set(f"bench:{label}", arr.tobytes())
            got = pools.get(aid)
            assert not got.flags.writeable and np.array_equal(got, arr)
            del got
            pool_p50 = p50_us(lambda aid=aid: pools.get(aid), reps)
            no_lease = MemoryPools(pools.actor, lease_s=0)
            results[f"pool_get_no_lease_p50_us_{label}"] = p50_us(
                lambda aid=aid, no_lease=no_lease: no_lease.get(aid), max(10, reps // 3)
            )
            redis_p50 = p50_us(lambda label=label: np.frombuffer(r.get(f"bench:{label}"), dtype=np.float64), reps)
            ref = ray.put(arr)
            plain_p50 = p50_us(lambda ref=ref: ray.get(ref), reps)
            del ref
            pools.deallocate(aid)
            r.delete(f"bench:{label}")
            results[f"pool_get_p50_us_{label}"] = pool_p50
            results[f"redis_get_p50_us_{label}"] = redis_p50
            if label == "1mb":
                results["plain_get_p50_us"] = plain_p50
            results[f"plain_get_p50_us_{label}"] = plain_p50
            ratios[f"pool_vs_redis_{label}"] = redis_p50 / pool_p50
            rows.append((label, pool_p50, redis_p50, plain_p50, redis_p50 / pool_p50))

        value = os.urandom(64 * 1024)
        caches = {
            "redis": SharedCache(settings.model_copy(update={"redis_url": url})),
            "in_cluster": SharedCache(settings.model_copy(update={"redis_url": None})),
        }
        for name, cache in caches.items():
            assert cache.set("bench:value", value, ttl_s=300) == name
            results[f"cache_get_p50_us_{name}"] = p50_us(lambda c=cache: c.get("bench:value"), 100 if quick else 400)
            cache.delete("bench:value")

        results.update(
            {
                "array_bytes": share_bytes,
                "actors": ACTORS,
                "baseline_idle_uss_mib": share["baseline_idle"] / MiB,
                "baseline_loaded_uss_mib": share["baseline_loaded"] / MiB,
                "pooled_idle_uss_mib": share["pooled_idle"] / MiB,
                "pooled_loaded_uss_mib": share["pooled_loaded"] / MiB,
                "object_store_mib": share["object_store_bytes"] / MiB,
                "total_ratio": total_ratio,
            }
        )
        rows = [
            ("sharing", f"baseline +{base / MiB:.0f} MiB", f"pooled +{pooled / MiB:.0f} MiB", "", memory_saving_ratio)
        ] + rows
        emit(
            "memory",
            quick,
            results,
            ratios,
            rows=rows,
            header=("case", "pool p50 µs / baseline", "redis p50 µs / pooled", "ray.get p50 µs", "ratio"),
        )
    finally:
        proc.terminate()
        cognopt_ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
