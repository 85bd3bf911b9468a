"""The Serve app over real HTTP: health, auth before routing, scopes, problem+json, 413, audit."""

import json

import pytest
import requests

from tests.conftest import MAX_BODY

PROBLEM_KEYS = {"type", "title", "status", "detail"}


def assert_problem(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc = r.json()
    assert PROBLEM_KEYS <= set(doc) and doc["status"] == status
    return doc


def _details(api_server, prefix: str = "") -> requests.Response:
    return requests.get(api_server.url("health/details", prefix), headers=api_server.headers("read"), timeout=60)


def test_health_is_open_and_reports_ray_engines_redis(api_server):
    r = requests.get(api_server.url("health"))
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok"
    assert doc["ray"] == {"status": "up"} and doc["redis"] == {"status": "up"}  # open: statuses only
    assert isinstance(doc["engines"], dict)
    d = _details(api_server)
    assert d.status_code == 200
    doc = d.json()
    assert doc["ray"]["status"] == "up" and doc["ray"]["nodes_alive"] >= 1 and doc["ray"]["cpus"] == 4
    assert doc["redis"]["status"] == "up"


def test_health_without_redis_configured(api_server):
    assert requests.get(api_server.url("health", "/noredis")).json()["redis"] == {"status": "not_configured"}
    doc = _details(api_server, "/noredis").json()
    assert doc["redis"]["status"] == "not_configured"
    assert "COGNOPT_REDIS_URL" in doc["redis"]["reason"]
    assert doc["status"] == "ok"


def test_health_with_redis_down(api_server):
    r = requests.get(api_server.url("health", "/redisdown"))
    assert r.status_code == 200
    assert r.json()["redis"] == {"status": "down"} and r.json()["status"] == "degraded"
    doc = _details(api_server, "/redisdown").json()
    assert doc["redis"]["status"] == "down"
    assert "Connection" in doc["redis"]["reason"]
    assert doc["status"] == "degraded"


def test_health_reports_engine_actors(api_server):
    """A new engine shows up once the replica's cached document is refreshed (health_cache_s)."""
    import time

    import ray

    from cognopt_ray import runtime

    @ray.remote
    class Probe:
        def health(self):
            return {"status": "degraded", "reason": "probe says so"}

    h = runtime.get_or_create_actor(Probe, "cognopt.probe")
    try:
        deadline = time.time() + 120
        while "probe" not in (doc := _details(api_server).json())["engines"]:
            assert time.time() < deadline, doc
            time.sleep(1)
        assert doc["engines"]["probe"] == {"status": "degraded", "reason": "probe says so"}
        assert doc["status"] == "degraded"
        opened = requests.get(api_server.url("health")).json()
        assert opened["engines"]["probe"] == {"status": "degraded"} and opened["status"] == "degraded"
    finally:
        ray.kill(h, no_restart=True)


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "auth/whoami"),
        ("GET", "system/audit"),
        ("GET", "services"),
        ("GET", "does/not/exist"),
        ("POST", "cpu/optimize-tasks"),
        ("DELETE", "storage/items/x"),
        ("GET", ""),
    ],
)
def test_no_key_is_401_before_routing(api_server, method, path):
    r = requests.request(method, api_server.url(path))
    doc = assert_problem(r, 401)
    assert "no API key" in doc["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = requests.request(
        method, api_server.url(path), headers={"Authorization": "Bearer cok_0123456789ab.nope-nope-nope-nope-nope"}
    )
    assert "not valid" in assert_problem(r, 401)["detail"]


def test_both_header_forms_work(api_server):
    key = api_server.keys["read"]
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}, {"authorization": f"bearer {key}"}):
        r = requests.get(api_server.url("auth/whoami"), headers=headers)
        assert r.status_code == 200 and r.json()["scopes"] == ["read"]


