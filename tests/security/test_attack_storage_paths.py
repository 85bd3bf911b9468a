"""Attack 5 of issue 13: backups and restores reach any path (or any URI) the server can.

With the admin key: a backup of ``/etc``, a restore into ``/tmp/<x>``, URIs with an
``endpoint_override``, a ``..`` escape; a symlink inside an allowed source that points outside;
a restore whose target holds a symlink where the snapshot has a folder. Each must be refused (or
not followed) and leave nothing read or written outside the configured roots.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import requests

from tests.security.conftest import warm_up

pytestmark = pytest.mark.timeout(900)


def _post(api, path: str, body: dict) -> requests.Response:
    return requests.post(api.url(path), headers=api.headers("admin"), json=body, timeout=300)


def _snapshot_ids(api) -> set[str]:
    r = requests.get(api.url("storage/snapshots"), headers=api.headers("admin"), timeout=60)
    assert r.status_code == 200, r.text
    return {s["snapshot_id"] for s in r.json()}


@pytest.fixture(scope="module")
def roots(api_server):
    """The storage engine's allowed source and restore roots (created, as the engine would)."""
    from cognopt_ray.storage import client

    warm_up(api_server)
    out = client().path_roots()
    for key in ("backup_source_roots", "restore_roots"):
        Path(out[key][0]).mkdir(parents=True, exist_ok=True)
    return {k: Path(v[0]) for k, v in out.items() if k in ("backup_source_roots", "restore_roots")}


def test_backup_of_etc_is_refused(api_server):
    warm_up(api_server)
    before = _snapshot_ids(api_server)
    r = _post(api_server, "storage/backup", {"source": "/etc"})
    assert r.status_code == 403, r.text
    assert "backup_source_roots" in r.json()["hint"]
    assert _snapshot_ids(api_server) == before  # nothing was read into the repository


def test_restore_to_tmp_is_refused(api_server):
    warm_up(api_server)
    r = _post(api_server, "storage/backup", {})
    assert r.status_code == 200, r.text
    target = Path(f"/tmp/cognopt-attack-{uuid.uuid4().hex[:8]}")
    r = _post(api_server, "storage/restore", {"snapshot_id": r.json()["snapshot_id"], "target": str(target)})
    assert r.status_code == 403, r.text
    assert "restore_roots" in r.json()["hint"]
    assert not target.exists()


@pytest.mark.parametrize("uri", ["s3://bucket/x?endpoint_override=127.0.0.1:9", "file:///etc", "mock:///x"])
def test_uri_sources_and_targets_outside_roots_are_refused(api_server, uri):
    warm_up(api_server)
    before = _snapshot_ids(api_server)
    assert _post(api_server, "storage/backup", {"source": uri}).status_code == 403
    assert _snapshot_ids(api_server) == before
    assert _post(api_server, "storage/restore", {"snapshot_id": "latest", "target": uri}).status_code == 403


def test_dotdot_escape_is_refused(api_server, roots):
    escape = roots["restore_roots"] / ".." / f"escape-{uuid.uuid4().hex[:6]}"
    r = _post(api_server, "storage/restore", {"snapshot_id": "latest", "target": str(escape)})
    assert r.status_code == 403, r.text
    assert not Path(os.path.normpath(escape)).exists()
    r = _post(api_server, "storage/backup", {"source": str(roots["backup_source_roots"] / ".." / "..")})
    assert r.status_code == 403, r.text


def test_symlink_in_an_allowed_source_is_not_followed(api_server, roots, tmp_path):
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("OUTSIDE-SECRET-MARKER")
    (tmp_path / "outside-dir").mkdir()
    (tmp_path / "outside-dir" / "more.txt").write_text("OUTSIDE-SECRET-MARKER too")
    src = roots["backup_source_roots"] / f"src-{uuid.uuid4().hex[:6]}"
    src.mkdir()
    (src / "ok.txt").write_text("inside")
    os.symlink(secret, src / "leak.txt")
    os.symlink(tmp_path / "outside-dir", src / "leakdir")
    r = _post(api_server, "storage/backup", {"source": str(src)})
    assert r.status_code == 200, r.text
    out = roots["restore_roots"] / f"out-{uuid.uuid4().hex[:6]}"
    r = _post(api_server, "storage/restore", {"snapshot_id": r.json()["snapshot_id"], "target": str(out)})
    assert r.status_code == 200, r.text
    restored = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert restored == ["ok.txt"], restored
    for p in out.rglob("*"):
        assert p.is_dir() or b"OUTSIDE-SECRET-MARKER" not in p.read_bytes()


def test_restore_cannot_write_through_a_symlink(api_server, roots, tmp_path):
    src = roots["backup_source_roots"] / f"src-{uuid.uuid4().hex[:6]}"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("payload")
    r = _post(api_server, "storage/backup", {"source": str(src)})
    assert r.status_code == 200, r.text
    outside = tmp_path / "victim"
    outside.mkdir()
    out = roots["restore_roots"] / f"out-{uuid.uuid4().hex[:6]}"
    out.mkdir()
    os.symlink(outside, out / "sub")  # the snapshot's folder 'sub' is a symlink in the target
    r = _post(api_server, "storage/restore", {"snapshot_id": r.json()["snapshot_id"], "target": str(out)})
    assert r.status_code in (403, 409, 422), r.text
    assert list(outside.iterdir()) == []
    # a symlinked target folder itself is refused too
    link = roots["restore_roots"] / f"link-{uuid.uuid4().hex[:6]}"
    os.symlink(outside, link)
    r = _post(api_server, "storage/restore", {"snapshot_id": "latest", "target": str(link)})
    assert r.status_code == 403, r.text
    assert list(outside.iterdir()) == []
