"""The chunk layer of a backup repository: packs of compressed blocks, their indexes, block reads.

Format 2 (written since issue 17). New chunks are grouped, in the order the backup meets them,
into *blocks* of about :data:`BLOCK_RAW` bytes; each block is one zstd frame (so the small files
of a folder share one compression context, which a chunk compressed alone cannot), sealed with
AES-GCM when the repository is encrypted (associated data ``b"cognopt block " + block id``).
A pack is blocks back to back. Its index file ``index/<pack>`` is zstd-compressed JSON, sealed
too when encrypted (``b"cognopt index " + pack``)::

    {"v": 2, "blocks": [[offset, length, block id], ...],
     "chunks": {chunk hash: [block number, offset in the block's bytes, length], ...}}

Chunks are still addressed one by one (dedup, check and repair are per chunk): reading a chunk
reads and decodes its block (a small cache keeps the last blocks, so a restore decodes each once)
and checks the chunk's hash. Per kind of data: chunks of files of a compressed kind (by name:
:data:`COMPRESSED_SUFFIXES`) go into *stored* blocks (codec ``0``, no zstd work); the rest into
zstd blocks at :data:`DATA_LEVEL` (a block that does not shrink is stored as is); the snapshot's
tree at :data:`TREE_LEVEL`.

Format 1 packs (one sealed ``codec byte + payload`` per chunk, associated data = the chunk hash,
index ``{hash: [offset, length, raw length]}`` in plain zstd JSON) are still read.

Blocks are compressed and sealed on a thread pool (zstd and AES-GCM release the GIL) while the
caller goes on reading, chunking and hashing; they are written to the pack in order.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

import zstandard

from cognopt_ray._private import bounded
from cognopt_ray._private.lru import ByteLRU
from cognopt_ray._private.sealer import MAGIC
from cognopt_ray.errors import IntegrityError

if TYPE_CHECKING:
    from cognopt_ray.storage.backup import BackupRepository

#: raw bytes of chunks gathered into one block before it is compressed
BLOCK_RAW = 1024 * 1024
#: zstd level of data blocks. On benchmarks/storage.py's corpus in 1 MiB blocks: level 1 stores
#: 24.8 % of the bytes, 2 24.1 %, 3 23.0 %, at about 1 : 1.15 : 1.45 the CPU time; level 2 keeps
#: the repository well under the peers' (which compress each chunk alone at 3) and the backup fast
DATA_LEVEL = 2
#: the snapshot tree (file list and chunk hashes) is small and read rarely: compressed harder
TREE_LEVEL = 9
#: file name suffixes of data compressed already: stored as is (a zstd block that does not
#: shrink is stored as is too, whatever the suffix)
COMPRESSED_SUFFIXES = frozenset(
    "gz tgz bz2 tbz2 xz txz zst zstd lz4 lzma br 7z rar zip jar whl egg apk deb rpm cab "
    "jpg jpeg png gif webp avif heic jxl mp3 m4a aac ogg oga opus flac mp4 m4v mkv mov avi webm "
    "woff woff2 npz parquet orc".split()
)
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_tl = threading.local()


class Loc(NamedTuple):
    """Where a chunk lives: ``block`` is the block id (format 2) or ``""`` (a format-1 chunk)."""

    pack: str
    off: int
    length: int
    raw_len: int
    raw_off: int = 0
    block: str = ""


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_tl, "c", None)
    if cache is None:
        cache = _tl.c = {}
    c = cache.get(level)
    if c is None:
        c = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=False, write_content_size=True)
    return c


def stored_as_is(path: str) -> bool:
    """Whether the file at ``path`` is of a compressed kind (archives, images, audio, video):
    its chunks go to stored blocks, where zstd would spend time to save nothing."""
    dot = path.rfind(".")
    return dot > path.rfind("/") and path[dot + 1 :].lower() in COMPRESSED_SUFFIXES


def encode_block(parts: list[bytes], level: int | None, sealer: Any, bid: str) -> bytes:
    """``codec byte + payload`` of the joined ``parts`` (``level`` None: stored), sealed if ``sealer``."""
    raw = b"".join(parts)
    blob = b""
    if level is not None:
        comp = _compressor(level).compress(raw)
        if len(comp) < len(raw):
            blob = b"\x01" + comp
    if not blob:
        blob = b"\x00" + raw
    return sealer.seal(blob, b"cognopt block " + bid.encode()) if sealer else blob


def encode_index(repo: BackupRepository, pack: str, locs: dict[str, Loc]) -> bytes:
    """The index file of ``pack`` for its chunks ``locs`` (format 1 if they all are)."""
    if all(not loc.block for loc in locs.values()):
        body = {h: [loc.off, loc.length, loc.raw_len] for h, loc in locs.items()}
        return zstandard.ZstdCompressor(level=3).compress(json.dumps(body).encode())
    blocks = sorted({(loc.off, loc.length, loc.block) for loc in locs.values()})
    number = {b[2]: i for i, b in enumerate(blocks)}
    doc = {
        "v": 2,
        "blocks": [list(b) for b in blocks],
        "chunks": {h: [number[loc.block], loc.raw_off, loc.raw_len] for h, loc in locs.items()},
    }
    blob = zstandard.ZstdCompressor(level=TREE_LEVEL).compress(json.dumps(doc, separators=(",", ":")).encode())
    return repo.sealer.seal(blob, b"cognopt index " + pack.encode()) if repo.sealer else blob


def decode_index(repo: BackupRepository, pack: str, blob: bytes) -> dict[str, Loc]:
    """The chunks of one index file (either format); raises on damage."""
    if blob[:3] == MAGIC:
        if repo.sealer is None:
            raise IntegrityError(f"index of pack {pack[:12]} is encrypted", hint="configure the encryption_key")
        blob = repo.sealer.open(blob, b"cognopt index " + pack.encode())
    doc = json.loads(bounded.zstd(blob, repo.max_meta_bytes))
    if doc.get("v") == 2:
        blocks = doc["blocks"]
        return {
            h: Loc(pack, blocks[b][0], blocks[b][1], raw_len, raw_off, blocks[b][2])
            for h, (b, raw_off, raw_len) in doc["chunks"].items()
        }
    return {h: Loc(pack, off, length, raw_len) for h, (off, length, raw_len) in doc.items()}


class BlockCache:
    """The last decoded blocks: a :class:`~cognopt_ray._private.lru.ByteLRU` behind a lock."""

    def __init__(self, max_bytes: int = 16 * BLOCK_RAW) -> None:
        self._lru: ByteLRU[bytes] = ByteLRU(max_bytes, clock=time.monotonic)
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._lru.get(key)

    def put(self, key: str, raw: bytes) -> None:
        with self._lock:
            self._lru.set(key, raw, ttl=None)

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()


class PackWriter:
    """Gathers new chunks into blocks, encodes blocks on a pool, writes them to packs in order.

    ``add`` never queues a chunk the repository (or this writer) has already. Encoded blocks are
    written, in the order they were queued, by one I/O thread; a pack that reaches
    ``pack_bytes`` is closed (fsync, rename) and only then is its index written and its chunks
    put in ``repo.index``. ``flush`` writes everything queued and closes the pack; ``close``
    stops the threads; ``abort`` drops what is not written yet (the temp pack is removed).
    """

    def __init__(self, repo: BackupRepository, workers: int = 2) -> None:
        self.repo = repo
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cognopt-backup-zstd")
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cognopt-backup-write")
        self.max_inflight = 2 * workers + 2
        self.inflight: deque[Future] = deque()
        self.pending: set[str] = set()
        self.open: dict[int | None, tuple[list[bytes], list[tuple[str, int, int]], int]] = {}
        self.written = 0  # bytes of packs + indexes written
        self._pack: str | None = None
        self._cm: Any = None
        self._f: Any = None
        self._size = 0
        self._locs: dict[str, Loc] = {}

    def has(self, h: str) -> bool:
        return h in self.pending or h in self.repo.index

    def add(self, h: str, piece: bytes, level: int | None = DATA_LEVEL, *, again: bool = False) -> bool:
        """Queue chunk ``h`` (``level`` None: stored as is); False if it is there already
        (``again``: write it even if another pack has it, as ``prune`` does when it rewrites)."""
        if h in self.pending or (h in self.repo.index and not again):
            return False
        self.pending.add(h)
        parts, chunks, size = self.open.get(level) or ([], [], 0)
        parts.append(piece)
        chunks.append((h, size, len(piece)))
        size += len(piece)
        self.open[level] = (parts, chunks, size)
        if size >= BLOCK_RAW:
            self._submit(level)
        return True

    def _submit(self, level: int | None) -> None:
        got = self.open.pop(level, None)
        if not got:
            return
        parts, chunks, _ = got
        bid = uuid.uuid4().hex[:16]
        encoded = self.pool.submit(encode_block, parts, level, self.repo.sealer, bid)
        self.inflight.append(self.io.submit(self._write_block, encoded, bid, chunks))
        while self.inflight and (len(self.inflight) > self.max_inflight or self.inflight[0].done()):
            self.inflight.popleft().result()  # bounded memory; a failed write surfaces here

    def _write_block(self, encoded: Future, bid: str, chunks: list[tuple[str, int, int]]) -> None:
        blob = encoded.result()
        if self._f is None:
            self._pack = uuid.uuid4().hex
            self._cm = self.repo.root.open_write(f"packs/{self._pack[:2]}/{self._pack}")
            self._f = self._cm.__enter__()
            self._size = 0
        self._f.write(blob)
        for h, raw_off, raw_len in chunks:
            self._locs[h] = Loc(self._pack, self._size, len(blob), raw_len, raw_off, bid)
        self._size += len(blob)
        if self._size >= self.repo.pack_bytes:
            self._close_pack()

    def _close_pack(self) -> None:
        if self._f is None:
            return
        cm, pack, locs = self._cm, self._pack, self._locs
        self._cm = self._f = self._pack = None
        self._locs = {}
        cm.__exit__(None, None, None)  # fsync, rename: the pack is durable
        self.repo._maybe_fail("backup.after_pack")
        idx = encode_index(self.repo, pack, locs)
        self.repo.root.write(f"index/{pack}", idx)
        self.written += self._size + len(idx)
        self.repo.index.update(locs)  # in the index first, then out of pending: never in neither
        self.pending.difference_update(locs)

    def flush(self) -> None:
        """Write every queued chunk; the pack and its index are durable when this returns."""
        for level in list(self.open):
            self._submit(level)
        self.inflight.append(self.io.submit(self._close_pack))
        while self.inflight:
            self.inflight.popleft().result()

    def abort(self) -> None:
        """Drop what is not written yet; the temp pack being written is removed."""
        for fut in self.inflight:
            fut.cancel()
        self.inflight.clear()
        self.close()
        if self._cm is not None:
            self._cm.__exit__(RuntimeError, RuntimeError("backup aborted"), None)  # unlinks the temp file
            self._cm = self._f = None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.io.shutdown(wait=True, cancel_futures=True)


def read_block(repo: BackupRepository, loc: Loc, h: str) -> bytes:
    """The decoded bytes of the block holding chunk ``h`` (cached)."""
    key = f"{loc.pack}:{loc.off}"
    raw = repo.blocks.get(key)
    if raw is not None:
        return raw
    try:
        blob = repo.root.read_range(f"packs/{loc.pack[:2]}/{loc.pack}", loc.off, loc.length)
    except (FileNotFoundError, OSError):
        raise IntegrityError(f"backup pack {loc.pack[:12]} is missing", hint="run check()") from None
    if repo.sealer:
        blob = repo.sealer.open(blob, b"cognopt block " + loc.block.encode())
    try:
        raw = bounded.zstd(blob[1:], repo.block_max) if blob[:1] == b"\x01" else blob[1:]
    except ValueError as e:  # a damaged (or oversized) frame is damage, like a wrong hash
        raise IntegrityError(
            f"backup block of chunk {h[:12]} does not decompress ({e})", hint="run check(read_data=True)"
        ) from None
    repo.blocks.put(key, raw)
    return raw


__all__ = [
    "BLOCK_RAW",
    "DATA_LEVEL",
    "TREE_LEVEL",
    "Loc",
    "PackWriter",
    "BlockCache",
    "encode_block",
    "encode_index",
    "decode_index",
    "stored_as_is",
    "read_block",
]
