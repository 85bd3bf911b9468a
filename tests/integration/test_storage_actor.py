"""The storage actor on the session's Ray: HOT items in the object store, and crashes that lose nothing.

Each test runs its own actor (its own name and storage root) and kills it at the end. Crashes are
real process deaths: ``ray.kill(no_restart=False)``, or the actor exiting at an armed point in the
middle of a store, a migration or a backup (``arm_fault``); Ray restarts it (``max_restarts=-1``)
and the catalog must never point at missing or partial data.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from cognopt_ray.config import Settings
from cognopt_ray.errors import EngineUnavailable, InsufficientStorage, NotFound
from cognopt_ray.storage import client

TEXT = (open(os.__file__, "rb").read() * 4)[:400_000]


@pytest.fixture
def store(ray_session, tmp_path):
    made = []

    def make(**storage):
        settings = Settings.load(
            storage_root=str(tmp_path / f"root{len(made)}"),
            storage={
                "lifecycle_enabled": False,
                "progress": False,
                "min_free_bytes": 0,
                "inline_max_bytes": 0,
                "backup_source_roots": [str(tmp_path)],
                "restore_roots": [str(tmp_path)],
                **storage,
            },
        )
        c = client(settings, name=f"cognopt.storage.test-{uuid.uuid4().hex[:8]}")
        made.append(c)
        return c, Path(settings.storage_root)

    yield make
    for c in made:
        ray_session.kill(c.actor, no_restart=True)


def wait_up(c, timeout=90, old_pid=None):
    """Wait until the (restarted) actor answers; with ``old_pid``, until a new process does
    (``ray.kill`` returns before the old process is gone)."""
    import ray

    deadline = time.time() + timeout
    while True:
        try:
            if old_pid is not None and ray.get(c.actor.pid.remote(), timeout=10) == old_pid:
                raise EngineUnavailable("old process still answering")
            return c.health()
        except (EngineUnavailable, ray.exceptions.RayError):
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def item_files(root: Path) -> list[Path]:
    return [p for p in (root / "tiers").rglob("*") if p.is_file()]


def test_hot_items_live_in_the_object_store_and_survive_a_restart(store, ray_session):
    c, _ = store()
    c.put("h1", TEXT, tier="hot")
    c.put("ht", pa.table({"x": list(range(1000))}), tier="hot")
    c.put("hj", {"a": 1}, tier="hot")
    assert c.get("h1") == TEXT
    assert c.get("ht", columns=["x"]).num_rows == 1000
    assert c.get("hj") == {"a": 1}
    assert c.metrics()["counters"]["hot_hits"] >= 1
    pid = ray_session.get(c.actor.pid.remote())
    ray_session.kill(c.actor, no_restart=False)
    wait_up(c, old_pid=pid)
    assert c.get("h1") == TEXT  # from the durable copy, put back into the object store
    assert c.get("ht").num_rows == 1000
    assert c.info("h1")["tier"] == "hot"


def test_kill_in_the_middle_of_a_store_leaves_no_partial_item(store):
    c, root = store()
    c.put("before", TEXT)
    c.actor.arm_fault.remote("store.before_commit")
    with pytest.raises(EngineUnavailable):
        c.put_many([{"item_id": f"lost-{i}", "data": TEXT + bytes([i])} for i in range(4)])
    health = wait_up(c)
    assert health["recovered"]["orphans"] >= 1  # the written-but-uncommitted files were removed
    assert [i["item_id"] for i in c.list_items()] == ["before"]
    with pytest.raises(NotFound):
        c.get("lost-0")
    assert c.verify()["damaged"] == []
    assert len(item_files(root)) == 1
    c.put("after", TEXT)  # the store works again
    assert c.get("after") == TEXT


def test_kill_in_the_middle_of_a_migration_keeps_the_item_readable(store):
    c, root = store()
    table = pa.table({"a": list(range(100_000))})
    c.put("m1", TEXT, tier="warm")
    c.put("t1", table, tier="warm")
    c.actor.arm_fault.remote("migrate.after_copy")
    with pytest.raises(EngineUnavailable):
        c.migrate("m1", "cold")
    wait_up(c)
    assert c.info("m1")["tier"] == "warm" and c.get("m1") == TEXT
    c.actor.arm_fault.remote("migrate.after_copy")
    with pytest.raises(EngineUnavailable):
        c.migrate("t1", "archive")
    wait_up(c)
    assert c.get("t1").equals(table)
    assert c.verify()["damaged"] == []
    assert len(item_files(root)) == 2  # the half-done copies were removed at start-up
    assert c.migrate("m1", "cold")["moved"] and c.get("m1") == TEXT


@pytest.mark.parametrize("point", ["backup.after_pack", "backup.before_snapshot"])
def test_kill_in_the_middle_of_a_backup_never_leaves_a_broken_snapshot(store, point):
    c, _ = store(backup_pack_bytes=64 * 1024)
    for i in range(6):
        c.put(f"b{i}", TEXT[i * 1000 :] + os.urandom(50_000))
    first = c.backup()
    c.put("new", os.urandom(300_000))
    c.actor.arm_fault.remote(point)
    with pytest.raises(EngineUnavailable):
        c.backup()
    wait_up(c)
    snaps = c.snapshots()
    assert [s["snapshot_id"] for s in snaps] == [first["snapshot_id"]]
    assert c.check(read_data=True)["ok"]
    second = c.backup()
    assert c.check(read_data=True)["ok"]
    c.delete("new")
    c.restore(second["snapshot_id"], item_ids=["new"])
    assert len(c.get("new")) == 300_000


def test_ray_kill_during_a_long_backup(store, ray_session, tmp_path):
    c, _ = store()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i}.bin").write_bytes(os.urandom(500_000))
    pid = ray_session.get(c.actor.pid.remote())
    ref = c.actor.backup.remote(str(src), None)
    time.sleep(0.5)
    ray_session.kill(c.actor, no_restart=False)
    try:
        ray_session.get(ref, timeout=60)
    except Exception:  # noqa: BLE001 - killed mid-way (or it finished first)
        pass
    wait_up(c, old_pid=pid)
    assert c.check(read_data=True)["ok"]
    snap = c.backup(str(src))
    out = tmp_path / "out"
    c.restore(snap["snapshot_id"], target=str(out))
    assert all((out / f.name).read_bytes() == f.read_bytes() for f in src.iterdir())


def test_full_tier_is_a_clear_507_and_nothing_is_written(store):
    c, root = store(min_free_bytes=1 << 60)
    with pytest.raises(InsufficientStorage) as e:
        c.put("x", TEXT)
    assert e.value.status == 507 and "nothing was written" in e.value.message
    assert c.list_items() == [] and item_files(root) == []
