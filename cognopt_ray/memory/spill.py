"""Evicted transient allocations go to the storage engine's WARM tier, so a later ``get`` answers.

These are the default ``memory.evict_to`` / ``memory.load_evicted`` / ``memory.delete_evicted``
hooks. Each evicted value is stored as item ``memory-evicted:<service>:<allocation id>`` in WARM
(fast codec, checksummed, encrypted when a key is configured) in the package's tagged codec
(:mod:`cognopt_ray._private.values`) and **signed** with an HMAC sub-key (purpose
``b"cognopt values"``) of the per-installation secret, the signature bound to the item id.

Reading it back checks that signature before anything is decoded: an item that anyone else
wrote (a service key through ``POST storage/store``, a restore, a file) carries no valid
signature and is refused with :class:`~cognopt_ray.errors.IntegrityError`; it is never unpickled.
A signed blob copied under another allocation's id fails too (the name is in the MAC).

The pools actor deletes the item when the allocation is deallocated, expires, is dropped over the
service's ``max_spill_bytes``, or its pool is removed.
"""

from __future__ import annotations

import logging
from typing import Any

from cognopt_ray._private import values as _values
from cognopt_ray._private.sealer import Signer
from cognopt_ray.errors import NotFound

logger = logging.getLogger(__name__)

PREFIX = "memory-evicted:"
_signers: dict[str, Signer] = {}


def item_id(service: str, allocation_id: str) -> str:
    return f"{PREFIX}{service}:{allocation_id}"


def _storage():
    from cognopt_ray.storage import client

    return client()


def _signer() -> Signer:
    from cognopt_ray import runtime

    settings = runtime.get_settings()
    key = f"{settings.root}|{settings.encryption_key is not None}"
    signer = _signers.get(key)
    if signer is None:
        signer = _signers[key] = Signer.from_settings(settings, _values.VALUES_PURPOSE)
    return signer


def evict_to_warm(service: str, allocation_id: str, value: Any, meta: dict[str, Any]) -> int:
    """Store an evicted allocation in WARM, signed; returns the bytes stored (raises on failure)."""
    name = item_id(service, allocation_id)
    blob = _values.seal_signed(value, _signer(), name.encode())
    _storage().put(name, blob, service=service, tier="warm")
    return len(blob)


def load_from_warm(service: str, allocation_id: str) -> Any:
    """The evicted value, read back from WARM; ``KeyError`` when storage has none.

    Raises:
        IntegrityError: the item is not a value this installation signed under this id.
    """
    name = item_id(service, allocation_id)
    try:
        data = _storage().get(name)
    except NotFound:
        raise KeyError(allocation_id) from None
    if not isinstance(data, (bytes, bytearray, memoryview)):  # stored as JSON or a table: not ours
        data = b""
    return _values.open_signed(data, _signer(), name.encode())


def delete_from_warm(service: str, allocation_id: str) -> None:
    """Delete an evicted allocation's WARM item (missing is fine)."""
    try:
        _storage().delete(item_id(service, allocation_id))
    except NotFound:
        pass
