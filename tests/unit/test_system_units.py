"""System layer without Ray: metric formulas, the report's replay and table, the quarantine."""

from __future__ import annotations

import pytest

from cognopt_ray.config import PriceSheet, Settings
from cognopt_ray.errors import InvalidInput, NotFound
from cognopt_ray.system.cleanup import Quarantine, purge_expired
from cognopt_ray.system.metrics import compute_metrics, engine_scores, overall_efficiency
from cognopt_ray.system.report import (
    build_table,
    min_cores,
    replay,
    report_from_counters,
    to_markdown,
    trace_from_cpu_metrics,
)

COUNTERS = {
    "cpu": {
        "cpu_efficiency": 0.8,
        "load_balance_score": 1.0,
        "tasks_processed": 12,
        "run_time_s": {"critical": {"count": 4, "sum_s": 1.5}, "low": {"count": 8, "sum_s": 2.5}},
        "wait_time_s": {"critical": {"count": 4, "sum_s": 0.25}},
    },
    "memory": {
        "memory_efficiency": 0.5,
        "pool_hit_rate": 0.9,
        "pools": {"ai_models": {"allocations": 2, "bytes_used": 1000, "hits": 6, "bytes_shared": 3000}},
        "cache": {"in_cluster": {"hits": 3, "misses": 1}, "redis": {"hits": 1, "misses": 3}},
    },
    "storage": {
        "raw_bytes": 1000,
        "stored_bytes": 250,
        "compression_ratio": 4.0,
        "tiers": {
            "hot": {"utilization": 0.1},
            "warm": {"utilization": 0.2},
            "cold": {"utilization": None},
            "archive": {"utilization": 0.0},
        },
    },
    "network": {
        "cache_hit_rate": 0.75,
        "cache_lookups": 12,
        "compression_ratio": 2.0,
        "bandwidth_saved_mb": 0.003,
        "requests": 12,
        "bytes_served": 4000,
        "bytes_from_origin": 1000,
        "bytes_saved": 3000,
        "origin_requests_avoided": 9,
    },
}


def test_metrics_formulas():
    doc = compute_metrics(COUNTERS, now=1_700_000_000.0)
    scores = doc["system_overview"]["engine_scores"]
    assert scores == {"cpu": 0.8, "memory": pytest.approx(0.7), "storage": 0.75, "network": 0.75}
    assert doc["system_overview"]["overall_efficiency"] == pytest.approx(100 * (0.8 + 0.7 + 0.75 + 0.75) / 4, abs=0.01)
    assert doc["system_overview"]["optimization_status"] == "active"
    assert doc["system_overview"]["last_updated"].startswith("2023-11-14T22:13:20")
    assert doc["memory_optimization"]["cache_hit_rate"] == pytest.approx(4 / 8)
    assert doc["network_optimization"]["cache_hit_rate"] == 0.75
    assert doc["network_optimization"]["compression_ratio"] == 2.0
    # no lookup and no origin byte yet: not measured, not the engine's 0.0 / 1.0 placeholders
    idle = compute_metrics({"network": {"cache_hit_rate": 0.0, "cache_lookups": 0, "compression_ratio": 1.0}}, now=0.0)
    assert idle["network_optimization"]["cache_hit_rate"] is None
    assert idle["network_optimization"]["compression_ratio"] is None
    assert doc["storage_optimization"]["tier_utilization"] == {"hot": 0.1, "warm": 0.2, "cold": None, "archive": 0.0}
    assert doc["savings"] == {
        "storage_bytes_saved": 750,
        "network_bytes_saved": 3000,
        "memory_bytes_shared": 3000,
        "origin_requests_avoided": 9,
        "cpu_seconds_run": 4.0,
        "critical_wait_s_total": 0.25,
    }


def test_metrics_with_missing_engines_and_weights():
    doc = compute_metrics(
        {"cpu": {"cpu_efficiency": 0.4}, "memory": {"error": "down"}},
        now=0.0,
        weights={"cpu": 3.0, "memory": 1.0, "storage": 0.0, "network": 0.0},
    )
    assert doc["system_overview"]["overall_efficiency"] == 40.0
    assert doc["system_overview"]["optimization_status"] == "degraded"
    assert doc["system_overview"]["engines_unavailable"] == ["memory", "network", "storage"]
    assert compute_metrics({}, now=0.0)["system_overview"]["overall_efficiency"] is None
    assert overall_efficiency({"cpu": 1.0, "network": 0.0}, {"cpu": 1, "network": 3}) == 25.0
    # a saving below zero (background refreshes cost more than the hits saved) is clipped to 0
    assert engine_scores({"network": {"requests": 2, "bytes_saved": -50, "bytes_from_origin": 300}})["network"] == 0.0


def test_bad_weights_are_refused():
    with pytest.raises(Exception, match="efficiency_weights"):
        Settings.load(system={"efficiency_weights": {"gpu": 1.0}})


