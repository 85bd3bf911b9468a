"""The storage engine actor (``cognopt.storage``) and its client.

The actor owns one :class:`~cognopt_ray.storage.store.TieredStore`. HOT items are put into Ray's
object store from inside the actor, so the actor owns them and they outlive the callers; every
HOT item also has a durable copy, so a restarted actor (``max_restarts=-1``) serves them again
from that copy and nothing acknowledged is lost. A background thread runs the lifecycle pass
every ``storage.lifecycle_interval_s`` seconds.

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray.storage import client
    >>> cognopt_ray.init(num_cpus=2)                                # doctest: +SKIP
    >>> store = client()                                            # doctest: +SKIP
    >>> store.put("logs-1", b"..." * 1000, tier="warm")["codec"]    # doctest: +SKIP
    'zstd'
    >>> store.get("logs-1")[:3]                                     # doctest: +SKIP
    b'...'
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient
from cognopt_ray.config import Settings
from cognopt_ray.storage.access import Caller
from cognopt_ray.storage.paths import confine, roots_for

logger = logging.getLogger(__name__)

ACTOR_NAME = "cognopt.storage"
#: Bytes items at least this large (with an explicit warm/cold tier and codec) are encoded by the client.
LOCAL_CODEC_MIN = 256 * 1024


def _codec_names() -> tuple[str, ...]:
    from cognopt_ray.storage.codecs import CODEC_CHOICES

    return CODEC_CHOICES


class _StoreActor:
    """Holds the tiered store; every public method is a remote call of :class:`StorageClient`."""

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
        self._gauges: dict[str, Any] | None = None
        self._ratio_gauge: Any = None
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
        out = {"status": status, "items": self.store.catalog.query("SELECT COUNT(*) FROM items")[0][0],
               "recovered": self.store.recovered, "last_lifecycle_pass": self.last_pass}
        if reason:
            out["reason"] = reason
        return out

    # all of these forward to the store
    # ``caller`` (a :class:`~cognopt_ray.storage.access.Caller`) is passed by the REST layer;
    # Python callers pass none and act as in-cluster code (still bound by ownership).
    def put_many(self, items: list[dict[str, Any]], caller: Caller | None = None) -> list[dict[str, Any]]:
        return self.store.put_many(items, caller=caller)

    def get(self, item_id: str, columns: list[str] | None = None, caller: Caller | None = None) -> Any:
        return self.store.get(item_id, columns=columns, caller=caller)

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

    def get_ref(self, item_id: str) -> Any:
        r = self.store.get_ref(item_id)
        return None if r is None else {"refs": [r["ref"]], "kind": r["kind"]}

    def info(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.store.info(item_id, caller)

    def explain(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.store.explain(item_id, caller)

    def delete(self, item_id: str, caller: Caller | None = None) -> dict[str, Any]:
        return self.store.delete(item_id, caller)

    def list_items(self, service: str | None = None, tier: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        return self.store.list_items(service, tier, limit)

    def migrate(self, item_id: str, tier: str) -> dict[str, Any]:
        return self.store.migrate(item_id, tier)

    def optimize_tiering(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        return self.store.optimize_tiering(dry_run=dry_run, now=now)

    def optimize_service(self, service: str, parameters: dict[str, Any], caller: Caller | None = None) -> dict[str, Any]:
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
            m["backups"] = {"snapshots": len(snaps), "repository_bytes": repo, "bytes_scanned_total": scanned,
                            "dedup_ratio": (scanned / repo) if repo else None,
                            "formula": "dedup_ratio = bytes scanned by all snapshots / repository bytes on disk"}
        except Exception as e:  # noqa: BLE001 - metrics must answer even if the repository is unreadable
            m["backups"] = {"error": str(e)}
        return m

    def _export(self, m: dict[str, Any]) -> None:
        """Publish the tier figures as Prometheus gauges through ``ray.util.metrics``.

        Refreshed whenever the storage metrics are read (``GET storage/metrics``, ``system/metrics``,
        the dashboard): the store is not thread-safe, so no other thread reads it for export.
        Names: ``cognopt_storage_{items,raw_bytes,stored_bytes}{tier}`` and
        ``cognopt_storage_compression_ratio`` (raw_bytes / stored_bytes over all tiers; 0 when empty).
        """
        try:
            if self._gauges is None:
                from ray.util.metrics import Gauge

                per_tier = {"items": "items per tier", "raw_bytes": "raw bytes per tier",
                            "stored_bytes": "bytes on the tier (after codec and dedup)"}
                self._gauges = {k: Gauge(f"cognopt_storage_{k}", description=f"storage engine: {d}", tag_keys=("tier",))
                                for k, d in per_tier.items()}
                self._ratio_gauge = Gauge("cognopt_storage_compression_ratio",
                                          description="storage engine: raw bytes / stored bytes, all tiers")
            for tier, fig in m["tiers"].items():
                for key, gauge in self._gauges.items():
                    gauge.set(float(fig[key] or 0), tags={"tier": tier})
            self._ratio_gauge.set(float(m.get("compression_ratio") or 0.0))
        except Exception:  # noqa: BLE001 - metrics export must never break the engine
            logger.debug("could not export storage gauges", exc_info=True)

    def verify(self, item_ids: list[str] | None = None) -> dict[str, Any]:
        return self.store.verify(item_ids)

    def repair(self, item_id: str) -> dict[str, Any]:
        return self.store.repair(item_id)

    def path_roots(self) -> dict[str, list[str]]:
        """Where backups may read (``backup_source_roots``) and restores may write (``restore_roots``)."""
        return roots_for(self.settings)

    def backup(self, source: str | None = None, tag: str | None = None) -> dict[str, Any]:
        """Back up the store, or a folder or URI inside ``storage.backup_source_roots`` (else 403)."""
        if not source:
            return self.store.backups.backup(self.store, tag=tag)
        roots = roots_for(self.settings)["backup_source_roots"]
        return self.store.backups.backup(confine(source, roots, "storage.backup_source_roots", "backup source"), tag=tag)

    def snapshots(self) -> list[dict[str, Any]]:
        return self.store.backups.snapshots()

    def restore(self, snapshot_id: str, item_ids: list[str] | None = None, target: str | None = None) -> dict[str, Any]:
        """Restore into the store, or into a folder or URI inside ``storage.restore_roots`` (else 403)."""
        where = None
        if target:
            where = confine(target, roots_for(self.settings)["restore_roots"], "storage.restore_roots", "restore target")
        return self.store.backups.restore(snapshot_id, item_ids=item_ids, target=where,
                                          store=None if target else self.store)

    def check(self, read_data: bool | float = False, repair: bool = False) -> dict[str, Any]:
        return self.store.backups.check(read_data, repair)

    def prune(self, keep_last: int | None = None, keep_daily: int | None = None, keep_weekly: int | None = None) -> dict[str, Any]:
        return self.store.backups.prune(keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly)

    def take_snapshot_file(self, snapshot_id: str, dry_run: bool = False) -> bytes:
        """The stored bytes of a snapshot file, removed from the repository unless ``dry_run``
        (its chunks stay until a prune): the system layer's quarantine keeps them restorable."""
        repo = self.store.backups
        repo._snapshot(snapshot_id)  # validates the id, NotFound when absent
        rel = f"snapshots/{snapshot_id}"
        with repo._lock:
            blob = repo.root.read(rel)
            if not dry_run:
                repo.root.delete(rel)
        return blob

    def put_snapshot_file(self, snapshot_id: str, blob: bytes) -> dict[str, Any]:
        """Put back a snapshot file taken by :meth:`take_snapshot_file` (refused if it exists)."""
        from cognopt_ray.errors import Conflict, InvalidInput

        if not isinstance(snapshot_id, str) or not snapshot_id.isalnum():
            raise InvalidInput(f"snapshot id {snapshot_id!r} is not valid")
        repo = self.store.backups
        rel = f"snapshots/{snapshot_id}"
        with repo._lock:
            if repo.root.exists(rel):
                raise Conflict(f"snapshot {snapshot_id!r} exists already", hint="nothing to restore")
            repo.root.write(rel, blob)
        return repo._snapshot(snapshot_id) and {"snapshot_id": snapshot_id, "bytes": len(blob)}

    def arm_fault(self, point: str | None) -> None:
        """Test hook: the actor process exits at ``point`` (``store.before_commit``,
        ``migrate.after_copy``, ``backup.after_pack``, ``backup.before_snapshot`` ...)."""
        self.store.arm_fault(point)
        self.store.backups.arm_fault(point)

    def pid(self) -> int:
        import os

        return os.getpid()


