"""Every cache rule, coalescing, redirects, faults and the pool against real origins on 127.0.0.1.

The client under test is the engine's core (:class:`OptimizedClient`) in this process, with its
in-process backend; the same object runs inside the network actor (tested in test_network_engine).
"""

import asyncio
import gzip
import os
import time

import pytest
from aiohttp import web

from cognopt_ray.config import Settings
from cognopt_ray.errors import InvalidInput, PayloadTooLarge
from cognopt_ray.network.errors import BadGateway, InvalidRequest, OriginTimeout, UrlRefused
from cognopt_ray.network.http_client import OptimizedClient
from cognopt_ray.network.rules import http_date
from tests.support.helpers import free_port
from tests.support.origin import Origin, run_client

run = run_client  # a fresh in-process client per call (tests.support.origin)


def resp(body=b"hello", status=200, **headers):
    return web.Response(body=body, status=status, headers={k.replace("_", "-"): v for k, v in headers.items()})


async def statuses(client, url, n, **kw):
    return [(await client.request(url, **kw)).cache_status for _ in range(n)]


def test_fresh_response_is_a_hit_with_age(origin):
    @origin.route()
    def h(req):
        return resp(Cache_Control="max-age=600", Age="7")

    async def go(c):
        first = await c.request(h.url)
        second = await c.request(h.url)
        return first, second

    first, second = run(go)
    assert first.cache_status == "MISS" and second.cache_status == "HIT"
    assert second.body == b"hello" and int(second.header("Age")) >= 7
    assert origin.hits[h.path] == 1


@pytest.mark.parametrize(
    "headers,req_headers",
    [
        ({"Cache-Control": "no-store, max-age=600"}, {}),
        ({"Cache-Control": "private, max-age=600"}, {}),
        ({"Cache-Control": "max-age=600"}, {"Authorization": "Bearer secret"}),
        ({"Cache-Control": "max-age=600, must-revalidate"}, {"Authorization": "Bearer secret"}),  # shared by services
        ({"Cache-Control": "max-age=600"}, {"Cookie": "session=1"}),
        ({"Cache-Control": "max-age=600"}, {"X-Api-Key": "secret"}),
        ({"Cache-Control": "max-age=600"}, {"Cache-Control": "no-store"}),
        ({"Cache-Control": "max-age=600", "Vary": "*"}, {}),
    ],
)
def test_never_stored(origin, headers, req_headers):
    @origin.route()
    def h(req):
        return resp(**{k.replace("-", "_"): v for k, v in headers.items()})

    out = run(lambda c: statuses(c, h.url, 3, headers=req_headers))
    assert "HIT" not in out and origin.hits[h.path] == 3


@pytest.mark.parametrize("cc", ["public, max-age=600", "s-maxage=600"])
def test_authorization_allowed_by_public_s_maxage(origin, cc):
    @origin.route()
    def h(req):
        return resp(Cache_Control=cc)

    out = run(lambda c: statuses(c, h.url, 2, headers={"Authorization": "Bearer x"}))
    assert out == ["MISS", "HIT"] and origin.hits[h.path] == 1


def test_expires_and_heuristic_and_strategy_default(origin):
    @origin.route()
    def expires(req):
        return resp(Date=http_date(), Expires=http_date(time.time() + 600))

    @origin.route()
    def expired(req):
        return resp(Date=http_date(), Expires=http_date(time.time() - 10))

    @origin.route()
    def heuristic(req):
        return resp(Date=http_date(), Last_Modified=http_date(time.time() - 10 * 86400))

    @origin.route()
    def silent(req):
        return resp()

    async def go(c):
        return {
            name: await statuses(c, f.url, 2)
            for name, f in [("expires", expires), ("expired", expired), ("heuristic", heuristic), ("silent", silent)]
        }

    out = run(go)
    assert out["expires"] == ["MISS", "HIT"]
    assert out["expired"] == ["MISS", "MISS"]  # stale, no validators: fetched again
    assert out["heuristic"] == ["MISS", "HIT"]
    assert out["silent"] == ["MISS", "HIT"]  # the strategy gives the lifetime


def test_no_cache_strategy_bypasses(origin):
    @origin.route()
    def h(req):
        return resp(Cache_Control="max-age=600")

    out = run(lambda c: statuses(c, h.url, 3, cache_strategy="no_cache"))
    assert out == ["BYPASS"] * 3 and origin.hits[h.path] == 3


