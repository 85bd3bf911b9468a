"""Upkeep of a backup repository: ``check`` (verify, optionally repair) and ``prune`` (forget and free).

Both hold the repository's lock for their whole run, so a backup never interleaves with them.
:class:`~cognopt_ray.storage.backup.BackupRepository` exposes them as methods.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
from typing import TYPE_CHECKING, Any

from cognopt_ray.errors import IntegrityError, InvalidInput, StorageBackendError
from cognopt_ray.storage.backup_packs import DATA_LEVEL, PackWriter, encode_index

if TYPE_CHECKING:
    from cognopt_ray.storage.backup import BackupRepository

logger = logging.getLogger("cognopt_ray.storage.backup")


def check(repo: BackupRepository, read_data: bool | float = False, repair: bool = False) -> dict[str, Any]:
    """Verify the repository: every snapshot's chunks are indexed and their packs exist; with
    ``read_data`` (``True`` or a fraction 0..1 of the packs) chunks are read and their hashes
    checked.

    With ``repair``, chunks found damaged are dropped from the index (their pack's index file
    is rewritten without them; the damaged bytes stay in the pack until ``prune``). The next
    backup of a source that still has the data writes them again, and since chunks are
    addressed by content, every older snapshot that names them is whole again.
    """
    with repo.lock:
        repo.load_index()
        errors: list[str] = []
        referenced: set[str] = set()
        snaps = repo.snapshots()
        for s in snaps:
            try:
                for e in repo.tree(s["snapshot_id"]):
                    referenced.update(e["chunks"])
                referenced.update(repo.snapshot(s["snapshot_id"])["tree"])
            except StorageBackendError:
                raise
            except Exception as e:  # noqa: BLE001 - check reports every damaged snapshot, then goes on
                errors.append(f"snapshot {s['snapshot_id']}: {e}")
        packs = {loc.pack for loc in repo.index.values()}
        for p in packs:
            if not repo.root.exists(f"packs/{p[:2]}/{p}"):
                errors.append(f"pack {p} is missing")
        for h in referenced:
            if h not in repo.index:
                errors.append(f"chunk {h[:12]} is referenced but not indexed")
        fraction = 1.0 if read_data is True else float(read_data or 0)
        if not 0 <= fraction <= 1:
            raise InvalidInput("read_data must be true, false or a fraction between 0 and 1")
        chosen = sorted(packs)
        if fraction < 1:
            chosen = random.sample(chosen, k=round(len(chosen) * fraction))
        chosen_set = set(chosen)
        read = 0
        damaged: dict[str, list[str]] = {}
        for h, loc in sorted(repo.index.items(), key=lambda kv: (kv[1].pack, kv[1].off, kv[1].raw_off)):
            pack = loc.pack
            if pack in chosen_set:
                try:
                    repo.read_chunk(h)
                    read += 1
                except IntegrityError as e:
                    errors.append(e.message)
                    damaged.setdefault(pack, []).append(h)
        chunks = len(repo.index)
        dropped = _drop_chunks(repo, damaged) if repair and damaged else 0
        return {
            "ok": not errors,
            "snapshots": len(snaps),
            "chunks": chunks,
            "packs": len(packs),
            "chunks_read": read,
            "errors": errors[:100],
            "damaged_chunks": sum(map(len, damaged.values())),
            "dropped_chunks": dropped,
        }


def _drop_chunks(repo, damaged: dict[str, list[str]]) -> int:
    """Forget damaged chunks: rewrite each pack's index without them (atomic write, same format)."""
    n = 0
    for pack, hashes in damaged.items():
        bad = set(hashes)
        entries = {h: loc for h, loc in repo.index.items() if loc.pack == pack and h not in bad}
        repo.root.write(f"index/{pack}", encode_index(repo, pack, entries))
        for h in bad:
            if repo.index.pop(h, None) is not None:
                n += 1
    logger.warning("backup check dropped %d damaged chunks; the next backup writes them again", n)
    return n


