"""Memory routes over real HTTP: allocate (JSON, base64, octet-stream), read back, errors, scopes, audit."""

from __future__ import annotations

import base64

import pytest
import requests

from tests.integration.test_api import assert_problem


def _alloc(api, role, body=None, **kw):
    return requests.post(api.url("memory/allocate"), json=body, headers=api.headers(role), timeout=60, **kw)


def test_allocate_json_and_read_it_back(api_server):
    r = _alloc(
        api_server, "svc_ai", {"service_name": "ai_models", "data": {"weights": [1, 2, 3]}, "memory_type": "transient"}
    )
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["allocation_id"].startswith("ai_models.") and doc["kind"] == "json" and doc["blocks"] == 1
    back = requests.get(
        api_server.url(f"memory/allocations/{doc['allocation_id']}"), headers=api_server.headers("svc_ai")
    )
    assert back.status_code == 200 and back.json() == {"weights": [1, 2, 3]}
    assert back.headers["x-cognopt-kind"] == "json"


def test_allocate_base64_and_octet_stream_bytes(api_server):
    raw = bytes(range(256)) * 1000
    r = _alloc(
        api_server,
        "svc_ai",
        {
            "service_name": "ai_models",
            "data": base64.b64encode(raw).decode(),
            "encoding": "base64",
            "memory_type": "persistent",
        },
    )
    assert r.status_code == 201, r.text
    aid = r.json()["allocation_id"]
    back = requests.get(api_server.url(f"memory/allocations/{aid}"), headers=api_server.headers("read"))
    assert back.status_code == 200 and back.content == raw
    assert back.headers["content-type"] == "application/octet-stream"
    r = requests.post(
        api_server.url("memory/allocate"),
        params={"service_name": "ai_models", "memory_type": "transient"},
        data=raw[:5000],
        headers={**api_server.headers("svc_ai"), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["nbytes"] == 5000 and r.json()["kind"] == "bytes"
    back = requests.get(
        api_server.url(f"memory/allocations/{r.json()['allocation_id']}"), headers=api_server.headers("admin")
    )
    assert back.content == raw[:5000]
    d = requests.post(
        api_server.url("memory/deallocate"), json={"allocation_id": aid}, headers=api_server.headers("svc_ai")
    )
    assert d.status_code == 200 and d.json()["nbytes"] == len(raw)


def test_data_larger_than_the_pool_is_413_naming_the_pool(api_server):
    # payment_processing: 5 blocks of 64 KiB = 320 KiB; the body limit is 1 MiB
    r = requests.post(
        api_server.url("memory/allocate"),
        params={"service_name": "payment_processing"},
        data=b"x" * (400 * 1024),
        headers={**api_server.headers("svc_pay"), "Content-Type": "application/octet-stream"},
    )
    doc = assert_problem(r, 413)
    assert "payment_processing" in doc["detail"] and str(5 * 64 * 1024) in doc["detail"]
    m = requests.get(api_server.url("memory/metrics"), headers=api_server.headers("read")).json()
    assert m["pools"]["payment_processing"]["allocations"] == 0
    assert m["pools"]["payment_processing"]["rejected"] >= 1


@pytest.mark.parametrize(
    "body, params",
    [
        ({"service_name": "Bad Name", "data": 1}, None),
        ({"service_name": "ai_models", "data": 1, "memory_type": "forever"}, None),
        ({"service_name": "ai_models", "data": 12, "encoding": "base64"}, None),
        ({"service_name": "ai_models", "data": "%%%", "encoding": "base64"}, None),
        (None, {"service_name": "BAD-name"}),
    ],
)
def test_invalid_input_is_422(api_server, body, params):
    if params is not None:
        r = requests.post(
            api_server.url("memory/allocate"),
            params=params,
            data=b"abc",
            headers={**api_server.headers("admin"), "Content-Type": "application/octet-stream"},
        )
    else:
        r = _alloc(api_server, "admin", body)
    assert_problem(r, 422)


def test_deallocate_unknown_or_freed_is_404(api_server):
    h = api_server.headers("svc_ai")
    aid = _alloc(api_server, "svc_ai", {"service_name": "ai_models", "data": "x"}).json()["allocation_id"]
    assert requests.post(api_server.url("memory/deallocate"), json={"allocation_id": aid}, headers=h).status_code == 200
    assert_problem(requests.post(api_server.url("memory/deallocate"), json={"allocation_id": aid}, headers=h), 404)
    assert_problem(requests.get(api_server.url(f"memory/allocations/{aid}"), headers=h), 404)
    assert_problem(
        requests.post(
            api_server.url("memory/deallocate"), json={"allocation_id": "ai_models.0000000000000000"}, headers=h
        ),
        404,
    )
    assert_problem(
        requests.post(api_server.url("memory/deallocate"), json={"allocation_id": "garbage"}, headers=h), 404
    )


def test_service_scopes(api_server):
    r = _alloc(api_server, "svc_ai", {"service_name": "payment_processing", "data": 1})
    assert_problem(r, 403)
    aid = _alloc(api_server, "svc_pay", {"service_name": "payment_processing", "data": 1}).json()["allocation_id"]
    assert_problem(requests.get(api_server.url(f"memory/allocations/{aid}"), headers=api_server.headers("svc_ai")), 403)
    assert_problem(
        requests.post(
            api_server.url("memory/deallocate"), json={"allocation_id": aid}, headers=api_server.headers("read")
        ),
        403,
    )
    assert_problem(requests.post(api_server.url("memory/optimize-gc"), headers=api_server.headers("read")), 403)
    assert_problem(requests.get(api_server.url("memory/metrics"), headers=api_server.headers("svc_ai")), 403)


def test_metrics_gc_and_optimize_service_with_audit(api_server):
    h = api_server.headers("admin")
    m = requests.get(api_server.url("memory/metrics"), headers=api_server.headers("read"))
    assert m.status_code == 200, m.text
    doc = m.json()
    assert "ai_models" in doc["pools"] and doc["object_store"] and "pool_hit_rate" in doc and "gc" in doc
    g = requests.post(api_server.url("memory/optimize-gc"), headers=h)
    assert g.status_code == 200, g.text
    assert len(g.json()["thresholds_before"]) == 3 and g.json()["pause_p99_ms_before"] is not None
    r = requests.post(
        api_server.url("memory/optimize-service"),
        headers=h,
        json={"service_name": "voice_processing", "optimization_type": "resize", "parameters": {"pool_size": 30}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["before"]["pool_size"] == 15 and r.json()["after"]["pool_size"] == 30
    bad = requests.post(
        api_server.url("memory/optimize-service"),
        headers=h,
        json={"service_name": "voice_processing", "optimization_type": "resize", "parameters": {"pool_size": -1}},
    )
    assert_problem(bad, 422)
    entries = requests.get(api_server.url("system/audit"), params={"action": "memory."}, headers=h).json()
    actions = [(e["action"], e["result"]) for e in entries]
    assert ("memory.optimize_service", "ok") in actions and ("memory.optimize_service", "error") in actions
    assert ("memory.optimize_gc", "ok") in actions
