"""``redis-server`` killed in the middle of a run and started again: no request fails, and the
caches go back to Redis once it answers (the network engine's response cache and the memory
engine's shared cache)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import ray
import redis
from aiohttp import web

from cognopt_ray import runtime
from cognopt_ray.config import Settings
from tests.faults.harness import wait_up

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)


def _load(fn, stop: threading.Event, failures: list, counts: dict, threads: int = 3):
    def loop(t):
        i = 0
        while not stop.is_set():
            try:
                fn(t * 100_000 + i)
                counts["ok"] += 1
            except Exception as e:  # noqa: BLE001 - the test counts every error a caller sees
                failures.append(f"{type(e).__name__}: {str(e)[:200]}")
            i += 1

    ts = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    return ts


def _phase(counts, n, timeout=180, failures=()):
    start = counts["ok"]
    deadline = time.time() + timeout
    while counts["ok"] - start < n:
        assert time.time() < deadline, f"no progress ({counts}); last failures: {list(failures)[-3:]}"
        time.sleep(0.05)


@pytest.fixture
def origin(origin):
    """The session's origin with this module's ``/r`` route."""
    origin.routes["/r"] = lambda request: web.Response(
        text=f"v{request.query.get('i')}", headers={"Cache-Control": "max-age=300"}
    )
    return origin


def test_redis_killed_and_restarted_fails_no_request(ray_session, redis_factory, tmp_path, origin):
    from cognopt_ray.memory import SharedCache
    from cognopt_ray.network import NetworkEngine

    server = redis_factory()
    settings = Settings.load(
        storage_root=str(tmp_path / "root"),
        redis_url=server.url,
        network={"allowlist": ["127.0.0.1"], "near_cache_ttl_s": 0, "redis_retry_s": 0.5},
        memory={"cache_redis_retry_s": 0.5},
    )
    tag = uuid.uuid4().hex[:6]
    engine = NetworkEngine.get_or_create(
        settings, name=f"cognopt.network.redis-{tag}", cache_actor_name=f"cognopt.network_cache.redis-{tag}"
    )
    cache = SharedCache(settings, actor_name=f"cognopt.memory_cache.redis-{tag}")
    failures: list[str] = []
    counts = {"ok": 0}
    wait_up(lambda: engine.request(origin.url("/r?i=0")))
    wait_up(lambda: cache.set("warm", 1))

    def op(i):
        r = engine.request(origin.url(f"/r?i={i % 30}"))
        assert r.status == 200 and r.body == f"v{i % 30}".encode()
        cache.set(f"k{i % 50}", i % 50, ttl_s=600)
        got = cache.get(f"k{i % 50}")
        assert got in (None, i % 50), got

    stop = threading.Event()
    threads = _load(op, stop, failures, counts)
    try:
        _phase(counts, 20, failures=failures)
        r = redis.Redis.from_url(server.url)
        assert r.dbsize() > 0  # the caches are in Redis
        server.stop()  # kill -TERM; redis-server exits at once (no persistence configured)
        _phase(counts, 30, failures=failures)
        assert engine.health()["status"] in ("degraded", "up")
        server.start()  # same port
        _phase(counts, 40, failures=failures)
        deadline = time.time() + 180
        while r.dbsize() == 0:  # new entries land in Redis again
            assert time.time() < deadline, "the caches did not return to Redis"
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(60)
        assert cache.backend == "redis"
        deadline = time.time() + 60  # the network engine returns to Redis on its next call after its retry delay
        while engine.health()["status"] != "up":
            assert time.time() < deadline, engine.health()
            engine.request(origin.url("/r?i=1"))
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        ray.kill(engine.actor, no_restart=True)
        for name in (f"cognopt.network_cache.redis-{tag}", f"cognopt.memory_cache.redis-{tag}"):
            try:
                ray.kill(ray.get_actor(name, namespace=runtime.NAMESPACE), no_restart=True)
            except ValueError:
                pass
    assert not failures, failures[:5]
