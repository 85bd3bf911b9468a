"""The network routes over real HTTP: cache statuses, scopes, problems, pooling, purge, assets, compression."""

import gzip

import pytest
import requests
from aiohttp import web

from tests.conftest import MAX_BODY
from tests.support.helpers import free_port

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert PROBLEM_KEYS <= set(doc)
    return doc


def post(api, path, body, role="admin", **kw):
    return requests.post(
        api.url(path), json=body, headers={**api.headers(role), **kw.pop("headers", {})}, timeout=60, **kw
    )


def test_optimize_request_miss_then_hit_with_spec_fields(api_server, origin):
    @origin.route()
    def h(req):
        return web.json_response({"data": [1, 2, 3]}, headers={"Cache-Control": "max-age=600"})

    body = {
        "request_id": "api_call_456",
        "url": h.url,
        "method": "GET",
        "cache_strategy": "medium_term",
        "compression_level": "balanced",
    }
    first = post(api_server, "network/optimize-request", body)
    assert first.status_code == 200, first.text
    doc = first.json()
    assert doc["cache_status"] == "MISS" and doc["status"] == 200 and doc["request_id"] == "api_call_456"
    assert doc["body"] == '{"data": [1, 2, 3]}' and doc["body_encoding"] == "utf-8"
    assert doc["headers"]["Cache-Control"] == "max-age=600" and "total" in doc["timings_ms"]
    second = post(api_server, "network/optimize-request", body).json()
    assert second["cache_status"] == "HIT" and "Age" in second["headers"]
    assert origin.hits[h.path] == 1


def test_scopes_on_optimize_request(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(body=b"ok", headers={"Cache-Control": "max-age=600"})

    assert (
        post(api_server, "network/optimize-request", {"url": h.url, "service_name": "ai_models"}, "svc_ai").status_code
        == 200
    )
    problem(
        post(api_server, "network/optimize-request", {"url": h.url, "service_name": "payment_processing"}, "svc_ai"),
        403,
    )
    problem(post(api_server, "network/optimize-request", {"url": h.url}, "svc_ai"), 403)
    problem(post(api_server, "network/optimize-request", {"url": h.url}, "read"), 403)
    problem(requests.post(api_server.url("network/optimize-request"), json={"url": h.url}), 401)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:10.0.0.1]/",
        "http://0xa9fea9fe/",
        "file:///etc/passwd",
    ],
)
def test_refused_urls_are_403_naming_the_rule(api_server, url):
    doc = problem(post(api_server, "network/optimize-request", {"url": url}), 403)
    assert doc["rule"] in ("global-address", "scheme") and "SSRF" in doc["detail"]


