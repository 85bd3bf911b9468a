"""The Serve replica killed under load: clients see errors only while it restarts, no data is lost."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import ray
import requests

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)


def _replica(app: str):
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"].startswith(f"SERVE_REPLICA::{app}#"):
            return ray.get_actor(a["name"], namespace=a["namespace"]), a["name"]
    raise AssertionError(f"no replica of {app}")


def test_replica_killed_under_load_loses_nothing(api_server):
    h = api_server.headers("svc_pay")
    tag = uuid.uuid4().hex[:6]
    acked: dict[str, str] = {}
    events: list[tuple[float, bool, str]] = []  # (time, ok, what)
    lock = threading.Lock()
    stop = threading.Event()

    def worker(t):
        s = requests.Session()
        i = 0
        while not stop.is_set():
            item = f"rep-{tag}-{t}-{i}"
            value = f"value {t} {i}"
            try:
                r = s.post(
                    api_server.url("storage/store"),
                    headers=h,
                    timeout=60,
                    json={"item_id": item, "data": value, "service_name": "payment_processing"},
                )
                ok = r.status_code == 201
                what = f"{r.status_code} {r.text[:120]}"
            except requests.RequestException as e:
                ok, what = False, type(e).__name__
            with lock:
                events.append((time.time(), ok, what))
                if ok:
                    acked[item] = value
            i += 1
            if not ok:
                time.sleep(0.1)

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(4)]
    for t in threads:
        t.start()
    try:
        deadline = time.time() + 120
        while len(acked) < 20:
            assert time.time() < deadline
            time.sleep(0.05)
        handle, name = _replica("cognopt-test")
        killed_at = time.time()
        ray.kill(handle, no_restart=False)
        # wait until the app answers again and 20 more writes were acknowledged
        deadline = time.time() + 240
        while True:
            with lock:
                after = [e for e in events if e[0] > killed_at and e[1]]
            if len(after) >= 20:
                break
            assert time.time() < deadline, f"the app did not come back ({events[-3:]})"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(90)
    with lock:
        before_kill = [e for e in events if e[0] <= killed_at]
        recovered_at = min(e[0] for e in events if e[0] > killed_at and e[1])
        late_errors = [e for e in events if e[0] > recovered_at + 5 and not e[1]]
    assert all(ok for _, ok, _ in before_kill), [e for e in before_kill if not e[1]][:3]
    assert not late_errors, late_errors[:5]  # errors only while the replica restarted
    # every acknowledged write is there
    admin = api_server.headers("admin")
    for item, value in acked.items():
        r = requests.get(api_server.url(f"storage/retrieve/{item}"), headers=admin, timeout=60)
        assert r.status_code == 200 and r.json() == value, (item, r.status_code)
