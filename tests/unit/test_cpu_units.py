"""CPU engine pieces that need no Ray: settings, task specs, the figures and their formulas."""

from __future__ import annotations

import math
import time

import pytest

from cognopt_ray.config import Settings
from cognopt_ray.cpu import CPUTask, NamedTask
from cognopt_ray.cpu.executor import function_blob, run_items
from cognopt_ray.cpu.stats import EngineStats, Histogram
from cognopt_ray.errors import ConfigError, InvalidInput
from cognopt_ray.priority import Priority


def test_cpu_settings_defaults_and_validation():
    s = Settings.load()
    assert s.cpu.pipeline_depth == 1 and s.cpu.aging_interval_s > 0
    assert set(s.cpu.wait_targets_s) == {"critical", "high", "medium", "low", "background"}
    s = Settings.load(cpu={"wait_targets_s": {"1": 0.2}, "cpu_affinity": [3, 1, 1]})
    assert s.cpu.wait_targets_s == {"critical": 0.2} and s.cpu.cpu_affinity == [1, 3]
    for bad in ({"pipeline_depth": -1}, {"aging_interval_s": -1}, {"cpu_affinity": [-2]}, {"wait_targets_s": {"x": 1}}):
        with pytest.raises(ConfigError):
            Settings.load(cpu=bad)
    svc = Settings.load(services={"x_svc": {"cpu": {"max_workers": 3, "priority_threshold": 2, "pool_kind": "io"}}})
    assert svc.service("x_svc").cpu.priority_threshold == "high"
    with pytest.raises(ConfigError):
        Settings.load(services={"x_svc": {"cpu": {"pool_kind": "gpu"}}})


def test_cpu_task_priority_parsing():
    assert CPUTask(abs, (1,), priority="HIGH").priority is Priority.HIGH
    assert CPUTask(abs, (1,), priority=5).priority is Priority.BACKGROUND
    for bad in (0, 6, "soon", None, 2.5):
        with pytest.raises(InvalidInput):
            CPUTask(abs, (1,), priority=bad)


def test_named_task_checks_every_field_once_at_the_client():
    t = NamedTask("resize", [640], {"h": 480}, priority="2", service="ai_models", num_cpus="0.5")
    assert (t.name, t.args, t.kwargs, t.priority, t.num_cpus) == ("resize", (640,), {"h": 480}, Priority.HIGH, 0.5)
    name, payload, opts = t._wire(1.0)
    assert name == "resize" and payload == ((640,), {"h": 480})
    assert opts["priority"] is Priority.HIGH and opts["service"] == "ai_models" and opts["submit_ts"] == 1.0
    assert NamedTask.of(("resize", (1,), {}, {"priority": 5})).priority is Priority.BACKGROUND
    assert NamedTask.of(t) is t
    for bad in ({"priority": "soon"}, {"service": "Bad Name"}, {"task_type": "gpu"}, {"num_cpus": "x"}, {"bogus": 1}):
        with pytest.raises(InvalidInput):
            NamedTask.of(("resize", (), {}, bad))
    with pytest.raises(InvalidInput):
        NamedTask("import os; os.system('x')")


def test_function_blob_is_content_keyed_and_runner_times():
    k1, b1 = function_blob(abs)
    k2, _ = function_blob(abs)
    assert k1 == k2 and isinstance(b1, bytes)
    kadd, badd = function_blob(lambda a, b=1: a + b)
    kdiv, bdiv = function_blob(lambda a: 1 / a)
    out = run_items(
        (), [(kadd, badd, "add", (2,), {"b": 3}), (kdiv, bdiv, "div", (0,), {}), (kadd, badd, "add", (1,), {})]
    )
    (s1, e1, ok1, v1), (s2, e2, ok2, v2), (s3, e3, ok3, v3) = out
    assert ok1 and v1 == 5 and 0 < s1 <= e1 <= s2 <= e2 <= s3  # one after the other, each timed
    assert not ok2 and isinstance(v2.as_instanceof_cause(), ZeroDivisionError) and "div" in str(v2)  # fails alone
    assert ok3 and v3 == 2


def test_histogram_buckets_and_percentiles():
    h = Histogram()
    for i, v in enumerate([0.0005, 0.02, 0.02, 0.3, 100.0]):
        h.add(v, now=float(i))
    s = h.summary(since=0.0)
    assert s["count"] == 5 and s["buckets"]["0.001"] == 1 and s["buckets"]["0.025"] == 3 and s["buckets"]["+Inf"] == 5
    assert s["p50_s"] == pytest.approx(0.02) and s["max_s"] == 100.0
    assert h.summary(since=3.5)["window_count"] == 1


def test_efficiency_and_balance_formulas():
    st = EngineStats(window_s=100.0)
    now = 1000.0
    # 10 s of ticks on a 4-CPU cluster with work pending; 20 cpu-seconds of tasks ran
    for i in range(10):
        st.tick(now - 10 + i, 1.0, 4.0, True)
    st.tick(now - 0.5, 1.0, 4.0, False)  # idle tick: not counted
    st.task_finished("a", 1.0, 10.0, now - 1)
    st.task_finished("b", 2.0, 5.0, now - 1)
    assert st.cpu_efficiency(now) == pytest.approx(20.0 / 40.0)
    # node a: 10 cpu-s / 2 cpus = 5; node b: 10 / 2 = 5 -> perfectly even
    assert st.load_balance_score(now, {"a": 2.0, "b": 2.0}) == 1.0
    # all on one node of two -> u = [10, 0], cv = 1 -> score 0
    st2 = EngineStats(window_s=100.0)
    st2.task_finished("a", 1.0, 10.0, now - 1)
    assert st2.load_balance_score(now, {"a": 1.0, "b": 1.0}) == 0.0
    assert st2.load_balance_score(now, {"a": 1.0}) is None  # one node: no balance to score (issue 15)
    assert EngineStats().cpu_efficiency(now) is None and EngineStats().load_balance_score(now, {"a": 1}) is None


def test_recommendations_name_their_figures():
    st = EngineStats(window_s=60.0)
    now = 1000.0
    for _ in range(20):
        st.wait[Priority.CRITICAL.value].add(0.5, now - 1)  # p95 0.5 s > target 0.1 s
    st.tick(now - 1, 1.0, 2.0, True)
    st.node_sample("idle", now - 1, 2.0)
    st.node_sample("busy", now - 1, 95.0)
    st.cap_hit("ai_models", now - 1)
    recs = st.recommendations(now, {"critical": 0.1}, {"idle": 1.0, "busy": 1.0}, 0, {"ai_models": {"max_workers": 2}})
    kinds = {r["kind"]: r for r in recs}
    assert kinds["priority_wait"]["value"] == pytest.approx(0.5) and kinds["priority_wait"]["threshold"] == 0.1
    assert kinds["idle_node"]["node_id"] == "idle"
    assert kinds["service_cap"]["service"] == "ai_models" and kinds["service_cap"]["value"] == 1
    assert all("message" in r and "figure" in r for r in recs)
    assert not math.isnan(kinds["priority_wait"]["value"])


def test_a_pack_stops_at_its_budget_and_returns_only_what_ran():
    """A pack whose estimate was wrong starts no item past its budget (the scheduler queues the rest
    again); the first item always runs, and without a budget every item runs."""
    knap, bnap = function_blob(time.sleep)
    items = [(knap, bnap, "nap", (0.02,), {}) for _ in range(4)]
    assert len(run_items((), items, 0.001)) == 1  # the first 20 ms item used the 1 ms budget up
    assert len(run_items((), items, None)) == 4
    assert len(run_items((), items[:1], 0.0)) == 1