def test_scopes(api_server):
    get = lambda path, role: requests.get(api_server.url(path), headers=api_server.headers(role))  # noqa: E731
    # audit: admin only
    assert get("system/audit", "admin").status_code == 200
    for role in ("read", "svc_ai"):
        assert "admin" in assert_problem(get("system/audit", role), 403)["detail"]
    # per-service read: admin, read, or the service's own key
    for role in ("admin", "read", "svc_ai"):
        r = get("services/ai_models", role)
        assert r.status_code == 200 and r.json()["settings"]["memory"]["pool_size"] == 10
    assert_problem(get("services/ai_models", "svc_pay"), 403)
    assert [s["name"] for s in get("services", "svc_pay").json()] == ["payment_processing"]
    assert len(get("services", "read").json()) >= 9
    # key creation: admin only, and read cannot mutate
    body = {"scopes": ["read"]}
    for role in ("read", "svc_ai"):
        assert_problem(requests.post(api_server.url("auth/keys"), json=body, headers=api_server.headers(role)), 403)


def test_problem_json_for_unknown_route_and_bad_input(api_server):
    h = api_server.headers("admin")
    assert_problem(requests.get(api_server.url("does/not/exist"), headers=h), 404)
    doc = assert_problem(requests.get(api_server.url("services/Bad-Name"), headers=h), 422)
    assert "service_name" in doc["detail"]
    doc = assert_problem(
        requests.post(api_server.url("auth/keys"), data="{not json", headers={**h, "Content-Type": "application/json"}),
        422,
    )
    doc = assert_problem(requests.post(api_server.url("auth/keys"), json={"scopes": ["root"]}, headers=h), 422)
    assert "root" in doc["detail"]
    assert_problem(requests.get(api_server.url("system/audit?limit=-5"), headers=h), 422)


def test_oversize_bodies_get_413(api_server):
    h = api_server.headers("admin")
    big = b"x" * (MAX_BODY + 1)
    doc = assert_problem(
        requests.post(api_server.url("auth/keys"), data=big, headers={**h, "Content-Type": "application/json"}), 413
    )
    assert str(MAX_BODY) in doc["detail"] and doc["limit"] == MAX_BODY
    # the limit is checked before routing too, and for chunked bodies without Content-Length
    assert_problem(requests.post(api_server.url("no/such/route"), data=big, headers=h), 413)

    def chunks():
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"y" * 65536

    assert_problem(
        requests.post(api_server.url("auth/keys"), data=chunks(), headers={**h, "Content-Type": "application/json"}),
        413,
    )
    # a body just under the limit is read and judged on its content
    ok = json.dumps({"scopes": ["read"], "note": "n"}).encode()
    assert (
        requests.post(
            api_server.url("auth/keys"), data=ok, headers={**h, "Content-Type": "application/json"}
        ).status_code
        == 201
    )


def test_created_key_works_and_is_audited_without_the_key(api_server):
    h = api_server.headers("admin")
    r = requests.post(
        api_server.url("auth/keys"), json={"scopes": ["service:voice_processing"], "note": "t"}, headers=h
    )
    assert r.status_code == 201
    new = r.json()
    who = requests.get(api_server.url("auth/whoami"), headers={"X-API-Key": new["key"]}).json()
    assert who == {"key_id": new["id"], "scopes": ["service:voice_processing"]}
    admin_id = requests.get(api_server.url("auth/whoami"), headers=h).json()["key_id"]
    entries = requests.get(
        api_server.url("system/audit"), params={"action": "auth.key_create", "target": new["id"]}, headers=h
    ).json()
    assert len(entries) == 1
    e = entries[0]
    assert e["key_id"] == admin_id and e["result"] == "ok" and e["details"]["scopes"] == ["service:voice_processing"]
    raw = (api_server.root / "audit" / "audit.jsonl").read_text()
    assert new["key"] not in raw and new["key"].split(".", 1)[1] not in raw
    assert api_server.keys["admin"] not in raw


def test_openapi_docs(api_server):
    r = requests.get(f"{api_server.base}/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert "/api/v0/optimization/health" in paths and "/api/v0/optimization/system/audit" in paths
    assert requests.get(f"{api_server.base}/docs").status_code == 200
