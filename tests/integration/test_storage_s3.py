"""The storage engine on ``s3://`` roots against a real S3-protocol server (moto) on 127.0.0.1.

No Ray here: the store runs in-process (the actor wraps the same object; the three-node test in
``test_storage_multinode.py`` runs it as the actor). Every tier root, the catalog journal and the
backup repository live in a bucket reached through ``pyarrow.fs.S3FileSystem`` with the endpoint
from the ``storage.s3`` settings; the credentials are dummies in the environment.
"""

from __future__ import annotations

import base64
import os

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from cognopt_ray.config import Settings
from cognopt_ray.errors import ConfigError, IntegrityError, StorageBackendError, StorageBackendRefused
from cognopt_ray.storage.store import TieredStore
from cognopt_ray.storage.tiers import TierRoot, configure
from tests.support.s3 import FlakyRelay

TIERS = ("hot", "warm", "cold", "archive")
KEY = base64.b64encode(b"k" * 32).decode()
SECRET = base64.b64encode(b"s" * 32).decode()


def settings_for(s3_server, tmp_path, bucket, *, state="node-a", endpoint=None, key=KEY, secret=SECRET, **storage):
    """Settings of one node: a local state dir of its own, every root in ``bucket``."""
    cfg = {
        "tier_roots": {t: f"s3://{bucket}/tiers/{t}" for t in TIERS},
        "backup_root": f"s3://{bucket}/backups",
        "s3": s3_server.settings(endpoint),
        "lifecycle_enabled": False,
        "min_free_bytes": 0,
        "restore_roots": [f"s3://{bucket}/restores", str(tmp_path / "restores")],
        "backup_source_roots": [str(tmp_path / "sources")],
        **storage,
    }
    return Settings.load(
        storage_root=str(tmp_path / state), encryption_key=key, installation_secret=secret, storage=cfg
    )


def objects(s3_server, bucket, prefix=""):
    fs = s3_server.filesystem()
    sel = pafs.FileSelector(f"{bucket}/{prefix}".rstrip("/"), recursive=True, allow_not_found=True)
    return sorted(i.path[len(bucket) + 1 :] for i in fs.get_file_info(sel) if i.type == pafs.FileType.File)


@pytest.fixture
def bucket(s3_server):
    return s3_server.bucket()


def test_every_tier_store_retrieve_delete_on_s3(s3_server, tmp_path, bucket):
    store = TieredStore(settings_for(s3_server, tmp_path, bucket))
    assert store.journal is not None  # auto: the roots are not local
    big = os.urandom(100_000) + b"x" * 200_000
    for tier in TIERS:
        store.put(f"big-{tier}", big, tier=tier)
        store.put(f"small-{tier}", {"tier": tier}, tier=tier)
    stored = objects(s3_server, bucket, "tiers")
    for tier in TIERS:
        assert store.get(f"big-{tier}") == big
        assert store.get(f"small-{tier}") == {"tier": tier}
        assert any(o.startswith(f"tiers/{tier}/items/") or o.startswith(f"tiers/{tier}/chunks/") for o in stored)
    assert store.verify()["damaged"] == []
    for tier in TIERS:
        store.delete(f"big-{tier}")
    left = objects(s3_server, bucket, "tiers")
    assert not any(o.startswith(("tiers/hot/items", "tiers/warm/items", "tiers/cold/items")) for o in left)
    assert not any(o.startswith("tiers/archive/chunks") for o in left)  # the last reference went
    assert sorted(r["item_id"] for r in store.list_items()) == sorted(f"small-{t}" for t in TIERS)
    # sealed at rest: no object in the bucket holds the plaintext
    fs = s3_server.filesystem()
    for o in objects(s3_server, bucket):
        with fs.open_input_stream(f"{bucket}/{o}") as f:
            assert b'"tier"' not in f.read()
    store.close()


def test_migrations_lifecycle_and_tables_on_s3(s3_server, tmp_path, bucket):
    store = TieredStore(settings_for(s3_server, tmp_path, bucket, key=None))  # tables are not sealed yet
    data = b"log line with some repetition\n" * 20_000
    store.put("m", data, tier="warm")
    for tier in ("cold", "archive", "hot", "warm"):
        out = store.migrate("m", tier)
        assert out["moved"] and store.info("m")["tier"] == tier
        assert store.get("m") == data
    table = pa.table({"a": list(range(50_000)), "b": [f"row {i}" for i in range(50_000)], "c": [1.5] * 50_000})
    store.put("t-warm", table, tier="warm")
    store.put("t-cold", table, tier="cold")
    for tid in ("t-warm", "t-cold"):
        got = store.get(tid, columns=["b"])
        assert got.column_names == ["b"] and got.column("b").to_pylist()[:2] == ["row 0", "row 1"]
    store.migrate("t-warm", "cold")
    assert store.get("t-warm").equals(table)
    # a lifecycle pass far in the future demotes idle items through the tiers on S3
    store.put("idle", data, tier="warm")
    out = store.optimize_tiering(now=store.info("idle")["last_access"] + 400 * 86400)
    assert out["failed"] == []
    moved = {m["item_id"]: m["to"] for m in out["migrated"]}
    assert moved.get("idle") in ("cold", "archive")
    assert store.get("idle") == data
    assert store.verify()["damaged"] == []
    store.close()


