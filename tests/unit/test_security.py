import json
import multiprocessing as mp

import pytest

from cognopt_ray.config import ApiKeyRecord, Settings
from cognopt_ray.security import AuditLog, KeyStore, generate_key, hash_secret


@pytest.fixture
def settings(tmp_path):
    return Settings.load(environ={}, storage_root=str(tmp_path))


def test_generated_key_is_stored_as_hash_only(settings):
    key, record = generate_key(["read"], note="n")
    store = KeyStore(settings)
    store.add(record)
    text = store.path.read_text()
    secret = key.split(".", 1)[1]
    assert secret not in text and key not in text
    assert record.hash in text and hash_secret(secret) == record.hash
    p = store.authenticate(key)
    assert p is not None and p.key_id == record.id and p.scopes == ("read",)
    assert p.can_read() and not p.is_admin and not p.can_use_service("ai_models")


def test_unknown_wrong_and_malformed_keys_are_refused(settings):
    key, record = generate_key(["admin"])
    store = KeyStore(settings, [record])
    assert store.authenticate(key) is not None
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad in [None, "", wrong, "cok_000000000000.abcdefghijklmnopqrstuvwxyz", "garbage", key + "x"]:
        assert store.authenticate(bad) is None


def test_env_admin_key(tmp_path):
    s = Settings.load(environ={"COGNOPT_ADMIN_KEY": "a-long-admin-key-123"}, storage_root=str(tmp_path))
    p = KeyStore(s).authenticate("a-long-admin-key-123")
    assert p is not None and p.is_admin and p.key_id == "env-admin"
    assert KeyStore(s).authenticate("a-long-admin-key-124") is None


def test_keys_file_is_reloaded_when_it_changes(settings):
    store = KeyStore(settings)
    key, record = generate_key(["service:ai_models"])
    assert store.authenticate(key) is None
    KeyStore(settings).add(record)  # another process/CLI adds a key
    p = store.authenticate(key)
    assert p is not None and p.can_use_service("ai_models") and not p.can_use_service("payment_processing")


def test_invalid_scope_is_refused():
    with pytest.raises(ValueError, match="scope"):
        generate_key(["superuser"])
    with pytest.raises(ValueError):
        ApiKeyRecord(id="x", hash="0" * 64, scopes=["service:Bad Name"])


def _writer(root, n, worker):
    log = AuditLog(root)
    for i in range(n):
        log.record(f"k{worker}", "test.write", f"item{i}", "ok", payload="x" * 500)


