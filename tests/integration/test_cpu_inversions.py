"""Priority inversions on a multi-node Cluster with mixed task lengths (in a subprocess: the pytest
process has its own Ray).

Three nodes of two CPUs; bursts of BACKGROUND, LOW and MEDIUM tasks of 10 ms to 400 ms (short ones
are packed, long ones pipelined, as in throughput mode) and a stream of CRITICAL tasks into them.
An inversion is a lower-level task *starting* while a CRITICAL task has waited longer than the
longest task of the workload: without preemption a CRITICAL task waits at most for the rest of one
running task, so there must be none. Start times are ``time.time()`` in the worker, submit times
``time.time()`` in the driver, on one machine.
"""

from __future__ import annotations

import textwrap

import pytest

from tests.support.helpers import run_ray_script

SCRIPT = textwrap.dedent(
    r"""
    import json, random, sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    import cognopt_ray
    from cognopt_ray.config import Settings
    from cognopt_ray.cpu import CPUTask, PriorityScheduler
    from cognopt_ray.priority import Priority

    LENGTHS = (0.01, 0.05, 0.2, 0.4)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    for _ in range(3):
        cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    settings = Settings.load(storage_root=sys.argv[1], cpu={"node_refresh_s": 0.2, "aging_interval_s": 0})
    cognopt_ray.init(address=cluster.address, settings=settings, log_to_driver=False)
    sched = PriorityScheduler(settings=settings)
    while sched.cluster()["total_cpus"] < 6:
        time.sleep(0.1)

    def nap(d):
        start = time.time()
        time.sleep(d)
        return start

    def blink(d):  # the short tasks: their own function, so their run-time estimate is short and they pack
        start = time.time()
        time.sleep(d)
        return start

    def task(d, **kw):
        return CPUTask(blink if d < 0.02 else nap, (d,), **kw)

    ray.get(sched.submit_batch([CPUTask(nap, (0.3,)) for _ in range(18)]))  # workers on every node
    ray.get(sched.submit_batch([task(d) for d in LENGTHS for _ in range(6)]))  # run-time estimates
    rng = random.Random(7)
    lower, crit = [], []  # (level, submit time, ref)
    for phase in range(2):
        time.sleep(1.5)  # past the latency guard: the burst starts in throughput mode
        tasks = [
            task(rng.choice(LENGTHS), priority=rng.choice((Priority.MEDIUM, Priority.LOW, Priority.BACKGROUND)))
            for _ in range(120)
        ]
        t0 = time.time()
        refs = sched.submit_batch(tasks)
        lower += [(int(t.priority), t0, r) for t, r in zip(tasks, refs)]
        time.sleep(0.4)
        for _ in range(12):
            t0 = time.time()
            d = rng.choice((0.01, 0.1))
            crit.append((1, t0, sched.submit(blink if d < 0.02 else nap, d, priority=Priority.CRITICAL)))
            time.sleep(rng.uniform(0.1, 0.3))
        ray.get([r for _, _, r in lower])
    ray.get([r for _, _, r in crit])
    out = {
        "lower": [(lvl, t0, ray.get(r)) for lvl, t0, r in lower],
        "critical": [(lvl, t0, ray.get(r)) for lvl, t0, r in crit],
        "longest_s": max(LENGTHS),
        "metrics": {k: sched.metrics()[k] for k in ("tasks_packed", "tasks_withdrawn", "tasks_preempted", "ray_calls")},
    }
    print("RESULT " + json.dumps(out))
    cognopt_ray.shutdown()
    cluster.shutdown()
    """
)


def inversions(out: dict) -> list[tuple[float, float]]:
    """(CRITICAL wait so far, lower task's start) for each lower task that started while a CRITICAL
    task had waited longer than the longest task."""
    longest = out["longest_s"]
    found = []
    for _, c_submit, c_start in out["critical"]:
        for _, _, start in out["lower"]:
            if c_submit + longest < start < c_start:
                found.append((start - c_submit, start))
    return found


@pytest.mark.slow
def test_no_priority_inversion_on_three_nodes_with_mixed_lengths(tmp_path):
    out = run_ray_script(SCRIPT, tmp_path, str(tmp_path / "root"))
    assert len(out["critical"]) == 24 and len(out["lower"]) == 240
    waits = sorted(start - submit for _, submit, start in out["critical"])
    assert inversions(out) == [], f"CRITICAL waits {waits}"
    assert out["metrics"]["tasks_packed"] > 0  # the short lower tasks were packed (throughput mode ran)


def test_inversion_counter_counts_a_lower_start_behind_a_long_waiting_critical():
    """The counter itself: a lower task starting 0.5 s after a CRITICAL submit (longest 0.4 s),
    before that CRITICAL started, is one inversion; one starting at 0.3 s is not."""
    out = {
        "longest_s": 0.4,
        "critical": [(1, 10.0, 10.9)],
        "lower": [(5, 9.0, 10.3), (5, 9.0, 10.5), (5, 9.0, 11.0)],
    }
    assert inversions(out) == [(0.5, 10.5)]