def test_verify_and_repair_on_s3(s3_server, tmp_path, bucket):
    store = TieredStore(settings_for(s3_server, tmp_path, bucket))
    data = os.urandom(300_000)
    store.put("v", data, tier="cold")
    store.backups.backup(store)
    loc = store.info("v")["location"][5:]
    fs = s3_server.filesystem()
    with fs.open_output_stream(f"{bucket}/tiers/cold/{loc}") as f:
        f.write(b"rotten" + data[6:])
    bad = store.verify()["damaged"]
    assert [b["item_id"] for b in bad] == ["v"]
    with pytest.raises(IntegrityError):
        store.get("v")
    assert store.repair("v")["restored"]
    assert store.get("v") == data and store.verify()["damaged"] == []
    store.close()


def test_backups_into_an_s3_repository_encrypted(s3_server, tmp_path, bucket):
    src = tmp_path / "sources" / "data"
    src.mkdir(parents=True)
    files = {f"f{i}.bin": os.urandom(50_000) + b"same tail " * 5_000 for i in range(6)}
    for name, body in files.items():
        (src / name).write_bytes(body)
    store = TieredStore(settings_for(s3_server, tmp_path, bucket))
    repo = store.backups
    assert repo.config["encrypted"]
    first = repo.backup(str(src), tag="first")
    (src / "f0.bin").write_bytes(files["f0.bin"] + b"appended")
    second = repo.backup(str(src), tag="second")
    assert second["bytes_added"] < first["bytes_added"] / 3  # incremental: only the changed chunks
    # restore into an s3:// root, byte-identical
    out = repo.restore(second["snapshot_id"], target=f"s3://{bucket}/restores/r1")
    assert out["restored"] == len(files)
    fs = s3_server.filesystem()
    for name, body in files.items():
        want = body + b"appended" if name == "f0.bin" else body
        with fs.open_input_stream(f"{bucket}/restores/r1/{name}") as f:
            assert f.read() == want
    checked = repo.check(read_data=True)
    assert checked["ok"] and checked["chunks_read"] > 0
    pruned = repo.prune(keep_last=1)
    assert [s["snapshot_id"] for s in repo.snapshots()] == [second["snapshot_id"]]
    assert pruned["forgotten"] and pruned["kept"] == [second["snapshot_id"]]
    assert repo.check(read_data=True)["ok"]
    out = repo.restore(second["snapshot_id"], target=f"s3://{bucket}/restores/r2")  # still whole after prune
    with fs.open_input_stream(f"{bucket}/restores/r2/f3.bin") as f:
        assert f.read() == files["f3.bin"]
    # nothing in the repository is plaintext
    for o in objects(s3_server, bucket, "backups"):
        with fs.open_input_stream(f"{bucket}/{o}") as f:
            assert b"same tail" not in f.read()
    store.close()


def test_a_fresh_node_rebuilds_the_catalog_from_s3(s3_server, tmp_path, bucket):
    a = TieredStore(settings_for(s3_server, tmp_path, bucket, state="node-a", journal_checkpoint_every=10))
    want = {}
    for i in range(25):
        want[f"i{i}"] = os.urandom(200) if i % 2 else os.urandom(80_000)
        a.put(f"i{i}", want[f"i{i}"], tier=TIERS[i % 4], service="code_analysis" if i % 3 == 0 else "default")
    a.put("gone", b"bye")
    a.delete("gone")
    a.optimize_service("code_analysis", {"default_tier": "cold"})
    a.close()
    assert objects(s3_server, bucket, "tiers/warm/catalog/checkpoint")  # 27 entries: checkpoints replaced some
    assert len(objects(s3_server, bucket, "tiers/warm/catalog/log")) < 10
    b = TieredStore(settings_for(s3_server, tmp_path, bucket, state="node-b"))
    assert b.rebuilt is not None and b.rebuilt["items"] == 25 and b.rebuilt["gaps"] == []
    assert b.recovered["orphans"] == 0  # nothing of the root was taken for an orphan
    for item_id, data in want.items():
        assert b.get(item_id) == data
        assert b.info(item_id)["service"] == ("code_analysis" if int(item_id[1:]) % 3 == 0 else "default")
    with pytest.raises(Exception, match="does not exist|not found"):
        b.get("gone")
    assert b.service_settings("code_analysis")["default_tier"] == "cold"
    b.put("after", b"written by node b")
    b.close()
    # node a comes back with its old local catalog: it is behind the root, so it rebuilds too
    a2 = TieredStore(settings_for(s3_server, tmp_path, bucket, state="node-a"))
    assert a2.rebuilt is not None and a2.get("after") == b"written by node b"
    assert a2.rebuild_catalog()["items"] == 26
    a2.close()


