"""Memory engine benchmark: one pooled copy across separate jobs vs each job's own ``ray.put``.

Measured side by side in one run (docs/benchmarks.md):

0. **Across jobs (the headline).** The baseline is what a plain Ray user does when separate jobs
   (or Serve apps) need the same model: ``JOBS`` (4) separate ``python`` driver processes joined
   to the same Ray each ``ray.put`` the same array (100 MB) and keep it alive (an object lives
   only as long as its owner's driver, so jobs cannot hand a ref to one another). Pooled: the
   same four drivers share one named allocation of the memory pool (the first allocates it and
   hands its id on; the others ``pool.get`` it). Object-store bytes in use are read from the
   raylet (``store_stats.object_store_bytes_used`` of Ray's memory-info reply, the figure
   ``ray memory --stats-only`` prints) once all four drivers hold their view, minus the value
   before they started. ``ratios.cross_job_saving_ratio`` = baseline bytes ÷ pooled bytes.

   ``ratios.pool_get_vs_ray_get`` = ``ray.get`` p50 ÷ ``pool.get`` p50 of the same 64 MiB array
   (both zero-copy; about 1 means the pool costs what a held ref costs).

1. **Private copies (secondary, ``results.vs_private_copies``).** ``ACTORS`` (4) actors on one node each need the same read-only float64 array
   (200 MB; 100 MB with ``--quick``). Baseline: each actor builds its own copy. Pooled: the
   driver allocates the array once in a pool, each actor reads it with ``pool.get`` and touches
   every page (the same four actors, after dropping their private copies). The USS (psutil ``memory_full_info().uss``) of the four actor processes is summed
   when idle (after imports, before the data) and when loaded.

   ``vs_private_copies`` = (baseline_loaded − baseline_idle)
   / (pooled_loaded − pooled_idle + object-store bytes of the allocation). A plain Ray user who
   ``ray.put``s once and passes the ref inside one job gets the same sharing, so this figure is
   about the number of readers by construction; it is kept only as the "vs nothing" figure.

   ``results.total_ratio`` = baseline_loaded / (pooled_loaded + object-store bytes): the same
   comparison without subtracting what the idle workers cost.

2. **Pool vs Redis.** p50 of ``pool.get`` of a 1 MiB and a 64 MiB numpy array (zero-copy
   read-only view) vs ``GET`` of the same bytes from a real ``redis-server`` plus
   ``numpy.frombuffer`` (secondary: a socket copy through a pure-Python parser is not the
   like-for-like alternative; ``ray.get`` is). ``results.pool_vs_redis_<size>`` = Redis p50 /
   pool p50.
   ``results.plain_get_p50_us`` is ``ray.get`` of a held reference, for reference, and
   ``results.pool_get_no_lease_p50_us_<size>`` is ``pool.get`` with ``client_lease_s=0`` (an
   actor round trip on every get).

3. **Shared cache.** p50 of ``SharedCache.get`` of a 64 KiB value on the Redis backend and on
   the in-cluster backend.
"""

from __future__ import annotations

import os
import shutil
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
from _harness import emit, free_port, parse_args, percentile

import cognopt_ray
from cognopt_ray.config import Settings

ACTORS = 4
JOBS = 4
MiB = 1024 * 1024
SERVICE = "bench_shared"
BASELINE = (
    "4 separate driver processes (jobs) on the same Ray, each ray.put-ing its own copy of the same "
    "100 MB array (plain Ray: an object cannot outlive its owner's job, so jobs cannot share one ref)"
)


def bench_settings(root: str) -> Settings:
    return Settings.load(
        storage_root=root,
        services={SERVICE: {"memory": {"pool_size": 512, "block_size": 1 * MiB}}},
        memory={"sweep_interval_s": 0},
    )


