"""Priority scheduling: plain Ray (``.remote()`` in submission order) vs cognopt, side by side.

Every figure is measured in this run on the same local Ray:

- idle dispatch: one task at a time on an idle cluster, wait = start - submit (``time.time()`` on
  both sides); p99 over the samples, for plain Ray and for cognopt.
- saturation: ``n_bg`` BACKGROUND tasks of 50 ms submitted at once, then ``n_crit`` CRITICAL tasks
  of 50 ms submitted one every 300 ms; wait = start - submit of each CRITICAL task.
  ``critical_p99_speedup = plain p99 wait / cognopt p99 wait`` with CRITICAL the same function as
  BACKGROUND, ``critical_p99_speedup_distinct`` with CRITICAL a distinct function.
  ``critical_p99_vs_limit = cognopt p99 wait / (task duration + plain idle dispatch p99)``: the
  limit of strict priority without preemption is the rest of one running task plus dispatch.
  ``critical_p99_vs_limit`` is the median of ``REPEATS`` (3) saturation runs; their min and max
  are ``results.critical_p99_vs_limit_min`` / ``_max``.
- throughput: ``n_tp`` tasks of 20 ms, all MEDIUM; ``throughput_ratio = cognopt tasks/s / plain
  tasks/s`` with one ``.remote()`` per task (secondary). ``throughput_ratio_vs_batched`` divides
  by plain Ray with user-side batching instead, as Ray's guide tells users to do for
  fine-grained tasks: the tasks grouped into chunks of about 50 ms of work, one ``.remote()`` per
  chunk (at least one chunk per CPU).
- dispatch: ``n_noop`` no-op tasks submitted in one batch; ``dispatch_rate_ratio`` (secondary,
  one ``.remote()`` per task) and ``dispatch_rate_ratio_vs_batched`` (chunks as above) = cognopt
  tasks/s / plain tasks/s (submit of the first to result of the last).
- starvation: a LOW task submitted under a continuous HIGH flood with aging on; its wait is
  ``results.aging_low_wait_s``. ``results.plain_aging_low_wait_s`` is the same LOW task under the
  same flood with plain Ray (FIFO: it waits for the backlog queued before it, then runs).
- preemption: the saturation run with BACKGROUND ``preemptible=True``; CRITICAL p99 wait is
  ``results.critical_p99_preemptive_s`` and ``results.critical_p99_preemptive_vs_limit`` (÷ the
  same limit).

Run: ``python benchmarks/priority.py --quick`` (2 CPUs) or without ``--quick`` (all CPUs, larger).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray

import cognopt_ray
from benchmarks._harness import emit, parse_args, percentile
from cognopt_ray.config import Settings
from cognopt_ray.cpu import CPUTask, PriorityScheduler
from cognopt_ray.priority import Priority

TASK_S = 0.05
TP_TASK_S = 0.02
CRIT_EVERY_S = 0.3
CHUNK_S = 0.05  # user-side batching: chunks of about this much work
REPEATS = 3
BASELINE = (
    "plain Ray with user-side batching (chunks of ~50 ms of work, one .remote() per chunk) for "
    "throughput and dispatch; plain Ray FIFO (.remote() in submission order) for waits"
)


def work(seconds: float) -> float:
    """A task that holds its CPU for ``seconds``; returns its start time."""
    start = time.time()
    end = start + seconds
    while time.time() < end:
        pass
    return start


def work_critical(seconds: float) -> float:
    """The same body as :func:`work`, a distinct function (another Ray scheduling class)."""
    start = time.time()
    end = start + seconds
    while time.time() < end:
        pass
    return start


def noop() -> float:
    return time.time()


def run_chunk(fn, args_list: list) -> list:
    """User-side batching: run ``fn(*args)`` for each args in one task."""
    return [fn(*a) for a in args_list]


# Plain Ray versions of the same functions.
r_work = ray.remote(work)
r_work_critical = ray.remote(work_critical)
r_noop = ray.remote(noop)
r_chunk = ray.remote(run_chunk)


def chunked(n: int, per_task_s: float, cpus: int) -> list[int]:
    """Chunk sizes for ``n`` tasks of ``per_task_s``: about CHUNK_S of work each, at least ``cpus`` chunks."""
    size = max(1, min(int(CHUNK_S / max(per_task_s, 1e-9)), -(-n // cpus)))
    return [min(size, n - i) for i in range(0, n, size)]


def idle_dispatch(submit, n: int) -> list[float]:
    waits = []
    for _ in range(n):
        t0 = time.time()
        start = ray.get(submit())
        waits.append(start - t0)
        time.sleep(0.01)
    return waits


def saturation(submit_bg, submit_crit, n_bg: int, n_crit: int) -> list[float]:
    bg = submit_bg(n_bg)
    crit = []
    for _ in range(n_crit):
        time.sleep(CRIT_EVERY_S)
        t0 = time.time()
        crit.append((t0, submit_crit()))
    waits = [ray.get(ref) - t0 for t0, ref in crit]
    ray.get(bg)
    return waits


def rate(fn) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    args = parse_args("priority", "priority scheduling vs plain Ray")
    quick = args.quick
    cpus = 2 if quick else (os.cpu_count() or 2)
    n_bg, n_crit = (300, 20) if quick else (max(300, 150 * cpus), 40)
    n_tp = 400 if quick else 200 * cpus
    n_noop = 5000 if quick else 20000
    settings = Settings.load(**{"cpu": {"aging_interval_s": 1.0, "pipeline_depth": 1}})
    cognopt_ray.init(settings=settings, num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    sched = PriorityScheduler(settings=settings)

    # warm up workers and function exports on both sides
    ray.get(
        [r_work.remote(0.01) for _ in range(4 * cpus)]
        + [r_work_critical.remote(0.01) for _ in range(cpus)]
        + [r_noop.remote() for _ in range(50)]
    )
    ray.get(
        sched.submit_batch(
            [CPUTask(work, (0.01,)) for _ in range(4 * cpus)]
            + [CPUTask(work_critical, (0.01,)) for _ in range(cpus)]
            + [CPUTask(noop) for _ in range(50)]
        )
    )

    # -- idle dispatch ----------------------------------------------------------------------------
    plain_idle = idle_dispatch(lambda: r_noop.remote(), 30)
    cog_idle = idle_dispatch(lambda: sched.submit(noop, priority=Priority.CRITICAL), 30)
    plain_idle_p99 = percentile(plain_idle, 99)
    cog_idle_p99 = percentile(cog_idle, 99)

    # -- saturation: same function, distinct function, preemptive --------------------------------
    def plain_bg(n):
        return [r_work.remote(TASK_S) for _ in range(n)]

    def cog_bg(n, preemptible=False):
        return sched.submit_batch(
            [CPUTask(work, (TASK_S,), priority=Priority.BACKGROUND, preemptible=preemptible) for _ in range(n)]
        )

    plain_same = saturation(plain_bg, lambda: r_work.remote(TASK_S), n_bg, n_crit)
    cog_runs = [
        saturation(cog_bg, lambda: sched.submit(work, TASK_S, priority=Priority.CRITICAL), n_bg, n_crit)
        for _ in range(REPEATS)
    ]
    cog_p99s = sorted(percentile(w, 99) for w in cog_runs)
    cog_same = next(w for w in cog_runs if percentile(w, 99) == cog_p99s[len(cog_p99s) // 2])  # the median run
    plain_dist = saturation(plain_bg, lambda: r_work_critical.remote(TASK_S), n_bg, n_crit)
    cog_dist = saturation(cog_bg, lambda: sched.submit(work_critical, TASK_S, priority=Priority.CRITICAL), n_bg, n_crit)
    cog_pre = saturation(
        lambda n: cog_bg(n, preemptible=True),
        lambda: sched.submit(work_critical, TASK_S, priority=Priority.CRITICAL),
        n_bg,
        n_crit,
    )

    # -- throughput ---------------------------------------------------------------------------------
    def plain_tp():
        ray.get([r_work.remote(TP_TASK_S) for _ in range(n_tp)])
        return n_tp

    def cog_tp():
        ray.get(sched.submit_batch([CPUTask(work, (TP_TASK_S,)) for _ in range(n_tp)]))
        return n_tp

    tp_chunks = chunked(n_tp, TP_TASK_S, cpus)

    def batched_tp():
        ray.get([r_chunk.remote(work, [(TP_TASK_S,)] * k) for k in tp_chunks])
        return n_tp

    tp_plain = rate(plain_tp)
    tp_cog = rate(cog_tp)
    tp_batched = rate(batched_tp)

    # -- dispatch -----------------------------------------------------------------------------------
    def plain_noop():
        ray.get([r_noop.remote() for _ in range(n_noop)])
        return n_noop

    def cog_noop():
        ray.get(sched.submit_batch([CPUTask(noop) for _ in range(n_noop)]))
        return n_noop

    t0 = time.perf_counter()
    for _ in range(2000):
        noop()
    noop_s = (time.perf_counter() - t0) / 2000
    noop_chunks = chunked(n_noop, noop_s, cpus)

    def batched_noop():
        ray.get([r_chunk.remote(noop, [()] * k) for k in noop_chunks])
        return n_noop

    dr_plain = rate(plain_noop)
    dr_cog = rate(cog_noop)
    dr_batched = rate(batched_noop)

    # -- starvation: a LOW task under a continuous HIGH flood, aging on ------------------------------
    stop = threading.Event()
    flood_refs: list = []

    def flood():
        while not stop.is_set():
            flood_refs.extend(
                sched.submit_batch([CPUTask(work, (TP_TASK_S,), priority=Priority.HIGH) for _ in range(5 * cpus)])
            )
            time.sleep(0.05)

    th = threading.Thread(target=flood, daemon=True)
    th.start()
    time.sleep(0.3)
    t0 = time.time()
    low_start = ray.get(sched.submit(work, 0.001, priority=Priority.LOW))
    aging_low_wait = low_start - t0
    stop.set()
    th.join()
    ray.get(flood_refs)

    # the same LOW task under the same flood, plain Ray (FIFO)
    stop = threading.Event()
    plain_flood: list = []

    def plain_flood_loop():
        while not stop.is_set():
            plain_flood.extend(r_work.remote(TP_TASK_S) for _ in range(5 * cpus))
            time.sleep(0.05)

    th = threading.Thread(target=plain_flood_loop, daemon=True)
    th.start()
    time.sleep(0.3)
    t0 = time.time()
    plain_low_wait = ray.get(r_work.remote(0.001)) - t0
    stop.set()
    th.join()
    ray.get(plain_flood)

    m = sched.metrics()
    p99 = lambda xs: percentile(xs, 99)  # noqa: E731
    limit = TASK_S + plain_idle_p99
    results = {
        "baseline": BASELINE,
        "cpus": cpus,
        "task_s": TASK_S,
        "n_background": n_bg,
        "n_critical": n_crit,
        "plain_idle_dispatch_p99_s": plain_idle_p99,
        "cognopt_idle_dispatch_p99_s": cog_idle_p99,
        "plain_critical_p99_s": p99(plain_same),
        "cognopt_critical_p99_s": p99(cog_same),
        "plain_critical_distinct_p99_s": p99(plain_dist),
        "cognopt_critical_distinct_p99_s": p99(cog_dist),
        "cognopt_critical_p50_s": percentile(cog_same, 50),
        "critical_p99_preemptive_s": p99(cog_pre),
        "plain_throughput_tasks_s": tp_plain,
        "cognopt_throughput_tasks_s": tp_cog,
        "plain_dispatch_tasks_s": dr_plain,
        "cognopt_dispatch_tasks_s": dr_cog,
        "aging_low_wait_s": aging_low_wait,
        "plain_aging_low_wait_s": plain_low_wait,
        "batched_throughput_tasks_s": tp_batched,
        "batched_dispatch_tasks_s": dr_batched,
        "batched_chunk_tasks_throughput": tp_chunks[0],
        "batched_chunk_tasks_dispatch": noop_chunks[0],
        "critical_p99_vs_limit_runs": [x / limit for x in cog_p99s],
        "critical_p99_vs_limit_min": cog_p99s[0] / limit,
        "critical_p99_vs_limit_max": cog_p99s[-1] / limit,
        "critical_p99_preemptive_vs_limit": p99(cog_pre) / limit,
        "throughput_ratio_vs_unbatched": tp_cog / tp_plain,
        "dispatch_rate_ratio_vs_unbatched": dr_cog / dr_plain,
        "aging_interval_s": settings.cpu.aging_interval_s,
        "pipeline_depth": settings.cpu.pipeline_depth,
        "tasks_preempted": m["tasks_preempted"],
        "cpu_efficiency": m["cpu_efficiency"],
    }
    ratios = {
        "critical_p99_speedup": p99(plain_same) / p99(cog_same),
        "critical_p99_speedup_distinct": p99(plain_dist) / p99(cog_dist),
        "critical_p99_vs_limit": cog_p99s[len(cog_p99s) // 2] / limit,
        "throughput_ratio_vs_batched": tp_cog / tp_batched,
        "dispatch_rate_ratio_vs_batched": dr_cog / dr_batched,
        "throughput_ratio": tp_cog / tp_plain,
        "dispatch_rate_ratio": dr_cog / dr_plain,
    }
    rows = [
        ("idle dispatch p99 (s)", plain_idle_p99, cog_idle_p99),
        ("CRITICAL wait p99, same fn (s)", p99(plain_same), p99(cog_same)),
        ("CRITICAL wait p99, distinct fn (s)", p99(plain_dist), p99(cog_dist)),
        ("CRITICAL wait p99, preemptive BG (s)", "-", p99(cog_pre)),
        ("throughput 20 ms tasks (tasks/s)", f"{tp_plain:.4g} (batched {tp_batched:.4g})", tp_cog),
        ("dispatch no-op (tasks/s)", f"{dr_plain:.4g} (batched {dr_batched:.4g})", dr_cog),
        ("LOW wait under HIGH flood (s)", plain_low_wait, aging_low_wait),
    ]
    emit("priority", quick, results, ratios, rows, ("measure", "plain Ray", "cognopt"))
    cognopt_ray.shutdown()


if __name__ == "__main__":
    main()
