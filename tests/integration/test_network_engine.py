"""The network actor: cluster-wide coalescing, Redis and in-cluster backends, fallback, restarts."""

import asyncio
import time
import uuid

import pytest
import ray
import redis
from aiohttp import web

from cognopt_ray.config import Settings
from cognopt_ray.errors import InvalidInput
from cognopt_ray.network import NetworkEngine
from cognopt_ray.network.errors import UrlRefused


@pytest.fixture(scope="module")
def make_engine(ray_session, tmp_path_factory):
    """Engines with their own actor names (the session's Ray is shared); killed afterwards."""
    made = []
    root = tmp_path_factory.mktemp("net-engine")

    def make(redis_url=None, near=0.0, top=None, **network):
        tag = uuid.uuid4().hex[:8]
        settings = Settings.load(
            storage_root=str(root),
            redis_url=redis_url,
            network={"allowlist": ["127.0.0.1"], "near_cache_ttl_s": near, **network},
            **(top or {}),
        )
        eng = NetworkEngine.get_or_create(
            settings, name=f"cognopt.network_t{tag}", cache_actor_name=f"cognopt.network_t{tag}_cache"
        )
        made.append((eng, f"cognopt.network_t{tag}_cache"))
        return eng, settings

    yield make
    for eng, cache_name in made:
        ray.kill(eng.actor, no_restart=True)
        try:
            ray.kill(ray.get_actor(cache_name, namespace="cognopt"), no_restart=True)
        except ValueError:
            pass


@pytest.fixture(scope="module")
def engine(make_engine):
    return make_engine()[0]


def cached(path_fn, cc="max-age=600", body=b"payload"):
    def h(req):
        return web.Response(body=body, headers={"Cache-Control": cc})

    return h


def test_in_cluster_backend_hits_and_metrics(origin, engine):
    h = origin.route()(cached(None))
    eng = engine
    before = eng.metrics()
    assert [eng.request(h.url).cache_status for _ in range(3)] == ["MISS", "HIT", "HIT"]
    m = eng.metrics()
    assert m["hits"] - before["hits"] == 2 and m["misses"] - before["misses"] == 1
    assert m["origin_requests"] - before["origin_requests"] == 1
    assert m["cache_hit_rate"] == pytest.approx((m["hits"] + m["stale"] + m["revalidated"]) / m["cache_lookups"])
    # the MISS saves nothing; each HIT saves the 7 wire bytes a plain client would have received
    assert m["bytes_saved"] - before["bytes_saved"] == 2 * 7
    assert m["bandwidth_saved_mb"] == pytest.approx(m["bytes_saved"] / 1e6)
    assert m["backend"]["backend"] == "in_cluster" and m["backend"]["entries"] >= 1
    assert eng.health()["status"] == "up"


def test_coalescing_across_callers_of_the_actor(origin, engine):
    @origin.route()
    async def slow(req):
        await asyncio.sleep(0.5)
        return web.Response(body=b"x" * 10000, headers={"Cache-Control": "max-age=600"})

    eng = engine
    before = eng.metrics()["coalesced"]

    @ray.remote(num_cpus=0)
    def from_a_task(handle, url):
        return NetworkEngine(handle).request(url).status

    async def go():
        return await asyncio.gather(*(eng.request_async(slow.url) for _ in range(30)))

    task_refs = [from_a_task.remote(eng.actor, slow.url) for _ in range(2)]
    rs = asyncio.run(go())
    assert ray.get(task_refs) == [200, 200]
    assert all(r.body == b"x" * 10000 for r in rs)
    assert origin.hits[slow.path] == 1
    m = eng.metrics()
    # the one origin request answered everyone: waiters that arrived in time were coalesced,
    # later ones were cache hits (how many of each depends on scheduling, not on the engine)
    assert m["coalesced"] - before >= 1


def test_guard_errors_cross_the_actor_boundary(engine):
    eng = engine
    with pytest.raises(UrlRefused) as e:
        eng.request("http://169.254.169.254/latest/meta-data/")
    assert e.value.status == 403 and e.value.extra["rule"] == "global-address"
    with pytest.raises(InvalidInput):
        eng.optimize_service("ai_models", cache_strategy="forever")


