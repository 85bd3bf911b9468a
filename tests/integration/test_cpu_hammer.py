"""Concurrent ``wait: true`` calls: every finished task carries its result, every failure its error.

Found by ``benchmarks/load.py``: under concurrency about one ``cpu/optimize-tasks`` call in a
thousand answered ``state: finished`` with ``result: null``. The record's state was set to
finished one event-loop step before its result was stored, and a waiter that woke in between read
the half-written record. These tests hammer both paths (REST and the Python client) and check
every single answer, so a lost result fails them however rare it is.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests


def _square(x):
    return x * x


def _boom(x):
    raise ValueError(f"boom {x}")


@pytest.fixture(scope="module")
def hammer_tasks(api_server):
    import cognopt_ray.cpu as cpu

    cpu.register_task("hammer_square", _square)
    cpu.register_task("hammer_boom", _boom)
    return api_server


def _check_doc(doc: dict, expected: list[tuple[str, int]]) -> list[str]:
    problems = []
    for t, (name, x) in zip(doc["tasks"], expected):
        if name == "hammer_square":
            if t["state"] != "finished" or t.get("result") != x * x:
                problems.append(
                    f"{t['id']}: square({x}) -> state={t['state']} result={t.get('result')!r} error={t.get('error')!r}"
                )
        elif t["state"] != "failed" or f"boom {x}" not in (t.get("error") or ""):
            problems.append(f"{t['id']}: boom({x}) -> state={t['state']} error={t.get('error')!r}")
    if len(doc["tasks"]) != len(expected):
        problems.append(f"{len(doc['tasks'])} statuses for {len(expected)} tasks")
    return problems


def test_rest_wait_true_never_loses_a_result(hammer_tasks):
    api = hammer_tasks
    headers = api.headers("svc_ai")
    priorities = ["critical", "high", "medium", "low", "background"]

    def one_call(n: int) -> list[str]:
        expected = [("hammer_boom" if (n + k) % 7 == 0 else "hammer_square", n * 10 + k) for k in range(4)]
        body = {
            "service_name": "ai_models",
            "wait": True,
            "timeout_s": 120,
            "tasks": [
                {"name": name, "args": [x], "priority": priorities[(n + k) % 5]} for k, (name, x) in enumerate(expected)
            ],
        }
        with requests.Session() as s:
            r = s.post(api.url("cpu/optimize-tasks"), json=body, headers=headers, timeout=180)
        if r.status_code != 200:
            return [f"call {n}: HTTP {r.status_code} {r.text[:200]}"]
        return _check_doc(r.json(), expected)

    with ThreadPoolExecutor(32) as pool:
        problems = [p for ps in pool.map(one_call, range(400)) for p in ps]
    assert problems == [], f"{len(problems)} wrong answers, first: {problems[:5]}"


def test_client_tracked_and_direct_never_lose_a_result(hammer_tasks):
    from cognopt_ray import cpu

    client = cpu.client()

    async def tracked(n: int) -> list[str]:
        expected = [("hammer_boom" if n % 5 == 0 else "hammer_square", n)]
        ids = await client.submit_tracked_async([(name, (x,), {}, {"priority": 1 + n % 5}) for name, x in expected])
        docs = await client.wait_tracked_async(ids, 120)
        return _check_doc({"tasks": docs}, expected)

    async def direct(n: int) -> list[str]:
        try:
            value = await client.submit(_square, n, priority=1 + n % 5)
        except Exception as e:  # noqa: BLE001 - reported below
            return [f"direct {n}: raised {type(e).__name__}: {e}"]
        return [] if value == n * n else [f"direct {n}: {value!r}"]

    async def main() -> list[str]:
        out = await asyncio.gather(*(tracked(n) for n in range(600)), *(direct(n) for n in range(300)))
        return [p for ps in out for p in ps]

    problems = asyncio.run(main())
    assert problems == [], f"{len(problems)} wrong answers, first: {problems[:5]}"