def test_vary_keeps_several_variants(origin):
    @origin.route()
    def h(req):
        lang = req.headers.get("Accept-Language", "none")
        return resp(body=lang.encode(), Cache_Control="max-age=600", Vary="Accept-Language")

    async def go(c):
        out = []
        for lang in ("en", "fr", "en", "fr", "de"):
            r = await c.request(h.url, headers={"Accept-Language": lang})
            out.append((r.cache_status, r.body.decode()))
        return out

    assert run(go) == [("MISS", "en"), ("MISS", "fr"), ("HIT", "en"), ("HIT", "fr"), ("MISS", "de")]
    assert origin.hits[h.path] == 3


def test_revalidation_304_refreshes_headers(origin):
    state = {"version": "1"}

    @origin.route()
    def h(req):
        if req.headers.get("If-None-Match") == '"v1"':
            return resp(b"", status=304, ETag='"v1"', Cache_Control="max-age=0", X_Version=state["version"])
        return resp(b"body-v1", ETag='"v1"', Cache_Control="max-age=0", X_Version="1")

    async def go(c):
        first = await c.request(h.url)
        state["version"] = "2"
        second = await c.request(h.url)
        return first, second

    first, second = run(go)
    assert first.cache_status == "MISS"
    assert second.cache_status == "REVALIDATED" and second.body == b"body-v1" and second.header("X-Version") == "2"
    assert origin.last_headers[h.path]["If-None-Match"] == '"v1"'


def test_if_modified_since_revalidation(origin):
    lm = http_date(time.time() - 3600)

    @origin.route()
    def h(req):
        if req.headers.get("If-Modified-Since") == lm:
            return resp(b"", status=304, Cache_Control="no-cache")
        return resp(b"data", Last_Modified=lm, Cache_Control="no-cache")

    assert run(lambda c: statuses(c, h.url, 3)) == ["MISS", "REVALIDATED", "REVALIDATED"]


def test_stale_while_revalidate_serves_stale_and_refreshes_in_background(origin):
    state = {"n": 0}

    @origin.route()
    def h(req):
        state["n"] += 1
        return resp(f"v{state['n']}".encode(), Cache_Control="max-age=60, stale-while-revalidate=1000", Age="100")

    async def go(c):
        first = await c.request(h.url)
        stale = await c.request(h.url)
        for _ in range(100):  # wait for the background refresh to land
            if origin.hits[h.path] >= 2 and not c._background:
                break
            await asyncio.sleep(0.05)
        after = await c.request(h.url)
        return first, stale, after

    first, stale, after = run(go)
    assert first.cache_status == "MISS" and first.body == b"v1"
    assert stale.cache_status == "STALE" and stale.body == b"v1"
    assert after.body == b"v2" and after.cache_status == "STALE"  # the refreshed copy is again stale (Age 100)


def test_stale_if_error_on_5xx_and_on_origin_down():
    o = Origin()
    state = {"fail": False}

    @o.route()
    def h(req):
        if state["fail"]:
            return resp(b"broken", status=503)
        return resp(b"good", Cache_Control="max-age=0, stale-if-error=1000")

    async def go(c):
        await c.request(h.url)
        state["fail"] = True
        on_5xx = await c.request(h.url)
        o.stop()
        on_down = await c.request(h.url)
        return on_5xx, on_down

    try:
        on_5xx, on_down = run(go)
    finally:
        o.close()
    assert on_5xx.cache_status == "STALE" and on_5xx.body == b"good" and on_5xx.status == 200
    assert on_down.cache_status == "STALE" and on_down.body == b"good"


def test_must_revalidate_with_origin_down_is_504_not_stale():
    o = Origin()

    @o.route()
    def h(req):
        return resp(b"secret-v1", Cache_Control="max-age=0, must-revalidate, stale-if-error=1000", ETag='"a"')

    async def go(c):
        await c.request(h.url)
        o.stop()
        with pytest.raises(OriginTimeout) as e:
            await c.request(h.url)
        return e.value

    try:
        err = run(go)
    finally:
        o.close()
    assert err.status == 504 and err.extra["rule"] == "must-revalidate"


def test_unsafe_method_invalidates(origin):
    path = f"/inv/{os.urandom(4).hex()}"

    @origin.route(path)
    def h(req):
        if req.method == "POST":
            return resp(b"created", status=201)
        return resp(b"list", Cache_Control="max-age=600")

    async def go(c):
        out = await statuses(c, h.url, 2)
        post = await c.request(h.url, method="POST", body=b"{}")
        out += await statuses(c, h.url, 2)
        return out, post.cache_status, c.metrics.invalidations

    out, post_status, invalidations = run(go)
    assert out == ["MISS", "HIT", "MISS", "HIT"] and post_status == "BYPASS" and invalidations >= 1