def test_redis_backend_compressed_namespaced_with_ttl_and_size_cap(origin, make_engine, redis_server):
    body = b'{"a": "b"}' * 1000
    h = origin.route()(cached(None, cc="max-age=100, stale-while-revalidate=50", body=body))
    import os

    big_body = os.urandom(200_000)  # incompressible: over cache_max_entry_bytes
    big = origin.route()(cached(None, body=big_body))
    ns = f"test:{uuid.uuid4().hex[:6]}:"
    eng, _ = make_engine(redis_url=redis_server.url, redis_namespace=ns, cache_max_entry_bytes=100_000)
    assert [eng.request(h.url).cache_status for _ in range(2)] == ["MISS", "HIT"]
    r = redis.Redis.from_url(redis_server.url)
    keys = r.keys(ns + "*")
    assert keys == [(ns + h.url + "#-").encode()]  # URL + partition (no service: admin's "-")
    value = r.get(keys[0])
    assert value.startswith(b"CNC2\x28\xb5\x2f\xfd")  # our magic, then a zstd frame
    assert len(value) < len(body) / 5
    assert 140 <= r.ttl(keys[0]) <= 150  # freshness + stale window
    assert [eng.request(big.url).cache_status for _ in range(2)] == ["MISS", "MISS"]
    assert eng.health()["status"] == "up" and eng.metrics()["backend"]["backend"] == "redis"
    assert eng.purge(prefix=origin.url("/")) >= 1 and r.keys(ns + "*") == []


def test_redis_down_falls_back_and_comes_back(origin, make_engine, redis_factory):
    server = redis_factory()
    a = origin.route()(cached(None, body=b"A"))
    b = origin.route()(cached(None, body=b"B"))
    c = origin.route()(cached(None, body=b"C"))
    import base64
    import os

    key = base64.b64encode(os.urandom(32)).decode()
    eng, settings = make_engine(
        redis_url=server.url, redis_retry_s=0.2, hot_cache_max_bytes=0, top={"encryption_key": key}
    )
    assert eng.request(a.url).cache_status == "MISS"
    server.stop()
    # no request fails because the cache is gone
    assert eng.request(b.url).status == 200
    health = eng.health()
    assert health["status"] == "degraded" and "Redis" in health["reason"]
    assert eng.request(b.url).cache_status == "HIT"  # served by the in-cluster fallback
    assert eng.metrics()["backend"]["backend"].startswith("in_cluster")
    server.start()
    deadline = time.time() + 20
    while eng.health()["status"] != "up" and time.time() < deadline:
        time.sleep(0.3)
    assert eng.health()["status"] == "up"
    assert eng.request(c.url).cache_status == "MISS"
    from yarl import URL

    from cognopt_ray._private.sealer import is_sealed
    from cognopt_ray.network.entries import CacheStore, entry_key, pack, unpack

    red = redis.Redis.from_url(server.url)
    assert not [k for k in red.scan_iter(count=1000) if b"/t/" in k or b"127.0.0.1" in k]  # names reveal no URL
    store = CacheStore(settings, None, lambda: None)
    k = entry_key(URL(c.url), None)
    name = store.name(k)
    value = red.get(f"cognopt:net:v1:{name}")
    assert is_sealed(value)  # sealed at rest (AES-GCM, the network cache's HKDF sub-key)
    assert unpack(value, k.logical, sealer=store.sealer, aad=name.encode())[0].body == b"C"
    with pytest.raises(ValueError):  # bound to its name: under another name it does not open
        unpack(value, k.logical, sealer=store.sealer, aad=store.name(entry_key(URL(c.url), "ai_models")).encode())
    # an unsealed entry where a sealed one is expected is refused (a miss, then replaced), not read
    forged = unpack(value, k.logical, sealer=store.sealer, aad=name.encode())
    forged[0].body = b"FORGED"
    red.set(f"cognopt:net:v1:{name}", pack(forged, k.logical), px=600_000)
    again = eng.request(c.url)
    assert again.cache_status == "MISS" and again.body == b"C"
    assert is_sealed(red.get(f"cognopt:net:v1:{name}"))


