"""What the storage engine keeps sealed or keyed at rest besides item payloads.

With an ``encryption_key`` configured:

* **codec dictionaries** (trained from samples of a service's items, so they hold fragments of
  them) are sealed with their own HKDF sub-key (purpose ``cognopt storage dictionaries``, AAD the
  service). A dictionary row that does not open (unsealed, or sealed under another key or
  service) is refused, never loaded: items compressed with it answer an integrity error.
* **content hashes** in the catalog are keyed BLAKE3 (sub-key ``cognopt storage content hash``):
  an item's ``checksum`` also covers its id, so two items with the same bytes have different
  checksums and a guess of an item's content cannot be confirmed from the file; archive chunk
  hashes are keyed without the id (chunks are deduplicated by them, so equal chunks keep equal
  hashes, but a guess cannot be checked without the key). Rows written without a key keep plain
  BLAKE3 and are marked so (``keyed_hash`` absent from their codec record).

Without a key both stay as before (plain dictionaries, plain BLAKE3).

Example:
    >>> h = ContentHash(None)
    >>> h.item("a", b"x") == h.item("b", b"x")
    True
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import blake3

from cognopt_ray._private.sealer import Sealer, derive_key
from cognopt_ray.errors import IntegrityError

logger = logging.getLogger(__name__)

DICT_PURPOSE = b"cognopt storage dictionaries"
HASH_PURPOSE = b"cognopt storage content hash"


def _threads(n: int) -> int:
    return blake3.blake3.AUTO if n > 4 << 20 else 1


class ContentHash:
    """Item checksums and chunk hashes, keyed when ``key_b64`` (the ``encryption_key``) is given."""

    def __init__(self, key_b64: str | None) -> None:
        self.key = derive_key(base64.b64decode(key_b64), HASH_PURPOSE) if key_b64 else None

    @property
    def keyed(self) -> bool:
        return self.key is not None

    def item(self, item_id: str, raw: bytes | memoryview) -> str:
        if self.key is None:
            return blake3.blake3(raw, max_threads=_threads(len(raw))).hexdigest()
        h = blake3.blake3(b"item\x00" + item_id.encode() + b"\x00", key=self.key, max_threads=_threads(len(raw)))
        h.update(raw)
        return h.hexdigest()

    def chunk(self, piece: bytes | memoryview) -> str:
        if self.key is None:
            return blake3.blake3(piece).hexdigest()
        return blake3.blake3(piece, key=self.key).hexdigest()

    def item_ok(self, item_id: str, raw: bytes | memoryview, checksum: str, keyed: bool) -> bool:
        """Whether ``raw`` matches ``checksum`` (keyed rows need the key; plain rows are plain BLAKE3)."""
        if keyed:
            return self.key is not None and self.item(item_id, raw) == checksum
        return blake3.blake3(raw, max_threads=_threads(len(raw))).hexdigest() == checksum

    def chunk_ok(self, piece: bytes | memoryview, h: str, keyed: bool) -> bool:
        if keyed:
            return self.key is not None and self.chunk(piece) == h
        return blake3.blake3(piece).hexdigest() == h


def dictionary_sealer(settings: Any) -> Sealer | None:
    return Sealer.from_settings(settings, DICT_PURPOSE)


def seal_dictionary(sealer: Sealer | None, service: str, data: bytes) -> bytes:
    return sealer.seal(data, f"dict:{service}".encode()) if sealer else data


def open_dictionary(sealer: Sealer | None, service: str, blob: bytes) -> bytes | None:
    """The dictionary bytes, or ``None`` when a sealed one is expected and ``blob`` does not open."""
    if sealer is None:
        return blob
    try:
        return sealer.open(blob, f"dict:{service}".encode())
    except IntegrityError:
        logger.error(
            "the zstd dictionary of service %s is not sealed with this installation's key: refused, not "
            "loaded (items compressed with it will not decode; retrain with train_dictionary)",
            service,
        )
        return None


__all__ = ["ContentHash", "dictionary_sealer", "seal_dictionary", "open_dictionary"]
