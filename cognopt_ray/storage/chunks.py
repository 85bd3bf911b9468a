"""The archive tier's chunk store: items cut with FastCDC, chunks deduplicated by (keyed) BLAKE3.

A chunk is stored once and counted by the items that use it (``chunks.refcount``); a chunk no
item references is swept in the transaction that drops its last reference.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from cognopt_ray.errors import IntegrityError, StorageBackendError
from cognopt_ray.storage import codecs
from cognopt_ray.storage.blobs import Prepared, b3
from cognopt_ray.storage.catalog import ItemRecord
from cognopt_ray.storage.codecs import CodecChoice


class ArchiveChunks:
    """Archive items as deduplicated chunks (a part of :class:`~cognopt_ray.storage.store.TieredStore`)."""

    def _prepare_chunks(self, rec: ItemRecord, raw: bytes, choice: CodecChoice) -> Prepared:
        from pyfastcdc import FastCDC

        avg = self.cfg.archive_chunk_avg
        pieces = (
            [raw]
            if len(raw) <= avg
            else [bytes(c.data) for c in FastCDC(avg, min_size=avg // 4, max_size=avg * 4).cut_buf(raw)]
        )
        root = self.roots["archive"]
        chunks: list[tuple[str, dict[str, Any] | None]] = []
        stored = 0
        for piece in pieces:
            h = self.hashes.chunk(piece)
            row = self.catalog.query("SELECT stored_size, codec, raw_size, location FROM chunks WHERE hash=?", (h,))
            replace = False
            if row:
                if not getattr(self, "_verify_chunks", False) or self._chunk_ok(
                    h, row[0][1], row[0][2], row[0][3], rec
                ):
                    chunks.append((h, None))
                    stored += row[0][0]
                    continue
                replace = True  # repair: the stored copy of this chunk is damaged, write it again
            if len(pieces) == 1 and choice.payload is not None:
                comp = choice.payload  # the archive trial already compressed the whole item
            else:
                comp = codecs.compress(piece, choice, self._zdict(choice.dict_id))
            payload = self._encode(f"chunk:{h}", comp)
            new = {
                "hash": h,
                "codec": json.dumps({**choice.to_dict(), **({"keyed_hash": True} if self.hashes.keyed else {})}),
                "raw_size": len(piece),
                "stored_size": len(payload),
                "stored_checksum": b3(payload),
                "replace": replace,
            }
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
        return Prepared(rec, chunks=chunks)

    def _chunk_ok(self, h: str, cjson: str, raw_size: int, loc: str, rec: ItemRecord) -> bool:
        """Whether the stored chunk ``h`` still decodes to bytes with hash ``h`` (used by repair)."""
        try:
            stored = self.catalog.blob(f"chunk:{h}") if loc == "inline" else self.roots["archive"].read(loc[5:])
            if stored is None:
                return False
            cd = json.loads(cjson)
            choice = CodecChoice.from_dict(cd)
            piece = codecs.decompress(
                self._decode(f"chunk:{h}", stored, rec.encrypted), choice, self._zdict(choice.dict_id), raw_size
            )
            return self.hashes.chunk_ok(piece, h, cd.get("keyed_hash", False))
        except StorageBackendError:
            raise
        except Exception:  # noqa: BLE001 - unreadable is damaged
            return False

    def _read_chunks(self, rec: ItemRecord) -> bytes:
        rows = self.catalog.query(
            "SELECT c.hash, c.codec, c.raw_size, c.location FROM item_chunks ic JOIN chunks c ON c.hash=ic.hash "
            "WHERE ic.item_id=? ORDER BY ic.seq",
            (rec.item_id,),
        )
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
                piece = codecs.decompress(
                    self._decode(f"chunk:{h}", stored, rec.encrypted), choice, self._zdict(choice.dict_id), raw_size
                )
            except StorageBackendError:
                raise  # the store did not answer: not damage
            except IntegrityError:
                raise self._integrity(rec, f"chunk {h[:12]} failed authentication") from None
            except Exception as e:  # noqa: BLE001 - any decode failure of stored bytes is an integrity error
                raise self._integrity(rec, f"chunk {h[:12]} unreadable ({type(e).__name__})") from None
            if not self.hashes.chunk_ok(piece, h, cd.get("keyed_hash", False)):
                raise self._integrity(rec, f"chunk {h[:12]} checksum mismatch")
            parts.append(piece)
        raw = b"".join(parts)
        if not self.hashes.item_ok(rec.item_id, raw, rec.checksum, rec.codec.get("keyed_hash", False)):
            raise self._integrity(rec, "checksum mismatch after reassembly")
        return raw

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


__all__ = ["ArchiveChunks"]