def store_bytes_used(gcs: str) -> int:
    """Object-store bytes in use on the cluster, as the raylet reports them (``ray memory --stats-only``)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    return int(get_memory_info_reply(get_state_from_address(gcs)).store_stats.object_store_bytes_used)


def as_driver(mode: str, gcs: str, root: str, n_bytes: int, allocation_id: str) -> None:
    """One separate job: join the Ray at ``gcs``, hold the array (own ``ray.put`` or the pooled
    allocation), print ``READY <allocation id>`` and keep it until stdin closes."""
    cognopt_ray.init(address=gcs, settings=bench_settings(root), log_to_driver=False)
    from cognopt_ray.memory import MemoryPools

    arr = np.full(n_bytes // 8, 1.5, dtype=np.float64)  # every job builds (loads) the same model
    ref = None
    if mode == "put":
        ref = ray.put(arr)
        del arr
        view = ray.get(ref)
    else:
        pools = MemoryPools.connect()
        if allocation_id == "-":
            allocation_id = pools.allocate(SERVICE, arr, memory_type="transient", pin=True)
        del arr
        view = pools.get(allocation_id)
    assert not view.flags.writeable
    float(view[::512].sum())  # touch every page
    print(f"READY {allocation_id}", flush=True)
    sys.stdin.read()
    del view, ref


def cross_job(gcs: str, root: str, n_bytes: int) -> dict[str, float]:
    """Object-store bytes for ``JOBS`` separate drivers: each its own ray.put vs one pooled allocation."""
    me = str(Path(__file__).resolve())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("RAY_ADDRESS", None)

    def start(mode: str, aid: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, me, "--as-driver", mode, gcs, root, str(n_bytes), aid],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ready(p: subprocess.Popen) -> str:
        for line in p.stdout:
            if line.startswith("READY "):
                return line.split()[1]
        raise RuntimeError(f"a driver exited before it was ready (status {p.wait()})")

    def release(procs: list[subprocess.Popen]) -> None:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(120)

    out: dict[str, float] = {}
    for mode in ("put", "pool"):
        time.sleep(1.0)  # the previous phase's objects are freed
        before = store_bytes_used(gcs)
        if mode == "put":
            procs = [start("put", "-") for _ in range(JOBS)]
            for p in procs:
                ready(p)
        else:
            first = start("pool", "-")
            aid = ready(first)
            procs = [first] + [start("pool", aid) for _ in range(JOBS - 1)]
            for p in procs[1:]:
                ready(p)
        time.sleep(0.5)
        out[f"{mode}_bytes"] = store_bytes_used(gcs) - before
        release(procs)
        if mode == "pool":
            from cognopt_ray.memory import MemoryPools

            MemoryPools.connect().deallocate(aid)
    return out


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
    if len(sys.argv) > 1 and sys.argv[1] == "--as-driver":
        as_driver(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
        return
    args = parse_args("memory", __doc__.splitlines()[0])
    quick = args.quick
    share_bytes = (100 if quick else 200) * 1000 * 1000
    root = tempfile.mkdtemp(prefix="cognopt-bench-memory-")
    proc, url = start_redis(root)
    try:
        settings = bench_settings(root)
        cognopt_ray.init(settings=settings, num_cpus=2, include_dashboard=False, log_to_driver=False)
        from cognopt_ray.memory import MemoryPools, SharedCache

        pools = MemoryPools.connect()
        gcs = ray.get_runtime_context().gcs_address
        jobs = cross_job(gcs, root, 100 * 1000 * 1000)
        share = sharing(share_bytes)
        base = share["baseline_loaded"] - share["baseline_idle"]
        pooled = share["pooled_loaded"] - share["pooled_idle"] + share["object_store_bytes"]
        memory_saving_ratio = base / pooled
        total_ratio = share["baseline_loaded"] / (share["pooled_loaded"] + share["object_store_bytes"])

        import redis

        r = redis.Redis.from_url(url)
        results: dict[str, float] = {
            "baseline": BASELINE,
            "cross_job_put_bytes": jobs["put_bytes"],
            "cross_job_pool_bytes": jobs["pool_bytes"],
            "cross_job_drivers": JOBS,
            "cross_job_array_bytes": 100 * 1000 * 1000,
            "vs_private_copies": memory_saving_ratio,
        }
        ratios: dict[str, float] = {"cross_job_saving_ratio": jobs["put_bytes"] / max(1, jobs["pool_bytes"])}
        rows = [
            (
                f"{JOBS} jobs, 100 MB",
                f"own ray.put {jobs['put_bytes'] / MiB:.0f} MiB",
                f"pooled {jobs['pool_bytes'] / MiB:.0f} MiB",
                "",
                ratios["cross_job_saving_ratio"],
            )
        ]
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
            results[f"pool_vs_redis_{label}"] = redis_p50 / pool_p50
            if label == "64mb":
                ratios["pool_get_vs_ray_get"] = plain_p50 / pool_p50
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
        rows.insert(
            1,
            (
                "private copies",
                f"baseline +{base / MiB:.0f} MiB",
                f"pooled +{pooled / MiB:.0f} MiB",
                "",
                memory_saving_ratio,
            ),
        )
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
