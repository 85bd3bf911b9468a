"""Attack 1 of issue 13: code execution from a service key through a spilled allocation.

A ``service:ai_models`` key fills its pool until one of its allocations spills to the storage
engine's WARM tier (item ``memory-evicted:ai_models:<id>``), overwrites that item with a pickle
through ``POST storage/store``, then reads the allocation back. Before the fix the memory engine
unpickled the item (``pickle.loads``) and the pickle's code ran in the engine's process. Now a
spilled value is tagged data or a blob signed by this installation, checked before anything is
decoded: the pickle never runs (its marker file is never created), whatever wrote the item.
"""

from __future__ import annotations

import pickle
import uuid

import pytest
import requests

from tests.security.conftest import warm_up

pytestmark = pytest.mark.timeout(900)

SERVICE = "ai_models"
CHUNK = 900_000  # under the test app's 1 MiB body limit; one 1 MiB block of ai_models' pool


class _Payload:
    """Unpickling this creates ``path`` (the harm the attack test looks for)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _spill_one(api_server) -> tuple[str, list[str]]:
    """Allocate (as ``svc_ai``) until the first allocation of this test is evicted; returns its id
    and the ids still held (to free afterwards)."""
    h = {**api_server.headers("svc_ai"), "Content-Type": "application/octet-stream"}
    url = api_server.url(f"memory/allocate?service_name={SERVICE}")
    r = requests.post(url, headers=h, data=b"f" * CHUNK, timeout=120)
    assert r.status_code == 201, r.text
    first = r.json()["allocation_id"]
    held: list[str] = []
    for _ in range(64):
        r = requests.post(url, headers=h, data=b"x" * CHUNK, timeout=120)
        assert r.status_code == 201, r.text
        held.append(r.json()["allocation_id"])
        if first in r.json()["evicted"]:
            return first, held
    raise AssertionError("the first allocation was never evicted")


def _free(api_server, ids: list[str]) -> None:
    for aid in ids:
        requests.post(
            api_server.url("memory/deallocate"),
            headers=api_server.headers("admin"),
            json={"allocation_id": aid},
            timeout=60,
        )


def _item(api_server, aid: str) -> requests.Response:
    return requests.get(
        api_server.url(f"storage/items/memory-evicted:{SERVICE}:{aid}"), headers=api_server.headers("admin"), timeout=60
    )


def test_a_pickle_stored_over_a_spilled_allocation_never_runs(api_server, tmp_path):
    warm_up(api_server)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:8]}"
    first, held = _spill_one(api_server)
    try:
        assert _item(api_server, first).status_code == 200  # it spilled to WARM
        evil = pickle.dumps(_Payload(str(marker)), protocol=5)
        r = requests.post(
            api_server.url(f"storage/store?item_id=memory-evicted:{SERVICE}:{first}&service_name={SERVICE}"),
            headers={**api_server.headers("svc_ai"), "Content-Type": "application/octet-stream"},
            data=evil,
            timeout=60,
        )
        # Storage may refuse the reserved id (403/422); either way the memory engine must not unpickle.
        assert r.status_code in (201, 403, 422), r.text
        r = requests.get(
            api_server.url(f"memory/allocations/{first}"), headers=api_server.headers("svc_ai"), timeout=60
        )
        assert not marker.exists(), "the pickle ran inside the memory engine"
        if r.status_code == 200:  # storage refused the overwrite: the genuine value came back
            assert r.content == b"f" * CHUNK
        else:
            assert r.status_code == 500 and r.json()["title"] == "Integrity check failed", r.text
            assert "signature" in r.json()["detail"] or "signed" in r.json()["detail"]
        assert not marker.exists()
    finally:
        _free(api_server, held)


def test_a_forged_spill_item_written_past_the_routes_is_refused(api_server, tmp_path):
    """Even when the spilled item is overwritten by other means than the REST route (here the
    storage engine's own client), nothing is unpickled: unsigned blobs are refused."""
    from cognopt_ray.storage import client as storage_client

    warm_up(api_server)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:8]}"
    first, held = _spill_one(api_server)
    try:
        evil = pickle.dumps(_Payload(str(marker)), protocol=5)
        store = storage_client()
        for forged in (evil, b"O" + evil, b"P" + evil, b"CS1" + b"\0" * 32 + evil):
            store.put(f"memory-evicted:{SERVICE}:{first}", forged, service=SERVICE, tier="warm")
            r = requests.get(
                api_server.url(f"memory/allocations/{first}"), headers=api_server.headers("svc_ai"), timeout=60
            )
            assert r.status_code == 500 and r.json()["title"] == "Integrity check failed", r.text
            assert not marker.exists(), "the pickle ran inside the memory engine"
    finally:
        _free(api_server, held)


def test_deallocating_a_spilled_allocation_deletes_its_warm_item(api_server):
    warm_up(api_server)
    first, held = _spill_one(api_server)
    try:
        assert _item(api_server, first).status_code == 200
        r = requests.post(
            api_server.url("memory/deallocate"),
            headers=api_server.headers("svc_ai"),
            json={"allocation_id": first},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.json()["spilled"] is True
        assert _item(api_server, first).status_code == 404
        r = requests.get(
            api_server.url(f"memory/allocations/{first}"), headers=api_server.headers("svc_ai"), timeout=60
        )
        assert r.status_code == 404, r.text
    finally:
        _free(api_server, held)


def _double(x):
    return 2 * x


def test_a_forged_registered_task_file_never_runs(ray_session, tmp_path):
    """Registered tasks are cloudpickled code kept under ``<root>/cpu/tasks``: a file anyone else put
    there (a restore, a shared volume) is refused at load, so naming it never unpickles it."""
    import ray

    from cognopt_ray import cpu, runtime
    from cognopt_ray.config import Settings
    from cognopt_ray.cpu._actor import _SchedulerActor

    settings = Settings.load(storage_root=str(tmp_path / "root"))
    marker = tmp_path / f"pwned-{uuid.uuid4().hex[:8]}"

    def scheduler():
        handle = runtime.get_or_create_actor(
            _SchedulerActor, f"cognopt.cpu.sec-{uuid.uuid4().hex[:6]}", settings.to_overrides()
        )
        return cpu.PriorityScheduler(handle, settings=settings)

    first = scheduler()
    first.register_task("sec_double", _double)  # genuine: signed by this installation
    ray.kill(first.actor, no_restart=True)
    (settings.root / "cpu" / "tasks" / "evil@0123456789abcdef0123.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    second = scheduler()  # a restart on the same root
    try:
        names = second.registered_tasks()
        assert "sec_double" in names and "evil" not in names
        assert ray.get(second.submit_named("sec_double", 21), timeout=120) == 42
        with pytest.raises(Exception, match="no task is registered as 'evil'"):
            ray.get(second.submit_named("evil"), timeout=120)
        assert not marker.exists(), "a forged task file was unpickled"
    finally:
        ray.kill(second.actor, no_restart=True)


def test_a_python_object_is_never_sent_over_rest_as_a_pickle(api_server):
    """A Python caller's object allocation read over REST: 406 with a hint, not a pickle to load."""
    from cognopt_ray import memory

    warm_up(api_server)
    aid = memory.client().allocate(SERVICE, {1: "a python object"})
    try:
        r = requests.get(api_server.url(f"memory/allocations/{aid}"), headers=api_server.headers("svc_ai"), timeout=60)
        assert r.status_code == 406, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "MemoryPools.get" in r.json()["detail"] + str(r.json().get("hint"))
    finally:
        _free(api_server, [aid])
