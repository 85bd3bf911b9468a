"""The ledger of spilled allocations: what each service holds in the ``evict_to`` store.

A transient allocation evicted through the ``evict_to`` hook (by default the storage engine's WARM
tier, :mod:`cognopt_ray.memory.spill`) is *spilled*: it no longer takes blocks of its pool, but
its copy takes bytes in WARM. The ledger counts those bytes per service, bounds them by the
service's ``max_spill_bytes`` (oldest spilled entries are deleted first, counted as
``spill_dropped``) and deletes a copy through the ``delete_evicted`` hook when its allocation is
deallocated, expires, is dropped or its pool is removed. It is kept in ``<state dir>/spilled.json``
so a restarted engine still answers gets of spilled allocations and still cleans them.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cognopt_ray._private.files import atomic_write

logger = logging.getLogger(__name__)


@dataclass
class Spilled:
    service: str
    nbytes: int  # the value's size in the pool
    stored: int  # bytes its copy takes in the evict_to store
    expires: float | None
    spilled_at: float


class SpillLedger:
    """Spilled allocations by id, oldest first; durable in ``path``.

    Args:
        path: the JSON file the ledger lives in.
        delete: the ``delete_evicted`` hook (``fn(service, allocation_id)``), or ``None``.
    """

    def __init__(self, path: Path, delete: Callable[[str, str], Any] | None) -> None:
        self.path = path
        self.delete = delete
        self.entries: OrderedDict[str, Spilled] = OrderedDict()
        self.bytes: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.dirty = False
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            doc = json.loads(self.path.read_text())
            for alloc_id, e in doc.get("entries", {}).items():
                self._put(alloc_id, Spilled(**e))
            self.dropped = {str(k): int(v) for k, v in doc.get("dropped", {}).items()}
        except Exception:
            logger.warning("ignoring unreadable spill ledger %s", self.path, exc_info=True)

    def save(self) -> None:
        """Write the ledger if it changed since the last save."""
        if not self.dirty:
            return
        doc = {"entries": {k: asdict(v) for k, v in self.entries.items()}, "dropped": self.dropped}
        try:
            atomic_write(self.path, json.dumps(doc).encode())
            self.dirty = False
        except OSError:
            logger.warning("could not write the spill ledger %s", self.path, exc_info=True)

    def _put(self, alloc_id: str, entry: Spilled) -> None:
        self.entries[alloc_id] = entry
        self.bytes[entry.service] = self.bytes.get(entry.service, 0) + entry.stored

    def get(self, alloc_id: str) -> Spilled | None:
        return self.entries.get(alloc_id)

    def add(self, alloc_id: str, entry: Spilled, max_bytes: int) -> list[str]:
        """Record a spilled allocation; returns the ids dropped (deleted) to stay within ``max_bytes``."""
        self._put(alloc_id, entry)
        self.dirty = True
        dropped = []
        for old_id in [i for i, e in self.entries.items() if e.service == entry.service]:
            if self.bytes.get(entry.service, 0) <= max_bytes:
                break
            self.remove(old_id)
            self.dropped[entry.service] = self.dropped.get(entry.service, 0) + 1
            dropped.append(old_id)
        return dropped

    def count_dropped(self, service: str) -> None:
        """An evicted allocation that was not spilled at all (larger than ``max_spill_bytes``)."""
        self.dropped[service] = self.dropped.get(service, 0) + 1
        self.dirty = True

    def remove(self, alloc_id: str) -> Spilled | None:
        """Forget a spilled allocation and delete its copy (a failed delete is logged)."""
        entry = self.entries.pop(alloc_id, None)
        if entry is None:
            return None
        self.bytes[entry.service] = self.bytes.get(entry.service, 0) - entry.stored
        self.dirty = True
        if self.delete is not None:
            try:
                self.delete(entry.service, alloc_id)
            except Exception:
                logger.warning("could not delete the spilled copy of %s", alloc_id, exc_info=True)
        return entry

    def of(self, service: str) -> list[str]:
        return [i for i, e in self.entries.items() if e.service == service]

    def expired(self, now: float) -> list[str]:
        return [i for i, e in self.entries.items() if e.expires is not None and e.expires <= now]

    def figures(self, service: str) -> dict[str, int]:
        return {
            "spilled": sum(1 for e in self.entries.values() if e.service == service),
            "spilled_bytes": self.bytes.get(service, 0),
            "spill_dropped": self.dropped.get(service, 0),
        }
