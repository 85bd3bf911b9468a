"""Backups in-process: incremental dedup, verified restores, check, prune, encryption."""

from __future__ import annotations

import base64
import os
import random
from pathlib import Path

import pytest

from cognopt_ray.errors import InvalidInput, NotFound
from cognopt_ray.storage.backup import BackupRepository, repository_size

SRC = Path(os.__file__).parent


def make_source(folder: Path, n: int = 60) -> int:
    rng = random.Random(7)
    total = 0
    files = sorted(SRC.glob("*.py"))[:n]
    for i, p in enumerate(files):
        dest = folder / f"d{i % 5}" / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = p.read_bytes()
        dest.write_bytes(data)
        total += len(data)
    (folder / "blob.bin").write_bytes(rng.randbytes(300_000))
    return total + 300_000


def same(a: Path, b: Path) -> bool:
    fa = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    fb = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def test_incremental_backup_adds_only_changes_and_restores_identically(tmp_path):
    src = tmp_path / "src"
    total = make_source(src)
    repo = BackupRepository(str(tmp_path / "repo"), chunk_avg=16 * 1024, progress=False)
    s1 = repo.backup(str(src))
    assert s1["files"] == 61 and s1["bytes_scanned"] == total
    size1 = repository_size(str(tmp_path / "repo"))
    assert size1 < total  # compressed
    again = repo.backup(str(src))
    assert again["bytes_read"] == 0 and again["chunks_new"] == 0  # unchanged files are not even read
    # edit one file in the middle
    victim = sorted(src.rglob("*.py"))[3]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2] = b"# inserted line\n"
    victim.write_bytes(bytes(data))
    s3 = repo.backup(str(src))
    assert s3["bytes_read"] == len(data)
    grown = repository_size(str(tmp_path / "repo")) - size1
    assert 0 < s3["bytes_added"] and grown < total * 0.05
    out = tmp_path / "out"
    repo.restore(s3["snapshot_id"], target=str(out))
    assert same(src, out)
    old = tmp_path / "old"
    repo.restore(s1["snapshot_id"], target=str(old))
    assert (old / victim.relative_to(src)).read_bytes() != victim.read_bytes()
    check = repo.check(read_data=True)
    assert check["ok"] and check["snapshots"] == 3 and check["chunks_read"] == check["chunks"]


def test_check_finds_a_damaged_chunk(tmp_path):
    src = tmp_path / "src"
    make_source(src, 10)
    repo = BackupRepository(str(tmp_path / "repo"), progress=False)
    repo.backup(str(src))
    pack = next((tmp_path / "repo" / "packs").rglob("*"))
    while pack.is_dir():
        pack = next(pack.iterdir())
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    assert repo.check(read_data=False)["ok"]  # structure is fine
    bad = repo.check(read_data=True)
    assert not bad["ok"] and any("hash" in e or "damaged" in e or "does not match" in e for e in bad["errors"])


def test_prune_keeps_policy_and_removes_unused_chunks(tmp_path):
    src = tmp_path / "src"
    make_source(src, 10)
    repo = BackupRepository(str(tmp_path / "repo"), progress=False, pack_bytes=64 * 1024)
    first = repo.backup(str(src))
    (src / "blob.bin").write_bytes(os.urandom(400_000))
    repo.backup(str(src))
    size_before = repository_size(str(tmp_path / "repo"))
    out = repo.prune(keep_last=1)
    assert out["forgotten"] == [first["snapshot_id"]] and out["bytes_freed"] > 300_000
    assert repository_size(str(tmp_path / "repo")) < size_before
    assert repo.check(read_data=True)["ok"]
    restored = tmp_path / "r"
    repo.restore("latest", target=str(restored))
    assert same(src, restored)
    with pytest.raises(InvalidInput):
        repo.prune()
    with pytest.raises(NotFound):
        repo.restore("0123456789abcdef", target=str(tmp_path / "x"))
    with pytest.raises(InvalidInput):
        repo.restore("../etc", target=str(tmp_path / "x"))


def test_encrypted_repository_hides_content_and_needs_the_key(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_bytes(b"password=hunter2 " * 2000)
    key = base64.b64encode(os.urandom(32)).decode()
    repo = BackupRepository(str(tmp_path / "repo"), key_b64=key, progress=False)
    snap = repo.backup(str(src))
    every_byte = b"".join(p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert b"hunter2" not in every_byte
    assert BackupRepository(str(tmp_path / "repo"), key_b64=key).check(read_data=True)["ok"]
    with pytest.raises(InvalidInput):
        BackupRepository(str(tmp_path / "repo"))
    out = tmp_path / "out"
    repo.restore(snap["snapshot_id"], target=str(out))
    assert same(src, out)


def test_bad_source_is_refused(tmp_path):
    repo = BackupRepository(str(tmp_path / "repo"), progress=False)
    with pytest.raises(InvalidInput):
        repo.backup(str(tmp_path / "does-not-exist"))
    assert repo.snapshots() == []
