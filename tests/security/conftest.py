"""Shared state for the security suite: the live schema and a few resources owned by one service."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.security.routes import routes

PAY = "payment_processing"


def _echo(x):
    return x


def warm_up(api_server, timeout: float = 600) -> None:
    """Touch every engine once, waiting while one is still starting (503), so a slow first start on
    a loaded machine does not fail the test that happens to come first."""
    import time

    deadline = time.time() + timeout
    for path in ("cpu/metrics", "memory/metrics", "storage/metrics", "network/metrics"):
        while True:
            try:
                r = requests.get(api_server.url(path), headers=api_server.headers("admin"), timeout=150)
                if r.status_code != 503:
                    assert r.status_code == 200, (path, r.status_code, r.text[:300])
                    break
            except requests.RequestException:
                pass
            assert time.time() < deadline, f"{path} did not come up"
            time.sleep(1)


@pytest.fixture(scope="session")
def live_routes(api_server):
    schema = requests.get(f"{api_server.base}/openapi.json", timeout=30).json()
    return routes(schema)


@pytest.fixture(scope="session")
def pay_resources(api_server, origin):
    """An item, an allocation and a task that belong to service payment_processing (made by admin)."""
    from aiohttp import web

    from cognopt_ray import cpu

    cpu.register_task("sec_echo", _echo)
    h = api_server.headers("admin")
    warm_up(api_server)
    item = f"sec-pay-{uuid.uuid4().hex[:8]}"
    r = requests.post(
        api_server.url("storage/store"),
        headers=h,
        timeout=60,
        json={"item_id": item, "data": {"v": 1}, "service_name": PAY, "storage_tier": "warm"},
    )
    assert r.status_code == 201, r.text
    r = requests.post(
        api_server.url("memory/allocate"), headers=h, timeout=60, json={"service_name": PAY, "data": {"v": 1}}
    )
    assert r.status_code == 201, r.text
    alloc = r.json()["allocation_id"]
    r = requests.post(
        api_server.url("cpu/optimize-tasks"),
        headers=h,
        timeout=120,
        json={"tasks": [{"name": "sec_echo", "args": [1]}], "service_name": PAY},
    )
    assert r.status_code == 200, r.text
    task = r.json()["task_ids"][0]

    @origin.route()
    def page(request):
        return web.Response(text="hello", headers={"Cache-Control": "max-age=60"})

    return {"item": item, "alloc": alloc, "task": task, "url": page.url}