StoreActor = ray.remote(_StoreActor)


class StorageClient(EngineClient):
    """Client of the storage engine actor (sync methods; ``a``-prefixed async twins for the hot ones).

    Args:
        handle: the actor handle (see :func:`client`).

    Example:
        >>> store = client()                                           # doctest: +SKIP
        >>> store.put("t1", pa.table({"x": [1, 2, 3]}), tier="cold")   # doctest: +SKIP
        >>> store.get("t1", columns=["x"]).num_rows                    # doctest: +SKIP
        3
        >>> snap = store.backup()                                      # doctest: +SKIP
    """

    engine = "storage"

    def put(self, item_id: str, data: Any, *, service: str | None = None, tier: str | None = None,
            codec: str | None = None, level: int | None = None) -> dict[str, Any]:
        """Store one item (bytes, a JSON value, or a table); returns its catalog record."""
        return self._call("put_many", [{"item_id": item_id, "data": data, "service": service, "tier": tier,
                                         "codec": codec, "level": level}])[0]

    async def aput(self, item_id: str, data: Any, **kw: Any) -> dict[str, Any]:
        return (await self._acall("put_many", [{"item_id": item_id, "data": data, **kw}]))[0]

    def put_many(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store several items with one catalog commit (fast for many small items).

        Large bytes items with an explicit warm/cold tier and codec are compressed here, in the
        caller's process, so the actor only writes, fsyncs and commits (the codec choice is the
        same one the actor would make, and is recorded the same way).
        """
        from cognopt_ray.storage.store import encode_for

        out = []
        for it in items:
            data = it.get("data") if isinstance(it, dict) else None
            if isinstance(data, (bytes, bytearray)) and len(data) >= LOCAL_CODEC_MIN and it.get("tier") in ("warm", "cold") \
                    and it.get("codec") and it.get("codec") in _codec_names():
                it = {**it, "data": encode_for(bytes(data), it["tier"], it["codec"], it.get("level"))}
            out.append(it)
        return self._call("put_many", out)

    def get(self, item_id: str, *, columns: list[str] | None = None) -> Any:
        """The item: bytes, JSON value or ``pa.Table``; HOT items come zero-copy from the object store."""
        out = self._call("fetch", item_id, columns)
        if out[0] == "value":
            return out[1]
        try:
            value = ray.get(out[1][0], timeout=self._timeout_s)
        except Exception as e:  # noqa: BLE001
            from cognopt_ray._private.client import translate_error

            raise translate_error(e, self.engine) from None
        if out[2] == "json":
            import json

            return json.loads(value)
        return value.select(columns) if columns and out[2] == "table" else value

    async def aget(self, item_id: str, *, columns: list[str] | None = None) -> Any:
        return await self._acall("get", item_id, columns)

    def get_many(self, item_ids: list[str]) -> list[Any]:
        """Several items. Plain bytes items in local warm/cold files are read and verified in this
        process when it runs on the actor's node (no copy through the actor); the rest, and
        anything that does not verify here, come through the actor (which reports damage)."""
        from cognopt_ray.storage.store import decode_from

        node, locs = self._call("locate_many", item_ids)
        here = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        values: list[Any] = [None] * len(item_ids)
        rest: list[int] = []
        for k, loc in enumerate(locs):
            raw = None
            if loc is not None and node == here:
                try:
                    with open(loc["path"], "rb") as f:
                        raw = decode_from(f.read(), loc["codec"], loc["raw_size"], loc["checksum"])
                except OSError:
                    raw = None
            if raw is None:
                rest.append(k)
            else:
                values[k] = raw
        if rest:
            for k, v in zip(rest, self._call("get_many", [item_ids[k] for k in rest])):
                values[k] = v
        return values

    def info(self, item_id: str) -> dict[str, Any]:
        return self._call("info", item_id)

    async def ainfo(self, item_id: str) -> dict[str, Any]:
        return await self._acall("info", item_id)

    def explain(self, item_id: str) -> dict[str, Any]:
        """Why the item has its tier and codec (reason, probe ratio, candidates)."""
        return self._call("explain", item_id)

    def delete(self, item_id: str) -> dict[str, Any]:
        return self._call("delete", item_id)

    def list_items(self, service: str | None = None, tier: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        return self._call("list_items", service, tier, limit)

    def migrate(self, item_id: str, tier: str) -> dict[str, Any]:
        return self._call("migrate", item_id, tier)

    def optimize_tiering(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        """A lifecycle pass now (``now`` lets you plan for a future time)."""
        return self._call("optimize_tiering", dry_run, now)

    def optimize_service(self, service: str, parameters: dict[str, Any]) -> dict[str, Any]:
        return self._call("optimize_service", service, parameters)

    def train_dictionary(self, service: str) -> dict[str, Any]:
        return self._call("train_dictionary", service)

    def metrics(self) -> dict[str, Any]:
        return self._call("metrics")

    def verify(self, item_ids: list[str] | None = None) -> dict[str, Any]:
        return self._call("verify", item_ids)

    def repair(self, item_id: str) -> dict[str, Any]:
        return self._call("repair", item_id)

    def backup(self, source: str | None = None, tag: str | None = None) -> dict[str, Any]:
        """Incremental snapshot of the store (default) or of a folder / pyarrow.fs path."""
        return self._call("backup", source, tag, _timeout=3600)

    def snapshots(self) -> list[dict[str, Any]]:
        return self._call("snapshots")

    def restore(self, snapshot_id: str, item_ids: list[str] | None = None, target: str | None = None) -> dict[str, Any]:
        return self._call("restore", snapshot_id, item_ids, target, _timeout=3600)

    def check(self, read_data: bool | float = False, repair: bool = False) -> dict[str, Any]:
        """Verify the backup repository; ``repair`` drops damaged chunks so the next backup rewrites them."""
        return self._call("check", read_data, repair, _timeout=3600)

    def prune(self, keep_last: int | None = None, keep_daily: int | None = None, keep_weekly: int | None = None) -> dict[str, Any]:
        return self._call("prune", keep_last, keep_daily, keep_weekly, _timeout=3600)

    def take_snapshot_file(self, snapshot_id: str, dry_run: bool = False) -> bytes:
        """A snapshot file's bytes, removed from the repository unless ``dry_run`` (chunks stay)."""
        return self._call("take_snapshot_file", snapshot_id, dry_run)

    def put_snapshot_file(self, snapshot_id: str, blob: bytes) -> dict[str, Any]:
        """Put back a snapshot file taken by :meth:`take_snapshot_file`."""
        return self._call("put_snapshot_file", snapshot_id, blob)

    def health(self) -> dict[str, Any]:
        return self._call("health")

    def path_roots(self) -> dict[str, list[str]]:
        """The roots backups may read and restores may write (``storage.backup_source_roots`` / ``restore_roots``)."""
        return self._call("path_roots")


def client(settings: Settings | None = None, *, name: str = ACTOR_NAME) -> StorageClient:
    """The storage engine client, creating the actor ``cognopt.storage`` if needed.

    Args:
        settings: defaults to :func:`cognopt_ray.runtime.get_settings`.
        name: the actor name (tests use other names to run separate stores).
    """
    settings = settings or runtime.get_settings()
    handle = runtime.get_or_create_actor(StoreActor, name, settings, max_concurrency=1)
    return StorageClient(handle)


__all__ = ["StorageClient", "client", "ACTOR_NAME", "StoreActor"]
