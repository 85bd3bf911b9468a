"""Attack 2 of issue 13: one service takes over, or probes, another service's stored items.

A ``service:code_generation`` key tries to overwrite an ``ai_models`` item (JSON and raw bodies),
to tell existing ``ai_models`` ids from missing ones by the answers of retrieve, info, explain and
delete, and to write the engines' reserved ids; a Python caller tries the same overwrite through
the storage client. Then per-service quotas: a put over the quota changes nothing, a service key
cannot raise its own quota, spilled memory items count against their service.
"""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from cognopt_ray.errors import Forbidden, InsufficientStorage
from tests.security.conftest import warm_up

pytestmark = pytest.mark.timeout(900)

AI = "ai_models"
CODE = "code_generation"


def _store(api, role: str, item_id: str, data, service: str, **extra):
    return requests.post(
        api.url("storage/store"),
        headers=api.headers(role),
        timeout=60,
        json={"item_id": item_id, "data": data, "service_name": service, **extra},
    )


@pytest.fixture(scope="module")
def ai_item(api_server):
    warm_up(api_server)
    item = f"sec-ai-{uuid.uuid4().hex[:8]}"
    r = _store(api_server, "svc_ai", item, {"weights": "ai-secret"}, AI)
    assert r.status_code == 201, r.text
    return item


def _shape(r: requests.Response, item_id: str) -> tuple:
    doc = r.json()
    return (
        r.status_code,
        sorted(k for k in doc if k not in ("instance", "request_id")),
        doc.get("title"),
        str(doc.get("detail", "")).replace(item_id, "X"),
        doc.get("hint"),
    )


def test_overwrite_of_another_services_item_is_refused(api_server, ai_item):
    r = _store(api_server, "svc_code", ai_item, "pwned", CODE)
    assert r.status_code == 403, r.text
    r = requests.post(
        api_server.url("storage/store"),
        headers={**api_server.headers("svc_code"), "Content-Type": "application/octet-stream"},
        data=b"pwned",
        timeout=60,
        params={"item_id": ai_item, "service_name": CODE},
    )
    assert r.status_code == 403, r.text
    assert AI not in r.json()["detail"], r.text  # the refusal does not name the owner
    r = requests.get(api_server.url(f"storage/retrieve/{ai_item}"), headers=api_server.headers("svc_ai"), timeout=60)
    assert r.status_code == 200 and r.json() == {"weights": "ai-secret"}, r.text
    info = requests.get(
        api_server.url(f"storage/items/{ai_item}"), headers=api_server.headers("admin"), timeout=60
    ).json()
    assert info["service"] == AI


def test_python_caller_cannot_take_over_an_id(api_server, ai_item):
    from cognopt_ray.storage import client

    with pytest.raises(Forbidden):
        client().put(ai_item, b"pwned", service=CODE)
    assert client().get(ai_item) == {"weights": "ai-secret"}


def test_existing_and_missing_ids_answer_the_same(api_server, ai_item):
    missing = f"sec-none-{uuid.uuid4().hex[:8]}"
    h = api_server.headers("svc_code")
    for method, path in (
        ("GET", "storage/retrieve/{}"),
        ("GET", "storage/items/{}"),
        ("GET", "storage/explain/{}"),
        ("DELETE", "storage/items/{}"),
    ):
        a = requests.request(method, api_server.url(path.format(ai_item)), headers=h, timeout=60)
        b = requests.request(method, api_server.url(path.format(missing)), headers=h, timeout=60)
        assert a.status_code == 404, (path, a.status_code, a.text)
        assert _shape(a, ai_item) == _shape(b, missing), (path, a.text, b.text)
    r = requests.get(api_server.url(f"storage/retrieve/{ai_item}"), headers=api_server.headers("svc_ai"), timeout=60)
    assert r.status_code == 200 and r.json() == {"weights": "ai-secret"}


