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
    assert requests.get(api_server.url("system/metrics"), headers=api_server.headers("svc_ai"), timeout=30).status_code == 403


def test_system_metrics_follow_activity_and_formulas(api_server):
    h = api_server.headers("admin")
    before = _metrics(api_server)
    text = "the quick brown fox jumps over the lazy dog. " * 2000
    item = f"sysm-{uuid.uuid4().hex[:8]}"
    r = requests.post(api_server.url("storage/store"), json={"item_id": item, "data": text, "storage_tier": "warm",
                                                               "compression_type": "zstd"}, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    r = requests.post(api_server.url("memory/allocate"), json={"service_name": "ai_models", "data": "x" * 5000},
                      headers=h, timeout=60)
    assert r.status_code == 201, r.text
    after = _metrics(api_server)
    sto = requests.get(api_server.url("storage/metrics"), headers=h, timeout=60).json()
    # the figures moved with the activity ...
    assert after["savings"]["storage_bytes_saved"] > (before["savings"]["storage_bytes_saved"] or 0)
    assert after["system_overview"]["last_updated"] > before["system_overview"]["last_updated"]
    # ... and match their formulas over the engines' counters
    assert after["storage_optimization"]["compression_ratio"] == pytest.approx(sto["raw_bytes"] / sto["stored_bytes"], rel=1e-6)
    assert after["savings"]["storage_bytes_saved"] == sto["raw_bytes"] - sto["stored_bytes"]
    ov = after["system_overview"]
    assert ov["engine_scores"]["storage"] == pytest.approx(1 - sto["stored_bytes"] / sto["raw_bytes"], rel=1e-6)
    assert ov["overall_efficiency"] == pytest.approx(overall_efficiency(ov["engine_scores"], ov["weights"]), abs=0.01)
    mem = requests.get(api_server.url("memory/metrics"), headers=h, timeout=60).json()
    assert after["memory_optimization"]["memory_efficiency"] == pytest.approx(mem["memory_efficiency"], rel=0.2)
