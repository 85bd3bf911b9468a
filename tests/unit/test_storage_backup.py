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


FIXTURE = Path(__file__).parent / "data" / "backup_v1"
FIXTURE_KEY = base64.b64encode(bytes(range(32))).decode()  # the key the format-1 fixture was made with


@pytest.mark.parametrize("kind", ["plain", "encrypted"])
def test_a_format_1_repository_restores_and_takes_format_2_backups(tmp_path, kind):
    """A repository written by the format-1 code (tests/unit/data/backup_v1, made before format 2)
    restores byte-identically, takes new backups in format 2 and prunes into format 2."""
    import shutil

    shutil.copytree(FIXTURE / kind, tmp_path / "repo")
    key = FIXTURE_KEY if kind == "encrypted" else None
    repo = BackupRepository(str(tmp_path / "repo"), key_b64=key, progress=False)
    assert repo.config["version"] == 1
    first, second = repo.snapshots()
    assert (first["tag"], second["tag"]) == ("first", "second")
    assert all("blake3" in e for e in repo.tree(first["snapshot_id"]))  # format-1 entries
    out = tmp_path / "out1"
    repo.restore(first["snapshot_id"], target=str(out))
    assert same(FIXTURE / "source", out)
    repo.restore(second["snapshot_id"], target=str(tmp_path / "out2"))
    edited = (tmp_path / "out2" / "big.txt").read_bytes()
    assert (
        edited[5000:5004] == b"EDIT"
        and edited.replace(b"EDIT", b"", 1) == (FIXTURE / "source" / "big.txt").read_bytes()
    )
    assert repo.check(read_data=True)["ok"]
    # a new backup into it is format 2: blocks in new packs, the old packs untouched
    src = tmp_path / "src"
    shutil.copytree(FIXTURE / "source", src)
    (src / "new.txt").write_bytes(b"a new file\n" * 500)
    third = repo.backup(str(src), tag="third")
    assert third["chunks_new"] >= 1
    repo = BackupRepository(str(tmp_path / "repo"), key_b64=key, progress=False)
    assert repo.config["version"] == 2
    kinds = {bool(loc.block) for loc in repo.index.values()}
    assert kinds == {True, False}  # format-1 chunks and format-2 blocks side by side
    repo.restore(third["snapshot_id"], target=str(tmp_path / "out3"))
    assert same(src, tmp_path / "out3")
    # prune rewrites the partly used format-1 packs into format-2 blocks; everything kept restores
    repo.prune(keep_last=2)
    assert repo.check(read_data=True)["ok"]
    repo.restore(second["snapshot_id"], target=str(tmp_path / "out4"))
    assert (tmp_path / "out4" / "big.txt").read_bytes() == edited
    repo.restore(third["snapshot_id"], target=str(tmp_path / "out5"))
    assert same(src, tmp_path / "out5")


def test_format_2_packs_small_files_into_blocks_and_stores_random_bytes_as_is(tmp_path):
    src = tmp_path / "src"
    make_source(src, 40)
    (src / "photo.jpg").write_bytes(os.urandom(200_000))  # a compressed kind: never given to zstd
    key = base64.b64encode(os.urandom(32)).decode()
    repo = BackupRepository(str(tmp_path / "repo"), key_b64=key, progress=False)
    snap = repo.backup(str(src))
    assert repo.config["version"] == 2 and all(loc.block for loc in repo.index.values())
    blocks = {(loc.pack, loc.off) for loc in repo.index.values()}
    assert len(blocks) < snap["chunks_new"] / 4  # many chunks share a block
    # a compressed kind of file sits in stored blocks (codec 0), never given to zstd
    tree = {e["path"]: e for e in repo.tree(snap["snapshot_id"])}
    for h in tree["photo.jpg"]["chunks"]:
        loc = repo.index[h]
        blob = (tmp_path / "repo" / "packs" / loc.pack[:2] / loc.pack).read_bytes()[loc.off : loc.off + loc.length]
        assert repo.sealer.open(blob, b"cognopt block " + loc.block.encode())[:1] == b"\x00"
    assert "blake3" not in tree["blob.bin"]  # the chunk hashes (checked on every read) suffice
    # the index and snapshot files are encrypted too
    every = b"".join(p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file() and "config" not in p.name)
    assert tree["blob.bin"]["chunks"][0].encode() not in every and b'"chunks"' not in every
    out = tmp_path / "out"
    repo.restore(snap["snapshot_id"], target=str(out))
    assert same(src, out)


def test_an_edit_costs_a_few_kib_of_tree(tmp_path):
    """The tree is cut into ~2 KiB pieces: editing one of many files rewrites little of it."""
    src = tmp_path / "src"
    for i in range(3000):
        (src / f"d{i % 30}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 30}" / f"f{i}.txt").write_bytes(b"file %d\n" % i * 20)
    repo = BackupRepository(str(tmp_path / "repo"), progress=False)
    repo.backup(str(src))
    (src / "d7" / "f1507.txt").write_bytes(b"changed\n")
    snap = repo.backup(str(src))
    assert snap["chunks_new"] <= 1 + 4  # the file's chunk and a few tree pieces
    assert snap["bytes_added"] < 16 * 1024, snap


def test_a_failed_backup_leaves_no_pack_and_no_snapshot(tmp_path):
    """A read error half-way (blocks of the files before it already in a temp pack): nothing is
    left behind. The read error is simulated (a failing disk cannot be had here)."""
    src = tmp_path / "src"
    make_source(src, 10)
    repo = BackupRepository(str(tmp_path / "repo"), progress=False)
    (src / "d0" / "big.txt").write_bytes(os.urandom(3 * 1024 * 1024))  # read first: blocks are written
    (src / "d0" / "gone.txt").write_bytes(b"x")
    real_read = __import__("cognopt_ray.storage.sources", fromlist=["SourceFiles"]).SourceFiles.read

    def failing(self, rel):
        if rel.endswith("gone.txt"):
            raise OSError("disk read error")
        return real_read(self, rel)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("cognopt_ray.storage.sources.SourceFiles.read", failing)
        with pytest.raises(OSError):
            repo.backup(str(src))
    assert repo.snapshots() == [] and repo.index == {} and repo.check()["ok"]
    assert not [p for p in (tmp_path / "repo").rglob("*") if p.is_file() and "packs" in p.parts]
