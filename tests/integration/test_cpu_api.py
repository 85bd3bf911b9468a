"""The cpu/* routes over real HTTP: registered tasks only, priorities, metrics, service policy."""

from __future__ import annotations

import time

import pytest
import requests


@pytest.fixture(scope="module")
def registered(api_server):
    import cognopt_ray.cpu as cpu

    def add(a, b):
        return a + b

    def fail(msg):
        raise RuntimeError(msg)

    cpu.register_task("test_add", add)
    cpu.register_task("test_fail", fail)
    return api_server


def test_optimize_tasks_wait_and_ids(registered):
    api = registered
    body = {
        "tasks": [
            {"name": "test_add", "args": [i, 10], "priority": p} for i, p in enumerate(["critical", 5, "medium", 2])
        ],
        "wait": True,
    }
    r = requests.post(api.url("cpu/optimize-tasks"), json=body, headers=api.headers("admin"), timeout=120)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [t["result"] for t in doc["tasks"]] == [10, 11, 12, 13]
    assert doc["completed"] == 4 and doc["failed"] == 0
    assert [t["priority"] for t in doc["tasks"]] == ["critical", "background", "medium", "high"]

    r = requests.post(
        api.url("cpu/optimize-tasks"),
        headers=api.headers("svc_ai"),
        timeout=120,
        json={
            "tasks": [{"name": "test_add", "args": [1, 2]}, {"name": "test_fail", "args": ["nope"]}],
            "wait": False,
            "service_name": "ai_models",
        },
    )
    assert r.status_code == 200, r.text
    ids = r.json()["task_ids"]
    assert len(ids) == 2 and r.json()["tasks"] == []
    deadline = time.time() + 120
    states = {}
    while time.time() < deadline:
        states = {
            i: requests.get(api.url(f"cpu/tasks/{i}"), headers=api.headers("svc_ai"), timeout=30).json() for i in ids
        }
        if all(s["state"] not in ("queued", "running") for s in states.values()):
            break
        time.sleep(0.2)
    assert states[ids[0]]["state"] == "finished" and states[ids[0]]["result"] == 3
    assert states[ids[1]]["state"] == "failed" and "nope" in states[ids[1]]["error"]
    # another service's key may not read them, nor learn that they exist: the answer is a missing id's
    r = requests.get(api.url(f"cpu/tasks/{ids[0]}"), headers=api.headers("svc_pay"), timeout=30)
    missing = requests.get(api.url("cpu/tasks/0123456789abcdef"), headers=api.headers("svc_pay"), timeout=30)
    assert r.status_code == missing.status_code == 404
    assert r.json()["detail"].replace(ids[0], "X") == missing.json()["detail"].replace("0123456789abcdef", "X")


def test_optimize_tasks_bad_input(registered):
    api = registered
    h = api.headers("admin")
    url = api.url("cpu/optimize-tasks")
    r = requests.post(url, json={"tasks": [{"name": "no_such_task"}]}, headers=h, timeout=60)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    for bad in (0, 6, "urgent"):
        r = requests.post(
            url, json={"tasks": [{"name": "test_add", "args": [1, 2], "priority": bad}]}, headers=h, timeout=60
        )
        assert r.status_code == 422, (bad, r.text)
    r = requests.post(
        url, json={"tasks": [{"name": "test_add", "args": [1, 2], "num_cpus": 512}]}, headers=h, timeout=60
    )
    assert r.status_code == 422 and "largest node" in r.json()["detail"]
    r = requests.post(url, json={"tasks": [{"name": "import os; os.system('x')"}]}, headers=h, timeout=60)
    assert r.status_code == 422
    r = requests.post(url, json={"tasks": []}, headers=h, timeout=60)
    assert r.status_code == 422
    # a bad task in a batch queues nothing
    before = requests.get(api.url("cpu/metrics"), headers=api.headers("read"), timeout=60).json()["tasks_submitted"]
    r = requests.post(
        url, json={"tasks": [{"name": "test_add", "args": [1, 2]}, {"name": "missing"}]}, headers=h, timeout=60
    )
    assert r.status_code == 404
    after = requests.get(api.url("cpu/metrics"), headers=api.headers("read"), timeout=60).json()["tasks_submitted"]
    assert after == before
    r = requests.get(api.url("cpu/tasks/0123456789abcdef"), headers=api.headers("read"), timeout=60)
    assert r.status_code == 404
    r = requests.post(
        url,
        json={"tasks": [{"name": "test_add", "args": [1, 2]}], "service_name": "ai_models"},
        headers=api.headers("svc_pay"),
        timeout=60,
    )
    assert r.status_code == 403


def test_metrics_and_optimize_service(registered):
    api = registered
    r = requests.get(api.url("cpu/metrics"), headers=api.headers("read"), timeout=60)
    assert r.status_code == 200
    m = r.json()
    for key in (
        "queue_depth",
        "wait_time_s",
        "run_time_s",
        "tasks_processed",
        "tasks_failed",
        "tasks_preempted",
        "cpu_efficiency",
        "load_balance_score",
        "nodes",
        "recommendations",
    ):
        assert key in m
    assert set(m["queue_depth"]) == {"critical", "high", "medium", "low", "background"}
    assert m["nodes"] and m["nodes"][0]["cpus"] >= 1

    body = {
        "service_name": "smart_coding_ai",
        "optimization_type": "cpu",
        "parameters": {"max_workers": 8, "priority_threshold": "medium"},
    }
    r = requests.post(api.url("cpu/optimize-service"), json=body, headers=api.headers("admin"), timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["after"]["max_workers"] == 8 and r.json()["after"]["priority_threshold"] == "medium"
    audit = requests.get(
        api.url("system/audit"), params={"action": "cpu.optimize_service"}, headers=api.headers("admin"), timeout=60
    ).json()
    assert any(e["target"] == "smart_coding_ai" and e["result"] == "ok" for e in audit)

    r = requests.post(
        api.url("cpu/optimize-service"),
        json={**body, "service_name": "ai_models"},
        headers=api.headers("svc_pay"),
        timeout=60,
    )
    assert r.status_code == 403
    for params in ({"max_workers": -1}, {"priority_threshold": "urgent"}, {"pool_kind": "gpu"}, {}, {"bogus": 1}):
        r = requests.post(
            api.url("cpu/optimize-service"),
            headers=api.headers("admin"),
            timeout=60,
            json={"service_name": "smart_coding_ai", "parameters": params},
        )
        assert r.status_code == 422, (params, r.text)
    r = requests.post(api.url("cpu/optimize-service"), headers=api.headers("read"), timeout=60, json=body)
    assert r.status_code == 403
    # the bad calls changed nothing
    r = requests.post(
        api.url("cpu/optimize-service"),
        headers=api.headers("admin"),
        timeout=60,
        json={"service_name": "smart_coding_ai", "parameters": {"pool_kind": "cpu"}},
    )
    assert r.json()["before"]["max_workers"] == 8

    deadline = time.time() + 30  # open health answers from a document up to health_cache_s old
    while True:
        engines = requests.get(api.url("health"), timeout=60).json()["engines"]
        if "cpu" in engines or time.time() > deadline:
            break
        time.sleep(0.5)
    assert engines["cpu"]["status"] == "up"
