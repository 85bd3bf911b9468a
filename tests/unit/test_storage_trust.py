"""Unit tests of the storage trust-boundary helpers: path confinement, no-follow file access,
the Arrow IPC decoded-size guard and the owner rules (no Ray)."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from cognopt_ray.errors import Forbidden, PayloadTooLarge
from cognopt_ray.storage import access, ipc_guard, paths


def test_confine_local_and_uri(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert paths.confine(str(root / "a" / "b"), [str(root)], "s", "x").rel == os.path.join("a", "b")
    for bad in ("relative/path", str(root / ".." / "x"), str(tmp_path / "other"), "/etc"):
        with pytest.raises(Forbidden) as e:
            paths.confine(bad, [str(root)], "storage.restore_roots", "restore target")
        assert "storage.restore_roots" in e.value.hint
    uri_root = "s3://bucket/data?endpoint_override=minio:9000"
    assert paths.confine("s3://bucket/data/x?endpoint_override=minio:9000", [uri_root], "s", "x").root is None
    for bad in (
        "s3://bucket/data/x?endpoint_override=evil:1",
        "s3://bucket/datax?endpoint_override=minio:9000",
        "s3://other/data?endpoint_override=minio:9000",
        "s3://bucket/data/../y?endpoint_override=minio:9000",
    ):
        with pytest.raises(Forbidden):
            paths.confine(bad, [uri_root], "s", "x")


def test_symlinked_component_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(Forbidden):
        paths.confine(str(root / "link" / "x"), [str(root)], "s", "x")
    with pytest.raises(Forbidden):
        paths.write_beneath(str(root), "link/f.txt", b"x")
    os.symlink(outside / "victim.txt", root / "f.txt")  # final component: a link to a file outside
    with pytest.raises(Forbidden):
        paths.check_no_symlinks(str(root), "f.txt")
    paths.write_beneath(str(root), "f.txt", b"inside")  # replaces the link itself, never its target
    assert not (outside / "victim.txt").exists() and (root / "f.txt").read_bytes() == b"inside"
    assert list(outside.iterdir()) == []


def test_walk_and_read_skip_links(tmp_path):
    root = tmp_path / "src"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.txt").write_text("a")
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", root / "leak")
    os.symlink(tmp_path, root / "up")
    files, skipped = paths.walk_files(str(root))
    assert [f[0] for f in files] == [os.path.join("d", "a.txt")] and skipped == 2
    with pytest.raises(Forbidden):
        paths.read_beneath(str(root), "leak")
    assert paths.read_beneath(str(root), "d/a.txt") == b"a"


def _stream(table: pa.Table, compression: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema, options=ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_ipc_guard_counts_decoded_bytes(compression):
    t = pa.table({"x": list(range(50_000)), "d": pa.array(["a", "b"] * 25_000).dictionary_encode()})
    body = _stream(t, compression)
    assert ipc_guard.decoded_bytes(body) >= t.nbytes - 64
    assert ipc_guard.read_table(body, 10 * t.nbytes).equals(t)
    with pytest.raises(PayloadTooLarge):
        ipc_guard.read_table(body, t.nbytes // 2)


def test_owner_rules():
    svc = access.Caller(services=("code_generation",), external=True)
    with pytest.raises(Forbidden) as e:
        access.check_owner("x", "ai_models", "code_generation", svc)
    assert "ai_models" not in e.value.message  # a caller that cannot see the owner is not told it
    assert access.check_owner("x", "ai_models", "code_generation", access.Caller(admin=True)) is True
    assert access.check_owner("x", "ai_models", "ai_models", svc) is False
    for rid in ("memory-evicted:ai_models:1", "chunk:ab", "cognopt:x"):
        with pytest.raises(Forbidden):
            access.check_write_id(rid, "ai_models", access.Caller(admin=True, external=True))
    access.check_write_id("memory-evicted:ai_models:1", "ai_models", access.INTERNAL)
    with pytest.raises(Forbidden):
        access.check_write_id("memory-evicted:ai_models:1", "code_generation", access.INTERNAL)
    with pytest.raises(Forbidden):
        access.check_write_id("chunk:ab", "ai_models", access.INTERNAL)
