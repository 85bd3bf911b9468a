"""Attack 4 of issue 13 (storage side): Arrow IPC uploads with compressed buffers, and parsing
before authorisation.

An Arrow IPC stream of ~50 KiB whose zstd-compressed buffers expand to 512 MiB is sent to
``storage/store``: it must be refused with 413 while the Serve replica's memory stays far below the
expanded size (sampled while the request runs). A key that may not write the service gets 403
before the body is parsed (a body that is not Arrow at all shows it: 403, not 422).
"""

from __future__ import annotations

import threading
import uuid

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import requests

from tests.security.conftest import warm_up

pytestmark = pytest.mark.timeout(900)

ARROW = "application/vnd.apache.arrow.stream"
EXPANDED = 512 * 1024 * 1024


def _bomb() -> bytes:
    zeros = np.zeros(EXPANDED // 8, dtype=np.int64)  # untouched pages: no memory taken here
    table = pa.table({"x": pa.array(zeros)})
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _replica_pids() -> list[int]:
    """The Serve replicas of the app under test: this session's raylet's workers titled
    ``ray::ServeReplica:cognopt-test:…`` (the state API needs the dashboard, which is off)."""
    import ray

    node = ray._private.worker._global_node
    raylets = {p.process.pid for p in node.all_processes.get("raylet", [])} if node is not None else set()
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        title = " ".join(proc.info.get("cmdline") or [])
        if "ServeReplica:cognopt-test:" not in title:
            continue
        try:
            if raylets and not raylets & {a.pid for a in proc.parents()}:
                continue
        except psutil.Error:
            continue
        out.append(proc.info["pid"])
    return out


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total


def test_compressed_arrow_bomb_is_refused_with_bounded_memory(api_server):
    warm_up(api_server)
    body = _bomb()
    assert len(body) < 1024 * 1024  # under the app's max_body_bytes: the body limit alone does not stop it
    pids = _replica_pids()
    assert pids
    base = _rss(pids)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss(pids))
            done.wait(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        item = f"sec-bomb-{uuid.uuid4().hex[:8]}"
        r = requests.post(
            api_server.url("storage/store"),
            params={"item_id": item, "service_name": "ai_models"},
            headers={**api_server.headers("svc_ai"), "Content-Type": ARROW},
            data=body,
            timeout=600,
        )
    finally:
        done.set()
        t.join()
    assert r.status_code == 413, r.text[:500]
    assert "decoded" in r.json()["detail"]
    assert peak[0] - base < EXPANDED // 4, (base, peak[0])
    r = requests.get(api_server.url(f"storage/items/{item}"), headers=api_server.headers("admin"), timeout=60)
    assert r.status_code == 404


def test_arrow_upload_is_authorised_before_parsing(api_server):
    warm_up(api_server)
    h = {**api_server.headers("svc_code"), "Content-Type": ARROW}
    r = requests.post(
        api_server.url("storage/store"),
        params={"item_id": f"sec-x-{uuid.uuid4().hex[:6]}", "service_name": "ai_models"},
        headers=h,
        data=b"not arrow at all",
        timeout=60,
    )
    assert r.status_code == 403, r.text
    r = requests.post(
        api_server.url("storage/store"),
        params={"item_id": "x1", "service_name": "ai_models"},
        headers={"Authorization": "Bearer nope", "Content-Type": ARROW},
        data=b"not arrow",
        timeout=60,
    )
    assert r.status_code == 401, r.text


def test_small_compressed_arrow_upload_still_works(api_server):
    warm_up(api_server)
    table = pa.table({"x": list(range(1000)), "s": ["abc"] * 1000})
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    item = f"sec-tab-{uuid.uuid4().hex[:6]}"
    r = requests.post(
        api_server.url("storage/store"),
        params={"item_id": item, "service_name": "ai_models"},
        headers={**api_server.headers("svc_ai"), "Content-Type": ARROW},
        data=sink.getvalue().to_pybytes(),
        timeout=60,
    )
    assert r.status_code == 201, r.text
    r = requests.get(
        api_server.url(f"storage/retrieve/{item}"),
        params={"format": "json"},
        headers=api_server.headers("svc_ai"),
        timeout=60,
    )
    assert r.status_code == 200 and len(r.json()) == 1000
