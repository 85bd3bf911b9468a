"""Authentication, scopes, key storage and the audit trail, for every route of the live schema.

Routes are read from the app's OpenAPI schema: a route added later is covered by these tests at
once (and a mutating route must be given a request body below, or the test says so).
"""

from __future__ import annotations

import inspect
import json
import uuid

import pytest
import requests

from cognopt_ray.security import keys as keys_mod
from tests.security.conftest import PAY
from tests.security.routes import DATA_PLANE, MUTATING, OPEN, offline_schema, routes

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)

ROUTES = [r for r in routes(offline_schema()) if r.key not in OPEN]
MUTATING_ROUTES = [r for r in ROUTES if r.method in MUTATING]


def test_offline_schema_is_the_live_one(live_routes):
    assert {r.key for r in live_routes} == {r.key for r in routes(offline_schema())}


# -- 401 -------------------------------------------------------------------------------------------
BAD_CREDENTIALS = {
    "none": {},
    "wrong_bearer": {"Authorization": "Bearer not-a-key-at-all-0123456789"},
    "wrong_x_api_key": {"X-API-Key": "not-a-key-at-all-0123456789"},
    "basic_scheme": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    "empty_bearer": {"Authorization": "Bearer "},
}


@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_every_route_answers_401_without_a_valid_key(api_server, route):
    url = api_server.url(route.concrete())
    # a well-formed key whose id exists but whose secret is wrong, and one whose id is unknown
    real = api_server.keys["admin"]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    unknown_id = "cok_000000000000." + real.split(".", 1)[1]
    cases = {
        **BAD_CREDENTIALS,
        "forged_secret": {"Authorization": f"Bearer {forged}"},
        "unknown_id": {"X-API-Key": unknown_id},
    }
    for name, headers in cases.items():
        kw = {"json": {}} if route.method in MUTATING else {}
        r = requests.request(route.method, url, headers=headers, timeout=30, **kw)
        assert r.status_code == 401, (name, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "WWW-Authenticate" in r.headers


@pytest.mark.parametrize(
    "path",
    [
        "//api/v0/optimization/storage/items",  # doubled slash
        "/api/v0/optimization/storage/items/",  # trailing slash
        "/api/v0/optimization/health/../storage/items",  # dot segments after the open path
        "/api/v0/optimization/%73torage/items",  # percent-encoded letter
        "/api/v0/optimization/health%2f..%2fstorage/items",
        "/api/v0/optimization/nonexistent",  # unknown routes say nothing either
    ],
)
def test_path_tricks_do_not_reach_a_route_without_a_key(api_server, path):
    import http.client

    conn = http.client.HTTPConnection(api_server.base.split("//", 1)[1], timeout=30)
    conn.request("GET", path)  # sent as written: no client-side normalisation
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status in (401, 404), (path, resp.status, body[:200])
    assert b"item_id" not in body  # no item listing leaked


def test_health_and_schema_are_open(api_server):
    assert requests.get(api_server.url("health"), timeout=30).status_code == 200


# -- scopes: a read key cannot mutate --------------------------------------------------------------
def bodies(res: dict, tag: str) -> dict[tuple[str, str], dict | None]:
    """A valid request (path value, JSON body) per mutating route."""
    svc = "sec_audit_svc"
    return {
        ("post", "/auth/keys"): (None, {"scopes": ["read"], "note": f"sec {tag}"}),
        ("delete", "/auth/keys/{key_id}"): (res.get("key_id", "000000000000"), None),
        ("put", "/services/{service_name}/caps"): (svc, {"max_workers": 4}),
        ("delete", "/services/{service_name}/caps"): (svc, None),
        ("post", "/cpu/optimize-service"): (None, {"service_name": svc, "parameters": {"max_workers": 4}}),
        ("post", "/cpu/optimize-tasks"): (None, {"tasks": [{"name": "sec_echo", "args": [1]}], "service_name": PAY}),
        ("post", "/memory/allocate"): (None, {"service_name": PAY, "data": {"v": tag}}),
        ("post", "/memory/deallocate"): (None, {"allocation_id": res["alloc"]}),
        ("post", "/memory/optimize-gc"): (None, None),
        ("post", "/memory/optimize-service"): (
            None,
            {"service_name": svc, "optimization_type": "resize", "parameters": {"pool_size": 20}},
        ),
        ("post", "/network/optimize-request"): (None, {"url": res["url"], "service_name": PAY}),
        ("post", "/network/optimize-pooling"): (None, {"limit": 100}),
        ("post", "/network/optimize-service"): (
            None,
            {"service_name": svc, "parameters": {"cache_strategy": "short_term"}},
        ),
        ("post", "/network/cache/purge"): (None, {"prefix": "http://127.0.0.1:1/sec-none/"}),
        ("post", "/storage/store"): (None, {"item_id": f"sec-new-{tag}", "data": 1, "service_name": PAY}),
        ("post", "/storage/backup"): (None, {"tag": f"sec-{tag}"}),
        ("post", "/storage/restore"): (None, {"snapshot_id": "latest", "item_ids": [res["item"]]}),
        ("post", "/storage/check"): (None, {"read_data": False}),
        ("post", "/storage/prune"): (None, {"keep_last": 1000}),
        ("post", "/storage/repair/{item_id}"): (res["item"], None),
        ("post", "/storage/optimize-tiering"): (None, {"dry_run": True}),
        ("post", "/storage/optimize-service"): (None, {"service_name": svc, "parameters": {"default_tier": "warm"}}),
        ("delete", "/storage/items/{item_id}"): (res.get("victim", res["item"]), None),
        # issue 7's routes, when they are merged
        ("post", "/system/optimize-all"): (None, {}),
        ("post", "/system/cleanup"): (None, {"dry_run": True}),
        ("post", "/system/cleanup/restore"): (
            None,
            {"id": "q" + "0" * 16, "dry_run": True},
        ),  # unknown id: 404, audited
        ("post", "/system/automation"): (None, {"action": "run_now", "loop": "gc"}),
    }


def send(api_server, route, role, res, tag):
    table = bodies(res, tag)
    assert route.key in table, f"give {route} a valid request body in tests/security/test_auth.py::bodies"
    value, body = table[route.key]
    url = api_server.url(route.concrete(value or "x1"))
    kw = {"json": body} if body is not None else {}
    return requests.request(route.method, url, headers=api_server.headers(role), timeout=300, **kw)


@pytest.mark.parametrize("route", MUTATING_ROUTES, ids=str)
def test_a_read_key_cannot_mutate(api_server, pay_resources, route):
    r = send(api_server, route, "read", pay_resources, "read")
    assert r.status_code == 403, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/problem+json")
    if route.key == ("post", "/storage/store"):
        info = requests.get(
            api_server.url("storage/items/sec-new-read"), headers=api_server.headers("admin"), timeout=30
        )
        assert info.status_code == 404  # nothing was written


# -- scopes: service a cannot touch service b -------------------------------------------------------
def per_service_requests(res: dict) -> list[tuple[str, str, dict | None]]:
    """Every per-service route, aimed at service payment_processing's things."""
    return [
        ("get", f"services/{PAY}", None),
        ("post", "cpu/optimize-tasks", {"tasks": [{"name": "sec_echo", "args": [1]}], "service_name": PAY}),
        (
            "post",
            "cpu/optimize-tasks",
            {"tasks": [{"name": "sec_echo", "args": [1], "service_name": PAY}], "service_name": "ai_models"},
        ),
        ("get", f"cpu/tasks/{res['task']}", None),
        ("post", "cpu/optimize-service", {"service_name": PAY, "parameters": {"max_workers": 1}}),
        ("post", "memory/allocate", {"service_name": PAY, "data": 1}),
        ("post", f"memory/allocate?service_name={PAY}", b"raw"),
        ("get", f"memory/allocations/{res['alloc']}", None),
        ("post", "memory/deallocate", {"allocation_id": res["alloc"]}),
        (
            "post",
            "memory/optimize-service",
            {"service_name": PAY, "optimization_type": "resize", "parameters": {"pool_size": 1}},
        ),
        ("post", "storage/store", {"item_id": "sec-cross", "data": 1, "service_name": PAY}),
        ("post", f"storage/store?item_id=sec-cross&service_name={PAY}", b"raw"),
        ("get", f"storage/retrieve/{res['item']}", None),
        ("get", f"storage/items/{res['item']}", None),
        ("get", f"storage/explain/{res['item']}", None),
        ("delete", f"storage/items/{res['item']}", None),
        ("post", "storage/optimize-service", {"service_name": PAY, "parameters": {"default_tier": "cold"}}),
        ("post", "network/optimize-request", {"url": res["url"], "service_name": PAY}),
        ("post", "network/optimize-service", {"service_name": PAY, "parameters": {"cache_strategy": "no_cache"}}),
        # a service key may not act without naming its service either
        ("post", "network/optimize-request", {"url": res["url"]}),
        # nor use the admin and read routes
        ("get", "storage/items", None),
        ("get", "system/audit", None),
        ("post", "storage/backup", {}),
    ]


def test_a_service_key_cannot_touch_another_service(api_server, pay_resources):
    h = api_server.headers("svc_ai")
    for method, path, body in per_service_requests(pay_resources):
        if isinstance(body, bytes):
            r = requests.request(
                method,
                api_server.url(path),
                data=body,
                timeout=60,
                headers={**h, "Content-Type": "application/octet-stream"},
            )
        else:
            r = requests.request(method, api_server.url(path), json=body, headers=h, timeout=60)
        # another service's task or item answers exactly like a missing one (no id probing); an
        # allocation id names its service, so any id of another service is 403, existing or not
        hidden = (path.startswith("storage/") and pay_resources["item"] in path) or path.startswith("cpu/tasks/")
        expected = 404 if hidden else 403
        assert r.status_code == expected, (method, path, r.status_code, r.text[:300])
    admin = api_server.headers("admin")
    # nothing changed: the item, the allocation and the pool are still there, nothing was stored
    assert requests.get(
        api_server.url(f"storage/retrieve/{pay_resources['item']}"), headers=admin, timeout=30
    ).json() == {"v": 1}
    assert requests.get(
        api_server.url(f"memory/allocations/{pay_resources['alloc']}"), headers=admin, timeout=30
    ).json() == {"v": 1}
    assert requests.get(api_server.url("storage/items/sec-cross"), headers=admin, timeout=30).status_code == 404


def test_a_service_key_can_use_its_own_service(api_server, pay_resources):
    h = api_server.headers("svc_pay")
    assert (
        requests.get(api_server.url(f"storage/retrieve/{pay_resources['item']}"), headers=h, timeout=30).status_code
        == 200
    )
    assert (
        requests.get(api_server.url(f"memory/allocations/{pay_resources['alloc']}"), headers=h, timeout=30).status_code
        == 200
    )


# -- keys: hashes only, constant-time comparison ----------------------------------------------------
def test_keys_are_stored_only_as_hashes(api_server):
    r = requests.post(
        api_server.url("auth/keys"),
        headers=api_server.headers("admin"),
        timeout=30,
        json={"scopes": ["service:ai_models"], "note": "hash check"},
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    secret = key.split(".", 1)[1]
    stored = (api_server.root / "keys.json").read_text()
    assert secret not in stored and key not in stored
    records = {rec["id"]: rec for rec in json.loads(stored)}
    assert records[r.json()["id"]]["hash"] == keys_mod.hash_secret(secret)
    # the new key works, and no file under the root holds it (audit log included)
    assert requests.get(api_server.url("auth/whoami"), headers={"X-API-Key": key}, timeout=30).json()["scopes"] == [
        "service:ai_models"
    ]
    for p in api_server.root.rglob("*"):
        if p.is_file() and p.stat().st_size < 50_000_000:
            assert secret.encode() not in p.read_bytes(), p
    for k in api_server.keys.values():  # the fixture's keys reach the server as hashes only
        for p in (api_server.root / "audit").rglob("*"):
            assert k.split(".", 1)[1].encode() not in p.read_bytes()


def test_keys_are_compared_in_constant_time(tmp_path, monkeypatch):
    """Every authentication goes through ``hmac.compare_digest``, also for unknown ids and malformed keys."""
    from cognopt_ray.config import Settings

    src = inspect.getsource(keys_mod.KeyStore.check)  # authenticate() is check()[0]
    assert "compare_digest" in src and ".hash ==" not in src and "== rec" not in src
    calls = []
    real = keys_mod.hmac.compare_digest
    monkeypatch.setattr(keys_mod.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    key, rec = keys_mod.generate_key(["read"])
    store = keys_mod.KeyStore(
        Settings.load(storage_root=str(tmp_path), api_keys=[rec.model_dump()], admin_key="plain-admin-key-0123456789")
    )
    assert store.authenticate(key).scopes == ("read",)
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("cok_000000000000." + key.split(".", 1)[1]) is None
    assert store.authenticate("plain-admin-key-0123456789").is_admin
    assert store.authenticate("something else entirely") is None
    assert len(calls) == 5


# -- audit ------------------------------------------------------------------------------------------
ADMIN_ACTIONS = [r for r in MUTATING_ROUTES if r.key not in DATA_PLANE]


def _audit_count(api_server) -> int:
    path = api_server.root / "audit" / "audit.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.parametrize("route", ADMIN_ACTIONS, ids=str)
def test_every_admin_action_leaves_an_audit_entry(api_server, pay_resources, route):
    res = dict(pay_resources)
    if route.key == ("delete", "/storage/items/{item_id}"):
        victim = f"sec-victim-{uuid.uuid4().hex[:6]}"
        requests.post(
            api_server.url("storage/store"),
            headers=api_server.headers("admin"),
            timeout=60,
            json={"item_id": victim, "data": 1, "service_name": PAY},
        ).raise_for_status()
        res["victim"] = victim
    if route.key == ("delete", "/auth/keys/{key_id}"):
        made = requests.post(
            api_server.url("auth/keys"),
            headers=api_server.headers("admin"),
            timeout=60,
            json={"scopes": ["read"], "note": "sec audit revoke"},
        )
        res["key_id"] = made.json()["id"]
    if route.key in (("post", "/storage/restore"), ("post", "/storage/repair/{item_id}")):
        requests.post(
            api_server.url("storage/backup"),
            headers=api_server.headers("admin"),
            timeout=300,
            json={"tag": "sec-audit"},
        ).raise_for_status()
    before = _audit_count(api_server)
    r = send(api_server, route, "admin", res, "audit")
    # an unknown quarantine id answers 404; the route audits failures too, which is what is checked here
    assert r.status_code < 300 or (route.key == ("post", "/system/cleanup/restore") and r.status_code == 404), (
        r.status_code,
        r.text[:300],
    )
    lines = (api_server.root / "audit" / "audit.jsonl").read_text().splitlines()[before:]
    entries = [json.loads(x) for x in lines]
    admin_id = api_server.keys["admin"].split(".", 1)[0].removeprefix("cok_")
    mine = [e for e in entries if e["key_id"] == admin_id]
    assert mine, f"{route} left no audit entry"
    assert all({"time", "action", "result"} <= set(e) for e in mine)
