"""A full tier (a small tmpfs), and bytes flipped in stored blobs and in backup chunks."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
import ray

from cognopt_ray.config import Settings
from cognopt_ray.errors import InsufficientStorage, IntegrityError
from cognopt_ray.storage import client
from tests.faults.harness import wait_up
from tests.support.helpers import need_binary, tool_missing

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)


def _client(tmp_path, **storage):
    settings = Settings.load(
        storage_root=str(tmp_path / "root"),
        storage={
            "lifecycle_enabled": False,
            "progress": False,
            "min_free_bytes": 0,
            "inline_max_bytes": 0,
            "restore_roots": [str(tmp_path)],
            **storage,
        },
    )
    return client(settings, name=f"cognopt.storage.damage-{uuid.uuid4().hex[:6]}"), Path(settings.storage_root)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (needs root and mount(8)); skipped where mounting is not permitted, failed
    under CI=true (tests.support.helpers.tool_missing)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        [need_binary("mount"), "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        tool_missing(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_tier_answers_507_keeps_the_catalog_whole_and_recovers(ray_session, tmp_path, small_tmpfs):
    c, root = _client(tmp_path, tier_roots={"warm": str(small_tmpfs / "warm")})
    try:
        wait_up(c.health)
        stored: dict[str, bytes] = {}
        full = None
        for i in range(200):
            data = os.urandom(100_000)  # incompressible: every item costs its size
            try:
                c.put(f"f{i}", data, tier="warm", codec="none")
                stored[f"f{i}"] = data
            except InsufficientStorage as e:
                full = e
                break
        assert full is not None and full.status == 507 and "nothing was written" in full.message
        assert stored
        # the catalog has exactly the acknowledged items, each readable; nothing half-written is left
        listed = {r["item_id"] for r in c.list_items(limit=10_000)}
        assert listed == set(stored)
        assert c.verify()["damaged"] == []
        for k, v in stored.items():
            assert c.get(k) == v
        leftovers = [p.name for p in (small_tmpfs / "warm").rglob("*") if p.is_file() and ".tmp" in p.name]
        assert not leftovers, leftovers
        # free space, and the tier takes writes again
        for k in list(stored)[: len(stored) // 2]:
            c.delete(k)
            del stored[k]
        c.put("after", b"z" * 50_000, tier="warm", codec="none")
        assert c.get("after") == b"z" * 50_000
        assert c.health()["status"] in ("up", "degraded")
    finally:
        ray.kill(c.actor, no_restart=True)


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    pos = len(data) // 2 if offset is None else offset
    data[pos] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_flipped_bytes_are_detected_and_repaired_from_a_snapshot(ray_session, tmp_path, encrypted):
    import base64

    settings_key = base64.b64encode(os.urandom(32)).decode() if encrypted else None
    c, root = _client(tmp_path)
    if encrypted:
        ray.kill(c.actor, no_restart=True)
        settings = Settings.load(
            storage_root=str(tmp_path / "root"),
            encryption_key=settings_key,
            storage={
                "lifecycle_enabled": False,
                "progress": False,
                "min_free_bytes": 0,
                "inline_max_bytes": 0,
                "restore_roots": [str(tmp_path)],
            },
        )
        c = client(settings, name=f"cognopt.storage.damage-{uuid.uuid4().hex[:6]}")
    try:
        wait_up(c.health)
        items = {}
        for tier in ("hot", "warm", "cold", "archive"):
            for codec in ("none", "zstd"):
                data = (f"{tier}-{codec} ".encode() * 3000) + os.urandom(64)
                c.put(f"{tier}-{codec}", data, tier=tier, codec=codec)
                items[f"{tier}-{codec}"] = data
        c.put("json-item", {"a": list(range(100))}, tier="warm")
        items["json-item"] = {"a": list(range(100))}
        snap = c.backup(tag="before-damage")
        assert snap["snapshot_id"]
        # flip one byte in every stored blob
        chunked = False
        for item_id in items:
            info = c.info(item_id)
            loc = info["location"]
            if loc == "chunks":  # ARCHIVE items are deduplicated chunks: damaged below, all at once
                chunked = True
                continue
            assert loc.startswith("file:"), (item_id, loc)
            _flip(root / "tiers" / info["tier"] / loc[5:])
        if chunked:
            for f in (root / "tiers" / "archive").rglob("*"):
                if f.is_file() and f.stat().st_size > 0:
                    _flip(f)
        # every one is detected: by verify, and on read (never wrong bytes)
        damaged = {d["item_id"] for d in c.verify()["damaged"]}
        assert damaged == set(items), set(items) - damaged
        ray.kill(c.actor, no_restart=False)
        for item_id, value in items.items():
            if item_id.startswith("hot-"):
                # a HOT item may still be served from its intact in-memory copy (the memory engine
                # outlives the storage actor); what must never happen is a wrong answer
                try:
                    assert _retry_get(c, item_id) == value
                except IntegrityError:
                    pass
                continue
            with pytest.raises(IntegrityError):
                _retry_get(c, item_id)
        # repaired from the snapshot
        for item_id, value in items.items():
            out = c.repair(item_id)
            assert out["restored"] and out["snapshot"] == snap["snapshot_id"]
            assert c.get(item_id) == value
        assert c.verify()["damaged"] == []

        # backup chunks: flip a byte in every pack; check(read_data) reports each one
        packs = sorted((root / "backups" / "packs").rglob("*"))
        packs = [p for p in packs if p.is_file()]
        assert packs
        for p in packs:
            _flip(p)
        report = c.check(True)
        assert not report["ok"]
        assert len(report["errors"]) >= len(packs), report
        assert report["chunks_read"] < report["chunks"]
        assert report["damaged_chunks"] == report["chunks"] - report["chunks_read"]
        # repair: drop the damaged chunks, back up again (the store still has the data): the old
        # snapshot is whole again, since chunks are addressed by content
        fixed = c.check(True, repair=True)
        assert fixed["dropped_chunks"] == report["damaged_chunks"]
        c.backup(tag="after-repair")
        again = c.check(True)
        assert again["ok"], again["errors"][:5]
        out = c.restore(snap["snapshot_id"], target=str(tmp_path / "restored"))
        assert out["restored"] >= len(items)
    finally:
        ray.kill(c.actor, no_restart=True)


def _retry_get(c, item_id, timeout=90):
    import time

    from cognopt_ray.errors import EngineUnavailable

    deadline = time.time() + timeout
    while True:
        try:
            return c.get(item_id)
        except EngineUnavailable:
            if time.time() > deadline:
                raise
            time.sleep(0.3)
