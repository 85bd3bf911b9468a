"""The read path of :class:`~cognopt_ray.storage.store.TieredStore`: records, values, checksums.

Every read checks the stored bytes (or the raw bytes after decoding) against the recorded
checksums; a mismatch raises :class:`~cognopt_ray.errors.IntegrityError`, never returns bad
bytes. Reads count as accesses (batched into the catalog by :meth:`ItemReads.flush_access`).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from cognopt_ray.errors import IntegrityError, InvalidInput, NotFound
from cognopt_ray.storage import codecs
from cognopt_ray.storage.access import Caller, check_read_id, missing
from cognopt_ray.storage.catalog import ItemRecord, check_item_id
from cognopt_ray.storage.codecs import CodecChoice


def _check_ids(item_ids: Any, what: str) -> None:
    if not isinstance(item_ids, list):
        raise InvalidInput(f"{what} needs a list of item ids")
    for i in item_ids:
        check_item_id(i)


class ItemReads:
    """Reading items (a part of :class:`~cognopt_ray.storage.store.TieredStore`)."""

    def locate_many(self, item_ids: list[str]) -> list[dict[str, Any] | None]:
        """Where callers on this node may read items themselves: plain (unencrypted) bytes items in
        files of a local warm/cold root. ``None`` for the others (read them through the actor).
        A located item counts as accessed."""
        _check_ids(item_ids, "locate_many")
        with self._lock:
            recs: dict[str, ItemRecord] = {}
            for s in range(0, len(item_ids), 500):
                part = item_ids[s : s + 500]
                recs.update(
                    (r.item_id, r) for r in self.catalog.items(f"item_id IN ({','.join('?' * len(part))})", tuple(part))
                )
            out: list[dict[str, Any] | None] = []
            for i in item_ids:
                rec = recs.get(i)
                f = self._loc_file(rec.location) if rec else None
                lp = self.roots[rec.tier].local_path(f) if f else None
                if (
                    rec is None
                    or rec.kind != "bytes"
                    or rec.encrypted
                    or lp is None
                    or rec.tier not in ("warm", "cold")
                    or rec.codec.get("dict_id") is not None
                ):
                    out.append(None)
                    continue
                self._touch(rec)
                self.counters["gets"] += 1
                out.append({"path": lp, "codec": rec.codec, "raw_size": rec.raw_size, "checksum": rec.checksum})
            return out

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
        return {
            "item_id": item_id,
            "tier": rec.tier,
            "kind": rec.kind,
            "codec": c["codec"],
            "level": c.get("level"),
            "format": c.get("format"),
            "auto": c.get("auto"),
            "reason": c.get("reason"),
            "probe_ratio": c.get("probe_ratio"),
            "candidates": c.get("candidates") or {},
            "dictionary": c.get("dict_id"),
            "raw_size": rec.raw_size,
            "stored_size": rec.stored_size,
            "compression_ratio": ratio,
            "location": rec.location.split(":")[0],
            "score": rec.score,
        }

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
        return self.retrieve(item_id, columns=columns, caller=caller)[1]

    def retrieve(
        self, item_id: str, *, columns: list[str] | None = None, caller: Caller | None = None
    ) -> tuple[dict[str, Any], Any]:
        """``(info, value)``: the record as :meth:`info` gives it and the value as :meth:`get`, from
        one catalog lookup and one ownership check."""
        with self._lock:
            rec = self.record(item_id, caller)
            self._touch(rec)
            self.counters["gets"] += 1
            ref = self._hot.get(item_id)
        if ref is not None:
            import ray

            self.counters["hot_hits"] += 1
            value = ray.get(ref)
            return rec.public(), self._finish(rec, value, columns)
        if rec.tier == "hot" and self.use_object_store:
            value = self._read_value(rec)
            import ray

            with self._lock:
                if self.catalog.get(item_id) is not None:
                    self._hot[item_id] = ray.put(value)
            return rec.public(), self._finish(rec, value, columns)
        return rec.public(), self._finish(rec, self._read_value(rec, columns), columns)

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
        _check_ids(item_ids, "get_many")
        with self._lock:
            recs: dict[str, ItemRecord] = {}
            blobs: dict[str, bytes] = {}
            for s in range(0, len(item_ids), 500):
                part = item_ids[s : s + 500]
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
        return IntegrityError(
            f"item {rec.item_id!r} is damaged: {what}; the bytes were not returned",
            hint=f"restore it with repair({rec.item_id!r}) (needs a backup that has it)",
            item_id=rec.item_id,
        )

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
            raw = codecs.decompress(
                self._decode(rec.item_id, stored, rec.encrypted), choice, self._zdict(choice.dict_id), rec.raw_size
            )
        except IntegrityError:
            raise
        except Exception as e:  # noqa: BLE001 - a codec error on checksummed bytes is damage too
            raise self._integrity(rec, f"cannot decode ({type(e).__name__})") from None
        if not self.hashes.item_ok(rec.item_id, raw, rec.checksum, rec.codec.get("keyed_hash", False)):
            raise self._integrity(rec, "checksum mismatch after decoding")
        return raw


__all__ = ["ItemReads"]