def test_coalescing_concurrent_misses(origin):
    @origin.route()
    async def h(req):
        await asyncio.sleep(0.3)
        return resp(b"slow" * 1000, Cache_Control="max-age=600")

    async def go(c):
        rs = await asyncio.gather(*(c.request(h.url) for _ in range(50)))
        return rs, c.metrics.snapshot()

    rs, m = run(go)
    assert origin.hits[h.path] == 1
    assert all(r.status == 200 and r.body == b"slow" * 1000 for r in rs)
    assert sum(r.coalesced for r in rs) == 49 and m["coalesced"] == 49 and m["origin_requests"] == 1


def test_coalescing_shares_errors_and_waiters_time_out_to_their_own_request(origin):
    @origin.route()
    async def slow(req):
        await asyncio.sleep(1.0)
        return resp(Cache_Control="no-store")

    async def go(c):
        rs = await asyncio.gather(*(c.request(slow.url) for _ in range(3)))
        return rs

    rs = run(go, coalesce_timeout_s=0.2)
    assert all(r.status == 200 for r in rs) and origin.hits[slow.path] == 3


def test_gzip_from_origin_is_decoded_and_counted(origin):
    body = b'{"k": "value"}' * 2000

    @origin.route()
    def h(req):
        assert "gzip" in req.headers["Accept-Encoding"]
        return resp(gzip.compress(body), Content_Encoding="gzip", Cache_Control="max-age=600")

    async def go(c):
        r = await c.request(h.url)
        return r, c.metrics.snapshot()

    r, m = run(go)
    assert r.body == body and r.header("Content-Encoding") is None
    assert m["compression_ratio"] > 10 and m["bytes_decoded_from_origin"] == len(body)


def test_compression_level_none_asks_for_identity(origin):
    @origin.route()
    def h(req):
        return resp(req.headers.get("Accept-Encoding", "").encode())

    r = run(lambda c: c.request(h.url, compression_level="none", cache_strategy="no_cache"))
    assert r.body == b"identity"


def test_request_body_compression_per_service(origin):
    @origin.route()
    async def h(req):
        raw = await req.read()  # aiohttp decodes the body; Content-Length is what travelled
        assert raw == b"a" * 10000
        return resp(f"{req.headers.get('Content-Encoding')}:{req.headers['Content-Length']}".encode())

    async def go(c):
        c.set_service("ai_models", compress_request_bodies=True)
        r = await c.request(h.url, method="POST", body=b"a" * 10000, service="ai_models")
        plain = await c.request(h.url, method="POST", body=b"a" * 10000, service="code_generation")
        return r.body.decode(), plain.body.decode(), c.metrics.snapshot()

    compressed, plain, m = run(go)
    enc, size = compressed.split(":")
    assert enc == "gzip" and int(size) < 10000 and plain == "None:10000"
    assert m["request_bytes_sent"] < m["request_bytes_raw"]


def test_redirects_followed_and_each_hop_checked(origin):
    @origin.route()
    def target(req):
        return resp(b"final", Cache_Control="max-age=600")

    @origin.route()
    def hop(req):
        return resp(b"", status=302, Location=target.path)

    @origin.route()
    def evil(req):
        return resp(b"", status=302, Location="http://169.254.169.254/latest/meta-data/")

    @origin.route()
    def evil_mapped(req):
        return resp(b"", status=307, Location="http://[::ffff:10.0.0.1]/")

    @origin.route()
    def loop(req):
        return resp(b"", status=301, Location=loop.path)

    async def go(c):
        r = await c.request(hop.url)
        errors = []
        for u in (evil.url, evil_mapped.url):
            with pytest.raises(UrlRefused) as e:
                await c.request(u)
            errors.append(e.value)
        with pytest.raises(BadGateway) as loop_err:
            await c.request(loop.url)
        no_follow = await c.request(hop.url, follow_redirects=False)
        return r, errors, loop_err.value, no_follow

    r, errors, loop_err, no_follow = run(go, max_redirects=3)
    assert r.body == b"final" and r.redirects == [target.url] and r.url == target.url
    assert all(e.extra["rule"] == "global-address" for e in errors)
    assert "169.254.169.254" in errors[0].message
    assert "redirects" in loop_err.message and origin.hits[loop.path] == 1  # a 301 is cacheable: hops 2-4 are hits
    assert no_follow.status == 302


