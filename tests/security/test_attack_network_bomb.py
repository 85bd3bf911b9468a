"""Attack 4 of issue 13: decompression bombs against the network engine.

An origin answers ~64 KiB of ``Content-Encoding: zstd`` (or ~1 MiB of gzip) that expands to
1 GiB; a Redis entry is overwritten with a value that expands to 1 GiB. Through the REST API of
the real Serve app, the network actor's resident memory (sampled with psutil while the request
runs) must grow by less than the configured limit (``network.max_response_bytes``, 32 MiB) plus a
margin, the origin bomb must answer 502 with a problem document naming the limit, and the Redis
bomb must be a cache miss served from the origin, not a crash.
"""

from __future__ import annotations

import threading
import time
import zlib

import psutil
import pytest
import redis
import requests
import zstandard
from aiohttp import web

from tests.security.conftest import warm_up

pytestmark = pytest.mark.timeout(900)

GiB = 1 << 30
LIMIT = 32 << 20  # settings.network.max_response_bytes of the test app (the default)
MARGIN = 128 << 20


def _zeros(total: int, chunk: int = 1 << 20):
    block = b"\0" * chunk
    for _ in range(total // chunk):
        yield block


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    c = zstandard.ZstdCompressor(level=3).compressobj()
    out = b"".join(c.compress(b) for b in _zeros(GiB)) + c.flush()
    assert len(out) < 256 << 10
    return out


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = b"".join(c.compress(b) for b in _zeros(GiB)) + c.flush()
    assert len(out) < 2 << 20
    return out


def _getpid(_actor_self) -> int:
    import os

    return os.getpid()


def network_actor_pid() -> int:
    """The pid of the network actor (the test session has no dashboard, so no ray.util.state)."""
    import ray

    actor = ray.get_actor("cognopt.network", namespace="cognopt")
    return int(ray.get(actor.__ray_call__.remote(_getpid), timeout=60))


class PeakRss:
    """Samples a process's RSS in a thread; ``growth`` is the peak over the value at start."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


def through_engine(api_server, url: str):
    return requests.post(
        api_server.url("network/optimize-request"),
        headers=api_server.headers("svc_ai"),
        timeout=300,
        json={"url": url, "service_name": "ai_models"},
    )


@pytest.mark.parametrize("coding", ["zstd", "gzip"])
def test_origin_bomb_is_502_with_bounded_memory(api_server, origin, coding, request):
    bomb = request.getfixturevalue(f"{coding}_bomb")
    warm_up(api_server)

    @origin.route()
    def h(req):
        return web.Response(body=bomb, headers={"Content-Encoding": coding, "Content-Type": "application/octet-stream"})

    assert request_ok_first(api_server, origin)
    with PeakRss(network_actor_pid()) as rss:
        r = through_engine(api_server, h.url)
    assert rss.growth < LIMIT + MARGIN, f"network actor grew {rss.growth >> 20} MiB decoding a {coding} bomb"
    assert r.status_code == 502, r.text[:500]
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert "max_response_bytes" in doc.get("hint", "") and str(LIMIT) in doc["detail"], doc


def request_ok_first(api_server, origin) -> bool:
    """One ordinary request first, so the actor, its pool and its imports are warm before sampling."""

    @origin.route()
    def plain(req):
        return web.Response(text="plain", headers={"Cache-Control": "no-store"})

    return through_engine(api_server, plain.url).status_code == 200


def test_redis_entry_bomb_is_a_miss_with_bounded_memory(api_server, origin, redis_server, zstd_bomb):
    warm_up(api_server)

    @origin.route()
    def page(req):
        return web.Response(text=f"fresh {origin.hits[page.path]}", headers={"Cache-Control": "max-age=600"})

    assert through_engine(api_server, page.url).json()["cache_status"] == "MISS"
    red = redis.Redis.from_url(redis_server.url)
    names = [k for k in red.scan_iter(count=1000) if page.path.encode() in k]
    assert names, "the entry was not written to Redis"
    for k in names:  # keep the entry's format header, replace what follows by a 1 GiB bomb
        red.set(k, red.get(k)[:4] + zstd_bomb, px=600_000)
    time.sleep(6.5)  # past the engine's hot cache (5 s) and the replica's near cache (1 s)
    with PeakRss(network_actor_pid()) as rss:
        r = through_engine(api_server, page.url)
    assert r.status_code == 200, r.text[:500]
    assert r.json()["cache_status"] == "MISS" and r.json()["body"] == "fresh 2"
    assert rss.growth < LIMIT + MARGIN, f"network actor grew {rss.growth >> 20} MiB reading a Redis bomb"
    assert through_engine(api_server, page.url).json()["cache_status"] == "HIT"  # the entry was rewritten, readable