def test_replay_fifo_vs_priority():
    trace = [(0.0, 5, 0.1)] * 4 + [(0.05, 1, 0.01)]
    fifo, prio = replay(trace, 1, "fifo"), replay(trace, 1, "priority")
    assert fifo["waits"][1] == [pytest.approx(0.35)]
    assert prio["waits"][1] == [pytest.approx(0.05)]
    assert fifo["makespan_s"] == pytest.approx(0.41) == prio["makespan_s"]
    assert min_cores(trace, "fifo", target_s=0.2) == 2
    assert min_cores(trace, "priority", target_s=0.2) == 1
    assert min_cores(trace, "priority", target_s=0.2, makespan_s=0.25) == 2  # throughput kept too
    with pytest.raises(ValueError):
        replay(trace, 1, "random")


def test_trace_from_histograms():
    cpu = {
        "window_s": 60.0,
        "window_span_s": 10.0,  # the trace spreads over the real span of the window's work
        "run_time_s": {
            "critical": {"window_buckets": {"0.01": 2, "0.1": 2, "+Inf": 2}, "buckets": {"+Inf": 900}},
            "background": {"window_buckets": {"0.01": 0, "0.1": 4, "+Inf": 4}},
        },
    }
    trace = trace_from_cpu_metrics(cpu)
    assert sorted(p for _a, p, _r in trace) == [1, 1, 5, 5, 5, 5]
    assert all(0 <= a < 10 for a, _p, _r in trace)
    assert all(0.01 < r <= 0.1 for _a, p, r in trace if p == 5)


def test_report_table_and_markdown():
    rep = build_table(
        cores=(10, 4),
        ram_bytes=(4 * 2**30, 2**30),
        storage_bytes=(100 * 2**30, 40 * 2**30),
        bandwidth_bytes=(2e9, 1e9),
        window_s=86400.0,
        prices=PriceSheet(),
    )
    rows = {r["resource"]: r for r in rep["rows"]}
    assert rows["cores"]["reduction"] == 0.6 and rows["ram"]["reduction"] == 0.75
    assert rows["bandwidth"]["before"] == pytest.approx(60.0)  # 2 GB a day = 60 GB a month
    assert rows["cores"]["monthly_cost_before"] == 250.0
    assert rep["monthly_cost"]["before"] == pytest.approx(250 + 14 + 8 + 5.4)
    md = to_markdown(rep)
    assert md.count("\n") == len(rep["rows"]) + 2 and "| cores (vCPU) | 10 | 4 | 60.0% |" in md


def test_quarantine_put_load_list_remove_and_purge(tmp_path):
    q = Quarantine(tmp_path, retention_s=100)
    e = q.put("network_cache", "network", "key1", b"body", {"key": "key1"})
    assert q.load(e["id"]) == (e, b"body")
    assert [x["id"] for x in q.list()] == [e["id"]] and q.list("memory_allocations") == []
    with pytest.raises(InvalidInput):
        q.load("../../etc/passwd")
    q.remove(e["id"])
    with pytest.raises(NotFound):
        q.entry(e["id"])
    settings = Settings.load(storage_root=str(tmp_path), system={"quarantine_retention_s": 0})
    q2 = Quarantine(settings.root, retention_s=0)
    keep = Quarantine(settings.root, retention_s=1000).put("network_cache", "network", "k2", b"x", {})
    old = q2.put("network_cache", "network", "k3", b"y", {})
    purged = purge_expired(settings)
    assert [p["id"] for p in purged] == [old["id"]]
    assert [x["id"] for x in q2.list()] == [keep["id"]]


def test_quarantine_refuses_data_it_did_not_write(tmp_path):
    import pickle

    from cognopt_ray.errors import IntegrityError

    q = Quarantine(tmp_path, retention_s=100)
    e = q.put("memory_allocations", "memory", "ai_models.0123456789abcdef", b"Bx", {})
    data = q.dir / e["id"] / "data.bin"
    data.write_bytes(b"O" + pickle.dumps({1: 2}))  # overwritten by anyone who can write files there
    with pytest.raises(IntegrityError):
        q.load(e["id"])
    other = q.put("memory_allocations", "memory", "ai_models.fedcba9876543210", b"By", {})
    data.write_bytes((q.dir / other["id"] / "data.bin").read_bytes())  # a genuine blob of another entry
    with pytest.raises(IntegrityError):
        q.load(e["id"])


