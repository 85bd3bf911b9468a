"""``python -m cognopt_ray.jobs.backup``: an incremental, deduplicated backup through the storage engine.

Backs up the engine's store (default) or ``--source`` (a folder on the engine's node or a
pyarrow.fs URI) into the backup repository (``storage.backup_root``). Only chunks the repository
does not hold yet are written, so a second run over unchanged data adds little more than the
snapshot's file list.

Summary (``result``): ``snapshot_id``, ``source``, ``files``, ``bytes_scanned`` (bytes of the
source), ``bytes_read``, ``bytes_added`` (bytes the repository grew by), ``chunks_new``,
``snapshots`` (how many the repository holds now).

Example:
    ray job submit --working-dir . -- python -m cognopt_ray.jobs.backup --tag nightly
"""

from __future__ import annotations

import argparse
from typing import Any

from cognopt_ray.jobs import run_job


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cognopt_ray.jobs.backup", description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="folder or pyarrow.fs URI to back up (default: the store)")
    parser.add_argument("--tag", default=None, help="a label kept with the snapshot")
    return parser.parse_args(argv)


def _work(args: argparse.Namespace) -> dict[str, Any]:
    from cognopt_ray import storage

    store = storage.client()
    snap = store.backup(args.source, tag=args.tag)
    keys = ("snapshot_id", "files", "bytes_scanned", "bytes_read", "bytes_added", "chunks_new", "seconds")
    out: dict[str, Any] = {k: snap.get(k) for k in keys}
    out["source"] = args.source or "store"
    out["tag"] = args.tag
    out["snapshots"] = len(store.snapshots())
    return out


if __name__ == "__main__":
    _args = _parse()
    run_job("backup", lambda: _work(_args))
