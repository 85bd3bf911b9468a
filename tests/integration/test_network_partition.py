"""The trust boundary inside the engine's core (issue 13), against real origins on 127.0.0.1.

:class:`OptimizedClient` in this process with its in-process backend (no Ray): the cache is
partitioned by service, Set-Cookie is never stored nor given to a coalesced waiter, a request's
strategy is clamped to its service's and every entry has a finite TTL, names are keyed hashes
with an encryption key (and purges still work), and decoding bombs stop at the limit.
"""

import asyncio
import base64
import math
import os
import zlib

import pytest
import zstandard
from aiohttp import web
from yarl import URL

from cognopt_ray.network.entries import entry_key
from cognopt_ray.network.errors import BadGateway
from tests.support.origin import run_client

run = run_client  # a fresh in-process client per call (tests.support.origin)


def test_partitioned_by_service_and_purge_reaches_every_service(origin):
    @origin.route()
    def h(req):
        return web.Response(text="v", headers={"Cache-Control": "max-age=600"})

    async def go(c):
        out = [(await c.request(h.url, service=s)).cache_status for s in ("ai_models", "ai_models", "code_generation")]
        out.append((await c.request(h.url)).cache_status)  # admin, no service: its own partition
        n = await c.purge(url=h.url)
        out += [(await c.request(h.url, service=s)).cache_status for s in ("ai_models", "code_generation")]
        return out, n

    out, n = run(go)
    assert out == ["MISS", "HIT", "MISS", "MISS", "MISS", "MISS"] and n == 3


def test_set_cookie_never_stored_nor_given_to_a_coalesced_waiter(origin):
    @origin.route()
    async def h(req):
        await asyncio.sleep(0.5)
        return web.Response(text="v", headers={"Cache-Control": "public, max-age=600", "Set-Cookie": "s=1"})

    async def go(c):
        lead, waiter = await asyncio.gather(
            c.request(h.url, service="ai_models"), c.request(h.url, service="ai_models")
        )
        hit = await c.request(h.url, service="ai_models")
        return lead, waiter, hit

    lead, waiter, hit = run(go)
    assert waiter.coalesced and lead.header("set-cookie") == "s=1"
    assert waiter.header("set-cookie") is None and hit.cache_status == "HIT" and hit.header("set-cookie") is None


def test_strategy_clamped_and_every_ttl_finite(origin):
    @origin.route()
    def silent(req):
        return web.Response(text="no freshness")

    async def go(c):
        c.set_service("ai_models", cache_strategy="short_term")
        c.set_service("code_generation", cache_strategy="persistent")
        a = await c.request(silent.url, service="ai_models", cache_strategy="persistent")
        b = await c.request(silent.url, service="code_generation")
        lru = c.backend.lru._data
        ttl = {s: lru[c.store.name(entry_key(URL(silent.url), s))][1] for s in ("ai_models", "code_generation")}
        return a, b, ttl

    import time

    a, b, ttl = run(go, max_cache_ttl_s=1000)
    assert a.fresh_for_s <= 300  # clamped to short_term
    assert math.isinf(b.fresh_for_s) or b.fresh_for_s > 1000  # persistent freshness ...
    assert ttl["ai_models"] - time.time() <= 300 and ttl["code_generation"] - time.time() <= 1000  # ... finite TTL


def test_hashed_names_with_an_encryption_key_and_purge_by_prefix(origin):
    @origin.route("/sealed/a")
    def a(req):
        return web.Response(text="a", headers={"Cache-Control": "max-age=600"})

    @origin.route("/sealed/b")
    def b(req):
        return web.Response(text="b", headers={"Cache-Control": "max-age=600"})

    async def go(c):
        for u in (a.url, b.url):
            for s in ("ai_models", "code_generation"):
                assert (await c.request(u, service=s)).cache_status == "MISS"
        names = await c.backend.names()
        hit = (await c.request(a.url, service="ai_models")).cache_status
        n = await c.purge(prefix=origin.url("/sealed/"))
        return names, hit, n, await c.backend.names()

    key = base64.b64encode(os.urandom(32)).decode()
    names, hit, n, left = run(go, top={"encryption_key": key})
    assert len(names) == 4 and not [x for x in names if "sealed" in x or "127.0.0.1" in x]
    assert hit == "HIT" and n == 4 and left == []


@pytest.mark.parametrize("coding", ["zstd", "gzip", "deflate"])
def test_bombs_stop_at_the_limit(origin, coding):
    raw = b"\0" * (64 << 20)
    body = {
        "zstd": lambda: zstandard.ZstdCompressor().compress(raw),
        "gzip": lambda: zlib.compress(raw, 9, wbits=31),
        "deflate": lambda: zlib.compress(raw, 9),
    }[coding]()

    @origin.route()
    def h(req):
        return web.Response(body=body, headers={"Content-Encoding": coding})

    with pytest.raises(BadGateway) as e:
        run(lambda c: c.request(h.url), max_response_bytes=1 << 20)
    assert e.value.extra.get("rule") == "max-response-bytes" and "max_response_bytes" in e.value.hint