def test_redirect_to_internal_address_is_403(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/iam"})

    doc = problem(post(api_server, "network/optimize-request", {"url": h.url}), 403)
    assert doc["rule"] == "global-address" and "169.254.169.254" in doc["detail"]


def test_bad_input_and_origin_faults(api_server, origin):
    @origin.route()
    async def slow(req):
        import asyncio

        await asyncio.sleep(3)
        return web.Response(body=b"late")

    for body in (
        {"url": "not a url"},
        {"url": slow.url, "method": "FOO"},
        {"url": slow.url, "cache_strategy": "forever"},
        {"url": slow.url, "unknown": 1},
        {"url": slow.url, "method": "GET /x"},
        {"url": slow.url, "body": "%%%", "body_encoding": "base64", "method": "POST"},
    ):
        problem(post(api_server, "network/optimize-request", body), 422)
    problem(post(api_server, "network/optimize-request", {"url": slow.url, "timeout_s": 0.5}), 504)
    problem(post(api_server, "network/optimize-request", {"url": f"http://127.0.0.1:{free_port()}/"}), 502)
    big = {"url": slow.url, "method": "POST", "body": "x" * (MAX_BODY + 10)}
    problem(post(api_server, "network/optimize-request", big), 413)


def test_unsafe_method_through_the_route_invalidates(api_server, origin):
    @origin.route()
    def h(req):
        if req.method == "DELETE":
            return web.Response(status=204)
        return web.Response(body=b"item", headers={"Cache-Control": "max-age=600"})

    statuses = [post(api_server, "network/optimize-request", {"url": h.url}).json()["cache_status"] for _ in range(2)]
    d = post(api_server, "network/optimize-request", {"url": h.url, "method": "DELETE"}).json()
    after = post(api_server, "network/optimize-request", {"url": h.url}).json()["cache_status"]
    assert statuses == ["MISS", "HIT"] and d["cache_status"] == "BYPASS" and after == "MISS"


def test_pooling_metrics_service_and_purge(api_server, origin):
    r = post(api_server, "network/optimize-pooling", {"limit": 50, "limit_per_host": 10, "keepalive_timeout_s": 15})
    assert r.status_code == 200, r.text
    assert r.json()["after"] == {"limit": 50, "limit_per_host": 10, "keepalive_timeout_s": 15.0}
    problem(post(api_server, "network/optimize-pooling", {"limit": 5}, "read"), 403)
    problem(post(api_server, "network/optimize-pooling", {"limit": -1}), 422)
    problem(post(api_server, "network/optimize-pooling", {}), 422)

    s = post(
        api_server,
        "network/optimize-service",
        {
            "service_name": "ai_models",
            "optimization_type": "network",
            "parameters": {"cache_strategy": "long_term", "compression_level": "max"},
        },
    )
    assert s.status_code == 200 and s.json()["after"]["cache_strategy"] == "long_term"
    problem(
        post(
            api_server, "network/optimize-service", {"service_name": "payment_processing", "parameters": {}}, "svc_ai"
        ),
        403,
    )
    problem(
        post(
            api_server, "network/optimize-service", {"service_name": "ai_models", "parameters": {"cache_strategy": "x"}}
        ),
        422,
    )
    problem(post(api_server, "network/optimize-service", {"service_name": "ai_models", "parameters": {"nope": 1}}), 422)

    @origin.route()
    def h(req):
        return web.Response(body=b"p", headers={"Cache-Control": "max-age=600"})

    post(api_server, "network/optimize-request", {"url": h.url})
    p = post(api_server, "network/cache/purge", {"url": h.url})
    assert p.status_code == 200 and p.json()["purged"] == 1
    assert post(api_server, "network/optimize-request", {"url": h.url}).json()["cache_status"] == "MISS"
    assert post(api_server, "network/cache/purge", {"prefix": origin.url("/")}).json()["purged"] >= 1
    problem(post(api_server, "network/cache/purge", {"url": h.url, "prefix": "x"}), 422)
    problem(post(api_server, "network/cache/purge", {"url": h.url}, "read"), 403)

    m = requests.get(api_server.url("network/metrics"), headers=api_server.headers("read"), timeout=30)
    assert m.status_code == 200
    doc = m.json()
    for k in (
        "cache_hit_rate",
        "origin_requests",
        "origin_requests_avoided",
        "coalesced",
        "bandwidth_saved_mb",
        "compression_ratio",
        "connection_reuse_rate",
        "bytes_from_origin",
        "bytes_served",
    ):
        assert k in doc, k
    assert doc["pool"]["limit"] == 50 and doc["services"]["ai_models"]["cache_strategy"] == "long_term"
    audit = requests.get(api_server.url("system/audit"), headers=api_server.headers("admin"), timeout=30).json()
    actions = {e["action"] for e in audit}
    assert {"network.optimize-pooling", "network.optimize-service", "network.cache.purge"} <= actions


def test_api_compresses_large_responses(api_server, origin):
    @origin.route()
    def h(req):
        return web.Response(body=b'{"k": "%s"}' % (b"v" * 20000), headers={"Cache-Control": "max-age=600"})

    r = post(api_server, "network/optimize-request", {"url": h.url}, headers={"Accept-Encoding": "gzip"})
    assert r.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in r.headers["Vary"]
    assert int(r.headers["Content-Length"]) < 5000 and r.json()["body"].startswith('{"k": "vvv')
    r = post(api_server, "network/optimize-request", {"url": h.url}, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in r.headers and int(r.headers["Content-Length"]) > 20000
    small = requests.get(
        api_server.url("auth/whoami"), headers={**api_server.headers("read"), "Accept-Encoding": "gzip"}
    )
    assert "Content-Encoding" not in small.headers


def test_assets_route(api_server, tmp_path):
    from cognopt_ray.network import assets

    src = tmp_path / "site"
    src.mkdir()
    (src / "app.js").write_text("console.log('cognopt');\n" * 400)
    m = assets.build(src, api_server.root.parent / "assets")
    js = m["files"]["app.js"]
    h = {**api_server.headers("read"), "Accept-Encoding": "gzip"}
    r = requests.get(api_server.url(f"network/assets/{js['path']}"), headers=h, stream=True)
    raw = r.raw.read()
    assert r.status_code == 200 and r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert r.headers["Content-Encoding"] == "gzip" and r.headers["ETag"] == js["etag"]
    assert gzip.decompress(raw) == (src / "app.js").read_bytes()
    r = requests.get(api_server.url(f"network/assets/{js['path']}"), headers={**h, "If-None-Match": js["etag"]})
    assert r.status_code == 304
    r = requests.get(api_server.url("network/assets/app.js"), headers=api_server.headers("read"))
    assert r.status_code == 200 and r.headers["Cache-Control"] == "public, no-cache"
    problem(requests.get(api_server.url("network/assets/../keys.json"), headers=api_server.headers("read")), 404)
    problem(requests.get(api_server.url("network/assets/nope.js"), headers=api_server.headers("read")), 404)
