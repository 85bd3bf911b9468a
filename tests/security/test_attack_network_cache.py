"""Attack 3 of issue 13: reading another service's cached responses through the network cache.

``ai_models`` fetches a URL with its own credential (``X-Api-Key``) and gets a session cookie;
``code_generation`` then fetches the same URL. Through the REST API of the real Serve app, with a
real origin on 127.0.0.1, the cached body and the cookie must never cross from one service to the
other: the cache is partitioned by service, responses to credentialed requests are not stored,
``Set-Cookie`` is never stored nor replayed, a request cannot ask for more caching than its
service is configured for, cross-origin redirects drop every credential header and concurrent
requests of two services are not merged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest
import redis
import requests
from aiohttp import web

from tests.security.conftest import warm_up
from tests.support.origin import Origin

pytestmark = pytest.mark.timeout(900)

AI, CODE = "ai_models", "code_generation"


def fetch(api_server, role: str, service: str, url: str, **extra):
    r = requests.post(
        api_server.url("network/optimize-request"),
        headers=api_server.headers(role),
        timeout=120,
        json={"url": url, "service_name": service, **extra},
    )
    assert r.status_code == 200, r.text
    return r.json()


def cookies(doc) -> str:
    return " ".join(v for k, v in doc["headers"].items() if k.lower() in ("set-cookie", "set-cookie2"))


def test_credentialed_response_and_cookie_never_reach_another_service(api_server, origin):
    warm_up(api_server)

    @origin.route()
    def private(request):
        key = request.headers.get("X-Api-Key", "anonymous")
        return web.Response(
            text=f"account data for {key}",
            headers={"Cache-Control": "max-age=600", "Set-Cookie": f"session=sess-{key}; HttpOnly"},
        )

    ai = fetch(api_server, "svc_ai", AI, private.url, headers={"X-Api-Key": "secret"})
    assert ai["cache_status"] == "MISS" and ai["body"] == "account data for secret"
    assert "sess-secret" in cookies(ai)  # the caller that made the request gets its own cookie

    code = fetch(api_server, "svc_code", CODE, private.url)
    assert code["cache_status"] == "MISS", code
    assert "secret" not in code["body"] and "sess-secret" not in cookies(code)
    # the credentialed response was not stored at all: ai_models' next request goes to the origin too
    again = fetch(api_server, "svc_ai", AI, private.url, headers={"X-Api-Key": "secret"})
    assert again["cache_status"] == "MISS"
    assert origin.hits[private.path] == 3


def test_cache_is_partitioned_by_service_and_set_cookie_is_never_replayed(api_server, origin):
    warm_up(api_server)

    @origin.route()
    def page(request):
        n = origin.hits[page.path]
        return web.Response(
            text=f"page version {n}", headers={"Cache-Control": "public, max-age=600", "Set-Cookie": f"tracker=t{n}"}
        )

    ai = fetch(api_server, "svc_ai", AI, page.url)
    assert ai["cache_status"] == "MISS" and ai["body"] == "page version 1" and "tracker=t1" in cookies(ai)
    hit = fetch(api_server, "svc_ai", AI, page.url)
    assert hit["cache_status"] == "HIT" and hit["body"] == "page version 1"
    assert cookies(hit) == "", "a cached Set-Cookie was replayed"
    code = fetch(api_server, "svc_code", CODE, page.url)
    assert code["cache_status"] == "MISS" and code["body"] == "page version 2", "a cache entry crossed services"
    assert "tracker=t1" not in cookies(code)
    assert origin.hits[page.path] == 2


def test_request_cannot_ask_for_more_caching_than_its_service(api_server, origin, redis_server):
    """ai_models is configured medium_term (1 h); a request asking persistent is clamped, and the
    Redis entry carries a finite TTL."""
    warm_up(api_server)
    r = requests.post(
        api_server.url("network/optimize-service"),
        headers=api_server.headers("admin"),
        timeout=60,
        json={"service_name": AI, "parameters": {"cache_strategy": "medium_term"}},
    )
    assert r.status_code == 200, r.text

    @origin.route()
    def silent(request):  # no freshness from the origin: the strategy alone gives the lifetime
        return web.Response(text="no freshness given")

    assert fetch(api_server, "svc_ai", AI, silent.url, cache_strategy="persistent")["cache_status"] == "MISS"
    red = redis.Redis.from_url(redis_server.url)
    ttls = [red.pttl(k) for k in red.scan_iter(count=1000) if silent.path.encode() in k]
    assert ttls, "the entry was not written to Redis"
    assert all(0 < t <= 3600 * 1000 for t in ttls), f"Redis TTLs {ttls} ms: persistent was not clamped to medium_term"


def test_cross_origin_redirect_drops_every_credential_header(api_server, origin):
    warm_up(api_server)
    other = Origin()  # another port on 127.0.0.1: another origin
    try:

        @other.route()
        def target(request):
            return web.Response(text="landed", headers={"Cache-Control": "no-store"})

        @origin.route()
        def hop(request):
            return web.Response(status=302, headers={"Location": target.url})

        creds = {
            "X-Api-Key": "k1",
            "Api-Key": "k2",
            "X-Auth-Token": "k3",
            "Proxy-Authorization": "Basic k4",
            "Authorization": "Bearer k5",
            "Cookie": "c=k6",
            "X-Custom": "kept",
        }
        doc = fetch(api_server, "svc_ai", AI, hop.url, headers=creds)
        assert doc["body"] == "landed"
        seen = {k.lower(): v for k, v in other.last_headers[target.path].items()}
        leaked = {k: v for k, v in seen.items() if k in {c.lower() for c in creds} - {"x-custom"}}
        assert not leaked, f"credentials crossed to another origin: {leaked}"
        assert seen.get("x-custom") == "kept"
    finally:
        other.close()


def test_concurrent_requests_of_two_services_are_not_merged(api_server, origin):
    warm_up(api_server)

    @origin.route()
    async def slow(request):
        await asyncio.sleep(2.0)
        return web.Response(text="slow answer", headers={"Cache-Control": "max-age=600"})

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futs = [
            pool.submit(fetch, api_server, role, svc, slow.url) for role, svc in (("svc_ai", AI), ("svc_code", CODE))
        ]
        docs = [f.result() for f in futs]
    assert not any(d["coalesced"] for d in docs), "a request was answered with another service's response"
    assert origin.hits[slow.path] == 2