def test_near_cache_in_the_client(origin, engine):
    h = origin.route()(cached(None))
    eng = NetworkEngine(engine.actor, near_cache_ttl_s=5.0)
    before = eng.metrics()
    first = eng.request(h.url)
    second = eng.request(h.url, request_id="r2")  # answered in this process
    assert first.cache_status == "MISS" and second.cache_status == "HIT"
    assert second.request_id == "r2" and second.timings_ms["near_cache"] == 1.0 and second.body == first.body
    m = eng.metrics()
    assert m["near_hits"] - before["near_hits"] == 1 and m["hits"] - before["hits"] == 1
    assert m["requests"] - before["requests"] == 2
    assert m["bytes_saved"] - before["bytes_saved"] == 7  # the near hit saved the body's 7 wire bytes
    eng.purge(url=h.url)
    assert eng.request(h.url).cache_status == "MISS"
    assert origin.hits[h.path] == 2


def test_hits_on_the_actors_node_skip_the_actor_call(origin, make_engine, monkeypatch):
    """A client on the actor's node asks its Unix socket first (cognopt_ray.network.local_socket):
    fresh hot-cache hits come back that way, counted once by the engine; the rest are actor calls."""
    from cognopt_ray.network import local_socket

    eng, _ = make_engine()
    h, post = origin.route()(cached(None)), origin.route()(cached(None))
    before = eng.metrics()
    assert [eng.request(h.url).cache_status for _ in range(3)] == ["MISS", "HIT", "HIT"]
    assert asyncio.run(eng.request_async(h.url)).cache_status == "HIT"
    assert eng.request(post.url, method="POST").cache_status == "BYPASS"  # never asked over the socket
    assert (eng.local.hits, eng.local.misses) == (3, 1)
    m = eng.metrics()
    assert m["requests"] - before["requests"] == 5 and m["hits"] - before["hits"] == 3
    assert origin.hits[h.path] == 1
    endpoint = ray.get(eng.actor.local_endpoint.remote())
    assert endpoint["node_id"] == ray.get_runtime_context().get_node_id()

    # the actor restarts: its old socket is gone, the client falls back to actor calls, then finds the new one
    monkeypatch.setattr(local_socket, "RETRY_S", 0.5)
    ray.kill(eng.actor, no_restart=False)
    deadline = time.time() + 60
    while True:  # until the restarted actor answers (it has a new socket)
        try:
            if ray.get(eng.actor.local_endpoint.remote(), timeout=10)["path"] != endpoint["path"]:
                break
        except Exception:
            if time.time() > deadline:
                raise
        time.sleep(0.5)
    r = eng.request(h.url)  # the client still knows the dead socket: the actor call answers
    assert r.status == 200 and r.body == b"payload" and eng.local.failures == 1
    time.sleep(0.6)
    hits = eng.local.hits
    assert eng.request(h.url).cache_status == "HIT" and eng.local.hits == hits + 1

    off, _ = make_engine(local_socket=False)
    assert ray.get(off.actor.local_endpoint.remote()) is None
    assert [off.request(h.url).cache_status for _ in range(2)] == ["MISS", "HIT"]
    assert off.local is None  # the client does not ask for a socket either


def test_settings_survive_an_actor_restart(origin, engine):
    """Runs last in this module: it restarts the shared engine."""
    eng = engine
    eng.optimize_service("voice_processing", cache_strategy="long_term", compression_level="max")
    eng.configure_pooling(limit=7, limit_per_host=3)
    ray.kill(eng.actor, no_restart=False)
    deadline = time.time() + 60
    while True:
        try:
            m = eng.metrics()
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    assert m["services"]["voice_processing"]["cache_strategy"] == "long_term"
    assert m["services"]["voice_processing"]["compression_level"] == "max"
    assert m["pool"]["limit"] == 7 and m["pool"]["limit_per_host"] == 3
