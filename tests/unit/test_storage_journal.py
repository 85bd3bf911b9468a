"""The catalog journal and the shared installation secret, on local roots (no S3, no Ray)."""

from __future__ import annotations

import base64
import os

import pytest

from cognopt_ray._private.sealer import installation_secret
from cognopt_ray.config import Settings
from cognopt_ray.errors import ConfigError, Conflict
from cognopt_ray.storage.store import TieredStore

SECRET = base64.b64encode(os.urandom(32)).decode()


def _settings(tmp_path, state, journal="on", **extra):
    roots = {t: str(tmp_path / "shared" / t) for t in ("hot", "warm", "cold", "archive")}
    return Settings.load(
        storage_root=str(tmp_path / state),
        installation_secret=SECRET,
        storage={"journal": journal, "tier_roots": roots, "lifecycle_enabled": False, "min_free_bytes": 0, **extra},
    )


def test_the_installation_secret_setting_is_shared_and_never_shown(tmp_path):
    a = Settings.load(storage_root=str(tmp_path / "a"), installation_secret=SECRET)
    b = Settings.load(storage_root=str(tmp_path / "b"), installation_secret=SECRET)
    assert installation_secret(a) == installation_secret(b)
    assert not (tmp_path / "a" / "keys" / "installation.secret").exists()  # no per-node file
    assert installation_secret(Settings.load(storage_root=str(tmp_path / "c"))) != installation_secret(a)
    with pytest.raises(ConfigError) as e:
        Settings.load(installation_secret="not-base64-but-secret-ish")
    assert "not-base64-but-secret-ish" not in str(e.value)
    assert Settings.load(installation_secret=SECRET).to_overrides()["installation_secret"] == SECRET


def test_journal_auto_is_off_for_local_roots(tmp_path):
    store = TieredStore(_settings(tmp_path, "a", journal="auto"))
    assert store.journal is None
    with pytest.raises(Conflict):
        store.rebuild_catalog()
    store.close()


def test_a_local_root_with_the_journal_on_rebuilds_on_a_fresh_state_dir(tmp_path):
    a = TieredStore(_settings(tmp_path, "a", journal_checkpoint_every=10))
    for i in range(15):
        a.put(f"k{i}", os.urandom(100 if i % 2 else 100_000), tier=("warm", "cold", "archive")[i % 3])
    a.delete("k0")
    a.migrate("k1", "cold")
    want = {r["item_id"]: a.get(r["item_id"]) for r in a.list_items()}
    a.close()
    b = TieredStore(_settings(tmp_path, "b"))
    assert b.rebuilt["items"] == 14 and b.rebuilt["checkpoint"] >= 10
    assert {r["item_id"]: b.get(r["item_id"]) for r in b.list_items()} == want
    assert b.info("k1")["tier"] == "cold" and b.verify()["damaged"] == []
    b.close()


def test_a_catalog_made_before_the_journal_is_checkpointed_into_the_root(tmp_path):
    a = TieredStore(_settings(tmp_path, "a", journal="off"))
    a.put("old", b"written before the journal" * 10)
    a.close()
    a = TieredStore(_settings(tmp_path, "a"))  # the journal turned on: the root gets the catalog
    assert a.rebuilt is None and a.journal.checkpoint_seq == 1
    a.close()
    b = TieredStore(_settings(tmp_path, "b"))
    assert b.get("old") == b"written before the journal" * 10
    b.close()
