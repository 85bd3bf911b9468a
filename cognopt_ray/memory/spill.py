"""Evicted transient allocations go to the storage engine's WARM tier, so a later ``get`` answers.

These are the default ``memory.evict_to`` / ``memory.load_evicted`` hooks. Each evicted value is
serialised as the pools serialise persistent allocations (pickle protocol 5: the value was already
in the object store, so this adds no new trust boundary) and stored as item
``memory-evicted:<service>:<allocation id>`` in WARM (fast codec, checksummed, encrypted when a
key is configured). The item is deleted when a later ``get`` brings it back into the pool.
"""

from __future__ import annotations

import logging
from typing import Any

from cognopt_ray.errors import NotFound
from cognopt_ray.memory import _values

logger = logging.getLogger(__name__)


def item_id(service: str, allocation_id: str) -> str:
    return f"memory-evicted:{service}:{allocation_id}"


def _storage():
    from cognopt_ray.storage import client

    return client()


def evict_to_warm(service: str, allocation_id: str, value: Any, meta: dict[str, Any]) -> None:
    """Store an evicted allocation in the WARM tier (raises on failure; the pool then drops it)."""
    _storage().put(item_id(service, allocation_id), _values.dumps(value), service=service, tier="warm")


def load_from_warm(service: str, allocation_id: str) -> Any:
    """The evicted value, read back from WARM; ``KeyError`` when storage has none."""
    try:
        data = _storage().get(item_id(service, allocation_id))
    except NotFound:
        raise KeyError(allocation_id) from None
    return _values.loads(bytes(data))
