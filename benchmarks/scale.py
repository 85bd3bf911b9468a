"""The scheduler at scale: cognopt vs plain Ray on a multi-node ``ray.cluster_utils.Cluster``.

One run builds one Cluster (a head node with no CPUs plus ``--nodes`` nodes of ``--cpus`` CPUs)
on this machine and runs, side by side, ``--tasks`` sleep tasks of ``--duration`` seconds (sleep,
so slots, not cores, are the resource and 80 slots fit on 2 cores):

- plain Ray: ``f.remote()`` per task, all at once, ``ray.get`` of every ref;
- cognopt: the same tasks through ``PriorityScheduler.submit_batch`` at one priority.

makespan = submit of the first task to the result of the last; ideal = ``ceil(tasks / slots) *
duration``. ``ratios.scale_makespan_vs_plain = cognopt makespan / plain makespan`` (≤ 1: priority
costs nothing at this size). Both sides run on the same warm workers (a warm-up round on each side
first); the order alternates over ``--repeats`` (median of the repeats' makespans per side).

Run: ``python benchmarks/scale.py --quick`` (10 nodes x 8 CPUs, 4,000 tasks x 200 ms) or with
``--nodes N --cpus C --tasks T --duration S --repeats R``.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray
from ray.cluster_utils import Cluster

import cognopt_ray
from benchmarks._harness import emit, parse_args
from cognopt_ray.config import Settings
from cognopt_ray.cpu import CPUTask, PriorityScheduler


def nap(seconds: float) -> float:
    """A task that holds its slot for ``seconds`` (sleeping); returns its end time."""
    time.sleep(seconds)
    return time.time()


r_nap = ray.remote(nap)


def plain(n: int, d: float) -> float:
    t0 = time.perf_counter()
    ray.get([r_nap.remote(d) for _ in range(n)])
    return time.perf_counter() - t0


def cognopt(sched: PriorityScheduler, n: int, d: float) -> float:
    t0 = time.perf_counter()
    ray.get(sched.submit_batch([CPUTask(nap, (d,)) for _ in range(n)]))
    return time.perf_counter() - t0


def _spy(sched: PriorityScheduler, path: str) -> subprocess.Popen:
    """py-spy (raw collapsed stacks) of the scheduler actor's process, until interrupted."""
    pid = ray.get(sched.actor.__ray_call__.remote(lambda self: os.getpid()))
    cmd = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "-p",
        str(pid),
        "-f",
        "raw",
        "-o",
        path,
        "-r",
        "200",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches
    return proc


def main() -> None:
    args = parse_args(
        "scale",
        "cognopt vs plain Ray makespan on a multi-node Cluster",
        [
            ("--nodes", {"type": int, "default": None, "help": "worker nodes (quick: 10)"}),
            ("--cpus", {"type": int, "default": None, "help": "CPUs per node (quick: 8)"}),
            ("--tasks", {"type": int, "default": None, "help": "sleep tasks per side (quick: 4000)"}),
            ("--duration", {"type": float, "default": None, "help": "seconds per task (quick: 0.2)"}),
            ("--repeats", {"type": int, "default": None, "help": "rounds per side (quick: 1, else 3)"}),
            (
                "--profile",
                {"default": None, "help": "py-spy the scheduler actor in the first cognopt round into this file"},
            ),
        ],
    )
    nodes = args.nodes or 10
    cpus = args.cpus or 8
    n = args.tasks or 4000
    d = args.duration if args.duration is not None else 0.2
    repeats = args.repeats or (1 if args.quick else 3)
    slots = nodes * cpus

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    settings = Settings.load(cpu={"aging_interval_s": 0})
    cognopt_ray.init(address=cluster.address, settings=settings, log_to_driver=False)
    sched = PriorityScheduler(settings=settings)
    deadline = time.time() + 60
    while sched.cluster()["total_cpus"] < slots and time.time() < deadline:
        time.sleep(0.2)

    # warm-up: start a worker in every slot, on both paths (they share Ray's worker pool)
    warm = max(1.0, d)
    plain(slots, warm)
    cognopt(sched, slots, warm)
    plain(2 * slots, d)
    cognopt(sched, 2 * slots, d)

    plain_s, cog_s = [], []
    for r in range(repeats):
        if r % 2 == 0:
            plain_s.append(plain(n, d))
            spy = _spy(sched, args.profile) if args.profile and r == 0 else None
            cog_s.append(cognopt(sched, n, d))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
        else:
            cog_s.append(cognopt(sched, n, d))
            plain_s.append(plain(n, d))
    m = sched.metrics()
    ideal = math.ceil(n / slots) * d
    p, c = statistics.median(plain_s), statistics.median(cog_s)
    results = {
        "nodes": nodes,
        "cpus_per_node": cpus,
        "slots": slots,
        "tasks": n,
        "task_s": d,
        "repeats": repeats,
        "ideal_makespan_s": ideal,
        "plain_makespan_s": p,
        "cognopt_makespan_s": c,
        "plain_makespans_s": plain_s,
        "cognopt_makespans_s": cog_s,
        "plain_vs_ideal": p / ideal,
        "cognopt_vs_ideal": c / ideal,
        "ray_calls": m["ray_calls"],
        "tasks_packed": m["tasks_packed"],
        "baseline": (
            f"plain Ray on the same {nodes}-node Cluster in the same run: {n} sleep tasks of {d:g} s "
            "submitted with .remote() per task at once, makespan to the last result; ideal = "
            "ceil(tasks / slots) x duration"
        ),
    }
    ratios = {"scale_makespan_vs_plain": c / p}
    rows = [
        ("makespan (s)", ideal, p, c),
        ("x ideal", 1.0, p / ideal, c / ideal),
    ]
    emit("scale", args.quick, results, ratios, rows, ("measure", "ideal", "plain Ray", "cognopt"))
    cognopt_ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