def test_default_guard_refuses_loopback_origin_before_any_request(origin):
    @origin.route()
    def h(req):
        return resp()

    async def go(c):
        out = []
        for u in (
            h.url,
            h.url.replace("127.0.0.1", "localhost"),
            h.url.replace("127.0.0.1", "2130706433"),
            h.url.replace("127.0.0.1", "0x7f000001"),
            h.url.replace("127.0.0.1", "127.1"),
            h.url.replace("127.0.0.1", "[::ffff:127.0.0.1]"),
            h.url.replace("127.0.0.1", "[64:ff9b::7f00:1]"),
        ):
            with pytest.raises(UrlRefused) as e:
                await c.request(u)
            out.append(e.value.extra["rule"])
        return out

    settings = Settings.load()  # no allowlist: everything must be global

    async def main():
        c = OptimizedClient(settings)
        try:
            return await go(c)
        finally:
            await c.close()

    assert asyncio.run(main()) == ["global-address"] * 7
    assert origin.hits[h.path] == 0


def test_localhost_allowed_only_when_all_its_addresses_are(origin):
    @origin.route()
    def h(req):
        return resp(b"via-localhost")

    url = h.url.replace("127.0.0.1", "localhost")
    r = run(lambda c: c.request(url), allowlist=["127.0.0.1", "::1"])
    assert r.body == b"via-localhost"


def test_faults_map_to_gateway_errors(origin):
    @origin.route()
    async def slow(req):
        await asyncio.sleep(3)
        return resp()

    @origin.route()
    def big(req):
        return resp(b"x" * 5000)

    async def go(c):
        with pytest.raises(OriginTimeout):
            await c.request(slow.url)
        with pytest.raises(BadGateway) as e:
            await c.request(big.url)
        assert e.value.extra["rule"] == "max-response-bytes"
        with pytest.raises(BadGateway):
            await c.request(f"http://127.0.0.1:{free_port()}/refused")
        for bad in (
            {"method": "FOO"},
            {"method": "GET\r\n"},
            {"headers": {"X-Bad": "a\r\nb"}},
            {"headers": {"Bad Name": "x"}},
            {"cache_strategy": "forever"},
        ):
            with pytest.raises(InvalidRequest):
                await c.request(big.url, **bad)
        with pytest.raises(InvalidRequest):
            await c.request("not a url")
        with pytest.raises(PayloadTooLarge):
            await c.request(big.url, method="POST", body=b"x" * 2_000_000)
        return c.metrics.snapshot()

    m = run(go, top={"max_body_bytes": 1_000_000}, total_timeout_s=0.5, max_response_bytes=1000)
    assert m["origin_errors"] >= 3


def test_pool_reconfigured_without_failing_in_flight_requests(origin):
    @origin.route()
    async def h(req):
        await asyncio.sleep(0.4)
        return resp(b"ok", Cache_Control="no-store")

    async def go(c):
        inflight = [asyncio.create_task(c.request(h.url, headers={"X-N": str(i)})) for i in range(6)]
        await asyncio.sleep(0.1)
        cfg = await c.configure_pooling(limit=4, limit_per_host=2, keepalive_timeout_s=5)
        after = await c.request(h.url)
        rs = await asyncio.gather(*inflight)
        with pytest.raises(InvalidInput):
            await c.configure_pooling(limit=-1)
        return cfg, rs, after, c.pool

    cfg, rs, after, pool = run(go)
    assert cfg.limit == 4 and cfg.limit_per_host == 2
    assert all(r.status == 200 for r in rs) and after.status == 200
    assert pool.limit == 4  # the refused change left the pool as it was


def test_service_settings_validation(origin):
    async def go(c):
        c.set_service("ai_models", cache_strategy="long_term")
        with pytest.raises(InvalidInput):
            c.set_service("ai_models", cache_strategy="forever")
        with pytest.raises(InvalidInput):
            c.set_service("ai_models", unknown=1)
        with pytest.raises(InvalidInput):
            c.service_settings("Bad Name")
        return c.service_settings("ai_models")

    s = run(go)
    assert s.cache_strategy == "long_term"


def test_purge_by_url_and_prefix(origin):
    @origin.route("/purge/a")
    def a(req):
        return resp(Cache_Control="max-age=600")

    @origin.route("/purge/b")
    def b(req):
        return resp(Cache_Control="max-age=600")

    async def go(c):
        for u in (a.url, b.url):
            await c.request(u)
        n1 = await c.purge(url=a.url)
        s1 = [(await c.request(u)).cache_status for u in (a.url, b.url)]
        n2 = await c.purge(prefix=origin.url("/purge/"))
        s2 = [(await c.request(u)).cache_status for u in (a.url, b.url)]
        with pytest.raises(InvalidInput):
            await c.purge()
        return n1, s1, n2, s2

    n1, s1, n2, s2 = run(go)
    assert n1 == 1 and s1 == ["MISS", "HIT"] and n2 == 2 and s2 == ["MISS", "MISS"]