def test_audit_log_appends_whole_lines_from_many_processes(tmp_path):
    procs = [mp.get_context("spawn").Process(target=_writer, args=(tmp_path, 50, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log = AuditLog(tmp_path)
    lines = log.path.read_text().splitlines()
    assert len(lines) == 200
    assert all(json.loads(line)["action"] == "test.write" for line in lines)
    assert len(log.read(key_id="k2", limit=0)) == 50


def test_audit_log_filters_and_torn_line(tmp_path):
    log = AuditLog(tmp_path)
    a = log.record("k1", "storage.restore", "item1", "ok")
    log.record("k2", "system.cleanup", None, "dry_run", removed=2)
    log.record(None, "storage.prune", "repo", "error: disk full")
    with open(log.path, "ab") as f:
        f.write(b'{"time": "2030-01-01", "act')  # a crash mid-write
    assert [e["action"] for e in log.read(action="storage.")] == ["storage.restore", "storage.prune"]
    assert log.read(key_id="k2")[0]["details"] == {"removed": 2}
    assert log.read(target="item1")[0]["time"] == a["time"]
    assert log.read(since=a["time"], limit=1)[0]["action"] == "storage.prune"
    assert log.read(action="storage.prune")[0]["key_id"] == "-"
    assert {"time", "key_id", "action", "target", "result"} <= set(a)


def test_revoke_and_expiry(settings):
    from cognopt_ray.errors import InvalidInput, NotFound

    store = KeyStore(settings)
    key, rec = generate_key(["read"], ttl_s=3600)
    store.add(rec)
    assert store.authenticate(key).scopes == ("read",) and rec.expires_at
    store.revoke(rec.id)
    principal, why = KeyStore(settings).check(key)  # another replica on the same root
    assert principal is None and f"{rec.id} was revoked" in why
    assert store.authenticate(key) is None
    with pytest.raises(NotFound):
        store.revoke("nosuchkey000")
    with pytest.raises(InvalidInput):
        generate_key(["read"], expires_at="2001-01-01T00:00:00Z")
    with pytest.raises(InvalidInput):
        generate_key(["read"], ttl_s=10, expires_at="2100-01-01T00:00:00Z")


def test_first_admin_key_is_made_once_and_stored_as_hash_only(settings):
    store = KeyStore(settings)
    key = store.ensure_first_admin()
    assert key and store.authenticate(key).is_admin
    assert key.split(".", 1)[1] not in store.path.read_text()
    assert KeyStore(settings).ensure_first_admin() is None  # a later start shows nothing
    store.revoke(key[4:16])
    again = store.ensure_first_admin()  # no usable admin key left: a new one
    assert again and again != key


def test_caps_default_to_the_configured_values(tmp_path):
    from cognopt_ray.config import ServiceCaps, Settings
    from cognopt_ray.security.caps import CapsStore, effective_caps, over_caps

    s = Settings.load(
        environ={},
        storage_root=str(tmp_path),
        services={"ai_models": {"cpu": {"max_workers": 4, "cpu_affinity": [0, 1]}}},
    )
    caps = effective_caps(s, "ai_models", {})
    assert caps.max_workers == 4 and caps.cpu_affinity == [0, 1] and caps.cache_strategy == "medium_term"
    assert over_caps(s, "ai_models", "cpu", {"max_workers": 3, "cpu_affinity": [1]}, {}) == []
    over = over_caps(s, "ai_models", "cpu", {"max_workers": 0, "cpu_affinity": [2]}, {})
    assert [o["cap"] for o in over] == ["max_workers", "cpu_affinity"]
    assert over_caps(s, "ai_models", "storage", {"default_tier": "hot"}, {})[0]["cap"] == "default_tier"
    assert over_caps(s, "ai_models", "storage", {"default_tier": "cold"}, {}) == []
    assert over_caps(s, "ai_models", "network", {"cache_strategy": "persistent"}, {})[0]["limit"] == "medium_term"
    store = CapsStore(tmp_path)
    store.set("ai_models", ServiceCaps(max_workers=16))
    assert over_caps(s, "ai_models", "cpu", {"max_workers": 16}, CapsStore(tmp_path).overrides()) == []
    store.set("ai_models", None)
    assert CapsStore(tmp_path).overrides() == {}


def _revoke_elsewhere(root: str, key_id: str) -> None:
    KeyStore(Settings.load(environ={}, storage_root=root)).revoke(key_id)


def test_keys_are_checked_from_memory_and_revocations_still_arrive(tmp_path, monkeypatch):
    """A check does not look at keys.json; a revocation reaches a store at once when it is made in
    the same process (the replica's own DELETE auth/keys), within keys_recheck_s from another."""
    from pathlib import Path

    key, rec = generate_key(["read"])
    key2, rec2 = generate_key(["read"])
    slow = Settings.load(environ={}, storage_root=str(tmp_path), keys_recheck_s=60)
    KeyStore(slow).add(rec)
    KeyStore(slow).add(rec2)
    store = KeyStore(slow)
    assert store.authenticate(key) is not None
    looks = []
    real_stat = Path.stat

    def counting_stat(self, *a, **kw):
        if self == store.path:
            looks.append(1)
        return real_stat(self, *a, **kw)

    monkeypatch.setattr(Path, "stat", counting_stat)
    for _ in range(500):
        assert store.authenticate(key) is not None
    assert looks == []  # 500 checks, no look at the file
    KeyStore(slow).revoke(rec.id)  # in this process: the next check sees it
    assert "revoked" in store.check(key)[1]
    monkeypatch.undo()

    quick = KeyStore(Settings.load(environ={}, storage_root=str(tmp_path), keys_recheck_s=0.2))
    assert quick.authenticate(key2) is not None
    p = mp.get_context("spawn").Process(target=_revoke_elsewhere, args=(str(tmp_path), rec2.id))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    import time

    deadline = time.monotonic() + 30
    while quick.authenticate(key2) is not None:  # another process's revocation: after the next look
        assert time.monotonic() < deadline, "a revocation made by another process never arrived"
        time.sleep(0.05)
    assert "revoked" in quick.check(key2)[1]
