"""What survives a restart of the pools actor: durable copies of persistent allocations, and the
pools' own state (resized or re-policied pools, removed services).

A persistent allocation is written under ``<state dir>/allocations/`` before it is acknowledged:
``<id>.bin`` (the value in the tagged codec, signed with an HMAC sub-key of this installation's
secret and bound to the allocation id, then sealed with AES-GCM when an ``encryption_key`` is
configured) and ``<id>.json`` (its record and the SHA-256 of the ``.bin``). Both are written to a
temp name, fsynced and renamed; the record is the commit, so a ``.bin`` without a record is
removed on the next start. Reading one back checks the checksum, then the seal, then the
signature, and only then decodes: a copy that anyone else wrote is refused, never unpickled.

Example:
    >>> import tempfile, pathlib
    >>> from cognopt_ray.config import Settings
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> copies = DurableCopies(root / "allocations", Settings.load(storage_root=str(root)))
    >>> state = PoolState(root / "pools.json")
    >>> state.retired.add("old_service"); state.save()
    >>> sorted(PoolState(root / "pools.json").retired)
    ['old_service']
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cognopt_ray._private import values as _values
from cognopt_ray._private.files import atomic_write, fsync_dir
from cognopt_ray._private.sealer import MAGIC as SEALED_MAGIC
from cognopt_ray._private.sealer import Sealer, Signer
from cognopt_ray.config import Settings
from cognopt_ray.errors import IntegrityError
from cognopt_ray.memory.allocations import Allocation

logger = logging.getLogger(__name__)


class DurableCopies:
    """The durable copies of persistent allocations, one ``.bin`` + ``.json`` pair per allocation.

    Args:
        directory: where the copies live (created if missing).
        settings: the engine's settings (``encryption_key`` and the installation secret).
    """

    def __init__(self, directory: Path, settings: Settings) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        key = settings.encryption_key
        # Sealed (AES-GCM) when a key is configured ...
        self._sealer = Sealer(key.get_secret_value(), b"cognopt memory") if key is not None else None
        # ... and always signed (HMAC of the installation secret), checked before they are decoded.
        self._signer = Signer.from_settings(settings, _values.VALUES_PURPOSE)

    def save(self, alloc: Allocation, value: Any) -> None:
        """Write ``value``'s durable copy and then its record (the commit)."""
        data = _values.seal_signed(value, self._signer, alloc.id.encode())
        if self._sealer is not None:  # the checksum is of the stored (sealed) bytes
            data = self._sealer.seal(data, alloc.id.encode())
        atomic_write(self.dir / f"{alloc.id}.bin", data)
        atomic_write(
            self.dir / f"{alloc.id}.json", json.dumps({**alloc.meta(), "sha256": _values.sha256(data)}).encode()
        )

    def delete(self, alloc_id: str) -> None:
        """Delete an allocation's copy: the record first, since it is the commit."""
        (self.dir / f"{alloc_id}.json").unlink(missing_ok=True)
        (self.dir / f"{alloc_id}.bin").unlink(missing_ok=True)
        fsync_dir(self.dir)

    def load(self, alloc: Allocation) -> Any:
        """The value of an allocation's durable copy, after checksum, seal and signature are checked.

        Raises:
            IntegrityError: the copy does not match its checksum, is sealed without a configured
                key (or not sealed although one is), or is not signed by this installation under
                this allocation's id.
        """
        meta = json.loads((self.dir / f"{alloc.id}.json").read_text())
        data = (self.dir / f"{alloc.id}.bin").read_bytes()
        if _values.sha256(data) != meta.get("sha256"):
            raise IntegrityError(
                f"the durable copy of allocation {alloc.id!r} does not match its checksum",
                hint="deallocate it and allocate the data again",
            )
        if data.startswith(SEALED_MAGIC):
            if self._sealer is None:
                raise IntegrityError(
                    f"the durable copy of allocation {alloc.id!r} is encrypted but no encryption_key is configured",
                    hint="configure the encryption_key it was made with",
                )
            data = self._sealer.open(data, alloc.id.encode())
        elif self._sealer is not None:
            raise IntegrityError(
                f"the durable copy of allocation {alloc.id!r} is not encrypted although an "
                "encryption_key is configured; it is refused, not read",
                hint="deallocate it and allocate the data again",
            )
        return _values.open_signed(data, self._signer, alloc.id.encode())

    def records(self) -> Iterator[Allocation]:
        """The committed copies' records (values not read), then the leftovers of torn writes removed."""
        known: set[str] = set()
        for meta_path in sorted(self.dir.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text())
                alloc = Allocation(**{k: v for k, v in meta.items() if k != "sha256"})
            except Exception:  # noqa: BLE001 - a torn or foreign file is skipped, never fatal
                logger.warning("skipping unreadable allocation record %s", meta_path)
                continue
            known.add(alloc.id)
            yield alloc
        for blob in self.dir.glob("*.bin"):  # blobs whose record never committed
            if blob.stem not in known:
                blob.unlink(missing_ok=True)
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


class PoolState:
    """The pools' own durable state in ``path``: parameter overrides per service and removed services."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.overrides: dict[str, dict[str, Any]] = {}
        self.retired: set[str] = set()
        if path.is_file():
            doc = json.loads(path.read_text())
            self.overrides = doc.get("overrides", {})
            self.retired = set(doc.get("retired", []))

    def save(self) -> None:
        doc = {"overrides": self.overrides, "retired": sorted(self.retired)}
        atomic_write(self.path, json.dumps(doc, indent=1).encode())


__all__ = ["DurableCopies", "PoolState"]
