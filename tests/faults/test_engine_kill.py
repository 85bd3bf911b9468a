"""Each engine actor killed (``ray.kill(no_restart=False)``) under a steady load of its own operations.

The engine must come back (max_restarts=-1), every caller gets a result or a clear error
(a ``CognoptError``: 503 EngineUnavailable, retryable) within a bound, and no acknowledged write
is lost. Each test runs its own actor (own name, own storage root) where the engine allows it,
so the session's engines are not disturbed; the CPU test kills the session's shared scheduler
``cognopt.cpu`` (the cluster has one), which must come back for every later test.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
import ray

from cognopt_ray import runtime
from cognopt_ray.config import Settings
from cognopt_ray.errors import CognoptError
from tests.faults.harness import assert_healthy_run, run_with_kill, wait_up

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)


def _settings(tmp_path, **extra) -> Settings:
    return Settings.load(
        storage_root=str(tmp_path / "root"),
        storage={"lifecycle_enabled": False, "progress": False, "min_free_bytes": 0},
        **extra,
    )


def _kill(handle):
    def go():
        ray.kill(handle, no_restart=False)

    return go


def _retry(fn, timeout=120):
    return wait_up(fn, timeout=timeout, interval=0.3)


EXPECTED = {
    "cognopt.cpu",
    "cognopt.memory",
    "cognopt.memory_cache",
    "cognopt.storage",
    "cognopt.network",
    "cognopt.network_cache",
}


def _up(fn, timeout=600):
    """Wait for a new actor's first answer (its worker process may take long to start on a busy
    machine); only then does the load, with its per-call bound, begin."""
    deadline = time.time() + timeout
    while True:
        try:
            return fn()
        except CognoptError:
            if time.time() > deadline:
                raise
            time.sleep(1)


def _kill_named(name):
    try:
        ray.kill(ray.get_actor(name, namespace=runtime.NAMESPACE), no_restart=True)
    except ValueError:
        pass


def test_the_suite_covers_every_engine_actor(ray_session):
    """The six engine actors are the ones killed below; a new engine actor shows up here."""
    from cognopt_ray import cpu, memory, network, storage

    assert {
        cpu.ACTOR_NAME,
        memory.ACTOR_NAME,
        memory.CACHE_ACTOR_NAME,
        storage.ACTOR_NAME,
        network.ACTOR_NAME,
        network.CACHE_ACTOR_NAME,
    } == EXPECTED
    live = {n for n in runtime.list_engine_actors() if n.count(".") == 1}
    assert live <= EXPECTED, live - EXPECTED


def test_storage_killed_under_load_loses_no_acknowledged_write(ray_session, tmp_path):
    from cognopt_ray.storage import client

    c = client(_settings(tmp_path), name=f"cognopt.storage.fault-{uuid.uuid4().hex[:6]}")
    try:
        _up(c.health)

        def op(i):
            data = os.urandom(64) + f"item {i}".encode() * 50
            c.put(f"k{i}", data, tier="warm" if i % 2 else "hot")
            return data

        rep = run_with_kill(op, _kill(c.actor))
        assert_healthy_run(rep)
        for i, data in rep.acked.items():
            assert _retry(lambda i=i: c.get(f"k{i}")) == data, i
        report = c.verify()
        assert not report.get("damaged") and not report.get("missing"), report
    finally:
        ray.kill(c.actor, no_restart=True)


def test_memory_killed_under_load_keeps_persistent_allocations(ray_session, tmp_path):
    from cognopt_ray.memory import MemoryPools

    settings = _settings(tmp_path, services={"fault_svc": {"memory": {"pool_size": 100_000, "block_size": 1024}}})
    pools = MemoryPools.connect(
        settings, name=f"cognopt.memory.fault-{uuid.uuid4().hex[:6]}", state_dir=str(tmp_path / "mem")
    )
    try:
        _up(pools.health)

        def op(i):
            value = {"i": i, "pad": "x" * 200}
            aid = pools.allocate("fault_svc", value, memory_type="persistent")
            assert pools.get(aid) == value
            return aid, value

        rep = run_with_kill(op, _kill(pools.actor))
        assert_healthy_run(rep)
        for aid, value in rep.acked.values():
            assert _retry(lambda aid=aid: pools.get(aid)) == value, aid
    finally:
        ray.kill(pools.actor, no_restart=True)


def test_memory_cache_killed_under_load_answers_every_call(ray_session, tmp_path):
    """A cache may forget (it is a cache), but never answers wrong and never fails a caller."""
    from cognopt_ray.memory import SharedCache

    name = f"cognopt.memory_cache.fault-{uuid.uuid4().hex[:6]}"
    cache = SharedCache(_settings(tmp_path), actor_name=name)
    try:

        def op(i):
            cache.set(f"k{i}", {"i": i}, ttl_s=600)
            got = cache.get(f"k{i}")
            assert got in (None, {"i": i}), got
            return {"i": i}

        _up(lambda: cache.set("warm", 1))
        rep = run_with_kill(op, _kill(ray.get_actor(name, namespace=runtime.NAMESPACE)))
        assert_healthy_run(rep)
        for i in rep.acked:
            assert cache.get(f"k{i}") in (None, {"i": i})
    finally:
        _kill_named(name)


@pytest.fixture
def origin(origin):
    """The session's origin with this module's ``/data`` route."""
    from aiohttp import web

    origin.routes["/data"] = lambda request: web.Response(
        text=f"body of {request.query.get('i')}", headers={"Cache-Control": "max-age=300"}
    )
    return origin


def _network(tmp_path, suffix: str):
    from cognopt_ray.network import NetworkEngine

    settings = _settings(tmp_path, network={"allowlist": ["127.0.0.1"], "near_cache_ttl_s": 0})
    tag = uuid.uuid4().hex[:6]
    engine = NetworkEngine.get_or_create(
        settings, name=f"cognopt.network.fault-{tag}", cache_actor_name=f"cognopt.network_cache.fault-{tag}"
    )
    return engine, f"cognopt.network_cache.fault-{tag}"


def test_network_killed_under_load(ray_session, tmp_path, origin):
    engine, cache_name = _network(tmp_path, "net")
    try:
        _up(lambda: engine.request(origin.url("/data?i=0")))

        def op(i):
            r = engine.request(origin.url(f"/data?i={i % 20}"))
            assert r.status == 200 and r.body == f"body of {i % 20}".encode(), (r.status, r.body[:100])
            return r.cache_status

        rep = run_with_kill(op, _kill(engine.actor))
        assert_healthy_run(rep)
        assert set(rep.acked.values()) <= {"HIT", "MISS", "REVALIDATED", "STALE"}
    finally:
        ray.kill(engine.actor, no_restart=True)
        _kill_named(cache_name)


def test_network_cache_killed_under_load_fails_no_request(ray_session, tmp_path, origin):
    engine, cache_name = _network(tmp_path, "cache")
    try:
        _up(lambda: engine.request(origin.url("/data?i=0")))  # creates the cache actor

        def op(i):
            r = engine.request(origin.url(f"/data?i={i % 20}"))
            assert r.status == 200 and r.body == f"body of {i % 20}".encode()
            return r.cache_status

        rep = run_with_kill(op, _kill(ray.get_actor(cache_name, namespace=runtime.NAMESPACE)))
        assert_healthy_run(rep)
        assert not rep.clear_errors, rep.clear_errors[:5]  # the cache going away fails no request
    finally:
        ray.kill(engine.actor, no_restart=True)
        _kill_named(cache_name)


def _double(x):
    return 2 * x


def test_cpu_scheduler_killed_under_load(ray_session):
    """``cognopt.cpu`` is the cluster's one scheduler: the *shared* one is killed, it comes back;
    tasks in flight are re-run or reported lost (a clear error), and every result that came back
    is right. A later caller, through the same client, gets results again."""
    from cognopt_ray import cpu

    sched = cpu.client()
    _up(sched.health)

    def op(i):
        return i, ray.get(sched.submit(_double, i, priority=1 + i % 5, num_cpus=0.1), timeout=55)

    def run_and_translate(i):
        try:
            return op(i)
        except ray.exceptions.RayError as e:  # what the client hands back for a task's ObjectRef
            from cognopt_ray._private.client import translate_error

            raise translate_error(e, "cpu") from None

    rep = run_with_kill(run_and_translate, _kill(sched.actor), warmup=8, after=8)
    assert_healthy_run(rep, after=8)
    for n, value in rep.acked.values():
        assert value == 2 * n
    _retry(lambda: sched.health())
    assert _retry(lambda: op(21)) == (21, 42)
