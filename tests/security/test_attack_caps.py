"""Attack 6 of issue 13: a service key lifts its own resources through ``<engine>/optimize-service``.

An admin caps ``ai_models`` (as an operator would: at most 2 workers, core 0 only, tiers no
hotter than warm, caches no longer than medium_term). The ``ai_models`` key then asks for 64
workers and both cores, the hot tier and persistent caching for itself: each must be 403 with a
hint naming the cap, and the engines' settings of the service must be what they were.
"""

from __future__ import annotations

import pytest
import requests

from tests.security.conftest import warm_up

pytestmark = pytest.mark.timeout(900)
SVC = "ai_models"


def _cpu_config(api_server) -> dict:
    m = requests.get(api_server.url("cpu/metrics"), headers=api_server.headers("admin"), timeout=60).json()
    return m["services"].get(SVC, {})


def _post(api_server, path: str, role: str, parameters: dict) -> requests.Response:
    return requests.post(
        api_server.url(path),
        headers=api_server.headers(role),
        timeout=60,
        json={"service_name": SVC, "parameters": parameters},
    )


def test_a_service_key_cannot_raise_its_own_caps(api_server):
    warm_up(api_server)
    admin = api_server.headers("admin")
    caps = {"max_workers": 2, "cpu_affinity": [0], "default_tier": "warm", "cache_strategy": "medium_term"}
    put = requests.put(api_server.url(f"services/{SVC}/caps"), json=caps, headers=admin, timeout=60)
    try:
        before_cpu = _cpu_config(api_server)
        before_storage = requests.post(
            api_server.url("storage/optimize-service"),
            headers=admin,
            timeout=60,
            json={"service_name": SVC, "parameters": {}},
        ).json()["after"]
        attacks = [
            ("cpu/optimize-service", {"max_workers": 64}, "max_workers"),
            ("cpu/optimize-service", {"max_workers": 0}, "max_workers"),  # 0 = no cap at all
            ("cpu/optimize-service", {"cpu_affinity": [0, 1]}, "cpu_affinity"),
            ("cpu/optimize-service", {"max_workers": 1, "cpu_affinity": [1]}, "cpu_affinity"),
            ("storage/optimize-service", {"default_tier": "hot"}, "default_tier"),
            ("network/optimize-service", {"cache_strategy": "persistent"}, "cache_strategy"),
        ]
        for path, params, cap in attacks:
            r = _post(api_server, path, "svc_ai", params)
            assert r.status_code == 403, (path, params, r.status_code, r.text[:300])
            doc = r.json()
            assert r.headers["content-type"].startswith("application/problem+json")
            assert f"services.{SVC}.caps.{cap}" in doc["hint"], doc
            assert any(o["cap"] == cap for o in doc["over"]), doc
        assert put.status_code == 200, put.text
        # nothing changed in the engines
        assert _cpu_config(api_server) == before_cpu
        after_storage = requests.post(
            api_server.url("storage/optimize-service"),
            headers=admin,
            timeout=60,
            json={"service_name": SVC, "parameters": {}},
        ).json()["after"]
        assert after_storage["default_tier"] == before_storage["default_tier"] != "hot"
        # within the caps the service key may change its settings
        ok = _post(api_server, "cpu/optimize-service", "svc_ai", {"max_workers": 2})
        assert ok.status_code == 200, ok.text
        assert ok.json()["after"]["max_workers"] == 2
        # the caps are visible to the service's own key; an admin is not capped
        seen = requests.get(api_server.url(f"services/{SVC}/caps"), headers=api_server.headers("svc_ai"), timeout=60)
        assert seen.status_code == 200 and seen.json()["caps"]["max_workers"] == 2
        assert (
            requests.put(
                api_server.url(f"services/{SVC}/caps"),
                json={"max_workers": 64},
                headers=api_server.headers("svc_ai"),
                timeout=60,
            ).status_code
            == 403
        )
        big = _post(api_server, "cpu/optimize-service", "admin", {"max_workers": 8})
        assert big.status_code == 200 and big.json()["after"]["max_workers"] == 8
    finally:
        requests.delete(api_server.url(f"services/{SVC}/caps"), headers=admin, timeout=60)
        _post(api_server, "cpu/optimize-service", "admin", {"max_workers": 0})


def test_default_caps_are_the_configured_values(api_server):
    """Without any caps set, a service key cannot go past what the service has by configuration."""
    admin = api_server.headers("admin")
    doc = requests.get(api_server.url(f"services/{SVC}/caps"), headers=admin, timeout=60).json()
    svc = requests.get(api_server.url(f"services/{SVC}"), headers=admin, timeout=60).json()["settings"]
    assert doc["overrides"] == {}
    assert doc["caps"]["max_workers"] == svc["cpu"]["max_workers"]
    assert doc["caps"]["default_tier"] == svc["storage"]["default_tier"]
    assert doc["caps"]["cache_strategy"] == svc["network"]["cache_strategy"]
    r = _post(api_server, "network/optimize-service", "svc_ai", {"cache_strategy": "persistent"})
    assert r.status_code == 403 and "caps.cache_strategy" in r.json()["hint"]
    r = _post(api_server, "storage/optimize-service", "svc_ai", {"default_tier": "hot"})
    assert r.status_code == 403 and "caps.default_tier" in r.json()["hint"]
