"""The shared cache on a real Ray and real redis-servers: both backends, TTLs, Redis killed mid-run."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from cognopt_ray.config import Settings
from cognopt_ray.errors import InvalidInput
from cognopt_ray.memory import SharedCache


@pytest.fixture
def make_cache(ray_session, tmp_path):
    made = []

    def make(redis_url=None, **memory):
        name = f"cognopt.memory_cache_test_{uuid.uuid4().hex[:8]}"
        settings = Settings.load(
            storage_root=str(tmp_path),
            redis_url=redis_url,
            memory={"cache_redis_retry_s": 0.2, "cache_redis_timeout_s": 0.5, **memory},
        )
        cache = SharedCache(settings, namespace=f"test:{uuid.uuid4().hex[:6]}:", actor_name=name)
        made.append(cache)
        return cache

    yield make
    for c in made:
        if c._actor is not None:
            ray_session.kill(c._actor, no_restart=True)


def test_in_cluster_backend_get_set_delete_ttl(make_cache):
    cache = make_cache()
    assert cache.backend == "in_cluster"
    assert cache.set("a", b"bytes") == "in_cluster"
    cache.set("b", {"json": [1, 2]}, ttl_s=1.5)  # long enough for a loaded machine to read it back
    cache.set("c", np.arange(4))
    assert cache.get("a") == b"bytes" and cache.get("b") == {"json": [1, 2]}
    assert np.array_equal(cache.get("c"), np.arange(4))
    time.sleep(1.6)
    assert cache.get("b", "gone") == "gone"
    assert cache.delete("a") is True and cache.delete("a") is False
    assert cache.get("a") is None
    stats = cache._cluster_call("stats")["in_cluster"]
    assert stats["hits"] == 3 and stats["misses"] == 2 and stats["expired"] == 1
    assert stats["hit_rate"] == pytest.approx(3 / 5)
    assert cache.health() == {"status": "up", "backend": "in_cluster", "reason": "COGNOPT_REDIS_URL is not set"}


def test_in_cluster_backend_is_lru_by_bytes(make_cache):
    cache = make_cache(cache_max_bytes=3000)
    for k in ("a", "b", "c"):
        cache.set(k, b"x" * 900)
    cache.get("a")  # b is now least recently used
    cache.set("d", b"y" * 900)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("d") is not None
    s = cache._cluster_call("stats")["in_cluster"]
    assert s["bytes"] <= 3000 and s["evictions"] == 1


def test_bad_keys_values_and_ttls_are_refused(make_cache):
    cache = make_cache()
    for bad in ("", "x" * 600, 5, "nul\x00"):
        with pytest.raises(InvalidInput):
            cache.set(bad, b"v")
    with pytest.raises(InvalidInput, match="ttl_s"):
        cache.set("k", b"v", ttl_s=-1)
    with pytest.raises(InvalidInput, match="cannot store"):
        cache.set("k", object())
    assert cache.get("k") is None


def test_redis_backend_sets_ttl_with_the_value(make_cache, redis_server):
    import redis

    cache = make_cache(redis_server.url)
    assert cache.set("k", b"value", ttl_s=30) == "redis"
    r = redis.Redis.from_url(redis_server.url)
    raw_key = cache.namespace + "k"
    assert r.get(raw_key) == b"Bvalue"
    assert 0 < r.pttl(raw_key) <= 30_000
    assert cache.get("k") == b"value" and cache.get("missing") is None
    assert cache.delete("k") and not r.exists(raw_key)
    assert cache.health() == {"status": "up", "backend": "redis"}
    assert cache.stats()["redis_hit_rate"] == pytest.approx(0.5)


def test_redis_killed_mid_run_falls_back_and_returns(make_cache, redis_factory):
    server = redis_factory()
    cache = make_cache(server.url)
    assert cache.set("before", b"1") == "redis"
    server.stop()  # Redis goes away mid-run: no call below may fail
    assert cache.get("before") is None  # its data went with it; the call still answers
    assert cache.set("during", b"2") == "in_cluster"
    assert cache.get("during") == b"2"
    health = cache.health()
    assert health["status"] == "degraded" and health["backend"] == "in_cluster"
    assert "unreachable" in health["reason"] and server.url in health["reason"]
    actor_health = cache._cluster_call("health")
    assert actor_health["status"] == "degraded" and "unreachable" in actor_health["reason"]
    import asyncio

    from cognopt_ray.system.health import check_health

    doc = asyncio.run(check_health(cache.settings))  # what GET /health serves
    engine = doc["engines"][cache.actor_name.removeprefix("cognopt.")]
    assert engine["status"] == "degraded" and server.url in engine["reason"]
    assert doc["status"] == "degraded"
    server.start()  # same port
    time.sleep(0.3)  # past cache_redis_retry_s
    assert cache.set("after", b"3") == "redis"
    assert cache.health()["status"] == "up"
    assert cache.get("after") == b"3"
    assert cache.get("during") == b"2"  # written during the outage, still readable
    assert cache.delete("during") and cache.get("during") is None
    assert cache._cluster_call("health")["status"] == "up"
    cache.flush_stats()
    time.sleep(0.2)
    stats = cache._cluster_call("stats")["redis"]
    assert stats["fallbacks"] == 1 and stats["errors"] >= 1
