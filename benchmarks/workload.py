"""The reference workload: the spec's services, optimisations off and then on, side by side.

Four services run against one local Ray with the cognopt engines, first the plain way (what a Ray
user writes without cognopt) and then through the engines; every figure below is measured in
this run, and the Before/After table is built from those measurements
(:mod:`cognopt_ray.system.report`).

- ``ai_models`` (RAM): a model of ``--model-mb`` MB (float32 array) read by ``--readers``
  inference actors. Before: each actor loads its own copy from a file (``np.load``). After: the
  model is allocated once in the ``ai_models`` memory pool and each actor reads it zero-copy.
  Each actor runs an inference pass that touches every page. RAM = Σ over the actors of their
  USS growth (psutil ``memory_full_info().uss`` after the pass − before the load), plus, after,
  the pool allocation's bytes in the object store (counted once).
- ``code_generation`` + ``payment_processing`` (cores, CRITICAL wait): ``--bulk`` CPU tasks of
  ``--bulk-s`` seconds at mixed priorities (HIGH/MEDIUM/LOW/BACKGROUND, submitted at once) and
  ``--critical`` CRITICAL payment tasks of 10 ms submitted one every 150 ms. Before: plain
  ``ray.remote`` tasks. After: :class:`~cognopt_ray.cpu.PriorityScheduler`. A task's wait is
  its start time − its submit time. The measured trace of each run (arrival, priority, run
  seconds of every task) is replayed through a non-preemptive simulator: cores = the fewest
  CPUs on which the CRITICAL p99 wait stays ≤ ``--critical-target-s`` and the trace ends no later
  than it does replayed on this Ray's CPUs — FIFO for the before trace, priority for the after
  trace (so fewer cores never trade away throughput).
- ``voice_processing`` (storage): ``--blobs`` one-second 16 kHz 16-bit mono WAV clips (voiced
  segments with harmonics and pauses, a little noise), stored and read back. Before: one file
  per clip in a folder (bytes = Σ file sizes). After: the storage engine (tier warm, codec
  ``auto``), every clip read back and compared; bytes = the tiers' stored-bytes growth.
- ``payment_processing`` (bandwidth): ``--requests`` outbound GETs to a local origin (exchange
  rates, fraud rules, customer records; the origin sends ``Cache-Control: max-age`` and gzips
  when asked), the same seeded sequence both times. Before: ``requests.Session`` (pooled,
  gzip). After: the network engine. Bytes = what the origin sent on the wire.

Ratios (each ``1 − after / before``): ``ram_reduction``, ``storage_reduction``,
``bandwidth_reduction``, ``cpu_reduction`` (cores). Results include
``critical_p99_wait_s_before`` / ``_after`` measured in the two CPU runs.

Run: ``python benchmarks/workload.py --quick`` (2 CPUs, under 90 s) or without ``--quick``.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import random
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psutil
import ray
import requests

import cognopt_ray
from benchmarks._harness import emit, parse_args, percentile
from cognopt_ray.config import Settings
from cognopt_ray.priority import Priority
from cognopt_ray.system.report import build_table, min_cores, to_markdown

MiB = 1024 * 1024
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (stdout ends with the JSON line)."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


CRITICAL_S = 0.01
CRITICAL_EVERY_S = 0.15


# -- ai_models: RAM ------------------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class InferenceActor:
    """Holds a model and answers inference passes that touch every page of it."""

    def __init__(self) -> None:
        self.model = None

    def uss(self) -> int:
        return psutil.Process().memory_full_info().uss

    def load_private(self, path: str) -> int:
        self.model = np.load(path)  # a private copy in this process's heap
        return self.model.nbytes

    def load_pooled(self, allocation_id: str) -> int:
        from cognopt_ray import memory

        self.model = memory.client().get(allocation_id)  # zero-copy view of the one object-store copy
        return self.model.nbytes

    def infer(self) -> float:
        return float(self.model.sum(dtype=np.float64))


def ram_phase(model: np.ndarray, readers: int, pooled: bool, path: str) -> dict[str, float]:
    actors = [InferenceActor.remote() for _ in range(readers)]
    base = ray.get([a.uss.remote() for a in actors])
    extra = 0
    if pooled:
        from cognopt_ray import memory

        aid = memory.client().allocate("ai_models", model, pin=True)
        ray.get([a.load_pooled.remote(aid) for a in actors])
        extra = model.nbytes
    else:
        ray.get([a.load_private.remote(path) for a in actors])
    sums = ray.get([a.infer.remote() for a in actors])
    assert len(set(round(s, 3) for s in sums)) == 1, "readers disagree on the model"
    used = ray.get([a.uss.remote() for a in actors])
    for a in actors:
        ray.kill(a)
    if pooled:
        memory.client().deallocate(aid)
    growth = sum(max(0, u - b) for u, b in zip(used, base))
    return {"actors_uss_growth": float(growth), "object_store": float(extra), "total": float(growth + extra)}


# -- code_generation + payment_processing: CPU ------------------------------------------------------------
def work(seconds: float) -> tuple[float, float]:
    """Hold a CPU for ``seconds``; returns (start time, measured run seconds)."""
    start = time.time()
    end = start + seconds
    while time.time() < end:
        pass
    return start, time.time() - start


BULK_PRIORITIES = (Priority.HIGH, Priority.MEDIUM, Priority.LOW, Priority.BACKGROUND)


def cpu_phase(n_bulk: int, bulk_s: float, n_crit: int, use_cognopt: bool) -> dict[str, object]:
    """Submit the bulk at once, then the CRITICAL tasks over time; returns waits and the trace."""
    plain = ray.remote(num_cpus=1)(work)
    sched = None
    if use_cognopt:
        from cognopt_ray import cpu

        sched = cpu.client()

    def submit(prio: Priority, seconds: float) -> ray.ObjectRef:
        if sched is not None:
            return sched.submit(
                work,
                seconds,
                priority=prio,
                service="payment_processing" if prio == Priority.CRITICAL else "code_generation",
            )
        return plain.remote(seconds)

    # warm the workers so neither run pays worker start-up inside its measurement
    ray.get([submit(Priority.MEDIUM, 0.001) for _ in range(4)])
    t0 = time.time()
    jobs: list[tuple[float, Priority, ray.ObjectRef]] = []
    for i in range(n_bulk):
        prio = BULK_PRIORITIES[i % len(BULK_PRIORITIES)]
        jobs.append((time.time(), prio, submit(prio, bulk_s)))
    for _ in range(n_crit):
        time.sleep(CRITICAL_EVERY_S)
        jobs.append((time.time(), Priority.CRITICAL, submit(Priority.CRITICAL, CRITICAL_S)))
    out = ray.get([r for _, _, r in jobs])
    end = max(s + run for s, run in out)
    crit_waits = [s - sub for (sub, p, _), (s, _run) in zip(jobs, out) if p == Priority.CRITICAL]
    trace = [(sub - t0, int(p), run) for (sub, p, _), (_s, run) in zip(jobs, out)]
    return {"critical_waits": crit_waits, "trace": trace, "makespan_s": end - t0}


# -- voice_processing: storage ----------------------------------------------------------------------------
def voice_clip(rng: random.Random, seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A speech-like clip: voiced segments (f0 with harmonics, an envelope) between pauses, plus noise."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    signal = np.zeros(n)
    pos = 0
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    while pos < n:
        seg = int(rate * rng.uniform(0.12, 0.35))
        if rng.random() < 0.6:  # voiced
            f0 = rng.uniform(90, 240)
            tt = t[pos : pos + seg]
            env = np.sin(np.linspace(0, math.pi, len(tt))) ** 2
            voiced = sum((0.6 / k) * np.sin(2 * math.pi * f0 * k * tt + rng.uniform(0, 6.28)) for k in range(1, 6))
            signal[pos : pos + seg] = 6000 * env * voiced
        pos += seg
    signal += nrng.normal(0, 3.0, n)
    pcm = np.clip(signal, -32768, 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def storage_phases(n_blobs: int, folder: Path) -> dict[str, float]:
    from cognopt_ray import storage

    rng = random.Random(7)
    clips = [voice_clip(rng) for _ in range(n_blobs)]
    plain = folder / "plain-voice"
    plain.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(clips):
        (plain / f"clip-{i}.wav").write_bytes(c)
    assert all((plain / f"clip-{i}.wav").read_bytes() == c for i, c in enumerate(clips))
    before = float(sum((plain / f"clip-{i}.wav").stat().st_size for i in range(n_blobs)))
    store = storage.client()
    m0 = store.metrics()["stored_bytes"]
    for i, c in enumerate(clips):
        store.put(f"voice-clip-{i}", c, service="voice_processing", tier="warm")
    assert all(store.get(f"voice-clip-{i}") == c for i, c in enumerate(clips)), "a clip came back different"
    after = float(store.metrics()["stored_bytes"] - m0)
    return {"before": before, "after": after}


# -- payment_processing: bandwidth ------------------------------------------------------------------------
class Origin:
    """A local aiohttp origin in a thread that counts the body bytes it sends."""

    def __init__(self) -> None:
        import asyncio

        from aiohttp import web

        self.sent = 0
        self.requests = 0
        rng = random.Random(3)
        self.docs = {
            "/rates": json.dumps(
                {c: round(rng.uniform(0.5, 2), 6) for c in (f"C{i:03d}" for i in range(300))}
            ).encode(),
            "/fraud-rules": json.dumps(
                [{"rule": i, "pattern": f"merchant-{rng.randrange(10**6)}", "score": rng.random()} for i in range(250)]
            ).encode(),
        }
        self.max_age = {"/rates": 60, "/fraud-rules": 300}

        async def handle(request: web.Request) -> web.Response:
            path = request.path
            if path.startswith("/customers/"):
                cid = path.rsplit("/", 1)[1]
                body = json.dumps(
                    {
                        "id": cid,
                        "name": f"customer {cid}",
                        "limits": [100, 1000, 5000],
                        "history": [f"txn-{cid}-{k}" for k in range(30)],
                    }
                ).encode()
                age = 30
            elif path in self.docs:
                body, age = self.docs[path], self.max_age[path]
            else:
                return web.Response(status=404)
            headers = {"Cache-Control": f"public, max-age={age}", "Content-Type": "application/json"}
            if "gzip" in request.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, 6)
                headers["Content-Encoding"] = "gzip"
            self.sent += len(body)
            self.requests += 1
            return web.Response(body=body, headers=headers)

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> int:
            app = web.Application()
            app.router.add_get("/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return site._server.sockets[0].getsockname()[1]

        self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)


def request_sequence(n: int, port: int) -> list[str]:
    rng = random.Random(11)
    urls = []
    for _ in range(n):
        x = rng.random()
        if x < 0.3:
            urls.append(f"http://127.0.0.1:{port}/rates")
        elif x < 0.5:
            urls.append(f"http://127.0.0.1:{port}/fraud-rules")
        else:
            urls.append(f"http://127.0.0.1:{port}/customers/{rng.randrange(40)}")
    return urls


def bandwidth_phases(n_requests: int) -> dict[str, float]:
    from cognopt_ray import network

    origin = Origin()
    urls = request_sequence(n_requests, origin.port)
    t0 = time.perf_counter()
    with requests.Session() as s:
        bodies_plain = [s.get(u, timeout=30).content for u in urls]
    window = time.perf_counter() - t0
    before = float(origin.sent)
    origin.sent = 0
    net = network.client()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # eight callers at a time; order of answers kept
        bodies = list(pool.map(lambda u: net.request(u, service="payment_processing").body, urls))
    assert bodies == bodies_plain, "the engine answered different bodies"
    return {
        "before": before,
        "after": float(origin.sent),
        "window_s": window,
        "origin_requests_after": float(origin.requests - n_requests),
    }


# -- main ------------------------------------------------------------------------------------------------
def main() -> None:
    args = parse_args(
        "workload",
        "the reference workload, optimisations off then on",
        extra=[
            ("--model-mb", {"type": int, "default": None, "help": "ai_models model size (MB)"}),
            ("--readers", {"type": int, "default": None, "help": "inference actors reading the model"}),
            ("--bulk", {"type": int, "default": None, "help": "code_generation tasks"}),
            ("--bulk-s", {"type": float, "default": 0.1, "help": "seconds of CPU per code_generation task"}),
            ("--critical", {"type": int, "default": None, "help": "CRITICAL payment tasks"}),
            ("--critical-target-s", {"type": float, "default": 0.25, "help": "CRITICAL p99 wait the cores must keep"}),
            ("--blobs", {"type": int, "default": None, "help": "voice clips"}),
            ("--requests", {"type": int, "default": None, "help": "outbound payment API calls"}),
            (
                "--cpus",
                {"type": int, "default": None, "help": "CPUs of the local Ray (default 2 quick, all otherwise)"},
            ),
        ],
    )
    q = args.quick
    model_mb = args.model_mb or (48 if q else 256)
    readers = args.readers or (3 if q else 4)
    n_bulk = args.bulk or (40 if q else 200)
    n_crit = args.critical or (15 if q else 40)
    n_blobs = args.blobs or (40 if q else 200)
    n_req = args.requests or (300 if q else 2000)
    cpus = args.cpus or (2 if q else (os.cpu_count() or 2))
    tmp = Path(tempfile.mkdtemp(prefix="cognopt-workload-"))
    settings = Settings.load(
        storage_root=str(tmp / "root"),
        network={"allowlist": ["127.0.0.1"], "near_cache_ttl_s": 0},
        services={"ai_models": {"memory": {"pool_size": max(16, model_mb + 8), "block_size": MiB}}},
        cpu={"aging_interval_s": 0},
    )
    os.environ.pop("RAY_ADDRESS", None)
    cognopt_ray.init(settings=settings, num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    t_start = time.perf_counter()

    rng = np.random.default_rng(0)
    model = rng.standard_normal(model_mb * MiB // 4, dtype=np.float32)
    path = str(tmp / "model.npy")
    np.save(path, model)
    from cognopt_ray import cpu, memory, network, storage

    log("starting the engines")
    for c in (memory.client(), storage.client(), network.client(), cpu.client()):
        c.health()
    log("ai_models: private copies")
    ram_before = ram_phase(model, readers, pooled=False, path=path)
    log("ai_models: pooled")
    ram_after = ram_phase(model, readers, pooled=True, path=path)
    log("code_generation + payment tasks: plain Ray")

    cpu_before = cpu_phase(n_bulk, args.bulk_s, n_crit, use_cognopt=False)
    log("code_generation + payment tasks: cognopt")
    cpu_after = cpu_phase(n_bulk, args.bulk_s, n_crit, use_cognopt=True)
    limit = cpu_before["makespan_s"]
    target = args.critical_target_s
    cores_before = min_cores(
        cpu_before["trace"], "fifo", target_s=target, reference_cpus=cpus, max_cores=len(cpu_before["trace"])
    )
    cores_after = min_cores(
        cpu_after["trace"], "priority", target_s=target, reference_cpus=cpus, max_cores=len(cpu_after["trace"])
    )

    log("voice_processing: storage")
    sto = storage_phases(n_blobs, tmp)
    log("payment_processing: bandwidth")
    bw = bandwidth_phases(n_req)
    log("done")
    elapsed = time.perf_counter() - t_start

    def red(b: float | None, a: float | None) -> float:
        return round(1.0 - a / b, 4) if b and a is not None else float("nan")

    ratios = {
        "ram_reduction": red(ram_before["total"], ram_after["total"]),
        "storage_reduction": red(sto["before"], sto["after"]),
        "bandwidth_reduction": red(bw["before"], bw["after"]),
        "cpu_reduction": red(cores_before, cores_after),
    }
    crit_b = percentile(cpu_before["critical_waits"], 99)
    crit_a = percentile(cpu_after["critical_waits"], 99)
    report = build_table(
        cores=(cores_before, cores_after),
        ram_bytes=(ram_before["total"], ram_after["total"]),
        storage_bytes=(sto["before"], sto["after"]),
        bandwidth_bytes=(bw["before"], bw["after"]),
        window_s=bw["window_s"],
        prices=settings.system.prices,
        methods={
            "cores": f"trace replay, fifo vs priority, CRITICAL p99 <= {target:g} s",
            "ram": f"USS growth of {readers} readers + object-store copy",
            "storage": f"{n_blobs} voice clips: files vs storage engine",
            "bandwidth": f"{n_req} payment API calls: origin wire bytes",
        },
    )
    print(to_markdown(report))
    print()
    results = {
        "critical_p99_wait_s_before": round(crit_b, 5),
        "critical_p99_wait_s_after": round(crit_a, 5),
        "cores_before": cores_before,
        "cores_after": cores_after,
        "critical_target_s": target,
        "makespan_s_plain": round(limit, 4),
        "makespan_s_cognopt": round(cpu_after["makespan_s"], 4),
        "ram_bytes_before": ram_before["total"],
        "ram_bytes_after": ram_after["total"],
        "ram_object_store_bytes_after": ram_after["object_store"],
        "storage_bytes_before": sto["before"],
        "storage_bytes_after": sto["after"],
        "bandwidth_bytes_before": bw["before"],
        "bandwidth_bytes_after": bw["after"],
        "monthly_cost_before": report["monthly_cost"]["before"],
        "monthly_cost_after": report["monthly_cost"]["after"],
        "params": {
            "model_mb": model_mb,
            "readers": readers,
            "bulk": n_bulk,
            "bulk_s": args.bulk_s,
            "critical": n_crit,
            "blobs": n_blobs,
            "requests": n_req,
            "cpus": cpus,
        },
        "seconds": round(elapsed, 2),
    }
    rows = [
        ("RAM (MiB)", ram_before["total"] / MiB, ram_after["total"] / MiB),
        ("storage (KiB)", sto["before"] / 1024, sto["after"] / 1024),
        ("bandwidth (KiB)", bw["before"] / 1024, bw["after"] / 1024),
        ("cores (replay)", cores_before, cores_after),
        ("CRITICAL p99 wait (s)", crit_b, crit_a),
    ]
    cognopt_ray.shutdown()
    emit("workload", q, results, ratios, rows=rows, header=("measured", "before (plain)", "after (cognopt)"))


if __name__ == "__main__":
    main()
