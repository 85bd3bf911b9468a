"""The tiered store: items in HOT/WARM/COLD/ARCHIVE with recorded codec choices and checksums.

This class holds the storage engine's state; the Ray actor (:mod:`cognopt_ray.storage._actor`)
wraps one instance. It can also be used in-process (tests, benchmarks of the plain path).

Write path (durability, DESIGN section 6): the payload is compressed (and sealed with AES-GCM
when a key is configured), written to a temp name in the tier root, fsynced and renamed (or, for
payloads under ``inline_max_bytes``, put in the catalog's ``blobs`` table); only then is the
catalog row inserted, in one transaction. A crash before the commit leaves an orphan file that
start-up removes; a crash after it leaves a complete item. Overwrites write a new file name, so
the old version stays valid until the new row is committed.

Read path: the stored bytes are checked against the stored checksum (BLAKE3) and the raw bytes
against the raw checksum; a mismatch raises :class:`~cognopt_ray.errors.IntegrityError`, never
returns bad bytes.

Example:
    >>> from cognopt_ray.config import Settings
    >>> import tempfile
    >>> store = TieredStore(Settings.load(storage_root=tempfile.mkdtemp()))
    >>> store.put("doc-1", b"hello " * 100)["tier"]
    'warm'
    >>> store.get("doc-1")[:5]
    b'hello'
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable

import blake3
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import zstandard

from cognopt_ray.config import Settings, check_service_name
from cognopt_ray.errors import Forbidden, InsufficientStorage, IntegrityError, InvalidInput, NotFound
from cognopt_ray.storage import codecs
from cognopt_ray.storage.access import INTERNAL, Caller, check_owner, check_read_id, check_write_id, missing
from cognopt_ray.storage.catalog import Catalog, ItemRecord, check_item_id
from cognopt_ray.storage.codecs import TIERS, CodecChoice
from cognopt_ray.storage.requests import DEFAULT_SERVICE, PutRequest, put_requests
from cognopt_ray.storage.sealing import ContentHash, dictionary_sealer, open_dictionary, seal_dictionary
from cognopt_ray._private.sealer import Sealer
from cognopt_ray.storage.tiers import TierRoot

logger = logging.getLogger(__name__)

TIER_ORDER = {t: i for i, t in enumerate(TIERS)}
NEXT_TIER = {"hot": "warm", "warm": "cold", "cold": "archive"}


def b3(data: bytes | memoryview) -> str:
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO if len(data) > 4 << 20 else 1).hexdigest()


def _hash_file(root: TierRoot, rel: str) -> str:
    h = blake3.blake3()
    lp = root.local_path(rel)
    if lp is not None:
        h.update_mmap(lp) if os.path.getsize(lp) else None
        return h.hexdigest()
    with root.fs.open_input_stream(root.path(rel)) as f:
        while True:
            block = f.read(4 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@dataclass
class _Prepared:
    """An item encoded and (if it is a file) written, waiting for its catalog commit."""

    rec: ItemRecord
    inline: bytes | None = None
    chunks: list[tuple[str, dict[str, Any] | None]] | None = None  # (hash, new-chunk row or None)
    hot_value: Any = None


@dataclass
class Encoded:
    """Bytes already compressed by the client (:class:`StorageClient` encodes large items in the
    caller's process so the actor only writes, fsyncs and commits). Never encrypted here."""

    payload: bytes
    raw_size: int
    checksum: str
    choice: dict[str, Any]

    def __len__(self) -> int:
        return self.raw_size


def encode_for(data: bytes, tier: str, codec: str, level: int | None) -> Encoded:
    """What the actor would store for ``data`` in ``tier`` (no service dictionary: large items only)."""
    choice = codecs.choose_codec(data, tier) if codec == "auto" else codecs.requested(codec, level)
    cdict = {**choice.to_dict(), "auto": codec == "auto", "format": "blob"}
    return Encoded(codecs.compress(data, choice), len(data), b3(data), cdict)


def decode_from(stored: bytes, codec: dict[str, Any], raw_size: int, checksum: str) -> bytes | None:
    """Decode a located blob in the caller's process; ``None`` when it does not verify."""
    try:
        raw = codecs.decompress(stored, CodecChoice.from_dict(codec), None, raw_size)
    except Exception:  # noqa: BLE001 - the caller falls back to the actor, which reports damage
        return None
    return raw if b3(raw) == checksum else None


def _size(data: Any) -> int:
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 1 << 30


def _to_table(data: Any) -> pa.Table | None:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    mod = type(data).__module__
    if mod.startswith("pandas") and type(data).__name__ == "DataFrame":
        return pa.Table.from_pandas(data, preserve_index=False)
    return None


class TieredStore:
    """Items in four tiers with automatic codecs, a SQLite catalog, lifecycle and checksums.

    Args:
        settings: the package settings (``storage_root``, ``encryption_key``, ``storage.*``).
        use_object_store: keep HOT items in Ray's object store (needs a Ray connection; the
            actor sets it). Without it HOT reads come from the durable copy.

    Example:
        >>> store = TieredStore(settings)                       # doctest: +SKIP
        >>> store.put("t1", pa.table({"x": [1, 2]}), tier="cold")  # doctest: +SKIP
        >>> store.get("t1", columns=["x"])                      # doctest: +SKIP
    """

    def __init__(self, settings: Settings, *, use_object_store: bool = False) -> None:
        self.settings = settings
        self.cfg = settings.storage
        self.use_object_store = use_object_store
        state = settings.root / "storage"
        state.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(state / "catalog.sqlite")
        base = settings.storage_root.rstrip("/")
        self.roots: dict[str, TierRoot] = {}
        for tier in TIERS:
            uri = self.cfg.tier_roots.get(tier) or f"{base}/tiers/{tier}"
            self.roots[tier] = TierRoot(uri, min_free_bytes=self.cfg.min_free_bytes)
        key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
        self.sealer = Sealer(key, b"cognopt blobs") if key else None
        self.hashes = ContentHash(key)  # keyed item checksums and chunk hashes with a key (see sealing.py)
        self._dict_sealer = dictionary_sealer(settings)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cognopt-store")
        self._dicts: dict[int, tuple[str, codecs.Dictionary]] = {}
        self._service_dict: dict[str, int] = {}
        self.refused_dictionaries: list[int] = []
        for dict_id, (service, blob) in sorted(self.catalog.dictionaries().items()):
            data = open_dictionary(self._dict_sealer, service, blob)
            if data is None:
                self.refused_dictionaries.append(dict_id)
                continue
            self._dicts[dict_id] = (service, codecs.load_dictionary(data))
            self._service_dict[service] = dict_id
        self._hot: dict[str, Any] = {}  # item_id -> ObjectRef (owned by this process)
        self._access: dict[str, tuple[float, int, float]] = {}  # pending access updates
        self._fault: str | None = None
        self.counters = {"puts": 0, "gets": 0, "hot_hits": 0, "migrations": 0, "integrity_errors": 0, "repairs": 0}
        self._backups = None
        self.recovered = self.recover()

    # ---------------------------------------------------------------------------------- helpers
    def arm_fault(self, point: str | None) -> None:
        """Test hook: the process exits (as if killed) when it reaches ``point`` next."""
        self._fault = point

    def _maybe_fail(self, point: str) -> None:
        if self._fault == point:
            logger.warning("fault injection: exiting at %s", point)
            os._exit(1)

    def service_settings(self, service: str) -> dict[str, Any]:
        """The effective storage settings of ``service`` (settings, then optimize-service overrides)."""
        base = self.settings.service(service).storage.model_dump()
        base.update(self.catalog.service_overrides().get(service, {}))
        return base

    def _aad(self, key: str) -> bytes:
        return key.encode()

    def _encode(self, key: str, payload: bytes) -> bytes:
        return self.sealer.seal(payload, self._aad(key)) if self.sealer else payload

    def _decode(self, key: str, stored: bytes, encrypted: bool) -> bytes:
        if not encrypted:
            return stored
        if self.sealer is None:
            raise IntegrityError(f"{key!r} is encrypted but no encryption_key is configured",
                                 hint="set COGNOPT_ENCRYPTION_KEY to the key it was written with")
        return self.sealer.open(stored, self._aad(key))

    def _zdict(self, dict_id: int | None) -> codecs.Dictionary | None:
        if dict_id is None:
            return None
        if dict_id not in self._dicts:
            raise IntegrityError(f"zstd dictionary {dict_id} is missing or was refused (not sealed with this key)",
                                 hint="restore the item from a backup with repair(item_id)")
        return self._dicts[dict_id][1]

    def _rel(self, tier: str, item_id: str, ext: str = "blob") -> str:
        h = blake3.blake3(item_id.encode()).hexdigest()[:2]
        return f"items/{h}/{item_id}.{uuid.uuid4().hex[:10]}.{ext}"

    @staticmethod
    def _loc_file(loc: str) -> str | None:
        return loc[5:] if loc.startswith("file:") else None

    # ---------------------------------------------------------------------------------- recovery
    def recover(self) -> dict[str, int]:
        """Start-up: drop temp files and files no catalog row points at (left by a crash)."""
        out = {"temps": 0, "orphans": 0, "items": 0}
        referenced: dict[str, set[str]] = {t: set() for t in TIERS}
        for tier, loc in self.catalog.query("SELECT tier, location FROM items"):
            f = self._loc_file(loc)
            if f:
                referenced[tier].add(f)
            out["items"] += 1
        for (loc,) in self.catalog.query("SELECT location FROM chunks"):
            f = self._loc_file(loc)
            if f:
                referenced["archive"].add(f)
        for tier, root in self.roots.items():
            out["temps"] += root.remove_temps()
            for rel in root.listdir("items") + root.listdir("chunks"):
                if rel not in referenced[tier]:
                    root.delete(rel)
                    out["orphans"] += 1
        if out["temps"] or out["orphans"]:
            logger.info("storage recovery removed %d temp and %d orphan files", out["temps"], out["orphans"])
        return out

    # ---------------------------------------------------------------------------------- writes
    def put(self, item_id: str, data: Any, *, service: str = DEFAULT_SERVICE, tier: str | None = None,
            codec: str | None = None, level: int | None = None, caller: Caller | None = None) -> dict[str, Any]:
        """Store one item; returns its catalog record. See :meth:`put_many` for the arguments."""
        return self.put_many([PutRequest(item_id, data, service, tier, codec, level)], caller=caller)[0]

    def put_many(self, items: list[PutRequest | dict[str, Any]], caller: Caller | None = None) -> list[dict[str, Any]]:
        """Store several items with one catalog commit (group commit).

        Each entry is a :class:`~cognopt_ray.storage.requests.PutRequest` (or a dict of its
        fields): ``item_id``, ``data`` (bytes, a JSON value, or a table), ``service``, ``tier``
        (default: the service's ``default_tier``), ``codec`` (``auto`` or a codec name; default
        the service's codec) and ``level``. All entries are checked before anything is written:
        one bad entry fails the call and changes nothing.

        Ownership (:mod:`cognopt_ray.storage.access`): an id owned by another service than the
        entry's ``service`` is refused (403) unless ``caller`` is admin (the record then carries
        ``previous_service``); reserved ids are refused for REST callers; a service's stored bytes
        stay within its ``quota_bytes`` (507 otherwise). ``caller`` defaults to in-cluster code.
        """
        caller = caller or INTERNAL
        norm = []
        for r in put_requests(items):
            svc = self.service_settings(r.service)
            tier = r.tier or codecs.check_tier(svc["default_tier"])
            codec = r.codec or codecs.check_codec(svc["codec"])
            if r.codec is None and codec != "auto":
                codecs.requested(codec, r.level)  # the level against the service's codec
            check_write_id(r.item_id, r.service, caller)
            norm.append((r.item_id, r.data, r.service, tier, codec, r.level))
        with self._lock:
            # Under the store lock (the actor runs one call at a time): nothing can take an id
            # between this check and the commit below.
            owners = self._owners([n[0] for n in norm])
            taken_over = {n[0]: owners[n[0]][0] for n in norm if n[0] in owners
                          and check_owner(n[0], owners[n[0]][0], n[2], caller)}
            self._maybe_train_dictionaries(norm)
            # Large items are encoded and written in parallel (zstd, BLAKE3 and fsync release the
            # GIL); small ones inline, where a thread hop would cost more than the work.
            futures = [self._pool.submit(self._prepare, *n) if _size(n[1]) >= 256 * 1024 or n[3] in ("cold", "archive")
                       else n for n in norm]
            prepared: list[_Prepared] = []
            error: BaseException | None = None
            for f in futures:
                try:
                    prepared.append(f.result() if not isinstance(f, tuple) else self._prepare(*f))
                except BaseException as e:  # noqa: BLE001 - clean up below, then re-raise
                    error = error or e
            if error is not None:
                self._discard(prepared)
                raise error
            try:
                self._check_quota(prepared, owners)
                self._check_capacity(prepared)
                self._maybe_fail("store.before_commit")
                self._commit(prepared)
            except BaseException:
                self._discard(prepared)
                raise
            self.counters["puts"] += len(prepared)
            out = [p.rec.public() for p in prepared]
            for rec in out:
                if rec["item_id"] in taken_over:
                    logger.warning("admin key %s overwrote item %s of service %s as %s", caller.key_id,
                                   rec["item_id"], taken_over[rec["item_id"]], rec["service"])
                    rec["previous_service"] = taken_over[rec["item_id"]]
            return out

    def _owners(self, ids: list[str]) -> dict[str, tuple[str, int]]:
        """``item id -> (owning service, stored size)`` of those ids that exist."""
        out: dict[str, tuple[str, int]] = {}
        for s in range(0, len(ids), 500):
            part = ids[s:s + 500]
            out.update((i, (svc, size)) for i, svc, size in self.catalog.query(
                f"SELECT item_id, service, stored_size FROM items WHERE item_id IN ({','.join('?' * len(part))})",
                tuple(part)))
        return out

    def quota(self, service: str) -> int | None:
        """The service's storage quota in stored bytes (``quota_bytes``, else ``storage.default_quota_bytes``)."""
        q = self.service_settings(service).get("quota_bytes")
        return q if q is not None else self.cfg.default_quota_bytes

    def service_usage(self, service: str) -> int:
        """Stored bytes of the service's items (spilled ``memory-evicted:<service>:`` items included)."""
        return int(self.catalog.query("SELECT COALESCE(SUM(stored_size),0) FROM items WHERE service=?", (service,))[0][0])

    def _check_quota(self, prepared: list[_Prepared], owners: dict[str, tuple[str, int]]) -> None:
        add: dict[str, int] = {}
        for p in prepared:
            svc = p.rec.service
            old = owners.get(p.rec.item_id)
            add[svc] = add.get(svc, 0) + p.rec.stored_size - (old[1] if old and old[0] == svc else 0)
        for svc, extra in add.items():
            quota = self.quota(svc)
            if quota is None or extra <= 0:
                continue
            used = self.service_usage(svc)
            if used + extra > quota:
                raise InsufficientStorage(
                    f"service {svc!r} is over its storage quota: {used} of {quota} bytes used, {extra} more "
                    "needed; nothing was written",
                    hint=f"an admin can raise services.{svc}.storage.quota_bytes (or storage.default_quota_bytes, "
                    "or POST storage/optimize-service with quota_bytes); or delete items of the service",
                    service=svc, quota_bytes=quota, used_bytes=used)

    def _maybe_train_dictionaries(self, norm: list[tuple]) -> None:
        by_service: dict[str, list[bytes]] = {}
        for item_id, data, service, tier, codec, level in norm:
            # Trained automatically for the tiers where size matters most; warm/hot items use a
            # dictionary once one exists (train_dictionary() or a cold/archive batch made it).
            if codec == "auto" and tier in ("cold", "archive") and service not in self._service_dict \
                    and isinstance(data, (bytes, bytearray)) \
                    and 64 <= len(data) <= codecs.DICT_MAX_ITEM * 4:
                by_service.setdefault(service, []).append(bytes(data))
        for service, samples in by_service.items():
            if len(samples) >= self.cfg.dictionary_min_samples:
                self.train_dictionary(service, samples)

    def train_dictionary(self, service: str, samples: list[bytes] | None = None) -> dict[str, Any]:
        """Train (or retrain) the zstd dictionary of ``service`` from ``samples`` or its small items."""
        check_service_name(service)
        if samples is None:
            samples = []
            for rec in self.catalog.items("service=? AND kind='bytes' AND raw_size<=?", (service, codecs.DICT_MAX_ITEM * 4)):
                try:
                    samples.append(self._read_bytes(rec))
                except Exception:  # noqa: BLE001 - a bad item is not a sample
                    continue
                if len(samples) >= 2000:
                    break
        total = sum(len(s) for s in samples)
        # zstd's guidance: a dictionary about 1/100 of the training data; it is stored once per
        # service, so on a small corpus a large dictionary would cost more than it saves.
        size = min(self.cfg.dictionary_bytes, max(2048, total // 100))
        try:
            data = codecs.train_dictionary(samples[:4000], size)
        except Exception as e:  # noqa: BLE001 - zstd refuses too little or too uniform data
            raise InvalidInput(f"cannot train a dictionary for {service!r}: {e}",
                               hint=f"store at least {self.cfg.dictionary_min_samples} small items first") from None
        dict_id = self.catalog.add_dictionary(service, seal_dictionary(self._dict_sealer, service, data), time.time())
        self._dicts[dict_id] = (service, codecs.load_dictionary(data))
        self._service_dict[service] = dict_id
        logger.info("trained a %d-byte zstd dictionary for service %s from %d samples", len(data), service, len(samples))
        return {"service": service, "dict_id": dict_id, "bytes": len(data), "samples": len(samples)}

    def _prepare(self, item_id: str, data: Any, service: str, tier: str, codec: str, level: int | None,
                 *, keep_created: float | None = None, chosen: CodecChoice | None = None) -> _Prepared:
        now = time.time()
        table = _to_table(data)
        if table is not None:
            return self._prepare_table(item_id, table, service, tier, codec, now, keep_created)
        if isinstance(data, Encoded) and tier in ("warm", "cold") and chosen is None and not self.hashes.keyed:
            return self._prepare_encoded(item_id, data, service, tier, now, keep_created)
        if isinstance(data, Encoded):  # e.g. migrated: decode and go the ordinary way
            data = codecs.decompress(data.payload, CodecChoice.from_dict(data.choice), None, data.raw_size)
        if isinstance(data, (bytes, bytearray, memoryview)):
            raw, kind = bytes(data), "bytes"
        else:
            try:
                raw, kind = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode(), "json"
            except (TypeError, ValueError) as e:
                raise InvalidInput(f"data of item {item_id!r} is neither bytes, a table nor JSON: {e}") from None
        checksum = self.hashes.item(item_id, raw)
        dict_id = self._service_dict.get(service)
        if chosen is not None:
            choice = chosen
        elif codec == "auto":
            choice = codecs.choose_codec(raw, tier, self._zdict(dict_id), dict_id)
        else:
            choice = codecs.requested(codec, level)
        cdict = {**choice.to_dict(), "auto": codec == "auto", "format": "blob",
                 **({"keyed_hash": True} if self.hashes.keyed else {})}
        rec = ItemRecord(item_id=item_id, service=service, tier=tier, kind=kind, codec=cdict, raw_size=len(raw),
                         stored_size=0, checksum=checksum, stored_checksum="", location="", encrypted=bool(self.sealer),
                         created=keep_created or now, last_access=now, access_count=0, score=0.0)
        if tier == "archive":
            return self._prepare_chunks(rec, raw, choice)
        payload = self._encode(item_id, codecs.compress(raw, choice, self._zdict(choice.dict_id)))
        rec.stored_size = len(payload)
        rec.stored_checksum = b3(payload)
        hot_value = raw if tier == "hot" else None
        if len(payload) <= self.cfg.inline_max_bytes:
            rec.location = "inline"
            return _Prepared(rec, inline=payload, hot_value=hot_value)
        root = self.roots[tier]
        root.check_space(len(payload))
        rel = self._rel(tier, item_id)
        root.write(rel, payload)
        rec.location = f"file:{rel}"
        return _Prepared(rec, hot_value=hot_value)

    def _prepare_encoded(self, item_id: str, enc: Encoded, service: str, tier: str, now: float,
                         keep_created: float | None) -> _Prepared:
        payload = self._encode(item_id, enc.payload)
        rec = ItemRecord(item_id=item_id, service=service, tier=tier, kind="bytes", codec=enc.choice,
                         raw_size=enc.raw_size, stored_size=len(payload), checksum=enc.checksum,
                         stored_checksum=b3(payload), location="", encrypted=bool(self.sealer),
                         created=keep_created or now, last_access=now, access_count=0, score=0.0)
        if len(payload) <= self.cfg.inline_max_bytes:
            rec.location = "inline"
            return _Prepared(rec, inline=payload)
        root = self.roots[tier]
        root.check_space(len(payload))
        rel = self._rel(tier, item_id)
        root.write(rel, payload)
        rec.location = f"file:{rel}"
        return _Prepared(rec)

    def locate_many(self, item_ids: list[str]) -> list[dict[str, Any] | None]:
        """Where callers on this node may read items themselves: plain (unencrypted) bytes items in
        files of a local warm/cold root. ``None`` for the others (read them through the actor).
        A located item counts as accessed."""
        if not isinstance(item_ids, list):
            raise InvalidInput("locate_many needs a list of item ids")
        for i in item_ids:
            check_item_id(i)
        with self._lock:
            recs: dict[str, ItemRecord] = {}
            for s in range(0, len(item_ids), 500):
                part = item_ids[s:s + 500]
                recs.update((r.item_id, r) for r in self.catalog.items(f"item_id IN ({','.join('?' * len(part))})", tuple(part)))
            out: list[dict[str, Any] | None] = []
            for i in item_ids:
                rec = recs.get(i)
                f = self._loc_file(rec.location) if rec else None
                lp = self.roots[rec.tier].local_path(f) if f else None
                if rec is None or rec.kind != "bytes" or rec.encrypted or lp is None or rec.tier not in ("warm", "cold") \
                        or rec.codec.get("dict_id") is not None:
                    out.append(None)
                    continue
                self._touch(rec)
                self.counters["gets"] += 1
                out.append({"path": lp, "codec": rec.codec, "raw_size": rec.raw_size, "checksum": rec.checksum})
            return out

    def _prepare_chunks(self, rec: ItemRecord, raw: bytes, choice: CodecChoice) -> _Prepared:
        from pyfastcdc import FastCDC

        avg = self.cfg.archive_chunk_avg
        pieces = [raw] if len(raw) <= avg else [bytes(c.data) for c in FastCDC(avg, min_size=avg // 4, max_size=avg * 4).cut_buf(raw)]
        root = self.roots["archive"]
        chunks: list[tuple[str, dict[str, Any] | None]] = []
        stored = 0
        for piece in pieces:
            h = self.hashes.chunk(piece)
            row = self.catalog.query("SELECT stored_size, codec, raw_size, location FROM chunks WHERE hash=?", (h,))
            replace = False
            if row:
                if not getattr(self, "_verify_chunks", False) or self._chunk_ok(h, row[0][1], row[0][2], row[0][3], rec):
                    chunks.append((h, None))
                    stored += row[0][0]
                    continue
                replace = True  # repair: the stored copy of this chunk is damaged, write it again
            if len(pieces) == 1 and choice.payload is not None:
                comp = choice.payload  # the archive trial already compressed the whole item
            else:
                comp = codecs.compress(piece, choice, self._zdict(choice.dict_id))
            payload = self._encode(f"chunk:{h}", comp)
            new = {"hash": h, "codec": json.dumps({**choice.to_dict(), **({"keyed_hash": True} if self.hashes.keyed else {})}),
                   "raw_size": len(piece),
                   "stored_size": len(payload), "stored_checksum": b3(payload), "replace": replace}
            if len(payload) <= self.cfg.inline_max_bytes:
                new["location"], new["data"] = "inline", payload
            else:
                root.check_space(len(payload))
                rel = f"chunks/{h[:2]}/{h}.{uuid.uuid4().hex[:8]}"
                root.write(rel, payload)
                new["location"] = f"file:{rel}"
            chunks.append((h, new))
            stored += len(payload)
        rec.location = "chunks"
        rec.stored_size = stored
        rec.stored_checksum = rec.checksum  # verified on the reassembled raw bytes
        return _Prepared(rec, chunks=chunks)

    def _prepare_table(self, item_id: str, table: pa.Table, service: str, tier: str, codec: str, now: float,
                       keep_created: float | None) -> _Prepared:
        if self.sealer is not None:
            raise InvalidInput("tables cannot be stored encrypted yet", hint="store them as bytes, or unset encryption_key")
        fmt = "ipc" if tier in ("hot", "warm") else "parquet"
        root = self.roots[tier]
        root.check_space(table.nbytes // 2)
        rel = self._rel(tier, item_id, "arrow" if fmt == "ipc" else "parquet")
        level = 1 if fmt == "ipc" else (9 if tier == "cold" else 19)
        self._write_table(root, rel, table.schema, table.to_batches(max_chunksize=64 * 1024), fmt, level)
        stored = root.size(rel)
        checksum = _hash_file(root, rel)
        choice = {"codec": "zstd", "level": level, "dict_id": None, "auto": codec == "auto", "format": fmt,
                  "reason": f"table: {'Arrow IPC' if fmt == 'ipc' else 'Parquet'} with zstd for the {tier} tier",
                  "probe_ratio": None, "candidates": {}, "raw_stream": False}
        rec = ItemRecord(item_id=item_id, service=service, tier=tier, kind="table", codec=choice, raw_size=table.nbytes,
                         stored_size=stored, checksum=checksum, stored_checksum=checksum, location=f"file:{rel}",
                         encrypted=False, created=keep_created or now, last_access=now, access_count=0, score=0.0)
        return _Prepared(rec, hot_value=table if tier == "hot" else None)

    @staticmethod
    def _write_table(root: TierRoot, rel: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], fmt: str,
                     level: int) -> None:
        with root.open_write(rel) as f:
            if fmt == "ipc":
                opts = ipc.IpcWriteOptions(compression=pa.Codec("zstd", compression_level=level))
                with ipc.new_file(f, schema, options=opts) as w:
                    for b in batches:
                        w.write_batch(b)
            else:
                with pq.ParquetWriter(f, schema, compression="zstd", compression_level=level) as w:
                    for b in batches:
                        w.write_batch(b)

    def _check_capacity(self, prepared: list[_Prepared]) -> None:
        add: dict[str, int] = {}
        for p in prepared:
            add[p.rec.tier] = add.get(p.rec.tier, 0) + p.rec.stored_size
        for tier, extra in add.items():
            cap = self.cfg.tier_capacity_bytes.get(tier)
            if not cap:
                continue
            used = self._tier_stored(tier)
            if used + extra <= cap:
                continue
            if tier != "archive":
                self._demote_for_capacity(tier, used + extra - cap, exclude={p.rec.item_id for p in prepared})
                used = self._tier_stored(tier)
            if used + extra > cap:
                raise InsufficientStorage(
                    f"tier {tier!r} is full: {used} of {cap} bytes used, {extra} more needed; nothing was written",
                    hint=f"raise storage.tier_capacity_bytes.{tier}, delete items, or store into another tier")

    def _tier_stored(self, tier: str) -> int:
        if tier == "archive":
            rows = self.catalog.query("SELECT COALESCE(SUM(stored_size),0) FROM chunks")
            rows2 = self.catalog.query("SELECT COALESCE(SUM(stored_size),0) FROM items WHERE tier='archive' AND kind='table'")
            return int(rows[0][0]) + int(rows2[0][0])
        return int(self.catalog.query("SELECT COALESCE(SUM(stored_size),0) FROM items WHERE tier=?", (tier,))[0][0])

    def _commit(self, prepared: list[_Prepared]) -> None:
        """The catalog transaction for a batch, then cleanup of replaced versions."""
        old_files: list[tuple[str, str]] = []
        freed_chunks: list[str] = []
        ids = [p.rec.item_id for p in prepared]
        existing: set[str] = set()
        for s in range(0, len(ids), 500):
            part = ids[s:s + 500]
            existing.update(r[0] for r in self.catalog.query(
                f"SELECT item_id FROM items WHERE item_id IN ({','.join('?' * len(part))})", tuple(part)))
        with self.catalog.tx() as db:
            for p in prepared:
                rec = p.rec
                old = self.catalog.get(rec.item_id) if rec.item_id in existing else None
                if old is not None:
                    rec.access_count, rec.score, rec.last_access = old.access_count, old.score, max(old.last_access, rec.last_access)
                    # chunks are swept after the batch's new references are counted: an item stored
                    # again with the same content keeps the chunks it shares with its old version
                    old_files += self._release(db, old, freed_chunks, sweep=False)
                if p.inline is not None:
                    db.execute("INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)", (rec.item_id, p.inline))
                if p.chunks is not None:
                    for seq, (h, new) in enumerate(p.chunks):
                        if new is not None and new.get("replace"):
                            prev = db.execute("SELECT location FROM chunks WHERE hash=?", (h,)).fetchone()
                            db.execute("UPDATE chunks SET codec=?, raw_size=?, stored_size=?, location=? WHERE hash=?",
                                       (new["codec"], new["raw_size"], new["stored_size"], new["location"], h))
                            if new["location"] == "inline":
                                db.execute("INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)", (f"chunk:{h}", new["data"]))
                            if prev and prev[0].startswith("file:") and prev[0] != new["location"]:
                                old_files.append(("archive", prev[0][5:]))  # the damaged copy
                        elif new is not None and not db.execute("SELECT 1 FROM chunks WHERE hash=?", (h,)).fetchone():
                            db.execute("INSERT INTO chunks (hash, codec, raw_size, stored_size, refcount, location) "
                                       "VALUES (?, ?, ?, ?, 0, ?)",
                                       (h, new["codec"], new["raw_size"], new["stored_size"], new["location"]))
                            if new["location"] == "inline":
                                db.execute("INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)", (f"chunk:{h}", new["data"]))
                        elif new is not None and new["location"].startswith("file:"):
                            old_files.append(("archive", new["location"][5:]))  # a twin in this batch won
                        db.execute("UPDATE chunks SET refcount=refcount+1 WHERE hash=?", (h,))
                        db.execute("INSERT INTO item_chunks (item_id, seq, hash) VALUES (?, ?, ?)", (rec.item_id, seq, h))
                self.catalog.upsert(db, rec)
            old_files += self._sweep_chunks(db, freed_chunks)
        self._maybe_fail("store.after_commit")
        for p in prepared:
            if p.hot_value is not None and self.use_object_store:
                import ray

                self._hot[p.rec.item_id] = ray.put(p.hot_value)
            elif p.rec.tier != "hot":
                self._hot.pop(p.rec.item_id, None)
        for tier, rel in old_files:
            self.roots[tier].delete(rel)

    def _release(self, db: Any, old: ItemRecord, freed_chunks: list[str], sweep: bool = True) -> list[tuple[str, str]]:
        """Remove ``old``'s data references inside transaction ``db``; returns files to delete after commit."""
        files: list[tuple[str, str]] = []
        f = self._loc_file(old.location)
        if f:
            files.append((old.tier, f))
        if old.location == "inline":
            db.execute("DELETE FROM blobs WHERE key=?", (old.item_id,))
        if old.location == "chunks":
            hashes = [r[0] for r in db.execute("SELECT hash FROM item_chunks WHERE item_id=?", (old.item_id,)).fetchall()]
            db.execute("DELETE FROM item_chunks WHERE item_id=?", (old.item_id,))
            for h in hashes:
                db.execute("UPDATE chunks SET refcount=refcount-1 WHERE hash=?", (h,))
            if sweep:
                files += self._sweep_chunks(db, freed_chunks)
        return files

    def _sweep_chunks(self, db: Any, freed_chunks: list[str]) -> list[tuple[str, str]]:
        """Drop chunks no item references any more (inside ``db``); returns their files."""
        files: list[tuple[str, str]] = []
        for h, loc in db.execute("SELECT hash, location FROM chunks WHERE refcount<=0").fetchall():
            db.execute("DELETE FROM chunks WHERE hash=?", (h,))
            db.execute("DELETE FROM blobs WHERE key=?", (f"chunk:{h}",))
            cf = self._loc_file(loc)
            if cf:
                files.append(("archive", cf))
            freed_chunks.append(h)
        return files

    def _discard(self, prepared: list[_Prepared]) -> None:
        for p in prepared:
            f = self._loc_file(p.rec.location)
            if f:
                self.roots[p.rec.tier].delete(f)
            for h, new in p.chunks or []:
                if new is not None and new["location"].startswith("file:"):
                    self.roots["archive"].delete(new["location"][5:])

    def delete(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """Delete an item (catalog row first, then its data). ``caller`` must own it (or be admin)."""
        with self._lock:
            rec = self.record(item_id, caller)
            if caller is not None and not caller.may_write(rec.service):
                raise Forbidden(f"this key may not change service {rec.service!r}",
                                hint=f"use a key with scope 'service:{rec.service}' or 'admin'")
            freed: list[str] = []
            with self.catalog.tx() as db:
                files = self._release(db, rec, freed)
                db.execute("DELETE FROM items WHERE item_id=?", (item_id,))
            for tier, rel in files:
                self.roots[tier].delete(rel)
            self._hot.pop(item_id, None)
            self._access.pop(item_id, None)
            return {"item_id": item_id, "deleted": True, "freed_bytes": rec.stored_size, "service": rec.service}

    # ---------------------------------------------------------------------------------- reads
    def record(self, item_id: str, caller: Caller | None = None) -> ItemRecord:
        """The catalog record; for a ``caller`` that may not read the owning service, exactly the
        :class:`NotFound` a missing id gets."""
        check_item_id(item_id)
        if caller is not None:
            check_read_id(item_id, caller)
        rec = self.catalog.get(item_id)
        if rec is None or (caller is not None and not caller.may_read(rec.service)):
            raise missing(item_id)
        return rec

    def info(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.record(item_id, caller).public()

    def explain(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """Why the item is stored as it is: tier, codec choice with its reason and probe figures."""
        rec = self.record(item_id, caller)
        c = rec.codec
        ratio = rec.raw_size / rec.stored_size if rec.stored_size else None
        return {"item_id": item_id, "tier": rec.tier, "kind": rec.kind, "codec": c["codec"], "level": c.get("level"),
                "format": c.get("format"), "auto": c.get("auto"), "reason": c.get("reason"),
                "probe_ratio": c.get("probe_ratio"), "candidates": c.get("candidates") or {},
                "dictionary": c.get("dict_id"), "raw_size": rec.raw_size, "stored_size": rec.stored_size,
                "compression_ratio": ratio, "location": rec.location.split(":")[0], "score": rec.score}

    def _touch(self, rec: ItemRecord) -> None:
        now = time.time()
        last, count, score = self._access.get(rec.item_id, (rec.last_access, rec.access_count, rec.score))
        score = score * math.pow(2.0, -max(0.0, now - last) / self.cfg.lrfu_half_life_s) + 1.0
        self._access[rec.item_id] = (now, count + 1, score)
        if len(self._access) >= 1024:
            self.flush_access()

    def flush_access(self) -> int:
        """Write pending access statistics to the catalog (batched: reads do not fsync)."""
        with self._lock:
            pending, self._access = self._access, {}
            self.catalog.touch_many([(t, c, s, i) for i, (t, c, s) in pending.items()])
            return len(pending)

    def get(self, item_id: str, *, columns: list[str] | None = None, caller: Caller | None = None) -> Any:
        """The item's value: bytes, the JSON value, or a ``pa.Table`` (``columns`` projects)."""
        with self._lock:
            rec = self.record(item_id, caller)
            self._touch(rec)
            self.counters["gets"] += 1
            ref = self._hot.get(item_id)
        if ref is not None:
            import ray

            self.counters["hot_hits"] += 1
            value = ray.get(ref)
            return self._finish(rec, value, columns)
        if rec.tier == "hot" and self.use_object_store:
            value = self._read_value(rec)
            import ray

            with self._lock:
                if self.catalog.get(item_id) is not None:
                    self._hot[item_id] = ray.put(value)
            return self._finish(rec, value, columns)
        return self._finish(rec, self._read_value(rec, columns), columns)

    def get_ref(self, item_id: str, caller: Caller | None = None) -> Any:
        """For HOT items: the object ref in Ray's object store (zero-copy reads); ``None`` otherwise."""
        with self._lock:
            rec = self.record(item_id, caller)
            if rec.tier != "hot" or not self.use_object_store:
                return None
            self._touch(rec)
            self.counters["gets"] += 1
            ref = self._hot.get(item_id)
            if ref is None:
                import ray

                ref = self._hot[item_id] = ray.put(self._read_value(rec))
            else:
                self.counters["hot_hits"] += 1
            return {"ref": ref, "kind": rec.kind}

    @staticmethod
    def _finish(rec: ItemRecord, value: Any, columns: list[str] | None) -> Any:
        if rec.kind == "json" and isinstance(value, (bytes, bytearray)):
            return json.loads(value)
        if rec.kind == "table" and columns:
            return value.select(columns)
        return value

    def get_many(self, item_ids: list[str]) -> list[Any]:
        """Several items at once: one catalog query for the records and one for inline blobs."""
        if not isinstance(item_ids, list):
            raise InvalidInput("get_many needs a list of item ids")
        for i in item_ids:
            check_item_id(i)
        with self._lock:
            recs: dict[str, ItemRecord] = {}
            blobs: dict[str, bytes] = {}
            for s in range(0, len(item_ids), 500):
                part = item_ids[s:s + 500]
                marks = ",".join("?" * len(part))
                recs.update((r.item_id, r) for r in self.catalog.items(f"item_id IN ({marks})", tuple(part)))
                blobs.update(self.catalog.query(f"SELECT key, data FROM blobs WHERE key IN ({marks})", tuple(part)))
            absent = [i for i in item_ids if i not in recs]
            if absent:
                raise NotFound(f"items {absent[:5]} do not exist", hint="check the ids")
            out = []
            for i in item_ids:
                rec = recs[i]
                if rec.kind != "table" and rec.location == "inline" and i not in self._hot:
                    self._touch(rec)
                    self.counters["gets"] += 1
                    out.append(self._finish(rec, self._decode_stored(rec, blobs.get(i)), None))
                else:
                    out.append(self.get(i))
            return out

    def _read_value(self, rec: ItemRecord, columns: list[str] | None = None) -> Any:
        if rec.kind == "table":
            return self._read_table(rec, columns)
        return self._read_bytes(rec)

    def _integrity(self, rec: ItemRecord, what: str) -> IntegrityError:
        self.counters["integrity_errors"] += 1
        return IntegrityError(f"item {rec.item_id!r} is damaged: {what}; the bytes were not returned",
                              hint=f"restore it with repair({rec.item_id!r}) (needs a backup that has it)",
                              item_id=rec.item_id)

    def _read_stored(self, rec: ItemRecord) -> bytes:
        if rec.location == "inline":
            stored = self.catalog.blob(rec.item_id)
            if stored is None:
                raise self._integrity(rec, "its inline blob is missing")
            return stored
        f = self._loc_file(rec.location)
        try:
            return self.roots[rec.tier].read(f)
        except (FileNotFoundError, OSError):
            raise self._integrity(rec, "its file is missing") from None

    def _read_bytes(self, rec: ItemRecord) -> bytes:
        if rec.location == "chunks":
            return self._read_chunks(rec)
        return self._decode_stored(rec, self._read_stored(rec))

    def _decode_stored(self, rec: ItemRecord, stored: bytes | None) -> bytes:
        if stored is None:
            raise self._integrity(rec, "its inline blob is missing")
        # One hash per read: damaged stored bytes either fail to decode (or to authenticate) or
        # give raw bytes that miss the raw checksum. verify() also checks the stored checksum.
        choice = CodecChoice.from_dict(rec.codec)
        try:
            raw = codecs.decompress(self._decode(rec.item_id, stored, rec.encrypted), choice,
                                    self._zdict(choice.dict_id), rec.raw_size)
        except IntegrityError:
            raise
        except Exception as e:  # noqa: BLE001 - a codec error on checksummed bytes is damage too
            raise self._integrity(rec, f"cannot decode ({type(e).__name__})") from None
        if not self.hashes.item_ok(rec.item_id, raw, rec.checksum, rec.codec.get("keyed_hash", False)):
            raise self._integrity(rec, "checksum mismatch after decoding")
        return raw

    def _chunk_ok(self, h: str, cjson: str, raw_size: int, loc: str, rec: ItemRecord) -> bool:
        """Whether the stored chunk ``h`` still decodes to bytes with hash ``h`` (used by repair)."""
        try:
            stored = self.catalog.blob(f"chunk:{h}") if loc == "inline" else self.roots["archive"].read(loc[5:])
            if stored is None:
                return False
            cd = json.loads(cjson)
            choice = CodecChoice.from_dict(cd)
            piece = codecs.decompress(self._decode(f"chunk:{h}", stored, rec.encrypted), choice,
                                      self._zdict(choice.dict_id), raw_size)
            return self.hashes.chunk_ok(piece, h, cd.get("keyed_hash", False))
        except Exception:  # noqa: BLE001 - unreadable is damaged
            return False

    def _read_chunks(self, rec: ItemRecord) -> bytes:
        rows = self.catalog.query(
            "SELECT c.hash, c.codec, c.raw_size, c.location FROM item_chunks ic JOIN chunks c ON c.hash=ic.hash "
            "WHERE ic.item_id=? ORDER BY ic.seq", (rec.item_id,))
        parts = []
        for h, cjson, raw_size, loc in rows:
            try:
                if loc == "inline":
                    stored = self.catalog.blob(f"chunk:{h}")
                    if stored is None:
                        raise FileNotFoundError(h)
                else:
                    stored = self.roots["archive"].read(loc[5:])
                cd = json.loads(cjson)
                choice = CodecChoice.from_dict(cd)
                piece = codecs.decompress(self._decode(f"chunk:{h}", stored, rec.encrypted), choice,
                                          self._zdict(choice.dict_id), raw_size)
            except IntegrityError:
                raise self._integrity(rec, f"chunk {h[:12]} failed authentication") from None
            except Exception as e:  # noqa: BLE001
                raise self._integrity(rec, f"chunk {h[:12]} unreadable ({type(e).__name__})") from None
            if not self.hashes.chunk_ok(piece, h, cd.get("keyed_hash", False)):
                raise self._integrity(rec, f"chunk {h[:12]} checksum mismatch")
            parts.append(piece)
        raw = b"".join(parts)
        if not self.hashes.item_ok(rec.item_id, raw, rec.checksum, rec.codec.get("keyed_hash", False)):
            raise self._integrity(rec, "checksum mismatch after reassembly")
        return raw

    def _read_table(self, rec: ItemRecord, columns: list[str] | None = None) -> pa.Table:
        root = self.roots[rec.tier]
        rel = self._loc_file(rec.location)
        try:
            ok = _hash_file(root, rel) == rec.stored_checksum
        except (FileNotFoundError, OSError):
            raise self._integrity(rec, "its file is missing") from None
        if not ok:
            raise self._integrity(rec, "stored checksum mismatch")
        lp = root.local_path(rel)
        if rec.codec.get("format") == "ipc":
            source = pa.memory_map(lp) if lp else root.fs.open_input_file(root.path(rel))
            table = ipc.open_file(source).read_all()
            return table.select(columns) if columns else table
        if lp:
            return pq.read_table(lp, columns=columns, memory_map=True)
        return pq.read_table(root.path(rel), columns=columns, filesystem=root.fs)

    def _iter_batches(self, rec: ItemRecord) -> Iterable[pa.RecordBatch]:
        root = self.roots[rec.tier]
        rel = self._loc_file(rec.location)
        lp = root.local_path(rel)
        if rec.codec.get("format") == "ipc":
            reader = ipc.open_file(pa.memory_map(lp) if lp else root.fs.open_input_file(root.path(rel)))
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        else:
            pf = pq.ParquetFile(lp if lp else root.fs.open_input_file(root.path(rel)))
            yield from pf.iter_batches(batch_size=64 * 1024)

    def _table_schema(self, rec: ItemRecord) -> pa.Schema:
        root = self.roots[rec.tier]
        rel = self._loc_file(rec.location)
        lp = root.local_path(rel)
        if rec.codec.get("format") == "ipc":
            return ipc.open_file(pa.memory_map(lp) if lp else root.fs.open_input_file(root.path(rel))).schema
        return pq.ParquetFile(lp if lp else root.fs.open_input_file(root.path(rel))).schema_arrow

    # ---------------------------------------------------------------------------------- migration
    def migrate(self, item_id: str, tier: str, reason: str = "requested") -> dict[str, Any]:
        """Move an item to ``tier``: write and verify the new copy, switch the catalog, then delete the old."""
        codecs.check_tier(tier)
        with self._lock:
            rec = self.record(item_id)
            if rec.tier == tier:
                return {"item_id": item_id, "from": tier, "to": tier, "moved": False, "reason": "already there"}
            auto = rec.codec.get("auto", True)
            if rec.kind == "table":
                p = self._migrate_table(rec, tier)
            else:
                raw = self._read_bytes(rec)
                codec = "auto" if auto else rec.codec["codec"]
                level = None if auto else rec.codec.get("level")
                p = self._prepare(item_id, raw if rec.kind == "bytes" else json.loads(raw), rec.service, tier, codec,
                                  level, keep_created=rec.created)
                p.hot_value = raw if tier == "hot" else None
                self._verify_prepared(p)
            self._maybe_fail("migrate.after_copy")
            p.rec.last_access, p.rec.access_count, p.rec.score = rec.last_access, rec.access_count, rec.score
            if rec.item_id in self._access:
                p.rec.last_access, p.rec.access_count, p.rec.score = self._access[rec.item_id]
            try:
                self._commit([p])
            except BaseException:
                self._discard([p])
                raise
            self.counters["migrations"] += 1
            return {"item_id": item_id, "from": rec.tier, "to": tier, "moved": True, "reason": reason,
                    "stored_before": rec.stored_size, "stored_after": p.rec.stored_size}

    def _migrate_table(self, rec: ItemRecord, tier: str) -> _Prepared:
        if not (self._hash_ok(rec)):
            raise self._integrity(rec, "stored checksum mismatch")
        fmt = "ipc" if tier in ("hot", "warm") else "parquet"
        root = self.roots[tier]
        root.check_space(rec.stored_size * 2)
        rel = self._rel(tier, rec.item_id, "arrow" if fmt == "ipc" else "parquet")
        level = 1 if fmt == "ipc" else (9 if tier == "cold" else 19)
        self._write_table(root, rel, self._table_schema(rec), self._iter_batches(rec), fmt, level)
        checksum = _hash_file(root, rel)
        codec = {**rec.codec, "level": level, "format": fmt,
                 "reason": f"table: {'Arrow IPC' if fmt == 'ipc' else 'Parquet'} with zstd for the {tier} tier"}
        new = ItemRecord(**{**rec.__dict__, "tier": tier, "codec": codec, "stored_size": root.size(rel),
                            "checksum": checksum, "stored_checksum": checksum, "location": f"file:{rel}"})
        return _Prepared(new, hot_value=self._read_table(new) if tier == "hot" else None)

    def _hash_ok(self, rec: ItemRecord) -> bool:
        try:
            return _hash_file(self.roots[rec.tier], self._loc_file(rec.location)) == rec.stored_checksum
        except (FileNotFoundError, OSError):
            return False

    def _verify_prepared(self, p: _Prepared) -> None:
        """Read the new copy back and check it before the old one may go."""
        rec = p.rec
        if rec.location == "inline":
            return  # committed together with its row; checked on read
        if rec.location == "chunks":
            for h, new in p.chunks or []:
                if new is not None and new["location"].startswith("file:"):
                    if b3(self.roots["archive"].read(new["location"][5:])) != new["stored_checksum"]:
                        raise IntegrityError(f"the new archive copy of {rec.item_id!r} did not verify",
                                             hint="check the archive tier's storage")
            return
        if b3(self.roots[rec.tier].read(self._loc_file(rec.location))) != rec.stored_checksum:
            raise IntegrityError(f"the new {rec.tier} copy of {rec.item_id!r} did not verify",
                                 hint="check that tier's storage")

    # ---------------------------------------------------------------------------------- lifecycle
    def plan_tiering(self, now: float | None = None) -> list[dict[str, Any]]:
        """The migrations a lifecycle pass would make now (demotions by idle time, promotions by
        score, demotions for tier capacity)."""
        now = time.time() if now is None else now
        self.flush_access()
        half = self.cfg.lrfu_half_life_s
        plan: dict[str, dict[str, Any]] = {}
        svc_cache: dict[str, dict[str, Any]] = {}
        recs = self.catalog.items()
        for rec in recs:
            svc = svc_cache.setdefault(rec.service, self.service_settings(rec.service))
            idle = now - rec.last_access
            score = rec.score * math.pow(2.0, -max(0.0, idle) / half)
            limits = {"hot": svc["hot_to_warm_idle_s"], "warm": svc["warm_to_cold_idle_s"],
                      "cold": svc["cold_to_archive_idle_s"]}
            if rec.tier in ("cold", "archive") and score >= self.cfg.promote_score:
                plan[rec.item_id] = {"item_id": rec.item_id, "from": rec.tier, "to": "warm",
                                     "reason": f"promoted: score {score:.2f} >= {self.cfg.promote_score}"}
            elif rec.tier == "warm" and self.cfg.hot_promote_score and score >= self.cfg.hot_promote_score:
                plan[rec.item_id] = {"item_id": rec.item_id, "from": "warm", "to": "hot",
                                     "reason": f"promoted: score {score:.2f} >= {self.cfg.hot_promote_score}"}
            elif rec.tier in limits and idle >= limits[rec.tier]:
                plan[rec.item_id] = {"item_id": rec.item_id, "from": rec.tier, "to": NEXT_TIER[rec.tier],
                                     "reason": f"idle {idle:.0f} s >= {limits[rec.tier]:.0f} s"}
        for tier, cap in self.cfg.tier_capacity_bytes.items():
            if tier == "archive" or not cap:
                continue
            staying = [r for r in recs if r.tier == tier and r.item_id not in plan]
            used = sum(r.stored_size for r in staying)
            staying.sort(key=lambda r: r.score * math.pow(2.0, -max(0.0, now - r.last_access) / half))
            for r in staying:
                if used <= cap:
                    break
                plan[r.item_id] = {"item_id": r.item_id, "from": tier, "to": NEXT_TIER[tier],
                                   "reason": f"tier {tier} over capacity ({used} > {cap} bytes)"}
                used -= r.stored_size
        return list(plan.values())

    def optimize_tiering(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        """One lifecycle pass: plan, and unless ``dry_run`` carry out each migration."""
        with self._lock:
            plan = self.plan_tiering(now)
            done, failed = [], []
            if not dry_run:
                for m in plan:
                    try:
                        done.append(self.migrate(m["item_id"], m["to"], m["reason"]))
                    except Exception as e:  # noqa: BLE001 - one bad item must not stop the pass
                        logger.warning("migration of %s failed: %s", m["item_id"], e)
                        failed.append({**m, "error": str(e)})
            return {"dry_run": dry_run, "planned": plan, "migrated": done, "failed": failed}

    def _demote_for_capacity(self, tier: str, need: int, exclude: set[str]) -> None:
        half = self.cfg.lrfu_half_life_s
        now = time.time()
        recs = [r for r in self.catalog.items("tier=?", (tier,)) if r.item_id not in exclude]
        recs.sort(key=lambda r: r.score * math.pow(2.0, -max(0.0, now - r.last_access) / half))
        for r in recs:
            if need <= 0:
                break
            self.migrate(r.item_id, NEXT_TIER[tier], f"tier {tier} over capacity")
            need -= r.stored_size

    # ---------------------------------------------------------------------------------- services
    def optimize_service(self, service: str, parameters: dict[str, Any], caller: Caller | None = None) -> dict[str, Any]:
        """Set a service's default tier, codec and lifecycle thresholds (persisted in the catalog).

        ``quota_bytes`` is a cap: only admin (or in-cluster code) may change it."""
        try:
            check_service_name(service)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        if isinstance(parameters, dict) and "quota_bytes" in parameters and caller is not None and not caller.admin:
            raise Forbidden(f"quota_bytes of service {service!r} is a cap that only an admin may change",
                            hint=f"ask an admin to set services.{service}.storage.quota_bytes")
        from cognopt_ray.config import StorageServiceSettings

        allowed = set(StorageServiceSettings.model_fields)
        unknown = set(parameters) - allowed
        if unknown:
            raise InvalidInput(f"unknown storage parameters {sorted(unknown)}", hint=f"use {sorted(allowed)}")
        if "default_tier" in parameters:
            codecs.check_tier(parameters["default_tier"])
        if "codec" in parameters:
            codecs.check_codec(parameters["codec"])
        before = self.service_settings(service)
        try:
            merged = StorageServiceSettings(**{**before, **parameters}).model_dump()
        except Exception as e:  # noqa: BLE001 - pydantic says which field is wrong
            raise InvalidInput(f"invalid storage parameters: {e}") from None
        self.catalog.set_service_override(service, {k: merged[k] for k in merged if merged[k] != before.get(k) or k in
                                                    self.catalog.service_overrides().get(service, {})})
        return {"service_name": service, "before": before, "after": self.service_settings(service)}

    # ---------------------------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        """Bytes per tier and the ratios.

        Formulas: ``compression_ratio = raw_bytes / stored_bytes`` (per tier and overall);
        archive ``dedup_ratio = sum of archive items' chunk bytes (with repeats) / unique chunk
        bytes``; ``utilization = stored_bytes / tier_capacity_bytes`` when a capacity is set,
        else ``stored_bytes / (stored_bytes + free bytes of the tier's volume)``.
        """
        self.flush_access()
        out: dict[str, Any] = {"tiers": {}}
        total_raw = total_stored = 0
        for tier in TIERS:
            n, raw, stored = self.catalog.query(
                "SELECT COUNT(*), COALESCE(SUM(raw_size),0), COALESCE(SUM(stored_size),0) FROM items WHERE tier=?", (tier,))[0]
            logical = stored
            if tier == "archive":
                stored = self._tier_stored("archive")
            cap = self.cfg.tier_capacity_bytes.get(tier)
            free = self.roots[tier].free_bytes()
            util = stored / cap if cap else (stored / (stored + free) if free else None)
            out["tiers"][tier] = {"items": n, "raw_bytes": raw, "stored_bytes": stored,
                                  "compression_ratio": (raw / stored) if stored else None,
                                  "capacity_bytes": cap, "utilization": util,
                                  **({"logical_stored_bytes": logical} if tier == "archive" else {})}
            total_raw += raw
            total_stored += stored
        arch = out["tiers"]["archive"]
        dict_bytes = sum(len(d) for d in (r[0] for r in self.catalog.query("SELECT data FROM dicts")))
        out.update({
            "raw_bytes": total_raw, "stored_bytes": total_stored,
            "compression_ratio": (total_raw / total_stored) if total_stored else None,
            "dedup_ratio": (arch["logical_stored_bytes"] / arch["stored_bytes"]) if arch["stored_bytes"] else None,
            "dictionary_bytes": dict_bytes, "hot_objects": len(self._hot), "counters": dict(self.counters),
            "formulas": {"compression_ratio": "raw_bytes / stored_bytes",
                         "dedup_ratio": "archive chunk bytes referenced by items (with repeats) / unique chunk bytes",
                         "utilization": "stored_bytes / capacity_bytes (or / (stored + free) without a capacity)"},
        })
        return out

    def list_items(self, service: str | None = None, tier: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        where, args = ["1"], []
        if service:
            where.append("service=?")
            args.append(service)
        if tier:
            codecs.check_tier(tier)
            where.append("tier=?")
            args.append(tier)
        return [r.public() for r in self.catalog.items(" AND ".join(where) + f" ORDER BY item_id LIMIT {int(limit)}", tuple(args))]

    # ---------------------------------------------------------------------------------- verify
    def verify(self, item_ids: list[str] | None = None) -> dict[str, Any]:
        """Check every (or the given) item: its data exists and matches its checksums."""
        ids = item_ids if item_ids is not None else [r[0] for r in self.catalog.query("SELECT item_id FROM items")]
        bad = []
        for i in ids:
            try:
                rec = self.record(i)
                f = self._loc_file(rec.location)
                if f and rec.kind != "table" and b3(self.roots[rec.tier].read(f)) != rec.stored_checksum:
                    raise self._integrity(rec, "stored checksum mismatch")
                self._read_value(rec)
            except (IntegrityError, NotFound) as e:
                bad.append({"item_id": i, "error": e.message})
        return {"checked": len(ids), "damaged": bad}

    # ---------------------------------------------------------------------------------- backups
    @property
    def backups(self):
        """The backup repository (:class:`~cognopt_ray.storage.backup.BackupRepository`)."""
        if self._backups is None:
            from cognopt_ray.storage.backup import BackupRepository

            self._backups = BackupRepository.for_settings(self.settings)
        return self._backups

    def iter_items_for_backup(self) -> Iterable[tuple[str, bytes, dict[str, Any]]]:
        """``(path, raw bytes, metadata)`` for every item (tables as Arrow IPC bytes)."""
        for (item_id,) in self.catalog.query("SELECT item_id FROM items ORDER BY item_id"):
            rec = self.catalog.get(item_id)
            if rec is None:
                continue
            if rec.kind == "table":
                data = self._table_bytes(self._read_table(rec))
            else:
                data = self._read_bytes(rec)
            meta = {"item_id": item_id, "service": rec.service, "tier": rec.tier, "kind": rec.kind,
                    "codec": rec.codec.get("codec") if not rec.codec.get("auto", True) else "auto",
                    "level": None if rec.codec.get("auto", True) else rec.codec.get("level"), "checksum": rec.checksum}
            yield f"items/{item_id}", data, meta

    @staticmethod
    def _table_bytes(table: pa.Table) -> bytes:
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return sink.getvalue()

    def restore_entry(self, data: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        """Put an item back from a backup entry (an admin action: it may take an id back from another service)."""
        value: Any = data
        if meta.get("kind") == "table":
            from cognopt_ray.storage.ipc_guard import read_table

            value = read_table(data, len(data))  # written uncompressed: never decodes to more than its bytes
        elif meta.get("kind") == "json":
            value = json.loads(data)
        return self.put(meta["item_id"], value, service=meta.get("service") or DEFAULT_SERVICE, tier=meta.get("tier"),
                        codec=meta.get("codec") or "auto", level=meta.get("level"), caller=Caller(admin=True))

    def repair(self, item_id: str) -> dict[str, Any]:
        """Restore a damaged (or lost) item from the latest snapshot that has it."""
        check_item_id(item_id)
        with self._lock:
            rec = self.catalog.get(item_id)
            found = self.backups.find_latest(f"items/{item_id}", checksum=rec.checksum if rec and rec.kind != "table" else None)
            if found is None:
                raise NotFound(f"no snapshot holds item {item_id!r}", hint="back up the store regularly (POST storage/backup)")
            snap_id, data, meta = found
            self._verify_chunks = True  # deduplicated chunks already present are checked, not trusted
            try:
                out = self.restore_entry(data, meta)
            finally:
                self._verify_chunks = False
            self.counters["repairs"] += 1
            return {"item_id": item_id, "snapshot": snap_id, "restored": True, "tier": out["tier"]}

    def close(self) -> None:
        self.flush_access()
        self._pool.shutdown(wait=True)
        self.catalog.close()


__all__ = ["TieredStore", "DEFAULT_SERVICE", "b3", "Encoded", "encode_for", "decode_from"]
