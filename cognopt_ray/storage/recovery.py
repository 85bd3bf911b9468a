"""Recovery of the store: start-up cleanup after a crash, what a backup reads, repair from backups."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from cognopt_ray.errors import Conflict, NotFound
from cognopt_ray.storage.access import Caller
from cognopt_ray.storage.catalog import check_item_id
from cognopt_ray.storage.codecs import TIERS
from cognopt_ray.storage.journal import local_seq
from cognopt_ray.storage.models import DEFAULT_SERVICE

logger = logging.getLogger(__name__)


class Recovery:
    """Crash recovery and repair (a part of :class:`~cognopt_ray.storage.store.TieredStore`)."""

    def _sync_journal(self) -> dict[str, Any] | None:
        """Start-up with the journal on (:mod:`~cognopt_ray.storage.journal`): rebuild the local
        catalog when it is empty or behind the root; checkpoint a catalog the root does not hold yet."""
        j = self.journal
        if j is None:
            return None
        self.catalog.attach_journal(j)
        j.refresh()
        with self.catalog.tx() as db:
            local = local_seq(db)
        if j.last_seq == 0:
            if not self.catalog.empty():  # the journal was just turned on: the root gets the catalog
                self._suspended(
                    lambda db: db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('journal_seq', ?)", (str(j.checkpoint(db)),)
                    )
                )
            return None
        if local == j.last_seq and not self.catalog.empty():
            return None
        return self._suspended(j.rebuild)

    def _suspended(self, fn: Any) -> Any:
        self.journal.suspended = True
        try:
            with self.catalog.tx() as db:
                return fn(db)
        finally:
            self.journal.suspended = False

    def rebuild_catalog(self) -> dict[str, Any]:
        """Replace the local catalog with the root's journal (what a fresh node does at start).

        Returns ``{checkpoint, entries, items, last_seq, gaps}``; a 409 when the journal is off."""
        if self.journal is None:
            raise Conflict(
                "the catalog journal is off, so the roots do not describe the store",
                hint="set storage.journal to 'on' (or point a tier root at an object store with 'auto')",
            )
        with self._lock:
            self.flush_access()
            out = self._suspended(self.journal.rebuild)
            self._dicts.clear()
            self._service_dict.clear()
            self.refused_dictionaries.clear()
            self._load_dictionaries()
            self._hot.clear()
            self._access.clear()
            return out

    def recover(self) -> dict[str, int]:
        """Start-up: drop temp files and files no catalog row points at (left by a crash)."""
        out = {"temps": 0, "orphans": 0, "items": 0}
        referenced: dict[str, set[str]] = {t: set() for t in TIERS}
        for tier, loc in self.catalog.query("SELECT tier, location FROM items"):
            f = self._loc_file(loc)
            if f:
                referenced[tier].add(f)
            out["items"] += 1
        for (loc,) in self.catalog.query("SELECT location FROM chunks"):
            f = self._loc_file(loc)
            if f:
                referenced["archive"].add(f)
        for tier, root in self.roots.items():
            out["temps"] += root.remove_temps()
            for rel in root.listdir("items") + root.listdir("chunks"):
                if rel not in referenced[tier]:
                    root.delete(rel)
                    out["orphans"] += 1
        if out["temps"] or out["orphans"]:
            logger.info("storage recovery removed %d temp and %d orphan files", out["temps"], out["orphans"])
        return out

    @property
    def backups(self):
        """The backup repository (:class:`~cognopt_ray.storage.backup.BackupRepository`)."""
        if self._backups is None:
            from cognopt_ray.storage.backup import BackupRepository

            self._backups = BackupRepository.for_settings(self.settings)
        return self._backups

    def iter_items_for_backup(self) -> Iterable[tuple[str, bytes, dict[str, Any]]]:
        """``(path, raw bytes, metadata)`` for every item (tables as Arrow IPC bytes)."""
        for (item_id,) in self.catalog.query("SELECT item_id FROM items ORDER BY item_id"):
            rec = self.catalog.get(item_id)
            if rec is None:
                continue
            if rec.kind == "table":
                data = self._table_bytes(self._read_table(rec))
            else:
                data = self._read_bytes(rec)
            meta = {
                "item_id": item_id,
                "service": rec.service,
                "tier": rec.tier,
                "kind": rec.kind,
                "codec": rec.codec.get("codec") if not rec.codec.get("auto", True) else "auto",
                "level": None if rec.codec.get("auto", True) else rec.codec.get("level"),
                "checksum": rec.checksum,
            }
            yield f"items/{item_id}", data, meta

    def restore_entry(self, data: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        """Put an item back from a backup entry (an admin action: it may take an id back from another service)."""
        value: Any = data
        if meta.get("kind") == "table":
            from cognopt_ray.storage.ipc_guard import read_table

            value = read_table(data, len(data))  # written uncompressed: never decodes to more than its bytes
        elif meta.get("kind") == "json":
            value = json.loads(data)
        return self.put(
            meta["item_id"],
            value,
            service=meta.get("service") or DEFAULT_SERVICE,
            tier=meta.get("tier"),
            codec=meta.get("codec") or "auto",
            level=meta.get("level"),
            caller=Caller(admin=True),
        )

    def repair(self, item_id: str) -> dict[str, Any]:
        """Restore a damaged (or lost) item from the latest snapshot that has it."""
        check_item_id(item_id)
        with self._lock:
            rec = self.catalog.get(item_id)
            found = self.backups.find_latest(
                f"items/{item_id}", checksum=rec.checksum if rec and rec.kind != "table" else None
            )
            if found is None:
                raise NotFound(
                    f"no snapshot holds item {item_id!r}", hint="back up the store regularly (POST storage/backup)"
                )
            snap_id, data, meta = found
            self._verify_chunks = True  # deduplicated chunks already present are checked, not trusted
            try:
                out = self.restore_entry(data, meta)
            finally:
                self._verify_chunks = False
            self.counters["repairs"] += 1
            return {"item_id": item_id, "snapshot": snap_id, "restored": True, "tier": out["tier"]}


__all__ = ["Recovery"]
