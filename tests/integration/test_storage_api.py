"""The storage routes over real HTTP (the session's Serve app)."""

from __future__ import annotations

import base64
import os
import uuid

import pyarrow as pa
import pyarrow.ipc as ipc
import requests

ARROW = "application/vnd.apache.arrow.stream"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_store_and_retrieve_json_base64_raw_and_arrow(api_server):
    h = api_server.headers("admin")
    url = api_server.url
    j = uid("j")
    r = requests.post(
        url("storage/store"),
        json={"item_id": j, "data": {"a": [1, 2]}, "storage_tier": "warm", "compression_type": "auto"},
        headers=h,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "json"
    assert requests.get(url(f"storage/retrieve/{j}"), headers=h, timeout=60).json() == {"a": [1, 2]}

    b = uid("b")
    payload = os.urandom(5000)
    r = requests.post(
        url("storage/store"),
        json={"item_id": b, "data": base64.b64encode(payload).decode(), "encoding": "base64", "storage_tier": "cold"},
        headers=h,
        timeout=60,
    )
    assert r.status_code == 201 and r.json()["codec"] == "none"
    got = requests.get(url(f"storage/retrieve/{b}"), headers=h, timeout=60)
    assert got.content == payload and got.headers["X-Cognopt-Tier"] == "cold"

    raw = uid("raw")
    text = b"log line\n" * 5000
    r = requests.post(
        url("storage/store"),
        params={"item_id": raw, "storage_tier": "archive"},
        data=text,
        headers={**h, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 201 and r.json()["tier"] == "archive"
    assert requests.get(url(f"storage/retrieve/{raw}"), headers=h, timeout=60).content == text

    t = uid("t")
    table = pa.table({"id": list(range(100)), "name": [f"n{i}" for i in range(100)]})
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    r = requests.post(
        url("storage/store"),
        params={"item_id": t, "storage_tier": "cold"},
        data=sink.getvalue().to_pybytes(),
        headers={**h, "Content-Type": ARROW},
        timeout=60,
    )
    assert r.status_code == 201 and r.json()["kind"] == "table"
    got = requests.get(url(f"storage/retrieve/{t}"), params={"columns": ["id"]}, headers=h, timeout=60)
    assert got.headers["content-type"].startswith(ARROW)
    back = ipc.open_stream(got.content).read_all()
    assert back.column_names == ["id"] and back.num_rows == 100
    rows = requests.get(url(f"storage/retrieve/{t}"), params={"format": "json"}, headers=h, timeout=60).json()
    assert rows[3] == {"id": 3, "name": "n3"}

    ex = requests.get(url(f"storage/explain/{raw}"), headers=h, timeout=60).json()
    assert ex["reason"].startswith("archive") and ex["candidates"]
    d = requests.delete(url(f"storage/items/{j}"), headers=h, timeout=60)
    assert d.status_code == 200 and d.json()["deleted"]
    assert requests.get(url(f"storage/retrieve/{j}"), headers=h, timeout=60).status_code == 404


def test_bad_input_is_refused_and_changes_nothing(api_server):
    h = api_server.headers("admin")
    url = api_server.url
    before = requests.get(url("storage/items"), headers=h, timeout=60).json()
    r = requests.post(
        url("storage/store"), json={"item_id": "x1", "data": 1, "storage_tier": "lukewarm"}, headers=h, timeout=60
    )
    assert r.status_code == 422 and "archive" in r.json()["hint"]
    assert r.headers["content-type"].startswith("application/problem+json")
    r = requests.post(
        url("storage/store"), json={"item_id": "x1", "data": 1, "compression_type": "snappy"}, headers=h, timeout=60
    )
    assert r.status_code == 422 and "zstd" in r.json()["hint"]
    for bad in ("../etc/passwd", "a/b", "x" * 250, ".hidden"):
        r = requests.post(url("storage/store"), json={"item_id": bad, "data": 1}, headers=h, timeout=60)
        assert r.status_code == 422, bad
    assert requests.get(url("storage/retrieve/..%2F..%2Fetc%2Fpasswd"), headers=h, timeout=60).status_code in (404, 422)
    assert requests.get(url("storage/retrieve/nope-missing"), headers=h, timeout=60).status_code == 404
    r = requests.post(
        url("storage/store"), json={"item_id": "b64", "data": "!!!", "encoding": "base64"}, headers=h, timeout=60
    )
    assert r.status_code == 422
    big = b"x" * (1024 * 1024 + 10)
    r = requests.post(
        url("storage/store"),
        params={"item_id": "big"},
        data=big,
        headers={**h, "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 413
    assert requests.get(url("storage/items"), headers=h, timeout=60).json() == before


def test_service_keys_are_scoped(api_server):
    url = api_server.url
    ai = api_server.headers("svc_ai")
    item = uid("ai")
    r = requests.post(
        url("storage/store"),
        json={"item_id": item, "data": "model", "service_name": "ai_models"},
        headers=ai,
        timeout=60,
    )
    assert r.status_code == 201
    assert requests.get(url(f"storage/retrieve/{item}"), headers=ai, timeout=60).json() == "model"
    pay = api_server.headers("svc_pay")
    # another service's item answers like a missing one (404), so ids cannot be probed
    assert requests.get(url(f"storage/retrieve/{item}"), headers=pay, timeout=60).status_code == 404
    assert requests.delete(url(f"storage/items/{item}"), headers=pay, timeout=60).status_code == 404
    assert (
        requests.delete(url(f"storage/items/{item}"), headers=api_server.headers("read"), timeout=60).status_code == 403
    )
    r = requests.post(
        url("storage/store"),
        json={"item_id": uid("p"), "data": 1, "service_name": "ai_models"},
        headers=pay,
        timeout=60,
    )
    assert r.status_code == 403
    assert requests.post(url("storage/backup"), json={}, headers=ai, timeout=60).status_code == 403
    assert (
        requests.get(url(f"storage/retrieve/{item}"), headers=api_server.headers("read"), timeout=60).status_code == 200
    )


def test_backup_snapshots_restore_tiering_metrics_and_service(api_server):
    h = api_server.headers("admin")
    url = api_server.url
    item = uid("bk")
    requests.post(
        url("storage/store"), json={"item_id": item, "data": {"v": 1}}, headers=h, timeout=60
    ).raise_for_status()
    snap = requests.post(url("storage/backup"), json={"tag": "test"}, headers=h, timeout=300)
    assert snap.status_code == 200, snap.text
    sid = snap.json()["snapshot_id"]
    assert snap.json()["bytes_added"] > 0
    snaps = requests.get(url("storage/snapshots"), headers=api_server.headers("read"), timeout=60).json()
    assert sid in [s["snapshot_id"] for s in snaps]
    requests.delete(url(f"storage/items/{item}"), headers=h, timeout=60).raise_for_status()
    r = requests.post(url("storage/restore"), json={"snapshot_id": sid, "item_ids": [item]}, headers=h, timeout=300)
    assert r.status_code == 200 and r.json()["restored"] == 1, r.text
    assert requests.get(url(f"storage/retrieve/{item}"), headers=h, timeout=60).json() == {"v": 1}
    assert (
        requests.post(
            url("storage/restore"), json={"snapshot_id": "ffffffffffffffff"}, headers=h, timeout=60
        ).status_code
        == 404
    )
    chk = requests.post(url("storage/check"), json={"read_data": True}, headers=h, timeout=300).json()
    assert chk["ok"]

    dry = requests.post(url("storage/optimize-tiering"), json={"dry_run": True}, headers=h, timeout=60).json()
    assert dry["dry_run"] is True and dry["migrated"] == []
    m = requests.get(url("storage/metrics"), headers=api_server.headers("read"), timeout=60).json()
    assert set(m["tiers"]) == {"hot", "warm", "cold", "archive"} and "compression_ratio" in m["formulas"]
    assert m["backups"]["snapshots"] >= 1

    r = requests.post(
        url("storage/optimize-service"),
        json={
            "service_name": "ai_models",
            "optimization_type": "storage",
            "parameters": {"default_tier": "cold", "codec": "zstd"},
        },
        headers=api_server.headers("svc_ai"),
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["after"]["default_tier"] == "cold"
    item2 = uid("ai2")
    rec = requests.post(
        url("storage/store"),
        json={"item_id": item2, "data": "x" * 1000, "service_name": "ai_models"},
        headers=h,
        timeout=60,
    ).json()
    assert rec["tier"] == "cold" and rec["codec"] == "zstd"
    r = requests.post(
        url("storage/optimize-service"),
        json={"service_name": "ai_models", "parameters": {"default_tier": "lava"}},
        headers=h,
        timeout=60,
    )
    assert r.status_code == 422
    audit = requests.get(url("system/audit"), params={"action": "storage."}, headers=h, timeout=60).json()
    assert {"storage.backup", "storage.restore", "storage.delete"} <= {a["action"] for a in audit}
