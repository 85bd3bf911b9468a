"""Tables in the store: Arrow IPC (hot, warm) or Parquet (cold, archive), zstd-compressed.

Tables are written batch by batch and read memory-mapped from local tiers; ``columns`` projects
on read. Their checksum is BLAKE3 of the stored file.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from cognopt_ray.errors import InvalidInput
from cognopt_ray.storage.blobs import Prepared, hash_file
from cognopt_ray.storage.catalog import ItemRecord
from cognopt_ray.storage.tiers import TierRoot


def to_table(data: Any) -> pa.Table | None:
    """``data`` as a ``pa.Table`` when it is a table (Arrow table or batch, pandas DataFrame), else ``None``."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    mod = type(data).__module__
    if mod.startswith("pandas") and type(data).__name__ == "DataFrame":
        return pa.Table.from_pandas(data, preserve_index=False)
    return None


class TableItems:
    """Table items (a part of :class:`~cognopt_ray.storage.store.TieredStore`)."""

    def _prepare_table(
        self, item_id: str, table: pa.Table, service: str, tier: str, codec: str, now: float, keep_created: float | None
    ) -> Prepared:
        if self.sealer is not None:
            raise InvalidInput(
                "tables cannot be stored encrypted yet", hint="store them as bytes, or unset encryption_key"
            )
        fmt = "ipc" if tier in ("hot", "warm") else "parquet"
        root = self.roots[tier]
        root.check_space(table.nbytes // 2)
        rel = self._rel(tier, item_id, "arrow" if fmt == "ipc" else "parquet")
        level = 1 if fmt == "ipc" else (9 if tier == "cold" else 19)
        self._write_table(root, rel, table.schema, table.to_batches(max_chunksize=64 * 1024), fmt, level)
        stored = root.size(rel)
        checksum = hash_file(root, rel)
        choice = {
            "codec": "zstd",
            "level": level,
            "dict_id": None,
            "auto": codec == "auto",
            "format": fmt,
            "reason": f"table: {'Arrow IPC' if fmt == 'ipc' else 'Parquet'} with zstd for the {tier} tier",
            "probe_ratio": None,
            "candidates": {},
            "raw_stream": False,
        }
        rec = ItemRecord(
            item_id=item_id,
            service=service,
            tier=tier,
            kind="table",
            codec=choice,
            raw_size=table.nbytes,
            stored_size=stored,
            checksum=checksum,
            stored_checksum=checksum,
            location=f"file:{rel}",
            encrypted=False,
            created=keep_created or now,
            last_access=now,
            access_count=0,
            score=0.0,
        )
        return Prepared(rec, hot_value=table if tier == "hot" else None)

    @staticmethod
    def _write_table(
        root: TierRoot, rel: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch], fmt: str, level: int
    ) -> None:
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

    def _read_table(self, rec: ItemRecord, columns: list[str] | None = None) -> pa.Table:
        root = self.roots[rec.tier]
        rel = self._loc_file(rec.location)
        try:
            ok = hash_file(root, rel) == rec.stored_checksum
        except (FileNotFoundError, OSError):
            raise self._integrity(rec, "its file is missing") from None
        if not ok:
            raise self._integrity(rec, "stored checksum mismatch")
        lp = root.local_path(rel)
        with root.guard("reading a table"):
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

    def _migrate_table(self, rec: ItemRecord, tier: str) -> Prepared:
        if not (self._hash_ok(rec)):
            raise self._integrity(rec, "stored checksum mismatch")
        fmt = "ipc" if tier in ("hot", "warm") else "parquet"
        root = self.roots[tier]
        root.check_space(rec.stored_size * 2)
        rel = self._rel(tier, rec.item_id, "arrow" if fmt == "ipc" else "parquet")
        level = 1 if fmt == "ipc" else (9 if tier == "cold" else 19)
        self._write_table(root, rel, self._table_schema(rec), self._iter_batches(rec), fmt, level)
        checksum = hash_file(root, rel)
        codec = {
            **rec.codec,
            "level": level,
            "format": fmt,
            "reason": f"table: {'Arrow IPC' if fmt == 'ipc' else 'Parquet'} with zstd for the {tier} tier",
        }
        new = ItemRecord(
            **{
                **rec.__dict__,
                "tier": tier,
                "codec": codec,
                "stored_size": root.size(rel),
                "checksum": checksum,
                "stored_checksum": checksum,
                "location": f"file:{rel}",
            }
        )
        return Prepared(new, hot_value=self._read_table(new) if tier == "hot" else None)

    @staticmethod
    def _table_bytes(table: pa.Table) -> bytes:
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return sink.getvalue()


__all__ = ["TableItems", "to_table"]
