"""The reference workload: the spec's services, optimisations off and then on, side by side.

Four services run against one local Ray with the cognopt engines. "Before" is the competent
plain alternative per row — what a Ray or Python user who knows the tools would write — and
"vs nothing" (no optimisation at all) is kept as a secondary figure. Every figure is measured in
this run except the cores counts, which are a model (a replay of the measured traces, labelled
``results.cores_method``).

- ``ai_models`` (RAM): a model of ``--model-mb`` MB (float32) needed by ``--readers`` separate jobs
  (driver processes joined to this Ray). Before: each job ``ray.put``s its own copy (plain Ray
  cannot hand an object to another job: it dies with its owner). After: the first job allocates
  it in the ``ai_models`` memory pool, the others ``get`` it by id. RAM = object-store bytes in use
  (raylet ``store_stats``) while all readers hold it, minus before, plus Σ the readers' anonymous
  (heap) memory growth after a pass that touches every page (``/proc/self/smaps_rollup``; not
  USS, which would count a job's own object-store pages twice). Vs nothing (``ram_bytes_vs_nothing``): reader actors that
  each ``np.load`` a private copy.
- ``code_generation`` + ``payment_processing`` (cores, CRITICAL wait): ``--bulk`` CPU tasks of
  ``--bulk-s`` seconds at mixed priorities (submitted at once) and ``--critical`` CRITICAL payment
  tasks of 10 ms, one every 150 ms. Before: plain Ray with a reserved custom resource — the bulk
  tasks also need one ``bulk_slot`` and the node has ``cpus − 1`` of them, so one CPU is always
  free for CRITICAL work — *run* on this Ray's CPUs (``reserved_*`` results). After:
  :class:`~cognopt_ray.cpu.PriorityScheduler`, run. Vs nothing: plain ``ray.remote`` FIFO, run.
  Cores (a model): the fewest CPUs on which the CRITICAL p99 wait stays ≤ ``--critical-target-s``
  and the trace ends no later than the plain FIFO trace replayed on this Ray's CPUs —
  reserved: the measured plain trace's bulk tasks FIFO on C − 1 CPUs and CRITICAL FIFO on the
  reserved one; after: the cognopt trace under strict priority; vs nothing: the plain trace FIFO.
- ``voice_processing`` (storage): ``--blobs`` one-second 16 kHz 16-bit mono WAV clips. Before: one
  zstd level-1 file per clip. After: the storage engine (tier warm, codec ``auto``), every clip
  read back and compared; bytes = the tiers' stored-bytes growth. Vs nothing: raw WAV files.
- ``payment_processing`` (bandwidth): ``--requests`` outbound GETs to a local origin
  (``Cache-Control: max-age``, gzip when asked), the same seeded sequence through 8 threads each
  time. Before: requests-cache (SQLite backend, ``cache_control=True``, one ``CachedSession``
  shared by the threads). After: the network engine. Vs nothing: a ``requests.Session``. Bytes =
  what the origin sent on the wire.

Ratios (each ``1 − after / before``, before = the competent alternative): ``ram_reduction``,
``storage_reduction``, ``bandwidth_reduction``, ``cpu_reduction`` (cores, model). The same
against nothing: ``results.*_reduction_vs_nothing``.

Run: ``python benchmarks/workload.py --quick`` (2 CPUs, under 90 s) or without ``--quick``.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import random
import shutil
import subprocess
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
from cognopt_ray.system.report import build_table, min_cores, replay, to_markdown

MiB = 1024 * 1024
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress on stderr (stdout ends with the JSON line)."""
    print(f"[{time.perf_counter() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


CRITICAL_S = 0.01
CRITICAL_EVERY_S = 0.15
BASELINE = (
    "the competent plain alternative per row: separate jobs each ray.put-ing the model (RAM), "
    "zstd-1 files (storage), requests-cache with SQLite (bandwidth), plain Ray with a reserved "
    "custom resource for CRITICAL tasks (cores; counts from a trace-replay model)"
)


# -- ai_models across separate jobs -------------------------------------------------------------------
def anonymous_bytes() -> int:
    """This process's anonymous (heap) memory, from ``/proc/self/smaps_rollup``.

    Not USS: object-store pages a job wrote itself are mapped by it alone, so USS would count
    them a second time next to the object-store bytes; shared-memory pages are not anonymous."""
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Anonymous: line in /proc/self/smaps_rollup")


def as_job(mode: str, gcs: str, root: str, path: str, allocation_id: str) -> None:
    """A separate job: join the Ray at ``gcs``, hold the model (own ``ray.put`` or the pool's
    allocation), touch every page, print ``READY <id> <heap growth>``, keep it until stdin closes."""
    cognopt_ray.init(address=gcs, settings=workload_settings(root, 1), log_to_driver=False)
    from cognopt_ray import memory

    base = anonymous_bytes()
    ref = None
    if mode == "put":
        ref = ray.put(np.load(path))
        view = ray.get(ref)
    else:
        if allocation_id == "-":
            allocation_id = memory.client().allocate("ai_models", np.load(path), pin=True)
        view = memory.client().get(allocation_id)
    float(view.sum(dtype=np.float64))  # the inference pass touches every page
    growth = max(0, anonymous_bytes() - base)
    print(f"READY {allocation_id} {growth}", flush=True)
    sys.stdin.read()
    del view, ref


def store_bytes_used() -> int:
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    gcs = ray.get_runtime_context().gcs_address
    return int(get_memory_info_reply(get_state_from_address(gcs)).store_stats.object_store_bytes_used)


def ram_jobs(readers: int, pooled: bool, root: str, path: str) -> dict[str, float]:
    """RAM of ``readers`` separate jobs holding the model: object-store growth + their heap growth."""
    gcs = ray.get_runtime_context().gcs_address
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    mode = "pool" if pooled else "put"

    def start(aid: str) -> subprocess.Popen:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--as-job", mode, gcs, root, path, aid]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ready(p: subprocess.Popen) -> tuple[str, int]:
        for line in p.stdout:
            if line.startswith("READY "):
                _, aid, growth = line.split()
                return aid, int(growth)
        raise RuntimeError(f"a job exited before it was ready (status {p.wait()})")

    time.sleep(0.5)
    before = store_bytes_used()
    first = start("-")
    aid, g0 = ready(first)
    procs = [first] + [start(aid if pooled else "-") for _ in range(readers - 1)]
    growths = [g0] + [ready(p)[1] for p in procs[1:]]
    time.sleep(0.3)
    store = store_bytes_used() - before
    for p in procs:
        p.stdin.close()
    for p in procs:
        p.wait(120)
    if pooled:
        from cognopt_ray import memory

        memory.client().deallocate(aid)
    return {"object_store": float(store), "heap_growth": float(sum(growths)), "total": float(store + sum(growths))}


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


def cpu_phase(n_bulk: int, bulk_s: float, n_crit: int, use_cognopt: bool, reserved: bool = False) -> dict[str, object]:
    """Submit the bulk at once, then the CRITICAL tasks over time; returns waits and the trace.

    ``reserved``: plain Ray where bulk tasks also need a ``bulk_slot`` (the node has one fewer
    than its CPUs), so one CPU is kept for CRITICAL tasks."""
    plain = ray.remote(num_cpus=1)(work)
    plain_bulk = plain.options(resources={"bulk_slot": 1}) if reserved else plain
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
        return (plain if prio == Priority.CRITICAL else plain_bulk).remote(seconds)

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


def reserved_cores(trace: list, target_s: float, reference_s: float, max_cores: int) -> int | None:
    """Model: the fewest CPUs C for plain Ray with one CPU reserved for CRITICAL (bulk FIFO on
    C − 1, CRITICAL FIFO on 1) meeting the CRITICAL p99 target and ending by ``reference_s``."""
    bulk = [t for t in trace if t[1] != int(Priority.CRITICAL)]
    crit = [t for t in trace if t[1] == int(Priority.CRITICAL)]
    for c in range(2, max_cores + 1):
        b = replay(bulk, c - 1, "fifo") if bulk else {"makespan_s": 0.0}
        r = replay(crit, 1, "fifo") if crit else {"makespan_s": 0.0, "waits": {}}
        waits = r["waits"].get(int(Priority.CRITICAL), [])
        if percentile(waits, 99) <= target_s and max(b["makespan_s"], r["makespan_s"]) <= reference_s + 1e-9:
            return c
    return None


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
    raw = float(sum((plain / f"clip-{i}.wav").stat().st_size for i in range(n_blobs)))
    import zstandard

    zc, zd = zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor()
    zfolder = folder / "zstd-voice"
    zfolder.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(clips):
        (zfolder / f"clip-{i}.wav.zst").write_bytes(zc.compress(c))
    assert all(zd.decompress((zfolder / f"clip-{i}.wav.zst").read_bytes()) == c for i, c in enumerate(clips))
    before = float(sum((zfolder / f"clip-{i}.wav.zst").stat().st_size for i in range(n_blobs)))
    store = storage.client()
    m0 = store.metrics()["stored_bytes"]
    for i, c in enumerate(clips):
        store.put(f"voice-clip-{i}", c, service="voice_processing", tier="warm")
    assert all(store.get(f"voice-clip-{i}") == c for i, c in enumerate(clips)), "a clip came back different"
    after = float(store.metrics()["stored_bytes"] - m0)
    return {"before": before, "after": after, "raw": raw}


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
    from concurrent.futures import ThreadPoolExecutor

    import requests_cache

    def run(fetch) -> tuple[list[bytes], float, float]:
        sent, reqs = origin.sent, origin.requests
        with ThreadPoolExecutor(8) as pool:  # eight callers at a time; order of answers kept
            bodies = list(pool.map(fetch, urls))
        return bodies, float(origin.sent - sent), float(origin.requests - reqs)

    t0 = time.perf_counter()
    with requests.Session() as s:
        bodies_plain, nothing, _ = run(lambda u: s.get(u, timeout=30).content)
    window = time.perf_counter() - t0
    rc = requests_cache.CachedSession(
        str(Path(tempfile.mkdtemp(prefix="cognopt-rc-")) / "cache"), backend="sqlite", cache_control=True
    )
    bodies_rc, before, rc_requests = run(lambda u: rc.get(u, timeout=30).content)
    rc.close()
    net = network.client()
    bodies, after, requests_after = run(lambda u: net.request(u, service="payment_processing").body)
    assert bodies == bodies_plain == bodies_rc, "the answers differ"
    return {
        "before": before,
        "after": after,
        "nothing": nothing,
        "window_s": window,
        "origin_requests_before": rc_requests,
        "origin_requests_after": requests_after,
    }


# -- main ------------------------------------------------------------------------------------------------
def workload_settings(root: str, model_mb: int) -> Settings:
    return Settings.load(
        storage_root=root,
        network={"allowlist": ["127.0.0.1"], "near_cache_ttl_s": 0},
        services={"ai_models": {"memory": {"pool_size": max(16, model_mb + 8), "block_size": MiB}}},
        cpu={"aging_interval_s": 0},
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--as-job":
        as_job(*sys.argv[2:7])
        return
    args = parse_args(
        "workload",
        "the reference workload, optimisations off then on",
        extra=[
            ("--model-mb", {"type": int, "default": None, "help": "ai_models model size (MB)"}),
            ("--readers", {"type": int, "default": None, "help": "separate jobs reading the model"}),
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
    root = str(tmp / "root")
    settings = workload_settings(root, model_mb)
    os.environ.pop("RAY_ADDRESS", None)
    cognopt_ray.init(
        settings=settings,
        num_cpus=cpus,
        resources={"bulk_slot": max(1, cpus - 1)},
        include_dashboard=False,
        log_to_driver=False,
    )
    t_start = time.perf_counter()

    rng = np.random.default_rng(0)
    model = rng.standard_normal(model_mb * MiB // 4, dtype=np.float32)
    path = str(tmp / "model.npy")
    np.save(path, model)
    from cognopt_ray import cpu, memory, network, storage

    log("starting the engines")
    for c in (memory.client(), storage.client(), network.client(), cpu.client()):
        c.health()
    log("ai_models: separate jobs, each its own ray.put")
    ram_before = ram_jobs(readers, pooled=False, root=root, path=path)
    log("ai_models: separate jobs, one pooled allocation")
    ram_after = ram_jobs(readers, pooled=True, root=root, path=path)
    log("ai_models: private copies in reader actors (vs nothing)")
    ram_nothing = ram_phase(model, readers, pooled=False, path=path)

    log("code_generation + payment tasks: plain Ray FIFO (vs nothing)")
    cpu_plain = cpu_phase(n_bulk, args.bulk_s, n_crit, use_cognopt=False)
    log("code_generation + payment tasks: plain Ray, one CPU reserved for CRITICAL")
    cpu_reserved = cpu_phase(n_bulk, args.bulk_s, n_crit, use_cognopt=False, reserved=True)
    log("code_generation + payment tasks: cognopt")
    cpu_after = cpu_phase(n_bulk, args.bulk_s, n_crit, use_cognopt=True)
    target = args.critical_target_s
    reference_s = replay(cpu_plain["trace"], cpus, "fifo")["makespan_s"]
    cores_nothing = min_cores(
        cpu_plain["trace"], "fifo", target_s=target, reference_cpus=cpus, max_cores=len(cpu_plain["trace"])
    )
    cores_before = reserved_cores(cpu_plain["trace"], target, reference_s, max_cores=len(cpu_plain["trace"]))
    cores_after = min_cores(
        cpu_after["trace"], "priority", target_s=target, reference_cpus=cpus, max_cores=len(cpu_after["trace"])
    )

    log("voice_processing: storage")
    sto = storage_phases(n_blobs, tmp)
    log("payment_processing: bandwidth")
    bw = bandwidth_phases(n_req)
    log("done")
    elapsed = time.perf_counter() - t_start

    def red(b: float | None, a: float | None) -> float | None:
        return round(1.0 - a / b, 4) if b and a is not None else None

    ratios = {
        "ram_reduction": red(ram_before["total"], ram_after["total"]),
        "storage_reduction": red(sto["before"], sto["after"]),
        "bandwidth_reduction": red(bw["before"], bw["after"]),
        "cpu_reduction": red(cores_before, cores_after),
    }
    p99 = lambda xs: percentile(xs, 99)  # noqa: E731
    report = build_table(
        cores=(cores_before, cores_after),
        ram_bytes=(ram_before["total"], ram_after["total"]),
        storage_bytes=(sto["before"], sto["after"]),
        bandwidth_bytes=(bw["before"], bw["after"]),
        window_s=bw["window_s"],
        prices=settings.system.prices,
        methods={
            "cores": f"model: trace replay, reserved CRITICAL CPU vs priority, CRITICAL p99 <= {target:g} s",
            "ram": f"{readers} separate jobs: own ray.put each vs one pooled allocation",
            "storage": f"{n_blobs} voice clips: zstd-1 files vs storage engine",
            "bandwidth": f"{n_req} payment API calls: requests-cache vs engine, origin wire bytes",
        },
    )
    print(to_markdown(report))
    print()
    results = {
        "baseline": BASELINE,
        "cores_method": (
            "model: replay of the measured traces through a non-preemptive simulator (not a run on each core count)"
        ),
        "critical_p99_wait_s_before": round(p99(cpu_reserved["critical_waits"]), 5),
        "critical_p99_wait_s_after": round(p99(cpu_after["critical_waits"]), 5),
        "critical_p99_wait_s_vs_nothing": round(p99(cpu_plain["critical_waits"]), 5),
        "reserved_makespan_s": round(cpu_reserved["makespan_s"], 4),
        "cores_before": cores_before,
        "cores_after": cores_after,
        "cores_vs_nothing": cores_nothing,
        "critical_target_s": target,
        "makespan_s_plain": round(cpu_plain["makespan_s"], 4),
        "makespan_s_cognopt": round(cpu_after["makespan_s"], 4),
        "ram_bytes_before": ram_before["total"],
        "ram_bytes_after": ram_after["total"],
        "ram_bytes_vs_nothing": ram_nothing["total"],
        "ram_object_store_bytes_before": ram_before["object_store"],
        "ram_object_store_bytes_after": ram_after["object_store"],
        "storage_bytes_before": sto["before"],
        "storage_bytes_after": sto["after"],
        "storage_bytes_vs_nothing": sto["raw"],
        "bandwidth_bytes_before": bw["before"],
        "bandwidth_bytes_after": bw["after"],
        "bandwidth_bytes_vs_nothing": bw["nothing"],
        "origin_requests_before": bw["origin_requests_before"],
        "origin_requests_after": bw["origin_requests_after"],
        "ram_reduction_vs_nothing": red(ram_nothing["total"], ram_after["total"]),
        "storage_reduction_vs_nothing": red(sto["raw"], sto["after"]),
        "bandwidth_reduction_vs_nothing": red(bw["nothing"], bw["after"]),
        "cpu_reduction_vs_nothing": red(cores_nothing, cores_after),
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
        ("RAM (MiB)", ram_before["total"] / MiB, ram_after["total"] / MiB, ram_nothing["total"] / MiB),
        ("storage (KiB)", sto["before"] / 1024, sto["after"] / 1024, sto["raw"] / 1024),
        ("bandwidth (KiB)", bw["before"] / 1024, bw["after"] / 1024, bw["nothing"] / 1024),
        ("cores (model)", cores_before, cores_after, cores_nothing),
        (
            "CRITICAL p99 wait (s)",
            results["critical_p99_wait_s_before"],
            results["critical_p99_wait_s_after"],
            results["critical_p99_wait_s_vs_nothing"],
        ),
    ]
    cognopt_ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    emit(
        "workload",
        q,
        results,
        ratios,
        rows=rows,
        header=("measured", "before (competent plain)", "after (cognopt)", "vs nothing"),
    )


if __name__ == "__main__":
    main()
