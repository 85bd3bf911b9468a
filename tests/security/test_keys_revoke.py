"""Keys end when an admin revokes them or when they expire; refusals are audited.

Before: there was no way to end a key short of editing ``keys.json`` by hand, no expiry, and a
403 left no trace in the audit log (only the successes of some routes were written).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests

from cognopt_ray.config import Settings
from cognopt_ray.security.keys import KeyStore, generate_key

pytestmark = pytest.mark.timeout(900)


def _whoami(api_server, key: str) -> requests.Response:
    return requests.get(api_server.url("auth/whoami"), headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _audit(api_server, **params) -> list[dict]:
    r = requests.get(api_server.url("system/audit"), params=params, headers=api_server.headers("admin"), timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_revoked_key_gets_401_on_its_next_call(api_server):
    admin = api_server.headers("admin")
    made = requests.post(
        api_server.url("auth/keys"), json={"scopes": ["read"], "note": "to revoke"}, headers=admin, timeout=60
    )
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    assert _whoami(api_server, key).status_code == 200
    # a key cannot revoke keys unless it is admin
    assert (
        requests.delete(
            api_server.url(f"auth/keys/{key_id}"), headers={"Authorization": f"Bearer {key}"}, timeout=60
        ).status_code
        == 403
    )
    r = requests.delete(api_server.url(f"auth/keys/{key_id}"), headers=admin, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is False and r.json()["revoked_at"]
    again = _whoami(api_server, key)
    assert again.status_code == 401
    assert "revoked" in again.json()["detail"] and again.headers["content-type"].startswith("application/problem+json")
    listed = {k["id"]: k for k in requests.get(api_server.url("auth/keys"), headers=admin, timeout=60).json()}
    assert listed[key_id]["active"] is False and "hash" not in listed[key_id]
    entries = _audit(api_server, action="auth.key_revoke", target=key_id)
    assert [e["result"] for e in entries] == ["denied", "ok"], entries
    assert requests.delete(api_server.url("auth/keys/nosuchkey000"), headers=admin, timeout=60).status_code == 404


def test_a_key_from_settings_can_be_revoked_too(tmp_path):
    """The test app's keys come from settings; a revocation is kept in keys.json and wins over them."""
    key, rec = generate_key(["read"])
    settings = Settings.load(environ={}, storage_root=str(tmp_path), api_keys=[rec.model_dump()])
    store, other_replica = KeyStore(settings), KeyStore(settings)
    assert other_replica.authenticate(key) is not None
    store.revoke(rec.id)
    principal, why = other_replica.check(key)
    assert principal is None and "revoked" in why


def test_an_expired_key_gets_401(api_server):
    admin = api_server.headers("admin")
    made = requests.post(
        api_server.url("auth/keys"), json={"scopes": ["read"], "ttl_s": 3600}, headers=admin, timeout=60
    )
    assert made.status_code == 201 and made.json()["expires_at"], made.text
    assert _whoami(api_server, made.json()["key"]).status_code == 200
    assert (
        requests.post(
            api_server.url("auth/keys"),
            json={"scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"},
            headers=admin,
            timeout=60,
        ).status_code
        == 422
    )
    # a key whose time has come: its record (as stored) says it expired a minute ago
    key, rec = generate_key(["read"], ttl_s=3600)
    past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)).isoformat(timespec="seconds")
    KeyStore(Settings.load(environ={}, storage_root=str(api_server.root))).add(
        rec.model_copy(update={"expires_at": past})
    )
    r = _whoami(api_server, key)
    assert r.status_code == 401 and "expired" in r.json()["detail"], r.text
    assert "new key" in r.json()["hint"]


def test_a_403_on_a_mutating_route_is_audited_as_denied(api_server):
    read = api_server.headers("read")
    read_id = api_server.keys["read"].split(".", 1)[0].removeprefix("cok_")
    r = requests.post(api_server.url("storage/backup"), json={"tag": "denied"}, headers=read, timeout=60)
    assert r.status_code == 403
    entries = _audit(api_server, action="storage.backup", key_id=read_id)
    assert entries and entries[-1]["result"] == "denied" and entries[-1]["details"]["status"] == 403
    # and a 401 is audited too, without a key id
    bad = requests.post(
        api_server.url("storage/prune"), json={}, headers={"X-API-Key": "not-a-key-0123456789"}, timeout=60
    )
    assert bad.status_code == 401
    lines = [json.loads(x) for x in (api_server.root / "audit" / "audit.jsonl").read_text().splitlines()]
    assert any(e["action"] == "storage.prune" and e["result"] == "denied" and e["key_id"] == "-" for e in lines[-20:])
