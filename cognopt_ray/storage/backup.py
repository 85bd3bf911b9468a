"""Incremental, deduplicated backups: FastCDC chunks addressed by BLAKE3, zstd blocks, optional AES-GCM.

The repository lives on any pyarrow.fs path (a local folder by default), laid out like restic's
(format 2; the chunk layer is :mod:`cognopt_ray.storage.backup_packs`, which also reads format 1):

* ``config.json`` — format version, chunker parameters, whether the repository is encrypted.
* ``packs/<xx>/<pack id>`` — ~1 MiB *blocks* of chunks, each one zstd frame (or stored as is),
  sealed with AES-GCM when ``encryption_key`` is set; about ``backup_pack_bytes`` per pack.
* ``index/<pack id>`` — the blocks of that pack and which chunk sits where in them (sealed too).
* ``snapshots/<snapshot id>`` — time, source, statistics and the chunk hashes of the snapshot's
  *tree*: the file list (path, size, mtime, chunk hashes, metadata) as JSON lines, itself cut with
  FastCDC into ~2 KiB pieces, so an unchanged part of the file list costs nothing in the next
  snapshot and an edited file rewrites a few KiB of it.

Write order makes a crash harmless: pack (temp, fsync, rename) → its index → the snapshot file.
A crash leaves at worst a pack no index or snapshot refers to (``prune`` removes it); a snapshot
file never names a chunk that is not durable. ``backup()`` writes only chunks the repository does
not have, and skips reading files whose size and mtime match the parent snapshot (as restic does).

Example:
    >>> import tempfile, pathlib
    >>> src = pathlib.Path(tempfile.mkdtemp()); (src / "a.txt").write_text("hello " * 1000)
    6000
    >>> repo = BackupRepository(tempfile.mkdtemp())
    >>> snap = repo.backup(str(src))
    >>> snap["files"], snap["bytes_scanned"]
    (1, 6000)
    >>> repo.backup(str(src))["bytes_added"] < 1000   # nothing new but the snapshot record
    True
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import blake3
import zstandard
from pyfastcdc import FastCDC

from cognopt_ray._private import bounded
from cognopt_ray._private.sealer import Sealer
from cognopt_ray.errors import Conflict, IntegrityError, InvalidInput, NotFound, StorageBackendError
from cognopt_ray.storage import backup_packs as packs
from cognopt_ray.storage.paths import Confined, check_no_symlinks, write_beneath
from cognopt_ray.storage.sources import SourceFiles, progress_bar
from cognopt_ray.storage.tiers import TierRoot, configure

logger = logging.getLogger(__name__)

#: format 2: chunks grouped into compressed blocks (see backup_packs); format 1 is still read
FORMAT_VERSION = 2
#: decoded size limit of an index or snapshot file (they list chunk hashes; far smaller in practice)
MAX_META_BYTES = 256 * 1024 * 1024
#: the tree (file list) is cut into small pieces, so an edit costs a few KiB of it, not 16
TREE_CHUNKER = {"avg": 2048, "min": 512, "max": 8192}
TREE_CHUNKER_V1 = {"avg": 16 * 1024, "min": 4 * 1024, "max": 64 * 1024}
#: files up to this size are one chunk without running the chunker
_ONE_CHUNK = 16 * 1024
#: the reading thread reads files in batches, at most this many batches ahead of the chunker
_READ_BATCH_FILES = 64
_READ_BATCH_BYTES = 4 * 1024 * 1024
_READ_AHEAD_BATCHES = 4
_TREE_JSON = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


class BackupRepository:
    """A deduplicated chunk repository with snapshots.

    Args:
        uri: folder or pyarrow.fs URI of the repository (created if empty).
        key_b64: ``encryption_key`` (base64 of 32 bytes) to encrypt chunks and snapshots.
        chunk_avg: FastCDC average chunk size (min = avg/4, max = avg*4).
        pack_bytes: target pack size.
        progress: tqdm bars on a terminal.

    Example:
        >>> repo = BackupRepository("/tmp/repo")            # doctest: +SKIP
        >>> snap = repo.backup("/data")                    # doctest: +SKIP
        >>> repo.restore(snap["snapshot_id"], target="/tmp/out")  # doctest: +SKIP
    """

    def __init__(
        self,
        uri: str,
        *,
        key_b64: str | None = None,
        chunk_avg: int = 64 * 1024,
        pack_bytes: int = 16 * 1024 * 1024,
        progress: bool = True,
    ) -> None:
        self.root = TierRoot(uri)
        self.uri = uri
        self.progress = progress
        self.pack_bytes = pack_bytes
        #: held by backup, restore, check and prune for their whole run
        self.lock = threading.RLock()
        self._fault: str | None = None
        sealer = Sealer(key_b64, b"cognopt backup") if key_b64 else None
        if self.root.exists("config.json"):
            cfg = json.loads(self.root.read("config.json"))
            if cfg.get("encrypted") and sealer is None:
                raise InvalidInput(
                    f"backup repository {uri} is encrypted", hint="configure the encryption_key it was made with"
                )
            if sealer is not None and cfg.get("encrypted"):
                sealer.open(bytes.fromhex(cfg["key_check"]), b"config")
            if sealer is not None and not cfg.get("encrypted"):
                sealer = None  # an unencrypted repository stays unencrypted
            if int(cfg.get("version", 1)) > FORMAT_VERSION:
                raise InvalidInput(
                    f"backup repository {uri} has format {cfg['version']}, newer than this cognopt_ray reads",
                    hint=f"use a newer cognopt_ray (this one reads formats 1 to {FORMAT_VERSION})",
                )
            self.config = cfg
        else:
            self.config = {
                "version": FORMAT_VERSION,
                "id": uuid.uuid4().hex,
                "created": time.time(),
                "chunker": {"avg": chunk_avg, "min": chunk_avg // 4, "max": chunk_avg * 4},
                "tree_chunker": TREE_CHUNKER,
                "encrypted": sealer is not None,
                "key_check": sealer.seal(b"cognopt", b"config").hex() if sealer else None,
            }
            self.root.write("config.json", json.dumps(self.config).encode())
        self.sealer = sealer
        ch = self.config["chunker"]
        self._cdc = FastCDC(ch["avg"], min_size=ch["min"], max_size=ch["max"])
        self._chunk_max = max(int(ch["max"]), 64 * 1024)  # no chunk (data or tree) decodes to more
        tc = self.config.get("tree_chunker", TREE_CHUNKER_V1)
        self._tree_cdc = FastCDC(tc["avg"], min_size=tc["min"], max_size=tc["max"])
        self._hkey = (
            blake3.blake3(sealer.key, derive_key_context="cognopt backup chunk id").digest() if sealer else None
        )
        self.max_meta_bytes = MAX_META_BYTES
        #: no block decodes to more: a block closes at the first chunk that takes it past BLOCK_RAW
        self.block_max = packs.BLOCK_RAW + self._chunk_max
        self.blocks = packs.BlockCache()
        self.index: dict[str, packs.Loc] = {}
        self.load_index()

    @classmethod
    def for_settings(cls, settings: Any) -> BackupRepository:
        cfg = settings.storage
        configure(cfg.s3)
        uri = cfg.backup_root or f"{settings.storage_root.rstrip('/')}/backups"
        key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
        return cls(
            uri, key_b64=key, chunk_avg=cfg.backup_chunk_avg, pack_bytes=cfg.backup_pack_bytes, progress=cfg.progress
        )

    def arm_fault(self, point: str | None) -> None:
        """Test hook: exit the process (as if killed) at ``point``."""
        self._fault = point

    def _maybe_fail(self, point: str) -> None:
        if self._fault == point:
            os._exit(1)

    # ------------------------------------------------------------------------------- chunk layer
    def _hash(self, data: bytes | memoryview) -> str:
        if self._hkey is not None:
            return blake3.blake3(data, key=self._hkey).hexdigest()
        return blake3.blake3(data).hexdigest()

    def load_index(self) -> None:
        """Read every pack's index file into :attr:`index` (chunk hash → :class:`Loc`)."""
        self.index.clear()
        self.blocks.clear()
        for rel in self.root.listdir("index"):
            pack = rel.rsplit("/", 1)[-1]
            try:
                self.index.update(packs.decode_index(self, pack, self.root.read(rel)))
            except StorageBackendError:
                raise  # the store did not answer: nothing may be concluded from a missing index
            except Exception as e:  # noqa: BLE001 - a damaged index is reported by check()
                logger.warning("backup index %s unreadable: %s", rel, e)

    def _decode_v1_chunk(self, h: str, blob: bytes) -> bytes:
        if self.sealer:
            blob = self.sealer.open(blob, h.encode())
        try:
            return bounded.zstd(blob[1:], self._chunk_max) if blob[:1] == b"\x01" else blob[1:]
        except ValueError as e:  # a damaged (or oversized) frame is damage, like a wrong hash
            raise IntegrityError(
                f"backup chunk {h[:12]} does not decompress ({e})", hint="run check(read_data=True)"
            ) from None

    def read_chunk(self, h: str) -> bytes:
        """The bytes of chunk ``h``, checked against its hash (:class:`IntegrityError` if not)."""
        loc = self.index.get(h)
        if loc is None:
            raise IntegrityError(f"backup chunk {h[:12]} is missing from the repository", hint="run check()")
        if loc.block:
            raw = packs.read_block(self, loc, h)
            data = raw[loc.raw_off : loc.raw_off + loc.raw_len]
        else:
            try:
                blob = self.root.read_range(f"packs/{loc.pack[:2]}/{loc.pack}", loc.off, loc.length)
            except (FileNotFoundError, OSError):
                raise IntegrityError(f"backup pack {loc.pack[:12]} is missing", hint="run check()") from None
            data = self._decode_v1_chunk(h, blob)
        if len(data) != loc.raw_len or self._hash(data) != h:
            raise IntegrityError(f"backup chunk {h[:12]} does not match its hash", hint="run check(read_data=True)")
        return data

    PackWriter = packs.PackWriter

    def _upgrade_config(self) -> None:
        """A format-1 repository written to by this version: say so in config.json (its packs
        and indexes stay readable; the new ones are format 2)."""
        if self.config.get("version", 1) < FORMAT_VERSION:
            self.config = {**self.config, "version": FORMAT_VERSION}
            self.root.write("config.json", json.dumps(self.config).encode())

    # ------------------------------------------------------------------------------- snapshots
    def snapshots(self) -> list[dict[str, Any]]:
        """All snapshots, oldest first (without their trees)."""
        out = []
        for rel in self.root.listdir("snapshots"):
            try:
                out.append(self._read_snapshot_file(rel))
            except StorageBackendError:
                raise  # prune must never take an unreadable snapshot for an absent one
            except Exception as e:  # noqa: BLE001 - a torn snapshot file is not a snapshot
                logger.warning("snapshot %s unreadable: %s", rel, e)
        out.sort(key=lambda s: (s["time"], s["snapshot_id"]))
        return [{k: v for k, v in s.items() if k != "tree"} for s in out]

    def _read_snapshot_file(self, rel: str) -> dict[str, Any]:
        blob = self.root.read(rel)
        if self.sealer:
            blob = self.sealer.open(blob, b"snapshot")
        return json.loads(bounded.zstd(blob, MAX_META_BYTES))

    def snapshot(self, snapshot_id: str) -> dict[str, Any]:
        """The record of one snapshot (``"latest"`` for the newest); NotFound when absent."""
        if not isinstance(snapshot_id, str) or not snapshot_id.isalnum():
            raise InvalidInput(f"snapshot id {snapshot_id!r} is not valid", hint="use an id from GET storage/snapshots")
        if snapshot_id == "latest":
            snaps = self.snapshots()
            if not snaps:
                raise NotFound("the repository has no snapshots", hint="run a backup first")
            snapshot_id = snaps[-1]["snapshot_id"]
        rel = f"snapshots/{snapshot_id}"
        if not self.root.exists(rel):
            raise NotFound(f"snapshot {snapshot_id!r} does not exist", hint="list them with GET storage/snapshots")
        return self._read_snapshot_file(rel)

    def take_snapshot_file(self, snapshot_id: str, *, dry_run: bool = False) -> bytes:
        """The stored bytes of a snapshot file, removed from the repository unless ``dry_run``; its
        chunks stay until a :meth:`prune`, so :meth:`put_snapshot_file` makes it whole again.

        Raises:
            InvalidInput: the id is not valid.
            NotFound: there is no such snapshot.
        """
        self.snapshot(snapshot_id)  # validates the id, NotFound when absent
        rel = f"snapshots/{snapshot_id}"
        with self.lock:
            blob = self.root.read(rel)
            if not dry_run:
                self.root.delete(rel)
        return blob

    def put_snapshot_file(self, snapshot_id: str, blob: bytes) -> dict[str, Any]:
        """Put back a snapshot file taken by :meth:`take_snapshot_file`.

        Raises:
            InvalidInput: the id is not valid. Conflict: a snapshot with this id exists already.
        """
        if not isinstance(snapshot_id, str) or not snapshot_id.isalnum():
            raise InvalidInput(f"snapshot id {snapshot_id!r} is not valid")
        rel = f"snapshots/{snapshot_id}"
        with self.lock:
            if self.root.exists(rel):
                raise Conflict(f"snapshot {snapshot_id!r} exists already", hint="nothing to restore")
            self.root.write(rel, blob)
        self.snapshot(snapshot_id)  # reads it back: a blob that is no snapshot fails here
        return {"snapshot_id": snapshot_id, "bytes": len(blob)}

    def tree(self, snapshot_id: str) -> list[dict[str, Any]]:
        """The file entries of a snapshot."""
        snap = self.snapshot(snapshot_id)
        data = b"".join(self.read_chunk(h) for h in snap["tree"])
        return [json.loads(line) for line in data.decode().splitlines() if line]

    # ------------------------------------------------------------------------------- backup
    def backup(self, source: str | Any, *, tag: str | None = None) -> dict[str, Any]:
        """Back up ``source`` (a folder, a pyarrow.fs URI, or a :class:`TieredStore`).

        Returns:
            ``snapshot_id``, ``files``, ``bytes_scanned`` (bytes of the source), ``bytes_read``
            (bytes actually read; unchanged files are skipped), ``bytes_added`` (bytes written to
            the repository by this backup: new packs, their indexes and the snapshot file),
            ``chunks_new``, ``seconds``.
        """
        with self.lock:
            t0 = time.perf_counter()
            is_store = hasattr(source, "iter_items_for_backup")
            source_name = "store" if is_store else (source.uri if isinstance(source, Confined) else str(source))
            parent = next((s for s in reversed(self.snapshots()) if s["source"] == source_name), None)
            parent_files: dict[str, dict[str, Any]] = {}
            if parent is not None and not is_store:
                parent_files = {e["path"]: e for e in self.tree(parent["snapshot_id"])}
            entries: list[dict[str, Any]] = []
            stats = {"files": 0, "bytes_scanned": 0, "bytes_read": 0, "chunks_new": 0}
            self._upgrade_config()
            writer = packs.PackWriter(self, workers=max(2, min(4, os.cpu_count() or 2)))
            try:
                if is_store:
                    items: Iterable[tuple[str, bytes, dict[str, Any]]] = source.iter_items_for_backup()
                    self._backup_items(((p, lambda d=d: d, 0, None, m) for p, d, m in items), writer, entries, stats)
                else:
                    src = SourceFiles(source if isinstance(source, Confined) else str(source))
                    files = src.files()
                    bar = progress_bar(sum(f[1] for f in files), "backup", self.progress)
                    work = []
                    for rel, size, mtime in files:
                        prev = parent_files.get(rel)
                        if (
                            prev is not None
                            and prev["size"] == size
                            and prev["mtime_ns"] == mtime
                            and all(h in self.index for h in prev["chunks"])
                        ):
                            entries.append(prev)
                            stats["files"] += 1
                            stats["bytes_scanned"] += size
                            if bar:
                                bar.update(size)
                            continue
                        work.append((rel, (lambda r=rel: src.read(r)), size, mtime, None))
                    try:
                        self._backup_items(iter(work), writer, entries, stats, bar)
                    finally:
                        src.close()
                        if bar:
                            bar.close()
                    stats["skipped"] = src.skipped
                entries.sort(key=lambda e: e["path"])
                encode = _TREE_JSON.encode
                tree_bytes = "".join([encode(e) + "\n" for e in entries]).encode()
                tree = []
                for c in self._tree_cdc.cut_buf(tree_bytes):
                    piece = bytes(c.data)
                    h = self._hash(piece)
                    tree.append(h)
                    writer.add(h, piece, packs.TREE_LEVEL)
                writer.flush()
            except BaseException:
                writer.abort()
                raise
            writer.close()
            self._maybe_fail("backup.before_snapshot")
            snap_id = uuid.uuid4().hex[:16]
            snap = {
                "snapshot_id": snap_id,
                "time": time.time(),
                "tag": tag,
                "source": source_name,
                "parent": parent["snapshot_id"] if parent else None,
                "tree": tree,
                **stats,
                "bytes_added": 0,
                "seconds": 0.0,
            }
            snap["seconds"] = round(time.perf_counter() - t0, 4)
            blob = self._snapshot_blob(snap)
            snap["bytes_added"] = writer.written + len(blob)
            blob = self._snapshot_blob(snap)
            self.root.write(f"snapshots/{snap_id}", blob)
            snap["time_iso"] = _dt.datetime.fromtimestamp(snap["time"], _dt.timezone.utc).isoformat(timespec="seconds")
            return {k: v for k, v in snap.items() if k != "tree"}

    def _snapshot_blob(self, snap: dict[str, Any]) -> bytes:
        blob = zstandard.ZstdCompressor(level=19).compress(json.dumps(snap, separators=(",", ":")).encode())
        return self.sealer.seal(blob, b"snapshot") if self.sealer else blob

    def _backup_items(
        self, work: Iterator[tuple], writer: packs.PackWriter, entries: list, stats: dict, bar: Any = None
    ) -> None:
        """Chunk and hash each file on this thread while one thread reads the next files ahead,
        a batch at a time (``os.read`` releases the GIL), and the writer's pool compresses and
        seals full blocks."""
        cdc, hash_, add, has = self._cdc, self._hash, writer.add, writer.has
        ahead: deque[tuple[list[tuple], Future]] = deque()
        batch: list[tuple] = []
        batch_bytes = 0

        def read_all(items: list[tuple]) -> list[bytes]:
            return [item[1]() for item in items]

        def process(job: tuple[list[tuple], Future]) -> None:
            items, fut = job
            for (path, _, _, mtime, meta), data in zip(items, fut.result()):
                n = len(data)
                hashes = []
                if n:
                    level = None if packs.stored_as_is(path) else packs.DATA_LEVEL
                    # memoryviews into the file's bytes, no copies: they live until their block is encoded
                    for piece in [data] if n <= _ONE_CHUNK else [c.data for c in cdc.cut_buf(data)]:
                        h = hash_(piece)
                        hashes.append(h)
                        if not has(h):
                            add(h, piece, level)
                            stats["chunks_new"] += 1
                entry = {"path": path, "size": n, "mtime_ns": mtime, "chunks": hashes}
                if meta:
                    entry["meta"] = meta
                entries.append(entry)
                stats["files"] += 1
                stats["bytes_scanned"] += n
                stats["bytes_read"] += n
                if bar:
                    bar.update(n)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cognopt-backup-read") as reader:
            try:
                for item in work:
                    batch.append(item)
                    batch_bytes += item[2]
                    if len(batch) >= _READ_BATCH_FILES or batch_bytes >= _READ_BATCH_BYTES:
                        ahead.append((batch, reader.submit(read_all, batch)))
                        batch, batch_bytes = [], 0
                        if len(ahead) > _READ_AHEAD_BATCHES:
                            process(ahead.popleft())
                if batch:
                    ahead.append((batch, reader.submit(read_all, batch)))
                while ahead:
                    process(ahead.popleft())
            finally:
                for _, fut in ahead:
                    fut.cancel()

    # ------------------------------------------------------------------------------- restore
    def read_entry(self, entry: dict[str, Any]) -> bytes:
        """The bytes of a tree entry: its chunks, each checked against its hash (and, for a
        format-1 entry, the whole file against its BLAKE3 checksum too)."""
        data = b"".join(self.read_chunk(h) for h in entry["chunks"])
        if len(data) != entry["size"] or ("blake3" in entry and blake3.blake3(data).hexdigest() != entry["blake3"]):
            raise IntegrityError(
                f"restored {entry['path']!r} does not match its checksum", hint="run check(read_data=True)"
            )
        return data

    def restore(
        self,
        snapshot_id: str,
        item_ids: list[str] | None = None,
        target: str | Confined | None = None,
        store: Any = None,
    ) -> dict[str, Any]:
        """Restore a snapshot (or some items of it) into ``target`` (a folder) or ``store``.

        Every file is checked against its BLAKE3 checksum before it is written. Into a local folder,
        every path is checked first (no ``..``, no symlink on the way: 403 and nothing written),
        then written from the folder's root with ``O_NOFOLLOW`` on each component.
        """
        with self.lock:
            entries = self.tree(snapshot_id)
            if item_ids is not None:
                wanted = {f"items/{i}" for i in item_ids} | set(item_ids)
                entries = [e for e in entries if e["path"] in wanted]
                found = {e["path"] for e in entries}
                missing = [i for i in item_ids if f"items/{i}" not in found and i not in found]
                if missing:
                    raise NotFound(
                        f"snapshot {snapshot_id!r} does not hold {missing[:5]}", hint="list the snapshot's items"
                    )
            if target is None and store is None:
                raise InvalidInput("restore needs a target folder or the store")
            shown = target.uri if isinstance(target, Confined) else target
            out_root, local = None, None  # (root real path, folder below it) for local targets
            if isinstance(target, Confined) and target.root is not None:
                local = (target.root, target.rel)
            elif isinstance(target, str) and "://" not in target:
                local = (os.path.abspath(target), "")
            elif target is not None:
                out_root = TierRoot(target.uri if isinstance(target, Confined) else target)
            if local is not None:
                os.makedirs(local[0], exist_ok=True)
                for e in entries:
                    rel = e["path"]
                    if rel.startswith("/") or ".." in rel.split("/"):
                        raise IntegrityError(f"snapshot path {rel!r} escapes the target")
                    check_no_symlinks(
                        local[0], os.path.join(local[1], rel), "restore target", shown, "storage.restore_roots"
                    )
            n = size = 0
            bar = progress_bar(sum(e["size"] for e in entries), "restore", self.progress)
            for e in entries:
                data = self.read_entry(e)
                if local is not None:
                    write_beneath(local[0], os.path.join(local[1], e["path"]), data)
                elif out_root is not None:
                    rel = e["path"]
                    if rel.startswith("/") or ".." in rel.split("/"):
                        raise IntegrityError(f"snapshot path {rel!r} escapes the target")
                    out_root.write(rel, data)
                else:
                    if "meta" not in e:
                        raise InvalidInput(
                            "this snapshot is of a folder, not of the store", hint="restore it to a target folder"
                        )
                    store.restore_entry(data, e["meta"])
                n += 1
                size += len(data)
                if bar:
                    bar.update(len(data))
            if bar:
                bar.close()
            return {"snapshot_id": snapshot_id, "restored": n, "bytes": size, "target": shown or "store"}

    def find_latest(self, path: str, checksum: str | None = None) -> tuple[str, bytes, dict[str, Any]] | None:
        """The newest snapshot entry at ``path`` (with this item checksum, if given): ``(snapshot, data, meta)``."""
        for snap in reversed(self.snapshots()):
            for e in self.tree(snap["snapshot_id"]):
                if e["path"] == path and (checksum is None or e.get("meta", {}).get("checksum") == checksum):
                    return snap["snapshot_id"], self.read_entry(e), e.get("meta", {})
        return None

    # ------------------------------------------------------------------------------- check, prune
    def check(self, read_data: bool | float = False, repair: bool = False) -> dict[str, Any]:
        """Verify the repository (see :func:`cognopt_ray.storage.backup_upkeep.check`)."""
        from cognopt_ray.storage import backup_upkeep

        return backup_upkeep.check(self, read_data=read_data, repair=repair)

    def prune(
        self, keep_last: int | None = None, keep_daily: int | None = None, keep_weekly: int | None = None
    ) -> dict[str, Any]:
        """Forget snapshots outside the keep policy and free their chunks (see
        :func:`cognopt_ray.storage.backup_upkeep.prune`)."""
        from cognopt_ray.storage import backup_upkeep

        return backup_upkeep.prune(self, keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly)

    def size_on_disk(self) -> int:
        """Bytes of every file in the repository."""
        return sum(self.root.size(r) for r in self.root.listdir())


def repository_size(path: str) -> int:
    """Bytes of all files under a local folder (used to compare repositories)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except FileNotFoundError:
                pass
    return total


__all__ = ["BackupRepository", "repository_size", "Conflict"]
