"""A real Prometheus scrapes the test session's Ray with the repository's scrape config.

Traffic goes through the API (and the shared cache from this driver), then Prometheus's HTTP API
must have every ``cognopt_*`` series that ``docs/metrics.md`` lists, with the documented labels,
and every PromQL expression of the Grafana dashboard must return data.
"""

from __future__ import annotations

import re
import time

import requests
from aiohttp import web

from tests.unit.test_grafana_dashboard import dashboard_exprs, documented_series

PRIORITIES = {"critical", "high", "medium", "low", "background"}
TIERS = {"hot", "warm", "cold", "archive"}
#: Allowed values of each documented label.
LABEL_VALUES = {
    "priority": PRIORITIES,
    "tier": TIERS,
    "engine": {"system", "cpu", "memory", "storage", "network"},
    "kind": {"storage", "network", "memory"},
    "service": re.compile(r"^[a-z][a-z0-9_]{0,62}$"),
}
#: Series whose every label value must show up (one series per value).
EVERY_VALUE = {
    "ray_cognopt_cpu_queue_depth": ("priority", PRIORITIES),
    "ray_cognopt_storage_items": ("tier", TIERS),
    "ray_cognopt_system_storage_tier_stored_bytes": ("tier", TIERS),
    "ray_cognopt_system_cpu_wait_p99_seconds": ("priority", PRIORITIES),
    "ray_cognopt_system_savings_bytes": ("kind", {"storage", "network", "memory"}),
}


def _traffic(api_server, origin) -> None:
    h = api_server.headers("admin")

    def post(path, body, expect=(200, 201)):
        r = requests.post(api_server.url(path), json=body, headers=h, timeout=180)
        assert r.status_code in expect, (path, r.status_code, r.text)
        return r.json()

    # tasks at every priority (the replica registered count_primes from cpu.tasks)
    tasks = [{"name": "count_primes", "args": [5000 + i], "priority": p} for p in sorted(PRIORITIES) for i in range(3)]
    done = post("cpu/optimize-tasks", {"tasks": tasks, "timeout_s": 170})
    assert done["completed"] == len(tasks), done
    for tier in sorted(TIERS - {"archive"}):
        post(
            "storage/store",
            {"item_id": f"prom-{tier}", "data": {"t": tier, "x": list(range(300))}, "storage_tier": tier},
        )
    alloc = post("memory/allocate", {"service_name": "ai_models", "data": "p" * 4000})
    requests.get(api_server.url(f"memory/allocations/{alloc['allocation_id']}"), headers=h, timeout=60)
    from cognopt_ray.memory import SharedCache

    cache = SharedCache()
    cache.set("prom-test-key", b"v" * 100)
    assert cache.get("prom-test-key") == b"v" * 100
    cache.get("prom-test-missing")

    @origin.route()
    def page(req):
        return web.Response(body=b'{"rows": [1, 2, 3]}' * 50, headers={"Cache-Control": "max-age=600"})

    for _ in range(3):  # a miss, then hits
        post("network/optimize-request", {"url": page.url})


#: series whose figure is null on the session's one-node cluster: a null is not exported, so the
#: series must be absent while ``system/metrics`` says null (exporting 0 would be a lie)
NULL_ON_ONE_NODE = {"ray_cognopt_system_cpu_load_balance_score": ("cpu_optimization", "load_balance_score")}


def _check_series(prom, documented, metrics: dict) -> list[str]:
    """What is still missing or wrong; empty when every documented series is there as documented."""
    problems = []
    found = prom.series('{__name__=~"ray_cognopt_.+"}')
    by_name: dict[str, list[dict[str, str]]] = {}
    for s in found:
        by_name.setdefault(s["__name__"], []).append(s)
    for name, labels in documented.items():
        series = by_name.get(name)
        if name in NULL_ON_ONE_NODE:
            section, key = NULL_ON_ONE_NODE[name]
            if metrics.get(section, {}).get(key) is None:
                if series:
                    problems.append(f"{name}: exported while system/metrics says null")
                continue
        if not series:
            problems.append(f"{name}: no series")
            continue
        for s in series:
            for label in labels:
                value, allowed = s.get(label), LABEL_VALUES[label]
                ok = value is not None and (
                    allowed.match(value) if isinstance(allowed, re.Pattern) else value in allowed
                )
                if not ok:
                    problems.append(f"{name}: label {label}={value!r} in {s}")
        if name in EVERY_VALUE:
            label, values = EVERY_VALUE[name]
            missing = values - {s.get(label) for s in series}
            if missing:
                problems.append(f"{name}: no series for {label} in {sorted(missing)}")
    return problems


def _check_dashboard(prom) -> list[str]:
    return [f"{title}: {expr} returned nothing" for title, expr in dashboard_exprs() if not prom.query(expr)]


def test_prometheus_scrapes_every_documented_series_and_answers_the_dashboard(api_server, origin, tmp_path):
    import ray

    from tests.support.prometheus import Prometheus

    node = ray._private.worker.global_worker.node
    assert node.metrics_export_port, "the session's Ray has no metrics export port"
    documented = documented_series()
    assert len(documented) > 30, documented
    prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{node.metrics_export_port}"]).start()
    try:
        _traffic(api_server, origin)
        deadline = time.time() + 240  # Ray's export interval, the network engine's 30 s export loop, a loaded machine
        problems = ["not checked yet"]
        while time.time() < deadline:
            docs = {}
            for path in ("system/metrics", "storage/metrics", "memory/metrics"):  # each read sets the gauges again
                r = requests.get(api_server.url(path), headers=api_server.headers("read"), timeout=60)
                r.raise_for_status()
                docs[path] = r.json()
            problems = _check_series(prom, documented, docs["system/metrics"])
            if not problems:
                problems = _check_dashboard(prom)
            if not problems:
                break
            time.sleep(3)
        assert prom.targets_up(), prom.api("targets")
        assert not problems, problems
    finally:
        prom.stop()