def prune(
    repo: BackupRepository, keep_last: int | None = None, keep_daily: int | None = None, keep_weekly: int | None = None
) -> dict[str, Any]:
    """Forget snapshots outside the keep policy, then remove chunks no kept snapshot uses.

    Packs whose chunks are all unused are deleted; partly used packs are rewritten with only
    the used chunks (new pack and index durable first, then the old index and pack removed).
    Rewritten chunks are read back (and checked against their hashes) and packed again in the
    current format, so pruning also moves format-1 chunks into format-2 blocks.
    """
    for name, v in (("keep_last", keep_last), ("keep_daily", keep_daily), ("keep_weekly", keep_weekly)):
        if v is not None and (not isinstance(v, int) or v < 0):
            raise InvalidInput(f"{name} must be a whole number >= 0")
    if keep_last is None and keep_daily is None and keep_weekly is None:
        raise InvalidInput(
            "prune needs at least one of keep_last, keep_daily, keep_weekly", hint="e.g. prune(keep_last=7)"
        )
    with repo.lock:
        snaps = repo.snapshots()
        keep: set[str] = set()
        newest_first = list(reversed(snaps))
        keep.update(s["snapshot_id"] for s in newest_first[: keep_last or 0])
        for n, fmt in ((keep_daily, "%Y-%m-%d"), (keep_weekly, "%G-W%V")):
            buckets: list[str] = []
            for s in newest_first:
                b = _dt.datetime.fromtimestamp(s["time"], _dt.timezone.utc).strftime(fmt)
                if n and b not in buckets and len(buckets) < n:
                    buckets.append(b)
                    keep.add(s["snapshot_id"])
        forgotten = [s["snapshot_id"] for s in snaps if s["snapshot_id"] not in keep]
        for sid in forgotten:
            repo.root.delete(f"snapshots/{sid}")
        referenced: set[str] = set()
        for sid in keep:
            snap = repo.snapshot(sid)
            referenced.update(snap["tree"])
            for e in repo.tree(sid):
                referenced.update(e["chunks"])
        by_pack: dict[str, list[str]] = {}
        for h, loc in repo.index.items():
            by_pack.setdefault(loc.pack, []).append(h)
        removed_packs = rewritten = freed = 0
        for pack, hashes in by_pack.items():
            used = [h for h in hashes if h in referenced]
            if len(used) == len(hashes):
                continue
            rel = f"packs/{pack[:2]}/{pack}"
            old_size = sum(repo.root.size(f) for f in (rel, f"index/{pack}") if repo.root.exists(f))
            if used:
                repo._upgrade_config()
                writer = PackWriter(repo)
                try:
                    for h in sorted(used, key=lambda h: (repo.index[h].off, repo.index[h].raw_off)):
                        try:
                            piece = repo.read_chunk(h)
                        except IntegrityError as e:  # damaged already: check() reports what uses it
                            logger.warning("prune drops damaged chunk %s: %s", h[:12], e.message)
                            continue
                        writer.add(h, piece, DATA_LEVEL, again=True)  # a block that does not shrink is stored
                    writer.flush()
                finally:
                    writer.close()
                rewritten += 1
                freed += old_size - writer.written
            else:
                removed_packs += 1
                freed += old_size
            repo.root.delete(f"index/{pack}")
            repo.root.delete(rel)
            for h in hashes:
                loc = repo.index.get(h)
                if loc is not None and loc.pack == pack:
                    del repo.index[h]
        # packs with no index at all (left by a crash between pack and index)
        indexed = {loc.pack for loc in repo.index.values()}
        for rel in repo.root.listdir("packs"):
            pack = rel.rsplit("/", 1)[-1]
            if pack not in indexed and ".cognopt-tmp" not in rel:
                freed += repo.root.size(rel)
                repo.root.delete(rel)
                removed_packs += 1
        repo.root.remove_temps()
        return {
            "kept": sorted(keep),
            "forgotten": forgotten,
            "packs_removed": removed_packs,
            "packs_rewritten": rewritten,
            "bytes_freed": max(0, freed),
        }


__all__ = ["check", "prune"]
