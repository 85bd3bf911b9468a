"""The network engine's counters over hand-computed numbers (issue 15): ``bandwidth_saved_mb`` is
what a plain client sending the same Accept-Encoding would have received minus what we received.

Real origin on 127.0.0.1 (tests.support.origin), the engine's client in this process; no Ray.
"""

import asyncio
import gzip

from aiohttp import web

from cognopt_ray.network.entries import pack, unpack
from cognopt_ray.network.metrics import NetworkMetrics
from cognopt_ray.network.rules import StoredResponse
from tests.support.origin import run_client

BODY = b'{"k": "some value", "n": 12345}' * 1000  # 31 000 bytes
GZ = gzip.compress(BODY, mtime=0)


def gz_route(origin, cc="max-age=600", etag=None, delay=0.0):
    """An origin that answers gzip when asked (identity otherwise), 304 to a matching If-None-Match."""

    @origin.route()
    async def h(req):
        if delay:
            await asyncio.sleep(delay)
        headers = {"Cache-Control": cc, **({"ETag": etag} if etag else {})}
        if etag and req.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        if "gzip" in req.headers.get("Accept-Encoding", ""):
            return web.Response(body=GZ, headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=BODY, headers=headers)

    return h


def snap_after(coro_fn):
    async def go(c):
        await coro_fn(c)
        while c._background:  # background revalidations finish before the counters are read
            await asyncio.sleep(0.01)
        return c.metrics.snapshot()

    return run_client(go)


def test_no_traffic_every_figure_is_none():
    m = NetworkMetrics().snapshot()
    for k in ("cache_hit_rate", "bandwidth_saved_mb", "compression_ratio", "connection_reuse_rate"):
        assert m[k] is None, k
    assert m["bytes_saved"] == 0 and m["origin_requests_avoided"] == 0


def test_miss_saves_nothing_hits_save_the_wire_size(origin):
    h = gz_route(origin)
    m = snap_after(lambda c: _seq(c, h.url, 3))
    # MISS: the origin's gzip is not our saving (a plain client gets it too); 2 HITs save 2 × |gzip|
    assert (m["misses"], m["hits"]) == (1, 2)
    assert m["bytes_from_origin"] == len(GZ) and m["bytes_decoded_from_origin"] == len(BODY)
    assert m["bytes_saved"] == 2 * len(GZ)
    assert m["bandwidth_saved_mb"] == 2 * len(GZ) / 1e6
    assert m["compression_ratio"] == len(BODY) / len(GZ)
    assert m["bytes_served"] == 3 * len(BODY)  # served bytes are no longer part of the saving
    assert m["cache_hit_rate"] == 2 / 3


async def _seq(c, url, n, **kw):
    return [await c.request(url, **kw) for _ in range(n)]


def test_identity_hit_saves_the_decoded_size(origin):
    h = gz_route(origin)
    m = snap_after(lambda c: _seq(c, h.url, 2, compression_level="none"))
    assert m["bytes_from_origin"] == len(BODY) and m["bytes_saved"] == len(BODY)
    assert m["compression_ratio"] == 1.0


def test_hit_for_another_accept_encoding(origin):
    """An entry fetched as identity, hit by a request asking for gzip: a plain client's wire size is
    not known, so it adds nothing and is counted as unmeasured; the other way round it is the
    decoded size (identity)."""
    h = gz_route(origin)

    async def go(c):
        await c.request(h.url, compression_level="none")  # MISS, stored as identity
        await c.request(h.url)  # HIT with gzip accepted: unknown
        await c.request(h.url, compression_level="none")  # HIT identity: |BODY|

    m = snap_after(go)
    assert m["hits"] == 2 and m["bytes_saved_unmeasured"] == 1 and m["bytes_saved"] == len(BODY)

    h2 = gz_route(origin)
    m = snap_after(lambda c: _seq_levels(c, h2.url))
    assert m["bytes_saved"] == len(BODY) and m["bytes_saved_unmeasured"] == 0


async def _seq_levels(c, url):
    await c.request(url)  # MISS, stored as gzip
    await c.request(url, compression_level="none")  # HIT: a plain identity client gets |BODY|


def test_revalidation_saves_the_body_wire_size(origin):
    h = gz_route(origin, cc="no-cache", etag='"v1"')
    m = snap_after(lambda c: _seq(c, h.url, 3))
    assert (m["misses"], m["revalidated"]) == (1, 2)
    assert m["origin_requests"] == 3 and m["bytes_from_origin"] == len(GZ)  # 304s carry no body
    assert m["bytes_saved"] == 2 * len(GZ)


def test_coalesced_waiters_save_the_leaders_wire_size(origin):
    h = gz_route(origin, delay=0.3)

    async def go(c):
        rs = await asyncio.gather(*(c.request(h.url) for _ in range(3)))
        assert sum(r.coalesced for r in rs) == 2

    m = snap_after(go)
    assert m["origin_requests"] == 1 and m["coalesced"] == 2
    assert m["bytes_saved"] == 2 * len(GZ)


def test_stale_answer_saves_and_its_background_refresh_costs(origin):
    # no validator: the background revalidation gets the whole body again (a plain client would not)
    h = gz_route(origin, cc="max-age=0, stale-while-revalidate=600")

    async def go(c):
        await c.request(h.url)  # MISS: 0
        r = await c.request(h.url)  # STALE: + |gzip|; its background refresh: − |gzip|
        assert r.cache_status == "STALE"

    m = snap_after(go)
    assert m["background_revalidations"] == 1 and m["bytes_from_origin"] == 2 * len(GZ)
    assert m["bytes_saved"] == 0

    h2 = gz_route(origin, cc="max-age=0, stale-while-revalidate=600", etag='"e"')
    m = snap_after(lambda c: _seq(c, h2.url, 2))  # the refresh is a 304: the stale answer's saving stays
    assert m["stale"] == 1 and m["bytes_saved"] == len(GZ)


def test_bypass_saves_nothing(origin):
    h = gz_route(origin)
    m = snap_after(lambda c: _seq(c, h.url, 2, cache_strategy="no_cache"))
    assert m["bypass"] == 2 and m["bytes_saved"] == 0 and m["bandwidth_saved_mb"] == 0.0
    assert m["cache_hit_rate"] is None  # no lookup: bypassed requests are not lookups


def test_near_cache_hits_report_their_saving():
    from cognopt_ray.network.http_client import NetworkResponse
    from cognopt_ray.network.near_cache import NearCache

    near = NearCache(ttl_s=60, max_bytes=1 << 20)
    r = NetworkResponse(url="u", status=200, headers=[], body=BODY, cache_status="MISS", fresh_for_s=60)
    near.put("a", r.model_copy(update={"plain_wire_bytes": len(GZ)}))
    near.put("b", r)  # plain size unknown
    near.get("a"), near.get("a"), near.get("b")
    assert near.take_pending() == (3, 3 * len(BODY), 2 * len(GZ), 1)


def test_entry_keeps_its_wire_size_at_rest():
    e = StoredResponse("https://h/a", 200, [], BODY, 1.0, 2.0, wire=len(GZ), accept="gzip, deflate")
    back = unpack(pack([e], "k"), "k")[0]
    assert (back.wire, back.accept) == (len(GZ), "gzip, deflate")
    assert back.plain_wire("gzip, deflate") == len(GZ) and back.plain_wire("identity") == len(BODY)
    assert back.plain_wire("zstd") is None
    assert back.refreshed([], 3.0, 4.0).wire == len(GZ)
