"""Attack 7 of issue 13: open ``GET health`` tells too much and asks every engine on every call.

Open health showed the Ray version, CPU and node counts, each engine's counters, the Redis
address and the reasons of failures, and each call asked every engine (the storage actor runs a
COUNT(*) for it): a cheap way for anyone to map and stall the cluster. Now it answers statuses
only, from a document refreshed at most once per ``health_cache_s``; the details need a key.
"""

from __future__ import annotations

import time

import pytest
import ray
import requests

from cognopt_ray import runtime
from cognopt_ray.config import Settings
from tests.security.conftest import warm_up

pytestmark = pytest.mark.timeout(900)


@ray.remote(num_cpus=0)
class CountingEngine:
    """An engine actor that counts the health calls it gets."""

    def __init__(self) -> None:
        self.calls = 0

    def health(self) -> dict:
        self.calls += 1
        return {"status": "up", "items": 12345, "secret_host": "10.1.2.3"}

    def count(self) -> int:
        return self.calls


def _statuses_only(doc: dict) -> None:
    assert set(doc) == {"status", "time", "ray", "engines", "redis"}, doc
    for part in (doc["ray"], doc["redis"], *doc["engines"].values()):
        assert set(part) == {"status"}, doc
        assert part["status"] in ("up", "degraded", "down", "not_configured")


def test_open_health_shows_statuses_only(api_server, redis_server):
    warm_up(api_server)
    for prefix in ("", "/noredis", "/redisdown"):
        r = requests.get(api_server.url("health", prefix), timeout=60)
        assert r.status_code == 200
        _statuses_only(r.json())
        text = r.text
        assert ray.__version__ not in text and "127.0.0.1" not in text and "redis://" not in text
        assert "nodes_alive" not in text and "cpus" not in text and "reason" not in text
    # the details are there for a key with read (or admin), not for others
    assert requests.get(api_server.url("health/details"), timeout=60).status_code == 401
    assert (
        requests.get(api_server.url("health/details"), headers=api_server.headers("svc_ai"), timeout=60).status_code
        == 403
    )
    d = requests.get(api_server.url("health/details"), headers=api_server.headers("read"), timeout=60)
    assert d.status_code == 200, d.text
    assert d.json()["ray"]["version"] == ray.__version__ and d.json()["redis"]["status"] == "up"


def test_rapid_open_health_calls_ask_the_engines_a_bounded_number_of_times(api_server):
    warm_up(api_server)
    probe = runtime.get_or_create_actor(CountingEngine, "cognopt.healthcount")
    try:
        cache_s = Settings.load(environ={}).health_cache_s  # the test app runs with the default
        start = time.monotonic()
        for _ in range(100):
            r = requests.get(api_server.url("health"), timeout=60)
            assert r.status_code == 200
            assert "12345" not in r.text and "10.1.2.3" not in r.text
        elapsed = time.monotonic() - start
        calls = ray.get(probe.count.remote())
        # at most one check per health_cache_s (plus the one in flight at each end), whatever the rate
        bound = 2 + int(elapsed / cache_s)
        assert calls <= bound, (calls, bound, elapsed)
        assert calls < 100
    finally:
        ray.kill(probe, no_restart=True)
