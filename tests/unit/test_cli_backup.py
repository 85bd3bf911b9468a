"""``cognopt backup``: the Ray-free, whole-process backup the storage benchmark times against restic and borg."""

from __future__ import annotations

import base64
import json
import os

from click.testing import CliRunner

from cognopt_ray.cli import main
from cognopt_ray.storage.backup import BackupRepository


def _env(tmp_path, key: str | None) -> dict[str, str | None]:
    # None removes the variable from the command's environment
    return {"COGNOPT_STORAGE_ROOT": str(tmp_path / "root"), "COGNOPT_ENCRYPTION_KEY": key, "COGNOPT_CONFIG": None}


def test_backup_is_encrypted_incremental_and_restorable(tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(400_000)
    (src / "model.bin").write_bytes(data)
    (src / "notes.txt").write_text("hello\n" * 500)
    repo = tmp_path / "repo"
    runner = CliRunner()
    first = runner.invoke(main, ["backup", str(src), "--repo", str(repo), "--tag", "t1"], env=_env(tmp_path, key))
    assert first.exit_code == 0, first.output
    one = json.loads(first.output.strip().splitlines()[-1])
    assert one["files"] == 2 and one["bytes_scanned"] == 400_000 + 3000
    assert one["bytes_added"] >= 400_000  # random bytes do not compress
    cfg = json.loads((repo / "config.json").read_text())
    assert cfg["encrypted"] is True
    for pack in (repo / "packs").rglob("*"):  # no plaintext in the packs
        if pack.is_file():
            assert data[:4096] not in pack.read_bytes()

    second = runner.invoke(main, ["backup", str(src), "--repo", str(repo)], env=_env(tmp_path, key))
    assert second.exit_code == 0, second.output
    two = json.loads(second.output.strip().splitlines()[-1])
    assert two["chunks_new"] == 0 and two["bytes_added"] < 10_000  # unchanged: only the snapshot's file list

    out = tmp_path / "out"
    BackupRepository(str(repo), key_b64=key, progress=False).restore(two["snapshot_id"], target=str(out))
    assert (out / "model.bin").read_bytes() == data


def test_backup_refuses_an_encrypted_repository_without_the_key(tmp_path):
    key = base64.b64encode(os.urandom(32)).decode()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    repo = tmp_path / "repo"
    runner = CliRunner()
    assert runner.invoke(main, ["backup", str(src), "--repo", str(repo)], env=_env(tmp_path, key)).exit_code == 0
    res = runner.invoke(main, ["backup", str(src), "--repo", str(repo)], env=_env(tmp_path, None))
    assert res.exit_code != 0
    assert "encrypted" in res.output and "encryption_key" in res.output
