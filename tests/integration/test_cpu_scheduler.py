"""The CPU engine on a real Ray (the session's, 4 CPUs): order, aging, pools, faults."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid

import pytest
import ray

from cognopt_ray.config import Settings
from cognopt_ray.cpu import CPUTask, PriorityScheduler, TaskLost, Unschedulable
from cognopt_ray.cpu._actor import _SchedulerActor
from cognopt_ray.errors import InvalidInput
from cognopt_ray.runtime import get_or_create_actor


class Gate:
    """Tasks wait on it until the test opens it: files, so a waiting task holds its CPU.

    (A task blocked in ``ray.get`` lends its CPU back to Ray, which would start more tasks.)
    """

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="cpu-gate-")

    def arrived(self) -> int:
        return sum(1 for p in os.listdir(self.dir) if p.startswith("arr-"))

    def set(self) -> None:
        open(os.path.join(self.dir, "open"), "w").close()


@pytest.fixture
def make_sched(ray_session, tmp_path):
    made = []

    def make(**cpu) -> PriorityScheduler:
        base = {
            "pipeline_depth": 0,
            "pipeline_budget_s": 0.0,
            "aging_interval_s": 0,
            "node_refresh_s": 0.5,
            "monitor_interval_s": 0.5,
        }
        settings = Settings.load(storage_root=str(tmp_path / f"s{len(made)}"), cpu={**base, **cpu})
        name = f"cognopt.cpu-test-{uuid.uuid4().hex[:6]}"
        handle = get_or_create_actor(_SchedulerActor, name, settings.to_overrides())
        made.append(handle)
        return PriorityScheduler(handle, settings=settings)

    yield make
    for h in made:
        ray.kill(h, no_restart=True)


def wait_gate(gate, hold_s: float = 300.0) -> float:
    start = time.time()
    open(os.path.join(gate.dir, f"arr-{uuid.uuid4().hex}"), "w").close()
    while not os.path.exists(os.path.join(gate.dir, "open")) and time.time() - start < hold_s:
        time.sleep(0.02)
    return start


def stamp(tag):
    return tag, time.time()


def wait_for(cond, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        if time.time() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


def block_cluster(sched, gate, n=4, **kw):
    refs = [sched.submit(wait_gate, gate, **kw) for _ in range(n)]
    wait_for(lambda: gate.arrived() >= n, timeout=180)
    return refs


def test_strict_priority_then_fifo(make_sched):
    sched = make_sched()
    gate = Gate()
    blockers = block_cluster(sched, gate)
    order = [5, 3, 1, 4, 2, 1, 3, 5, 2]
    refs = [sched.submit(stamp, (p, i), priority=p, num_cpus=4) for i, p in enumerate(order)]
    wait_for(lambda: sched.metrics()["queued"] == len(order))
    gate.set()
    ray.get(blockers, timeout=180)
    ran = sorted(ray.get(refs, timeout=180), key=lambda r: r[1])
    got = [tag for tag, _ in ran]
    expected = sorted([(p, i) for i, p in enumerate(order)])
    assert got == expected  # by level, FIFO (submission index) within a level


def test_results_errors_and_batch(make_sched):
    sched = make_sched()

    def boom(x):
        raise ValueError(f"boom {x}")

    assert ray.get(sched.submit(pow, 2, 10, priority="critical")) == 1024
    with pytest.raises(ValueError, match="boom 1"):
        ray.get(sched.submit(boom, 1))
    tasks = [CPUTask(pow, (2, i)) for i in range(5)] + [CPUTask(boom, (7,))] + [CPUTask(abs, (-3,))]
    refs = sched.submit_batch(tasks, chunk_size=4)
    assert ray.get(refs[:5]) == [1, 2, 4, 8, 16]
    with pytest.raises(ValueError, match="boom 7"):
        ray.get(refs[5])
    assert ray.get(refs[6]) == 3
    assert sched.run_all([CPUTask(pow, (3, 2), priority=p) for p in (5, 1, 3)]) == [9, 9, 9]

    import asyncio

    async def go():
        return await sched.optimize_async_processing([CPUTask(pow, (2, n), priority=n % 5 + 1) for n in range(6)])

    assert asyncio.run(go()) == [1, 2, 4, 8, 16, 32]
    m = sched.metrics()
    assert m["tasks_failed"] >= 2 and m["tasks_processed"] >= 14


def test_bad_input_is_refused_and_queues_nothing(make_sched):
    sched = make_sched()
    before = sched.metrics()["tasks_submitted"]
    for bad in (0, 6, "urgent", -1, True):
        with pytest.raises(InvalidInput):
            sched.submit(abs, 1, priority=bad)
    with pytest.raises(InvalidInput):
        sched.submit(abs, 1, num_cpus=0)
    with pytest.raises(InvalidInput):
        sched.submit(abs, 1, task_type="gpu")
    with pytest.raises(InvalidInput):
        sched.submit_batch([CPUTask(abs, (1,)), CPUTask(abs, (1,), service="Bad Name")])
    with pytest.raises(Unschedulable, match="largest node offers"):
        sched.submit(abs, 1, num_cpus=64)
    with pytest.raises(Unschedulable):
        sched.submit_batch([CPUTask(abs, (1,)), CPUTask(abs, (1,), num_cpus=1000)])
    with pytest.raises(InvalidInput):
        CPUTask(abs, (1,), priority=9)
    # the actor refuses them too, when a client skips its own checks
    with pytest.raises(Exception, match="largest node offers"):
        ray.get(sched.actor.run.remote("k", None, "x", ((), {}), {"num_cpus": 99}))
    m = sched.metrics()
    assert m["tasks_submitted"] == before and m["queued"] == 0


def test_aging_lets_low_finish_under_high_flood(make_sched):
    sched = make_sched(aging_interval_s=0.3)
    stop = threading.Event()
    flood = []

    def feed():
        while not stop.is_set():
            if sched.metrics()["queue_depth"]["high"] < 10:  # keep a HIGH backlog at all times
                flood.extend(sched.submit(time.sleep, 0.05, priority="high", num_cpus=4) for _ in range(10))
            time.sleep(0.05)

    flood.extend(sched.submit(time.sleep, 0.05, priority="high", num_cpus=4) for _ in range(30))
    wait_for(lambda: sched.metrics()["queue_depth"]["high"] >= 20)
    th = threading.Thread(target=feed, daemon=True)
    th.start()
    low = sched.submit(stamp, "low", priority="low", num_cpus=4)
    try:
        ray.get(low, timeout=180)
        flooding = th.is_alive()
    finally:
        stop.set()
        th.join()
    assert flooding  # the HIGH flood was still running when LOW finished
    ray.get(flood, timeout=180)
    assert sched.metrics()["tasks_aged"] >= 1


def test_service_cap_threshold_and_recommendation(make_sched):
    sched = make_sched()
    sched.configure_service("capped_svc", max_workers=1)

    def span(d):
        s = time.time()
        time.sleep(d)
        return s, time.time()

    spans = sorted(ray.get([sched.submit(span, 0.2, service="capped_svc") for _ in range(4)], timeout=180))
    for (_s1, e1), (s2, _e2) in zip(spans, spans[1:]):
        assert s2 >= e1 - 0.01  # never two at once
    recs = sched.metrics()["recommendations"]
    assert any(r["kind"] == "service_cap" and r["service"] == "capped_svc" and r["value"] > 0 for r in recs)

    # threshold: a LOW task of the service waits while HIGH work is queued, even if a CPU is free
    sched.configure_service("thresh_svc", priority_threshold="high")
    gate = Gate()
    gate2 = Gate()
    blockers = block_cluster(sched, gate, n=3)
    blocker4 = sched.submit(wait_gate, gate2)
    high = sched.submit(stamp, "high", priority="high", num_cpus=4)
    low = sched.submit(stamp, "low", priority="low", service="thresh_svc")
    wait_for(lambda: sched.metrics()["queued"] == 2)
    gate2.set()  # one CPU frees: only `low` would fit, but it must wait for `high`
    ray.get(blocker4)
    time.sleep(0.5)
    assert sched.metrics()["queued"] == 2
    gate.set()
    (_, t_high), (_, t_low) = ray.get([high, low], timeout=180)
    assert t_low >= t_high
    ray.get(blockers)
    with pytest.raises(InvalidInput):
        sched.configure_service("thresh_svc", max_workers=-1)
    with pytest.raises(InvalidInput):
        sched.configure_service("Bad Name", max_workers=1)


def test_io_pool_runs_without_cpu_slots(make_sched):
    sched = make_sched(io_pool_threads=16)
    gate = Gate()
    blockers = block_cluster(sched, gate)  # every CPU slot is held

    def io_wait(d):
        time.sleep(d)
        return os.getpid()

    refs = [sched.submit(io_wait, 0.3, task_type="io") for _ in range(12)]
    pids = ray.get(refs, timeout=180)  # finish although all CPUs are taken
    assert len(set(pids)) == 1  # one threaded pool actor on the node
    sched.configure_service("io_svc", pool_kind="io")
    assert ray.get(sched.submit(io_wait, 0.0, service="io_svc"), timeout=180) == pids[0]
    gate.set()
    ray.get(blockers)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no sched_setaffinity on this OS")
def test_cpu_affinity_seen_inside_the_task(make_sched):
    sched = make_sched()
    sched.configure_service("pinned_svc", cpu_affinity=[0])

    def affinity():
        return sorted(os.sched_getaffinity(0))

    assert ray.get(sched.submit(affinity, service="pinned_svc"), timeout=180) == [0]
    sched.configure_service("pinned_svc", cpu_affinity=[])
    assert len(ray.get(sched.submit(affinity, service="pinned_svc"), timeout=180)) == (os.cpu_count() or 1)


def test_preemption_requeues_and_still_delivers(make_sched):
    sched = make_sched(preemption=True)

    def long(tag):
        s = time.time()
        for _ in range(40):
            time.sleep(0.05)
        return tag, s

    bg = [sched.submit(long, i, priority="background", preemptible=True) for i in range(4)]
    wait_for(lambda: sched.metrics()["running"] >= 4)
    crit = sched.submit(stamp, "crit", priority="critical")
    _, t_crit = ray.get(crit, timeout=60)  # would hang until `rest` opens if the BACKGROUND one took the CPU
    done = ray.get(bg, timeout=180)
    assert sorted(tag for tag, _ in done) == [0, 1, 2, 3]
    assert sched.metrics()["tasks_preempted"] >= 1
    assert any(start > t_crit for _, start in done)  # the preempted one re-ran after the CRITICAL task


def test_scheduler_killed_every_caller_answered(make_sched):
    sched = make_sched()

    def sleepy(i):
        time.sleep(0.3)
        return i

    retriable = [sched.submit(sleepy, i) for i in range(10)]
    once = [sched.submit(sleepy, 100 + i, max_retries=0) for i in range(4)]
    time.sleep(0.5)
    ray.kill(sched.actor, no_restart=False)
    done, failed = [], []
    for ref in retriable + once:
        try:
            done.append(ray.get(ref, timeout=180))
        except (ray.exceptions.RayActorError, TaskLost) as e:
            failed.append(e)
    # retriable tasks are re-run by the restarted scheduler; the others finish or get a clear error
    assert sorted(x for x in done if x < 100) == list(range(10))
    assert len(done) + len(failed) == 14
    assert ray.get(sched.submit(sleepy, 7), timeout=180) == 7  # the restarted scheduler works


def test_short_tasks_are_packed_and_fail_alone(make_sched):
    sched = make_sched(pack_budget_s=0.5, latency_guard_s=0, pipeline_depth=1)

    def quick(i):
        if i == 13:
            raise ValueError("thirteen")
        return i * i, os.getpid()

    ray.get(sched.submit(quick, 1))  # the first run measures the function: nothing is packed blind
    refs = sched.submit_batch([CPUTask(quick, (i,), priority="medium") for i in range(40)])
    for i, ref in enumerate(refs):
        if i == 13:
            with pytest.raises(ValueError, match="thirteen"):
                ray.get(ref, timeout=180)
        else:
            assert ray.get(ref, timeout=180)[0] == i * i
    m = sched.metrics()
    assert m["tasks_packed"] > 0 and m["ray_calls"] < m["tasks_processed"]
    assert m["wait_time_s"]["medium"]["count"] >= 40  # every packed task still has its own wait


def test_pipelined_lower_task_is_withdrawn_for_critical(make_sched):
    sched = make_sched(pipeline_depth=1, latency_guard_s=0, preemption=False)
    first, rest = Gate(), Gate()  # one blocker opens first, so exactly one CPU frees at a time
    running = [sched.submit(wait_gate, first, priority="background")]
    wait_for(lambda: first.arrived() >= 1, timeout=180)
    running += block_cluster(sched, rest, n=3, priority="background")  # 4 CPUs held by BACKGROUND
    queued_in_ray = sched.submit(stamp, "bg", priority="background")  # the pipelined 5th, not started
    wait_for(lambda: sched.metrics()["running"] == 5)
    crit = sched.submit(stamp, "crit", priority="critical")
    wait_for(lambda: sched.metrics()["tasks_withdrawn"] >= 1)
    first.set()  # one CPU frees: it must go to the CRITICAL task, not the one that was in Ray's queue
    _, t_crit = ray.get(crit, timeout=60)  # would hang until `rest` opens if the BACKGROUND one took the CPU
    rest.set()
    _, t_bg = ray.get(queued_in_ray, timeout=180)
    assert t_crit <= t_bg  # the CRITICAL task started first although the BACKGROUND one was in Ray's queue
    ray.get(running, timeout=180)