def test_no_data_is_none_everywhere():
    """Issue 15: engines that answered with empty counters give ``None`` figures, not 0.0 / 1.0."""
    from cognopt_ray.cpu.stats import EngineStats
    from cognopt_ray.memory.figures import totals
    from cognopt_ray.network.metrics import NetworkMetrics

    now = 1000.0
    st = EngineStats()
    since = now - st.window_s
    cpu = {
        "cpu_efficiency": st.cpu_efficiency(now),
        "load_balance_score": st.load_balance_score(now, {"n1": 2.0}),
        "tasks_processed": 0,
        "window_span_s": st.window_span_s(now),
        "run_time_s": {"critical": st.run[1].summary(since)},
        "wait_time_s": {"critical": st.wait[1].summary(since)},
    }
    counters = {
        "cpu": cpu,
        "memory": {"pools": {}, **totals({})},
        "storage": {"raw_bytes": 0, "stored_bytes": 0, "compression_ratio": None, "tiers": {}},
        "network": NetworkMetrics().snapshot(),
    }
    doc = compute_metrics(counters, now=now)
    assert doc["system_overview"]["overall_efficiency"] is None
    assert set(doc["system_overview"]["engine_scores"].values()) == {None}
    for section in ("cpu_optimization", "memory_optimization", "network_optimization"):
        for k, v in doc[section].items():
            assert v is None or k == "tasks_processed", (section, k, v)
    assert doc["cpu_optimization"]["tasks_processed"] == 0  # a count: 0 is a measurement
    sav = doc["savings"]
    assert {k: v for k, v in sav.items() if k != "origin_requests_avoided"} == dict.fromkeys(
        [
            "storage_bytes_saved",
            "network_bytes_saved",
            "memory_bytes_shared",
            "cpu_seconds_run",
            "critical_wait_s_total",
        ]
    )
    rep = report_from_counters(counters, Settings.load())
    assert all(r["before"] is None and r["after"] is None for r in rep["rows"])


def test_load_balance_needs_two_nodes_and_overall_renormalises():
    from cognopt_ray.cpu.stats import EngineStats

    st = EngineStats(window_s=100.0)
    st.task_finished("a", 1.0, 10.0, 999.0)
    assert st.load_balance_score(1000.0, {"a": 4.0}) is None
    assert st.load_balance_score(1000.0, {"a": 1.0, "b": 1.0}) == 0.0
    # weights renormalised over the scores present: (1·0.5 + 3·0.9) / 4 with storage and network unknown
    scores = {"cpu": 0.5, "memory": 0.9, "storage": None, "network": None}
    assert overall_efficiency(scores, {"cpu": 1, "memory": 3, "storage": 5, "network": 5}) == 80.0
    assert overall_efficiency(dict.fromkeys(scores), {"cpu": 1}) is None


def _cpu_doc(st, now):
    from cognopt_ray.priority import Priority

    since = now - st.window_s
    return {
        "window_s": st.window_s,
        "window_span_s": st.window_span_s(now),
        "run_time_s": {p.name.lower(): st.run[p.value].summary(since) for p in Priority},
        "nodes": [{"cpus": 2}],
    }


def test_cores_row_does_not_grow_with_uptime():
    """Hours of counters with the work only in the last minute: the row is what that minute says."""
    from cognopt_ray.cpu.stats import EngineStats

    now = 100_000.0
    last_minute = [(now - 50 + i, 5 if i % 4 else 1, 0.2) for i in range(40)]  # (end, priority, run s)
    old, fresh = EngineStats(window_s=60.0), EngineStats(window_s=60.0)
    for i in range(20_000):  # three hours of earlier work (20 000 tasks of 1 s)
        old.run[5].add(1.0, now - 3 * 3600 + i * 0.5)
    for st in (old, fresh):
        for end, prio, run in last_minute:
            st.run[prio].add(run, end)
    doc_old, doc_fresh = _cpu_doc(old, now), _cpu_doc(fresh, now)
    assert doc_old["run_time_s"]["background"]["count"] == 20_030  # all-time counts keep growing ...
    assert doc_old["window_span_s"] == doc_fresh["window_span_s"] == pytest.approx(39.2)  # ... the span does not
    trace = trace_from_cpu_metrics(doc_old)
    assert trace == trace_from_cpu_metrics(doc_fresh) and len(trace) == 40
    settings = Settings.load()
    rows = [
        {r["resource"]: r for r in report_from_counters({"cpu": d}, settings)["rows"]} for d in (doc_old, doc_fresh)
    ]
    assert rows[0]["cores"] == rows[1]["cores"] and rows[0]["cores"]["kind"] == "model"
    assert rows[0]["cores"]["before"] is not None
    assert trace_from_cpu_metrics(_cpu_doc(EngineStats(), now)) == []  # nothing ended in the window


def test_report_ram_and_bandwidth_rows_from_honest_counters():
    counters = {
        "memory": {"pools": {"a": {"allocations": 1, "bytes_used": 2**30, "bytes_shared": 3 * 2**30}}},
        "network": {"requests": 5, "bytes_from_origin": 1_000_000, "bytes_saved": 3_000_000, "uptime_s": 86400.0},
    }
    rows = {r["resource"]: r for r in report_from_counters(counters, Settings.load())["rows"]}
    assert (rows["ram"]["before"], rows["ram"]["after"]) == (4.0, 1.0)  # GiB: held + shared, held
    assert rows["ram"]["kind"] == "measured"
    # 4 MB a day a plain client would have received vs 1 MB from origins, 30 days
    assert rows["bandwidth"]["before"] == pytest.approx(0.12) and rows["bandwidth"]["after"] == pytest.approx(0.03)
    assert rows["bandwidth"]["reduction"] == 0.75
