"""What an item is at rest and on its way there: BLAKE3 helpers, payloads the client encodes,
and a prepared write waiting for its catalog commit.

Example:
    >>> enc = encode_for(b"hello " * 1000, "warm", "zstd", 3)
    >>> decode_from(enc.payload, enc.choice, enc.raw_size, enc.checksum) == b"hello " * 1000
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import blake3

from cognopt_ray.storage import codecs
from cognopt_ray.storage.catalog import ItemRecord
from cognopt_ray.storage.codecs import CodecChoice
from cognopt_ray.storage.tiers import TierRoot


def b3(data: bytes | memoryview) -> str:
    """BLAKE3 hex digest (multithreaded above 4 MiB)."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO if len(data) > 4 << 20 else 1).hexdigest()


def hash_file(root: TierRoot, rel: str) -> str:
    """BLAKE3 hex digest of a file in a tier root (memory-mapped when local)."""
    h = blake3.blake3()
    lp = root.local_path(rel)
    if lp is not None:
        h.update_mmap(lp) if os.path.getsize(lp) else None
        return h.hexdigest()
    with root.guard("reading"), root.fs.open_input_stream(root.path(rel)) as f:
        while True:
            block = f.read(4 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@dataclass
class Prepared:
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


__all__ = ["b3", "hash_file", "Prepared", "Encoded", "encode_for", "decode_from"]
