"""The tiered store: items in HOT/WARM/COLD/ARCHIVE with recorded codec choices and checksums.

This class holds the storage engine's state; the Ray actor (:mod:`cognopt_ray.storage._actor`)
wraps one instance. It can also be used in-process (tests, benchmarks of the plain path). This
module holds its core (settings, sealing, the write path, the catalog commit, delete, metrics);
the rest comes from the modules named for what they hold: :mod:`~cognopt_ray.storage.reads`,
:mod:`~cognopt_ray.storage.tables`, :mod:`~cognopt_ray.storage.chunks` (archive dedup),
:mod:`~cognopt_ray.storage.lifecycle` (tiering passes, migration), :mod:`~cognopt_ray.storage.quota`,
:mod:`~cognopt_ray.storage.dictionaries` and :mod:`~cognopt_ray.storage.recovery`.

Write path (durability): the payload is compressed (and sealed with AES-GCM
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

import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import blake3

from cognopt_ray._private.sealer import Sealer
from cognopt_ray.config import Settings, check_service_name
from cognopt_ray.errors import Forbidden, IntegrityError, InvalidInput, NotFound, StorageBackendError
from cognopt_ray.storage import codecs, tiers
from cognopt_ray.storage.access import INTERNAL, Caller, check_owner, check_write_id
from cognopt_ray.storage.blobs import Encoded, Prepared, b3
from cognopt_ray.storage.catalog import Catalog, ItemRecord
from cognopt_ray.storage.chunks import ArchiveChunks
from cognopt_ray.storage.codecs import TIERS, CodecChoice
from cognopt_ray.storage.dictionaries import Dictionaries
from cognopt_ray.storage.journal import open_journal
from cognopt_ray.storage.lifecycle import Lifecycle
from cognopt_ray.storage.models import DEFAULT_SERVICE, PutRequest, put_requests
from cognopt_ray.storage.quota import Quotas
from cognopt_ray.storage.reads import ItemReads
from cognopt_ray.storage.recovery import Recovery
from cognopt_ray.storage.sealing import ContentHash, dictionary_sealer
from cognopt_ray.storage.tables import TableItems, to_table
from cognopt_ray.storage.tiers import TierRoot

logger = logging.getLogger(__name__)


def _size(data: Any) -> int:
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else 1 << 30


class TieredStore(ItemReads, ArchiveChunks, TableItems, Lifecycle, Quotas, Dictionaries, Recovery):
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
        tiers.configure(self.cfg.s3)
        self.roots: dict[str, TierRoot] = {}
        for tier in TIERS:
            uri = self.cfg.tier_roots.get(tier) or f"{base}/tiers/{tier}"
            self.roots[tier] = TierRoot(uri, min_free_bytes=self.cfg.min_free_bytes)
        self.journal = open_journal(settings, self.roots)
        key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
        self.sealer = Sealer(key, b"cognopt blobs") if key else None
        self.hashes = ContentHash(key)  # keyed item checksums and chunk hashes with a key (see sealing.py)
        self._dict_sealer = dictionary_sealer(settings)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cognopt-store")
        self._dicts: dict[int, tuple[str, codecs.Dictionary]] = {}
        self._service_dict: dict[str, int] = {}
        self.refused_dictionaries: list[int] = []
        self.rebuilt = self._sync_journal()  # before anything reads the catalog (recover() included)
        self._load_dictionaries()
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
            raise IntegrityError(
                f"{key!r} is encrypted but no encryption_key is configured",
                hint="set COGNOPT_ENCRYPTION_KEY to the key it was written with",
            )
        return self.sealer.open(stored, self._aad(key))

    def _rel(self, tier: str, item_id: str, ext: str = "blob") -> str:
        h = blake3.blake3(item_id.encode()).hexdigest()[:2]
        return f"items/{h}/{item_id}.{uuid.uuid4().hex[:10]}.{ext}"

    @staticmethod
    def _loc_file(loc: str) -> str | None:
        return loc[5:] if loc.startswith("file:") else None

    # ---------------------------------------------------------------------------------- writes
    def put(
        self,
        item_id: str,
        data: Any,
        *,
        service: str = DEFAULT_SERVICE,
        tier: str | None = None,
        codec: str | None = None,
        level: int | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """Store one item; returns its catalog record. See :meth:`put_many` for the arguments."""
        return self.put_many([PutRequest(item_id, data, service, tier, codec, level)], caller=caller)[0]

    def put_many(self, items: list[PutRequest | dict[str, Any]], caller: Caller | None = None) -> list[dict[str, Any]]:
        """Store several items with one catalog commit (group commit).

        Each entry is a :class:`~cognopt_ray.storage.models.PutRequest` (or a dict of its
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
            taken_over = {
                n[0]: owners[n[0]][0]
                for n in norm
                if n[0] in owners and check_owner(n[0], owners[n[0]][0], n[2], caller)
            }
            self._maybe_train_dictionaries(norm)
            # Large items are encoded and written in parallel (zstd, BLAKE3 and fsync release the
            # GIL); small ones inline, where a thread hop would cost more than the work.
            futures = [
                self._pool.submit(self._prepare, *n) if _size(n[1]) >= 256 * 1024 or n[3] in ("cold", "archive") else n
                for n in norm
            ]
            prepared: list[Prepared] = []
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
                    logger.warning(
                        "admin key %s overwrote item %s of service %s as %s",
                        caller.key_id,
                        rec["item_id"],
                        taken_over[rec["item_id"]],
                        rec["service"],
                    )
                    rec["previous_service"] = taken_over[rec["item_id"]]
            return out

    def _prepare(
        self,
        item_id: str,
        data: Any,
        service: str,
        tier: str,
        codec: str,
        level: int | None,
        *,
        keep_created: float | None = None,
        chosen: CodecChoice | None = None,
    ) -> Prepared:
        now = time.time()
        table = to_table(data)
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
        cdict = {
            **choice.to_dict(),
            "auto": codec == "auto",
            "format": "blob",
            **({"keyed_hash": True} if self.hashes.keyed else {}),
        }
        rec = ItemRecord(
            item_id=item_id,
            service=service,
            tier=tier,
            kind=kind,
            codec=cdict,
            raw_size=len(raw),
            stored_size=0,
            checksum=checksum,
            stored_checksum="",
            location="",
            encrypted=bool(self.sealer),
            created=keep_created or now,
            last_access=now,
            access_count=0,
            score=0.0,
        )
        if tier == "archive":
            return self._prepare_chunks(rec, raw, choice)
        payload = self._encode(item_id, codecs.compress(raw, choice, self._zdict(choice.dict_id)))
        rec.stored_size = len(payload)
        rec.stored_checksum = b3(payload)
        hot_value = raw if tier == "hot" else None
        if len(payload) <= self.cfg.inline_max_bytes:
            rec.location = "inline"
            return Prepared(rec, inline=payload, hot_value=hot_value)
        root = self.roots[tier]
        root.check_space(len(payload))
        rel = self._rel(tier, item_id)
        root.write(rel, payload)
        rec.location = f"file:{rel}"
        return Prepared(rec, hot_value=hot_value)

    def _prepare_encoded(
        self, item_id: str, enc: Encoded, service: str, tier: str, now: float, keep_created: float | None
    ) -> Prepared:
        payload = self._encode(item_id, enc.payload)
        rec = ItemRecord(
            item_id=item_id,
            service=service,
            tier=tier,
            kind="bytes",
            codec=enc.choice,
            raw_size=enc.raw_size,
            stored_size=len(payload),
            checksum=enc.checksum,
            stored_checksum=b3(payload),
            location="",
            encrypted=bool(self.sealer),
            created=keep_created or now,
            last_access=now,
            access_count=0,
            score=0.0,
        )
        if len(payload) <= self.cfg.inline_max_bytes:
            rec.location = "inline"
            return Prepared(rec, inline=payload)
        root = self.roots[tier]
        root.check_space(len(payload))
        rel = self._rel(tier, item_id)
        root.write(rel, payload)
        rec.location = f"file:{rel}"
        return Prepared(rec)

    def _commit(self, prepared: list[Prepared]) -> None:
        """The catalog transaction for a batch, then cleanup of replaced versions."""
        old_files: list[tuple[str, str]] = []
        freed_chunks: list[str] = []
        ids = [p.rec.item_id for p in prepared]
        existing: set[str] = set()
        for s in range(0, len(ids), 500):
            part = ids[s : s + 500]
            existing.update(
                r[0]
                for r in self.catalog.query(
                    f"SELECT item_id FROM items WHERE item_id IN ({','.join('?' * len(part))})", tuple(part)
                )
            )
        with self.catalog.tx() as db:
            for p in prepared:
                rec = p.rec
                old = self.catalog.get(rec.item_id) if rec.item_id in existing else None
                if old is not None:
                    rec.access_count, rec.score, rec.last_access = (
                        old.access_count,
                        old.score,
                        max(old.last_access, rec.last_access),
                    )
                    # chunks are swept after the batch's new references are counted: an item stored
                    # again with the same content keeps the chunks it shares with its old version
                    old_files += self._release(db, old, freed_chunks, sweep=False)
                if p.inline is not None:
                    db.execute("INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)", (rec.item_id, p.inline))
                if p.chunks is not None:
                    for seq, (h, new) in enumerate(p.chunks):
                        if new is not None and new.get("replace"):
                            prev = db.execute("SELECT location FROM chunks WHERE hash=?", (h,)).fetchone()
                            db.execute(
                                "UPDATE chunks SET codec=?, raw_size=?, stored_size=?, location=? WHERE hash=?",
                                (new["codec"], new["raw_size"], new["stored_size"], new["location"], h),
                            )
                            if new["location"] == "inline":
                                db.execute(
                                    "INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)",
                                    (f"chunk:{h}", new["data"]),
                                )
                            if prev and prev[0].startswith("file:") and prev[0] != new["location"]:
                                old_files.append(("archive", prev[0][5:]))  # the damaged copy
                        elif new is not None and not db.execute("SELECT 1 FROM chunks WHERE hash=?", (h,)).fetchone():
                            db.execute(
                                "INSERT INTO chunks (hash, codec, raw_size, stored_size, refcount, location) "
                                "VALUES (?, ?, ?, ?, 0, ?)",
                                (h, new["codec"], new["raw_size"], new["stored_size"], new["location"]),
                            )
                            if new["location"] == "inline":
                                db.execute(
                                    "INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)",
                                    (f"chunk:{h}", new["data"]),
                                )
                        elif new is not None and new["location"].startswith("file:"):
                            old_files.append(("archive", new["location"][5:]))  # a twin in this batch won
                        db.execute("UPDATE chunks SET refcount=refcount+1 WHERE hash=?", (h,))
                        db.execute(
                            "INSERT INTO item_chunks (item_id, seq, hash) VALUES (?, ?, ?)", (rec.item_id, seq, h)
                        )
                self.catalog.upsert(db, rec)
            old_files += self._sweep_chunks(db, freed_chunks)
        self._maybe_fail("store.after_commit")
        for p in prepared:
            if p.hot_value is not None and self.use_object_store:
                import ray

                self._hot[p.rec.item_id] = ray.put(p.hot_value)
            elif p.rec.tier != "hot":
                self._hot.pop(p.rec.item_id, None)
        self._delete_files(old_files)

    def _release(self, db: Any, old: ItemRecord, freed_chunks: list[str], sweep: bool = True) -> list[tuple[str, str]]:
        """Remove ``old``'s data references inside transaction ``db``; returns files to delete after commit."""
        files: list[tuple[str, str]] = []
        f = self._loc_file(old.location)
        if f:
            files.append((old.tier, f))
        if old.location == "inline":
            db.execute("DELETE FROM blobs WHERE key=?", (old.item_id,))
        if old.location == "chunks":
            hashes = [
                r[0] for r in db.execute("SELECT hash FROM item_chunks WHERE item_id=?", (old.item_id,)).fetchall()
            ]
            db.execute("DELETE FROM item_chunks WHERE item_id=?", (old.item_id,))
            for h in hashes:
                db.execute("UPDATE chunks SET refcount=refcount-1 WHERE hash=?", (h,))
            if sweep:
                files += self._sweep_chunks(db, freed_chunks)
        return files

    def _discard(self, prepared: list[Prepared]) -> None:
        files = []
        for p in prepared:
            f = self._loc_file(p.rec.location)
            if f:
                files.append((p.rec.tier, f))
            for _h, new in p.chunks or []:
                if new is not None and new["location"].startswith("file:"):
                    files.append(("archive", new["location"][5:]))
        self._delete_files(files)

    def _delete_files(self, files: list[tuple[str, str]]) -> None:
        """Delete files no committed row points at; a store that does not answer leaves them to recover()."""
        for tier, rel in files:
            try:
                self.roots[tier].delete(rel)
            except StorageBackendError as e:
                logger.warning("could not delete unreferenced %s/%s now (start-up cleanup will): %s", tier, rel, e)

    def delete(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """Delete an item (catalog row first, then its data). ``caller`` must own it (or be admin)."""
        with self._lock:
            rec = self.record(item_id, caller)
            if caller is not None and not caller.may_write(rec.service):
                raise Forbidden(
                    f"this key may not change service {rec.service!r}",
                    hint=f"use a key with scope 'service:{rec.service}' or 'admin'",
                )
            freed: list[str] = []
            with self.catalog.tx() as db:
                files = self._release(db, rec, freed)
                db.execute("DELETE FROM items WHERE item_id=?", (item_id,))
            self._delete_files(files)
            self._hot.pop(item_id, None)
            self._access.pop(item_id, None)
            return {"item_id": item_id, "deleted": True, "freed_bytes": rec.stored_size, "service": rec.service}

    # ---------------------------------------------------------------------------------- services
    def optimize_service(
        self, service: str, parameters: dict[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        """Set a service's default tier, codec and lifecycle thresholds (persisted in the catalog).

        ``quota_bytes`` is a cap: only admin (or in-cluster code) may change it."""
        try:
            check_service_name(service)
        except ValueError as e:
            raise InvalidInput(str(e)) from None
        if isinstance(parameters, dict) and "quota_bytes" in parameters and caller is not None and not caller.admin:
            raise Forbidden(
                f"quota_bytes of service {service!r} is a cap that only an admin may change",
                hint=f"ask an admin to set services.{service}.storage.quota_bytes",
            )
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
        self.catalog.set_service_override(
            service,
            {
                k: merged[k]
                for k in merged
                if merged[k] != before.get(k) or k in self.catalog.service_overrides().get(service, {})
            },
        )
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
                "SELECT COUNT(*), COALESCE(SUM(raw_size),0), COALESCE(SUM(stored_size),0) FROM items WHERE tier=?",
                (tier,),
            )[0]
            logical = stored
            if tier == "archive":
                stored = self._tier_stored("archive")
            cap = self.cfg.tier_capacity_bytes.get(tier)
            free = self.roots[tier].free_bytes()
            util = stored / cap if cap else (stored / (stored + free) if free else None)
            out["tiers"][tier] = {
                "items": n,
                "raw_bytes": raw,
                "stored_bytes": stored,
                "compression_ratio": (raw / stored) if stored else None,
                "capacity_bytes": cap,
                "utilization": util,
                **({"logical_stored_bytes": logical} if tier == "archive" else {}),
            }
            total_raw += raw
            total_stored += stored
        arch = out["tiers"]["archive"]
        dict_bytes = sum(len(d) for d in (r[0] for r in self.catalog.query("SELECT data FROM dicts")))
        out.update(
            {
                "raw_bytes": total_raw,
                "stored_bytes": total_stored,
                "compression_ratio": (total_raw / total_stored) if total_stored else None,
                "dedup_ratio": (arch["logical_stored_bytes"] / arch["stored_bytes"]) if arch["stored_bytes"] else None,
                "dictionary_bytes": dict_bytes,
                "hot_objects": len(self._hot),
                "counters": dict(self.counters),
                "formulas": {
                    "compression_ratio": "raw_bytes / stored_bytes",
                    "dedup_ratio": "archive chunk bytes referenced by items (with repeats) / unique chunk bytes",
                    "utilization": "stored_bytes / capacity_bytes (or / (stored + free) without a capacity)",
                },
            }
        )
        return out

    def list_items(
        self, service: str | None = None, tier: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        where, args = ["1"], []
        if service:
            where.append("service=?")
            args.append(service)
        if tier:
            codecs.check_tier(tier)
            where.append("tier=?")
            args.append(tier)
        return [
            r.public()
            for r in self.catalog.items(" AND ".join(where) + f" ORDER BY item_id LIMIT {int(limit)}", tuple(args))
        ]

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

    def close(self) -> None:
        self.flush_access()
        self._pool.shutdown(wait=True)
        self.catalog.close()


__all__ = ["TieredStore"]
