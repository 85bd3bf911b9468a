"""The caching reverse proxy (``network/proxy/{upstream}/{path}``) through the real Serve app over HTTP.

The upstreams ``origin`` and ``origin-follow`` (service ``code_generation``) front the session's
origin (tests/support/origin.py); their settings are in the ``api_server`` fixture.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import requests
from aiohttp import web

from cognopt_ray.network.rules import http_date


def base(api_server, upstream: str = "origin") -> str:
    return api_server.url(f"network/proxy/{upstream}")


def key(api_server, role: str = "svc_code") -> dict[str, str]:
    return {"X-API-Key": api_server.keys[role]}


def test_a_request_without_a_key_is_401_and_never_reaches_the_origin(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(text="x")

    r = requests.get(base(api_server) + h.path, timeout=60)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    assert origin.hits[h.path] == 0


def test_a_key_of_another_service_or_read_only_is_403(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(text="x")

    for role in ("svc_ai", "read"):
        r = requests.get(base(api_server) + h.path, headers=api_server.headers(role), timeout=60)
        assert r.status_code == 403, (role, r.text)
        assert "service:code_generation" in r.json()["hint"]
    assert origin.hits[h.path] == 0
    assert requests.get(base(api_server) + h.path, headers=api_server.headers("admin"), timeout=60).status_code == 200


def test_an_unknown_upstream_is_404_naming_the_setting(api_server):
    r = requests.get(api_server.url("network/proxy/nowhere/x"), headers=key(api_server), timeout=60)
    assert r.status_code == 404
    assert "settings.network.upstreams" in r.json()["hint"]


def test_the_api_key_and_hop_by_hop_headers_are_not_forwarded(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(
            text="seen", headers={"Cache-Control": "no-store", "Connection": "X-Secret-Hop", "X-Secret-Hop": "1"}
        )

    for headers in (api_server.headers("svc_code"), key(api_server)):
        r = requests.get(
            base(api_server) + h.path + "?q=1",
            headers={**headers, "X-Trace": "t1", "Connection": "keep-alive, X-Hop", "X-Hop": "drop me"},
            timeout=60,
        )
        assert r.status_code == 200 and r.text == "seen"
        seen = {k.lower(): v for k, v in origin.last_headers[h.path].items()}
        assert "authorization" not in seen and "x-api-key" not in seen
        assert api_server.keys["svc_code"] not in str(seen)
        assert seen["x-trace"] == "t1" and "x-hop" not in seen
        assert "x-secret-hop" not in {k.lower() for k in r.headers}  # listed in the origin's Connection
    assert origin.hits[h.path] == 2


def test_a_fresh_answer_is_a_hit_with_age_and_cache_status(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(text="cached", headers={"Cache-Control": "max-age=600", "X-Origin": "yes"})

    first = requests.get(base(api_server) + h.path, headers=key(api_server), timeout=60)
    second = requests.get(base(api_server) + h.path, headers=key(api_server), timeout=60)
    assert first.text == second.text == "cached" and second.headers["X-Origin"] == "yes"
    assert first.headers["Cache-Status"].startswith("cognopt; fwd=miss; fwd-status=200; stored")
    assert second.headers["Cache-Status"].startswith("cognopt; hit")
    assert int(second.headers["Age"]) >= 0
    assert origin.hits[h.path] == 1


def test_a_large_body_is_streamed_and_compressed_for_clients_that_accept_it(api_server, origin):
    payload = b"".join(b"line %07d of a large text body\n" % i for i in range(100_000))  # 3.2 MB

    @origin.route()
    def h(req):
        return web.Response(body=payload, content_type="text/plain", headers={"Cache-Control": "max-age=600"})

    with requests.get(
        base(api_server) + h.path, headers={**key(api_server), "Accept-Encoding": "identity"}, stream=True, timeout=120
    ) as r:
        assert r.status_code == 200 and "content-encoding" not in r.headers
        assert int(r.headers["content-length"]) == len(payload)
        chunks = list(r.iter_content(64 * 1024))
    assert len(chunks) > 1 and b"".join(chunks) == payload
    r = requests.get(
        base(api_server) + h.path, headers={**key(api_server), "Accept-Encoding": "gzip"}, stream=True, timeout=120
    )
    wire = r.raw.read(decode_content=False)
    assert (
        r.headers["content-encoding"] == "gzip" and gzip.decompress(wire) == payload and len(wire) < len(payload) // 4
    )
    assert origin.hits[h.path] == 1


def test_a_client_conditional_is_answered_304_from_a_fresh_entry(api_server, origin):
    lm = http_date(time.time() - 3600)

    @origin.route()
    def h(req):
        return web.Response(
            text="v1 body", headers={"Cache-Control": "max-age=600", "ETag": '"v1"', "Last-Modified": lm}
        )

    url = base(api_server) + h.path
    assert requests.get(url, headers=key(api_server), timeout=60).status_code == 200
    r = requests.get(url, headers={**key(api_server), "If-None-Match": 'W/"v0", "v1"'}, timeout=60)
    assert r.status_code == 304 and r.content == b"" and r.headers["ETag"] == '"v1"'
    r = requests.get(url, headers={**key(api_server), "If-Modified-Since": http_date(time.time())}, timeout=60)
    assert r.status_code == 304
    r = requests.get(url, headers={**key(api_server), "If-None-Match": '"other"'}, timeout=60)
    assert r.status_code == 200 and r.text == "v1 body"
    assert origin.hits[h.path] == 1


def test_a_range_is_answered_206_from_a_cached_full_response_and_416_when_unsatisfiable(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(body=b"0123456789", headers={"Cache-Control": "max-age=600", "ETag": '"r"'})

    url = base(api_server) + h.path
    assert requests.get(url, headers=key(api_server), timeout=60).content == b"0123456789"
    r = requests.get(url, headers={**key(api_server), "Range": "bytes=2-4"}, timeout=60)
    assert r.status_code == 206 and r.content == b"234" and r.headers["Content-Range"] == "bytes 2-4/10"
    r = requests.get(url, headers={**key(api_server), "Range": "bytes=-3"}, timeout=60)
    assert r.status_code == 206 and r.content == b"789"
    r = requests.get(url, headers={**key(api_server), "Range": "bytes=20-"}, timeout=60)
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */10"
    r = requests.get(url, headers={**key(api_server), "Range": "bytes=2-4", "If-Range": '"old"'}, timeout=60)
    assert r.status_code == 200 and r.content == b"0123456789"
    assert origin.hits[h.path] == 1


def test_head_is_answered_from_a_stored_get_and_unsafe_methods_invalidate(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(text=f"{req.method} {origin.hits[h.path]}", headers={"Cache-Control": "max-age=600"})

    url = base(api_server) + h.path
    assert requests.get(url, headers=key(api_server), timeout=60).text == "GET 1"
    r = requests.head(url, headers=key(api_server), timeout=60)
    assert r.status_code == 200 and r.headers["Cache-Status"].startswith("cognopt; hit") and origin.hits[h.path] == 1
    r = requests.post(url, headers=key(api_server), data=b"change", timeout=60)
    assert r.text == "POST 2" and "fwd=method" in r.headers["Cache-Status"]
    assert requests.get(url, headers=key(api_server), timeout=60).text == "GET 3"  # the POST invalidated it


def test_an_unknown_method_is_passed_through_uncached(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(text=f"got {req.method}", headers={"Cache-Control": "max-age=600"})

    url = base(api_server) + h.path
    for _ in range(2):
        r = requests.request("M-SEARCH", url, headers=key(api_server), timeout=60)
        assert r.status_code == 200 and r.text == "got M-SEARCH"
    assert origin.hits[h.path] == 2


def test_concurrent_misses_through_the_proxy_make_one_origin_request(api_server, origin):
    @origin.route()
    async def h(req):
        await asyncio.sleep(1.0)
        return web.Response(text="slow", headers={"Cache-Control": "max-age=600"})

    url = base(api_server) + h.path
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: requests.get(url, headers=key(api_server), timeout=60), range(8)))
    assert all(a.status_code == 200 and a.text == "slow" for a in answers)
    assert origin.hits[h.path] == 1
    statuses = [a.headers["Cache-Status"] for a in answers]
    assert any("collapsed" in s or "hit" in s for s in statuses), statuses


def test_a_redirect_to_a_non_allowlisted_address_is_refused(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    r = requests.get(
        base(api_server, "origin-follow") + h.path, headers=key(api_server), timeout=60, allow_redirects=False
    )
    assert r.status_code == 403 and "169.254.169.254" in r.json()["detail"]
    # without follow_redirects the client gets the 302 itself (its own SSRF problem, not the proxy's)
    r = requests.get(base(api_server) + h.path, headers=key(api_server), timeout=60, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "http://169.254.169.254/latest/meta-data/"


def test_a_redirect_inside_the_upstream_is_rewritten_to_the_proxy_route(api_server, origin):
    @origin.route()
    def target(req):
        return web.Response(text="arrived", headers={"Cache-Control": "no-store"})

    @origin.route()
    def h(req):
        return web.Response(status=302, headers={"Location": origin.url(target.path)})

    s = requests.Session()
    s.headers.update(key(api_server))
    r = s.get(base(api_server) + h.path, timeout=60)  # requests follows the rewritten Location
    assert r.status_code == 200 and r.text == "arrived"
    assert r.history[0].headers["Location"] == base(api_server) + target.path


def test_aiohttp_and_requests_use_the_proxy_as_their_base_url(api_server, origin):
    @origin.route("/v1/items")
    def h(req):
        return web.json_response({"items": [1, 2], "q": req.query.get("q")}, headers={"Cache-Control": "max-age=60"})

    s = requests.Session()
    s.headers.update(key(api_server))
    assert s.get(base(api_server) + "/v1/items", params={"q": "a"}, timeout=60).json() == {"items": [1, 2], "q": "a"}

    async def go():
        async with aiohttp.ClientSession(base_url=base(api_server) + "/", headers=key(api_server)) as session:
            async with session.get("v1/items", params={"q": "b"}) as r:
                return r.status, await r.json()

    assert asyncio.run(go()) == (200, {"items": [1, 2], "q": "b"})
