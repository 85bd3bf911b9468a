"""The storage engine actor (``cognopt.storage``): private; use :class:`~cognopt_ray.storage.StorageClient`.

The actor owns one :class:`~cognopt_ray.storage.store.TieredStore`. HOT items are put into Ray's
object store from inside the actor, so the actor owns them and they outlive the callers; every
HOT item also has a durable copy, so a restarted actor (``max_restarts=-1``) serves them again
from that copy and nothing acknowledged is lost. A background thread runs the lifecycle pass
every ``storage.lifecycle_interval_s`` seconds.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import ray

from cognopt_ray._private.gauges import Gauges
from cognopt_ray.config import Settings
from cognopt_ray.storage.access import Caller
from cognopt_ray.storage.models import PutRequest
from cognopt_ray.storage.paths import confine, roots_for

logger = logging.getLogger(__name__)

#: the storage engine's Prometheus gauges: name -> (description, label keys)
GAUGES = {
    "cognopt_storage_items": ("storage engine: items per tier", ("tier",)),
    "cognopt_storage_raw_bytes": ("storage engine: raw bytes per tier", ("tier",)),
    "cognopt_storage_stored_bytes": ("storage engine: bytes on the tier (after codec and dedup)", ("tier",)),
    "cognopt_storage_compression_ratio": ("storage engine: raw bytes / stored bytes, all tiers", ()),
}


class _StoreActor:
    """Holds the tiered store; every public method is a remote call of :class:`~cognopt_ray.storage.StorageClient`."""

    def __init__(self, settings: Settings | dict[str, Any]) -> None:
        from cognopt_ray.storage.store import TieredStore

        if isinstance(settings, dict):
            settings = Settings.load(**settings)
        self.settings = settings
        self.started = time.time()
        self.error: str | None = None
        self.store = TieredStore(settings, use_object_store=True)
        self._stop = threading.Event()
        self.last_pass: dict[str, Any] | None = None
        self.gauges = Gauges(GAUGES)
        if settings.storage.lifecycle_enabled:
            threading.Thread(target=self._loop, name="cognopt-storage-lifecycle", daemon=True).start()
        logger.info("storage engine up (recovered: %s)", self.store.recovered)

    def _loop(self) -> None:
        interval = self.settings.storage.lifecycle_interval_s
        while not self._stop.wait(interval):
            try:
                r = self.store.optimize_tiering()
                self.last_pass = {"time": time.time(), "migrated": len(r["migrated"]), "failed": len(r["failed"])}
            except Exception as e:  # noqa: BLE001 - the loop must survive a bad pass
                logger.warning("lifecycle pass failed: %s", e)

    def health(self) -> dict[str, Any]:
        status = "up"
        reason = None
        for tier, root in self.store.roots.items():
            free = root.free_bytes()
            if free is not None and free < self.settings.storage.min_free_bytes:
                status, reason = "degraded", f"tier {tier} has {free} bytes free (< min_free_bytes)"
        out = {
            "status": status,
            "items": self.store.catalog.query("SELECT COUNT(*) FROM items")[0][0],
            "recovered": self.store.recovered,
            # the catalog journal in the root (None: off); "rebuilt" says this start rebuilt the
            # local catalog from it (a fresh node, or one whose catalog was behind the root)
            "journal": None
            if self.store.journal is None
            else {"root": self.store.journal.root.uri, "last_seq": self.store.journal.last_seq},
            "rebuilt": self.store.rebuilt,
            "node_id": ray.get_runtime_context().get_node_id(),
            "last_lifecycle_pass": self.last_pass,
        }
        if reason:
            out["reason"] = reason
        return out

    # all of these forward to the store
    # ``caller`` (a :class:`~cognopt_ray.storage.access.Caller`) is passed by the REST layer;
    # Python callers pass none and act as in-cluster code (still bound by ownership).
    def put_many(self, items: list[PutRequest], caller: Caller | None = None) -> list[dict[str, Any]]:
        return self.store.put_many(items, caller=caller)

    def retrieve(
        self, item_id: str, columns: list[str] | None = None, caller: Caller | None = None
    ) -> tuple[dict[str, Any], Any]:
        """``(catalog record, value)`` in one call (what ``GET storage/retrieve`` answers with)."""
        return self.store.retrieve(item_id, columns=columns, caller=caller)

    def fetch(self, item_id: str, columns: list[str] | None = None, caller: Caller | None = None) -> tuple:
        """``("ref", [ObjectRef], kind)`` for HOT items (the caller reads zero-copy), else ``("value", value)``."""
        r = self.store.get_ref(item_id, caller)
        if r is not None:
            return ("ref", [r["ref"]], r["kind"])
        return ("value", self.store.get(item_id, columns=columns, caller=caller))

    def get_many(self, item_ids: list[str]) -> list[Any]:
        return self.store.get_many(item_ids)

    def locate_many(self, item_ids: list[str]) -> tuple[str, list[dict[str, Any] | None]]:
        return ray.get_runtime_context().get_node_id(), self.store.locate_many(item_ids)

    def info(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.store.info(item_id, caller)

    def explain(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.store.explain(item_id, caller)

    def delete(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.store.delete(item_id, caller)

    def list_items(
        self, service: str | None = None, tier: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return self.store.list_items(service, tier, limit)

    def migrate(self, item_id: str, tier: str) -> dict[str, Any]:
        return self.store.migrate(item_id, tier)

    def optimize_tiering(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        return self.store.optimize_tiering(dry_run=dry_run, now=now)

    def optimize_service(
        self, service: str, parameters: dict[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        return self.store.optimize_service(service, parameters, caller)

    def train_dictionary(self, service: str) -> dict[str, Any]:
        return self.store.train_dictionary(service)

    def metrics(self) -> dict[str, Any]:
        m = self.store.metrics()
        self._export(m)
        try:
            snaps = self.store.backups.snapshots()
            repo = self.store.backups.size_on_disk()
            scanned = sum(s["bytes_scanned"] for s in snaps)
            m["backups"] = {
                "snapshots": len(snaps),
                "repository_bytes": repo,
                "bytes_scanned_total": scanned,
                "dedup_ratio": (scanned / repo) if repo else None,
                "formula": "dedup_ratio = bytes scanned by all snapshots / repository bytes on disk",
            }
        except Exception as e:  # noqa: BLE001 - metrics must answer even if the repository is unreadable
            m["backups"] = {"error": str(e)}
        return m

    def _export(self, m: dict[str, Any]) -> None:
        """Publish the tier figures as Prometheus gauges (:data:`GAUGES`) through ``ray.util.metrics``.

        Refreshed whenever the storage metrics are read (``GET storage/metrics``, ``system/metrics``,
        the dashboard): the store is not thread-safe, so no other thread reads it for export.
        ``cognopt_storage_compression_ratio`` is raw_bytes / stored_bytes over all tiers (absent when empty).
        """

        def fill() -> None:
            for tier, fig in m["tiers"].items():
                for key in ("items", "raw_bytes", "stored_bytes"):
                    self.gauges.set(f"cognopt_storage_{key}", fig[key], tier=tier)
            self.gauges.set("cognopt_storage_compression_ratio", m.get("compression_ratio"))

        self.gauges.export(fill, "storage")

    def verify(self, item_ids: list[str] | None = None) -> dict[str, Any]:
        return self.store.verify(item_ids)

    def repair(self, item_id: str) -> dict[str, Any]:
        return self.store.repair(item_id)

    def rebuild_catalog(self) -> dict[str, Any]:
        return self.store.rebuild_catalog()

    def path_roots(self) -> dict[str, list[str]]:
        """Where backups may read (``backup_source_roots``) and restores may write (``restore_roots``)."""
        return roots_for(self.settings)

    def backup(self, source: str | None = None, tag: str | None = None) -> dict[str, Any]:
        """Back up the store, or a folder or URI inside ``storage.backup_source_roots`` (else 403)."""
        if not source:
            return self.store.backups.backup(self.store, tag=tag)
        roots = roots_for(self.settings)["backup_source_roots"]
        return self.store.backups.backup(
            confine(source, roots, "storage.backup_source_roots", "backup source"), tag=tag
        )

    def snapshots(self) -> list[dict[str, Any]]:
        return self.store.backups.snapshots()

    def restore(self, snapshot_id: str, item_ids: list[str] | None = None, target: str | None = None) -> dict[str, Any]:
        """Restore into the store, or into a folder or URI inside ``storage.restore_roots`` (else 403)."""
        where = None
        if target:
            where = confine(
                target, roots_for(self.settings)["restore_roots"], "storage.restore_roots", "restore target"
            )
        return self.store.backups.restore(
            snapshot_id, item_ids=item_ids, target=where, store=None if target else self.store
        )

    def check(self, read_data: bool | float = False, repair: bool = False) -> dict[str, Any]:
        return self.store.backups.check(read_data, repair)

    def prune(
        self, keep_last: int | None = None, keep_daily: int | None = None, keep_weekly: int | None = None
    ) -> dict[str, Any]:
        return self.store.backups.prune(keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly)

    def take_snapshot_file(self, snapshot_id: str, dry_run: bool = False) -> bytes:
        return self.store.backups.take_snapshot_file(snapshot_id, dry_run=dry_run)

    def put_snapshot_file(self, snapshot_id: str, blob: bytes) -> dict[str, Any]:
        return self.store.backups.put_snapshot_file(snapshot_id, blob)

    def arm_fault(self, point: str | None) -> None:
        """Test hook: the actor process exits at ``point`` (``store.before_commit``,
        ``migrate.after_copy``, ``backup.after_pack``, ``backup.before_snapshot`` ...)."""
        self.store.arm_fault(point)
        self.store.backups.arm_fault(point)

    def pid(self) -> int:
        """Test hook: the actor's process id (to tell a restarted actor from the old one)."""
        return os.getpid()


StoreActor = ray.remote(_StoreActor)

__all__ = ["StoreActor"]