def test_a_node_without_the_key_cannot_read_and_deletes_nothing(s3_server, tmp_path, bucket):
    a = TieredStore(settings_for(s3_server, tmp_path, bucket))
    a.put("secret-item", os.urandom(100_000), tier="cold")
    a.close()
    before = objects(s3_server, bucket)
    other = base64.b64encode(b"o" * 32).decode()
    with pytest.raises(IntegrityError, match="failed authentication") as e:
        TieredStore(settings_for(s3_server, tmp_path, bucket, state="node-x", key=other))
    assert "encryption_key" in (e.value.hint or "")
    # without an encryption key the journal is signed with the installation secret: a node with
    # another secret refuses it too
    bucket2 = s3_server.bucket()
    TieredStore(settings_for(s3_server, tmp_path, bucket2, state="n1", key=None)).close()
    s = TieredStore(settings_for(s3_server, tmp_path, bucket2, state="n1", key=None))
    s.put("p", b"plain")
    s.close()
    with pytest.raises(IntegrityError, match="failed authentication"):
        TieredStore(settings_for(s3_server, tmp_path, bucket2, state="n2", key=None, secret=other))
    assert objects(s3_server, bucket) == before  # the refused start removed nothing


def test_s3_stopped_mid_run_clear_errors_nothing_acknowledged_lost(s3_server, tmp_path):
    from tests.support.s3 import S3Server

    own = S3Server().start()  # stopped and restarted here, so not the session's server
    try:
        bucket = own.bucket()
        store = TieredStore(settings_for(own, tmp_path, bucket))
        acked = {}
        for i in range(6):
            acked[f"a{i}"] = os.urandom(70_000 if i % 2 else 100)
            store.put(f"a{i}", acked[f"a{i}"], tier=TIERS[i % 4])
        count = store.catalog.query("SELECT COUNT(*) FROM items")[0][0]
        own.stop()
        errors = []
        for call in (
            lambda: store.put("during", os.urandom(70_000), tier="cold"),
            lambda: store.put("during-small", b"tiny"),  # inline: only the journal write reaches S3
            lambda: store.get("a1"),
            lambda: store.delete("a0"),
            lambda: store.verify(),
        ):
            with pytest.raises(StorageBackendError) as e:
                call()
            errors.append(e.value)
        for e in errors:
            doc = e.to_problem()
            assert doc["status"] == 503 and doc["retryable"] is True
            assert "storage.s3.endpoint_override" in doc["hint"] and "retry" in doc["hint"]
            assert "cognopt-test-secret" not in str(doc)
        assert store.catalog.query("SELECT COUNT(*) FROM items")[0][0] == count  # the catalog is whole
        own.start()
        for item_id, data in acked.items():
            assert store.get(item_id) == data
        with pytest.raises(Exception, match="does not exist|not found"):
            store.get("during")
        store.put("during", b"retried after the outage")
        assert store.verify()["damaged"] == []
        store.close()
        fresh = TieredStore(settings_for(own, tmp_path, bucket, state="node-b"))
        assert sorted(r["item_id"] for r in fresh.list_items()) == sorted([*acked, "during"])
        fresh.close()
    finally:
        own.stop()


def test_s3_answering_503_is_a_clear_retryable_error(s3_server, tmp_path, bucket):
    relay = FlakyRelay(s3_server.port)
    try:
        store = TieredStore(settings_for(s3_server, tmp_path, bucket, endpoint=relay.endpoint))
        store.put("ok", os.urandom(70_000), tier="warm")
        relay.fail(True)
        with pytest.raises(StorageBackendError) as e:
            store.put("slow", os.urandom(70_000), tier="warm")
        assert e.value.status == 503 and e.value.retryable and relay.answered_503 >= 2  # retried first
        assert "SLOW_DOWN" in e.value.message or "503" in e.value.message
        relay.fail(False)
        store.put("slow", b"after", tier="warm")
        assert store.get("slow") == b"after" and len(store.get("ok")) == 70_000
        store.close()
    finally:
        relay.close()


def test_credentials_in_uris_are_refused_and_not_echoed(s3_server):
    for uri in (
        "s3://AKIAXXXX:very-secret-value@bucket/x",
        "s3://bucket/x?access_key=AKIAXXXX&secret_key=very-secret-value",
    ):
        with pytest.raises(ConfigError) as e:
            TierRoot(uri)
        assert "very-secret-value" not in str(e.value) and "AWS_ACCESS_KEY_ID" in (e.value.hint or "")


def test_a_missing_bucket_is_refused_clearly(s3_server):
    configure({**s3_server.settings(), "allow_bucket_creation": False})
    try:
        with pytest.raises(StorageBackendRefused) as e:
            TierRoot(f"s3://{s3_server.bucket()}/x")
        assert e.value.status == 502 and "allow_bucket_creation" in e.value.hint
    finally:
        configure({})
