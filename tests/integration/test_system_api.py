"""system/* routes over real HTTP against the real engines."""

from __future__ import annotations

import uuid

import pytest
import requests

from cognopt_ray.system.metrics import overall_efficiency

SECTIONS = {
    "system_overview": {"overall_efficiency", "optimization_status", "last_updated"},
    "cpu_optimization": {"cpu_efficiency", "load_balance_score", "tasks_processed"},
    "memory_optimization": {"memory_efficiency", "pool_hit_rate", "cache_hit_rate"},
    "storage_optimization": {"compression_ratio", "tier_utilization"},
    "network_optimization": {"cache_hit_rate", "compression_ratio", "bandwidth_saved_mb"},
    "savings": {"storage_bytes_saved", "network_bytes_saved", "memory_bytes_shared"},
}


def _metrics(api_server, role: str = "read") -> dict:
    r = requests.get(api_server.url("system/metrics"), headers=api_server.headers(role), timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_system_metrics_shape_and_scopes(api_server):
    doc = _metrics(api_server)
    for section, keys in SECTIONS.items():
        assert keys <= set(doc[section]), (section, doc[section])
    assert set(doc["storage_optimization"]["tier_utilization"]) == {"hot", "warm", "cold", "archive"}
    assert requests.get(api_server.url("system/metrics"), timeout=30).status_code == 401
    assert (
        requests.get(api_server.url("system/metrics"), headers=api_server.headers("svc_ai"), timeout=30).status_code
        == 403
    )


def test_system_metrics_follow_activity_and_formulas(api_server):
    h = api_server.headers("admin")
    before = _metrics(api_server)
    text = "the quick brown fox jumps over the lazy dog. " * 2000
    item = f"sysm-{uuid.uuid4().hex[:8]}"
    r = requests.post(
        api_server.url("storage/store"),
        json={"item_id": item, "data": text, "storage_tier": "warm", "compression_type": "zstd"},
        headers=h,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    r = requests.post(
        api_server.url("memory/allocate"), json={"service_name": "ai_models", "data": "x" * 5000}, headers=h, timeout=60
    )
    assert r.status_code == 201, r.text
    after = _metrics(api_server)
    sto = requests.get(api_server.url("storage/metrics"), headers=h, timeout=60).json()
    # the figures moved with the activity ...
    assert after["savings"]["storage_bytes_saved"] > (before["savings"]["storage_bytes_saved"] or 0)
    assert after["system_overview"]["last_updated"] > before["system_overview"]["last_updated"]
    # ... and match their formulas over the engines' counters
    assert after["storage_optimization"]["compression_ratio"] == pytest.approx(
        sto["raw_bytes"] / sto["stored_bytes"], rel=1e-6
    )
    assert after["savings"]["storage_bytes_saved"] == sto["raw_bytes"] - sto["stored_bytes"]
    ov = after["system_overview"]
    assert ov["engine_scores"]["storage"] == pytest.approx(1 - sto["stored_bytes"] / sto["raw_bytes"], rel=1e-6)
    assert ov["overall_efficiency"] == pytest.approx(overall_efficiency(ov["engine_scores"], ov["weights"]), abs=0.01)
    mem = requests.get(api_server.url("memory/metrics"), headers=h, timeout=60).json()
    assert after["memory_optimization"]["memory_efficiency"] == pytest.approx(mem["memory_efficiency"], rel=0.2)


def _audit(api_server, action: str) -> list[dict]:
    r = requests.get(
        api_server.url("system/audit"), params={"action": action}, headers=api_server.headers("admin"), timeout=60
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_optimize_all_dry_run_and_real_are_audited(api_server):
    h = api_server.headers("admin")
    assert (
        requests.post(
            api_server.url("system/optimize-all"), json={}, headers=api_server.headers("read"), timeout=60
        ).status_code
        == 403
    )
    bad = requests.post(api_server.url("system/optimize-all"), json={"passes": ["nope"]}, headers=h, timeout=60)
    assert bad.status_code == 422 and "unknown passes" in bad.json()["detail"]
    n_audit = len(_audit(api_server, "system.optimize_all"))
    dry = requests.post(api_server.url("system/optimize-all"), json={"dry_run": True}, headers=h, timeout=300)
    assert dry.status_code == 200, dry.text
    doc = dry.json()
    assert doc["dry_run"] is True
    assert set(doc["passes"]) == {
        "memory.gc",
        "memory.pool_sweep",
        "storage.tiering",
        "network.cache_sweep",
        "cpu.rebalance",
    }
    for name, p in doc["passes"].items():
        assert p["status"] == "ok", (name, p)
        assert p["before"] == p["after"], name  # a dry run changes nothing
    real = requests.post(
        api_server.url("system/optimize-all"),
        json={"passes": ["memory.gc", "memory.pool_sweep"]},
        headers=h,
        timeout=300,
    ).json()
    assert real["status"] == "ok" and real["passes"]["memory.gc"]["after"]["thresholds"]
    entries = _audit(api_server, "system.optimize_all")
    assert len(entries) == n_audit + 2
    # one vocabulary: result ok|denied|error; the route's own word is kept as details.outcome
    assert [e["result"] for e in entries[-2:]] == ["ok", "ok"]
    assert entries[-2]["details"]["outcome"] == "dry_run"
    assert entries[-3]["result"] == "error" and entries[-3]["details"]["outcome"].startswith("error: unknown passes")


def test_cleanup_moves_to_quarantine_and_restore_brings_back(api_server):
    import time

    from cognopt_ray.network import CACHE_ACTOR_NAME
    from cognopt_ray.network.backends import InClusterBackend

    h = api_server.headers("admin")
    cache = InClusterBackend(CACHE_ACTOR_NAME, 64 << 20).actor
    cats = ["memory_allocations", "network_cache"]
    for _attempt in range(3):  # the engines' own sweep loops may drop an expired entry first: try again
        r = requests.post(
            api_server.url("memory/allocate"),
            json={"service_name": "ai_models", "data": {"v": [1, 2, 3]}, "ttl_s": 0.2},
            headers=h,
            timeout=60,
        )
        assert r.status_code == 201, r.text
        aid = r.json()["allocation_id"]
        key = f"test-expired-{uuid.uuid4().hex[:6]}"
        cache.set.remote(key, b"cached body", 0.2)
        time.sleep(0.5)
        dry = requests.post(
            api_server.url("system/cleanup"), json={"dry_run": True, "categories": cats}, headers=h, timeout=120
        )
        assert dry.status_code == 200, dry.text
        targets = {i["target"] for i in dry.json()["items"]}
        if {aid, key} <= targets:
            break
    assert {aid, key} <= targets and all(i["id"] is None for i in dry.json()["items"])
    bad = requests.post(api_server.url("system/cleanup"), json={"categories": ["everything"]}, headers=h, timeout=60)
    assert bad.status_code == 422
    real = requests.post(api_server.url("system/cleanup"), json={"categories": cats}, headers=h, timeout=120)
    assert real.status_code == 200, real.text
    moved = {i["target"]: i for i in real.json()["items"]}
    assert {aid, key} <= set(moved)
    gone = requests.get(api_server.url(f"memory/allocations/{aid}"), headers=h, timeout=60)
    assert gone.status_code == 404
    listed = {e["id"] for e in requests.get(api_server.url("system/quarantine"), headers=h, timeout=60).json()}
    assert {moved[aid]["id"], moved[key]["id"]} <= listed
    # restore: dry run changes nothing, then both come back
    d = requests.post(
        api_server.url("system/cleanup/restore"), json={"id": moved[aid]["id"], "dry_run": True}, headers=h, timeout=60
    )
    assert d.status_code == 200 and d.json()["restored"] is False
    assert requests.get(api_server.url(f"memory/allocations/{aid}"), headers=h, timeout=60).status_code == 404
    for target in (aid, key):
        rr = requests.post(
            api_server.url("system/cleanup/restore"), json={"id": moved[target]["id"]}, headers=h, timeout=60
        )
        assert rr.status_code == 200, rr.text
    back = requests.get(api_server.url(f"memory/allocations/{aid}"), headers=h, timeout=60)
    assert back.status_code == 200 and back.json() == {"v": [1, 2, 3]}
    import ray

    assert ray.get(cache.get.remote(key)) == b"cached body"
    again = requests.post(
        api_server.url("system/cleanup/restore"), json={"id": moved[aid]["id"]}, headers=h, timeout=60
    )
    assert again.status_code == 404
    assert (
        requests.post(
            api_server.url("system/cleanup/restore"), json={"id": "../etc"}, headers=h, timeout=60
        ).status_code
        == 422
    )
    entries = _audit(api_server, "system.cleanup")[-3:]
    assert "dry_run" in [e.get("details", {}).get("outcome") for e in entries] and "ok" in [
        e["result"] for e in entries
    ]
    assert len(_audit(api_server, "system.cleanup_restore")) >= 3


def test_cleanup_quarantines_snapshots_beyond_retention_and_restores_them(api_server):
    """Snapshots beyond keep_last go to the quarantine; restored, the repository is whole again."""
    import asyncio

    from cognopt_ray.config import Settings
    from cognopt_ray.storage import client as _storage_client
    from cognopt_ray.system.cleanup import restore, run_cleanup

    store = _storage_client()
    store.put(f"snap-src-{uuid.uuid4().hex[:6]}", b"backup me " * 1000)
    store.backup(tag="sys-a")
    store.backup(tag="sys-b")
    before = [s["snapshot_id"] for s in store.snapshots()]
    settings = Settings.load(
        storage_root=str(api_server.root / "systest"), system={"snapshot_keep_last": len(before) - 1}
    )
    dry = asyncio.run(run_cleanup(settings, dry_run=True, categories=["storage_snapshots"]))
    assert [i["target"] for i in dry["items"]] == before[:1]
    assert [s["snapshot_id"] for s in store.snapshots()] == before
    res = asyncio.run(run_cleanup(settings, categories=["storage_snapshots"]))
    assert [i["target"] for i in res["items"]] == before[:1]
    assert [s["snapshot_id"] for s in store.snapshots()] == before[1:]
    restore(settings, res["items"][0]["id"])
    assert [s["snapshot_id"] for s in store.snapshots()] == before
    assert store.check()["ok"]


def test_automation_loops_visible_in_health(api_server):
    h = api_server.headers("admin")
    r = requests.post(api_server.url("system/automation"), json={"action": "start"}, headers=h, timeout=60)
    assert r.status_code == 200, r.text
    r = requests.post(
        api_server.url("system/automation"), json={"action": "run_now", "loop": "cache_sweep"}, headers=h, timeout=300
    )
    assert r.status_code == 200, r.text
    import time

    deadline = time.time() + 120  # health answers from a document refreshed every health_cache_s
    while True:
        health = requests.get(api_server.url("health/details"), headers=api_server.headers("read"), timeout=60).json()
        sysh = health["engines"].get("system", {})
        if sysh.get("running") and sysh["loops"]["cache_sweep"]["last_run"] is not None:
            break
        assert time.time() < deadline, health
        time.sleep(1)
    loop = sysh["loops"]["cache_sweep"]
    assert loop["interval_s"] > 0 and loop["last_run"] is not None and loop["last_status"] == "ok"
    assert (
        requests.post(
            api_server.url("system/automation"), json={"action": "run_now", "loop": "x"}, headers=h, timeout=60
        ).status_code
        == 422
    )
    stopped = requests.post(api_server.url("system/automation"), json={"action": "stop"}, headers=h, timeout=60).json()
    assert stopped["running"] is False


def test_prometheus_endpoint_of_the_node_serves_cognopt_metrics(api_server):
    """The replica's gauges reach the node's metrics agent and its Prometheus endpoint."""
    import re
    import time

    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    assert port, "the session's Ray has no metrics export port"
    requests.post(
        api_server.url("memory/allocate"),
        json={"service_name": "voice_processing", "data": "abc" * 100},
        headers=api_server.headers("admin"),
        timeout=60,
    ).raise_for_status()
    wanted = {
        "ray_cognopt_system_overall_efficiency": re.compile(r'engine="system"'),
        "ray_cognopt_system_storage_tier_stored_bytes": re.compile(r'tier="warm"'),
        "ray_cognopt_system_memory_service_bytes_used": re.compile(r'service="voice_processing"'),
        "ray_cognopt_memory_pool_bytes_used": re.compile(r'service="voice_processing"'),
    }
    found: set[str] = set()
    deadline = time.time() + 180  # export interval plus a loaded machine
    while time.time() < deadline and len(found) < len(wanted):
        _metrics(api_server)  # each read sets the gauges again
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        for line in text.splitlines():
            name = line.split("{", 1)[0]
            if name in wanted and wanted[name].search(line):
                found.add(name)
        if len(found) < len(wanted):
            time.sleep(3)
    seen = sorted({ln.split("{", 1)[0] for ln in text.splitlines() if "cognopt" in ln and not ln.startswith("#")})
    assert found == set(wanted), f"missing on the node's endpoint: {set(wanted) - found}; cognopt metrics: {seen}"


def test_report_route_and_cli(api_server):
    from click.testing import CliRunner

    from cognopt_ray.cli import main

    h = api_server.headers("read")
    doc = requests.get(api_server.url("system/report"), headers=h, timeout=120)
    assert doc.status_code == 200, doc.text
    rows = {r["resource"]: r for r in doc.json()["rows"]}
    assert set(rows) == {"cores", "ram", "storage", "bandwidth"}
    assert rows["storage"]["before"] >= rows["storage"]["after"] > 0  # items were stored by earlier tests
    assert doc.json()["monthly_cost"]["currency"] == "USD"
    md = requests.get(api_server.url("system/report"), params={"format": "markdown"}, headers=h, timeout=120)
    assert md.headers["content-type"].startswith("text/markdown") and "| storage (GiB) |" in md.text
    assert (
        requests.get(api_server.url("system/report"), params={"format": "pdf"}, headers=h, timeout=60).status_code
        == 422
    )
    out = CliRunner().invoke(main, ["report", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert {r["resource"] for r in __import__("json").loads(out.output)["rows"]} == {
        "cores",
        "ram",
        "storage",
        "bandwidth",
    }
    out = CliRunner().invoke(main, ["report"])
    assert out.exit_code == 0 and "| resource | before | after |" in out.output