def test_own_ids_still_work_and_admin_overwrite_is_audited(api_server):
    own = f"sec-code-{uuid.uuid4().hex[:8]}"
    assert _store(api_server, "svc_code", own, {"v": 1}, CODE).status_code == 201
    assert _store(api_server, "svc_code", own, {"v": 2}, CODE).status_code == 201
    r = requests.get(api_server.url(f"storage/retrieve/{own}"), headers=api_server.headers("svc_code"), timeout=60)
    assert r.json() == {"v": 2}
    r = _store(api_server, "admin", own, {"v": 3}, AI)
    assert r.status_code == 201 and r.json()["service"] == AI, r.text
    log = requests.get(
        api_server.url("system/audit"),
        headers=api_server.headers("admin"),
        timeout=60,
        params={"action": "storage.overwrite", "target": own},
    ).json()
    hits = [e for e in log if e.get("target") == own]
    assert hits and hits[-1]["details"]["previous_service"] == CODE, log[-5:]
    assert (
        requests.delete(
            api_server.url(f"storage/items/{own}"), headers=api_server.headers("svc_ai"), timeout=60
        ).status_code
        == 200
    )


@pytest.mark.parametrize("item_id", ["memory-evicted:ai_models:a1b2c3", "chunk:" + "0" * 64, "cognopt:x"])
def test_reserved_ids_are_refused_over_rest(api_server, item_id):
    warm_up(api_server)
    for role in ("svc_ai", "admin"):
        r = requests.post(
            api_server.url("storage/store"),
            headers={**api_server.headers(role), "Content-Type": "application/octet-stream"},
            data=b"\x80\x04payload",
            timeout=60,
            params={"item_id": item_id, "service_name": AI},
        )
        assert r.status_code == 403 and "reserved" in r.text, (role, r.text)
    r = requests.get(api_server.url(f"storage/retrieve/{item_id}"), headers=api_server.headers("svc_ai"), timeout=60)
    assert r.status_code == 403 and "reserved" in r.text, r.text


def test_spill_id_of_another_service_is_refused_to_python(api_server):
    from cognopt_ray.storage import client

    with pytest.raises(Forbidden):
        client().put(f"memory-evicted:{AI}:x{uuid.uuid4().hex[:6]}", b"v", service=CODE)


# -- quotas ---------------------------------------------------------------------------------------
def test_quota_refuses_and_changes_nothing(api_server):
    warm_up(api_server)
    svc = f"sec_quota_{uuid.uuid4().hex[:8]}"  # a service of its own: other tests store (and spill) in the named ones
    r = requests.post(
        api_server.url("storage/optimize-service"),
        headers=api_server.headers("admin"),
        timeout=60,
        json={"service_name": svc, "parameters": {"quota_bytes": 40_000, "codec": "none"}},
    )
    assert r.status_code == 200, r.text
    first = f"sec-q1-{uuid.uuid4().hex[:8]}"
    r = requests.post(
        api_server.url("storage/store"),
        headers=api_server.headers("admin"),
        timeout=60,
        json={"item_id": first, "data": os.urandom(20_000).hex()[:20_000], "service_name": svc},
    )
    assert r.status_code == 201, r.text
    before = requests.get(
        api_server.url("storage/items"), headers=api_server.headers("admin"), timeout=60, params={"service": svc}
    ).json()
    second = f"sec-q2-{uuid.uuid4().hex[:8]}"
    r = requests.post(
        api_server.url("storage/store"),
        headers=api_server.headers("admin"),
        timeout=60,
        json={"item_id": second, "data": os.urandom(30_000).hex()[:30_000], "service_name": svc},
    )
    assert r.status_code == 507, r.text
    assert "quota_bytes" in r.json()["hint"], r.text
    after = requests.get(
        api_server.url("storage/items"), headers=api_server.headers("admin"), timeout=60, params={"service": svc}
    ).json()
    assert after == before
    from cognopt_ray.storage import client

    with pytest.raises(InsufficientStorage):  # spilled allocations count against their service
        client().put(f"memory-evicted:{svc}:q{uuid.uuid4().hex[:6]}", os.urandom(30_000), service=svc)


def test_service_key_cannot_raise_its_quota(api_server):
    warm_up(api_server)
    r = requests.post(
        api_server.url("storage/optimize-service"),
        headers=api_server.headers("svc_ai"),
        timeout=60,
        json={"service_name": AI, "parameters": {"quota_bytes": 10**15}},
    )
    assert r.status_code == 403, r.text
    assert "quota_bytes" in r.text
