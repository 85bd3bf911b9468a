"""The public client of the storage engine: :class:`StorageClient` and the cached :func:`client`.

Every method has a sync form and an ``_async`` twin (``put`` / ``put_async``). Errors of the
engine arrive as the package's own exceptions (:mod:`cognopt_ray.storage.errors`); an engine
that is restarting or does not answer raises :class:`~cognopt_ray.errors.EngineUnavailable`.

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

import asyncio
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import ray

from cognopt_ray import runtime
from cognopt_ray._private.client import EngineClient, process_client, translate_error
from cognopt_ray.config import Settings
from cognopt_ray.errors import EngineUnavailable
from cognopt_ray.storage.access import Caller
from cognopt_ray.storage.blobs import decode_from, encode_for
from cognopt_ray.storage.models import DEFAULT_SERVICE, PutRequest, put_requests

ACTOR_NAME = "cognopt.storage"
#: Bytes items at least this large (with an explicit warm/cold tier and codec) are encoded by the client.
LOCAL_CODEC_MIN = 256 * 1024
#: Seconds a backup, restore, check or prune may take before the call reports the engine unavailable.
LONG_CALL_S = 3600.0

Item = PutRequest | dict[str, Any]


def _finish(value: Any, kind: str, columns: list[str] | None) -> Any:
    """A HOT value read from the object store, in the form :meth:`StorageClient.get` returns."""
    if kind == "json":
        return json.loads(value)
    return value.select(columns) if columns and kind == "table" else value


class StorageClient(EngineClient):
    """Client of the storage engine actor ``cognopt.storage``.

    ``caller`` (a :class:`~cognopt_ray.storage.access.Caller`) is what the REST layer passes for
    the key of a request; Python callers leave it out and act as in-cluster code, still bound by
    ownership (the ``service`` they write under must own the id).

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

    # ------------------------------------------------------------------------------------ writes
    def put(
        self,
        item_id: str,
        data: Any,
        *,
        service: str = DEFAULT_SERVICE,
        tier: str | None = None,
        codec: str | None = None,
        level: int | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """Store one item (bytes, a JSON value, or a table).

        Args:
            item_id: the id (see :class:`~cognopt_ray.storage.PutRequest`).
            data: bytes, any JSON value, or ``pa.Table`` / ``pa.RecordBatch`` / pandas DataFrame.
            service: the owning service.
            tier: ``hot``, ``warm``, ``cold`` or ``archive`` (default: the service's).
            codec: ``auto`` or a codec name (default: the service's).
            level: the codec level, with an explicit codec.
            caller: who asks (the REST layer passes the request's key).

        Returns:
            The item's catalog record (``previous_service`` when an admin took the id over).
        """
        return self.put_many([PutRequest(item_id, data, service, tier, codec, level)], caller=caller)[0]

    async def put_async(
        self,
        item_id: str,
        data: Any,
        *,
        service: str = DEFAULT_SERVICE,
        tier: str | None = None,
        codec: str | None = None,
        level: int | None = None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        """Async :meth:`put`."""
        return (await self.put_many_async([PutRequest(item_id, data, service, tier, codec, level)], caller=caller))[0]

    def put_many(self, items: Sequence[Item], *, caller: Caller | None = None) -> list[dict[str, Any]]:
        """Store several items with one catalog commit (fast for many small items).

        Args:
            items: :class:`~cognopt_ray.storage.PutRequest` objects (or dicts with their fields);
                all are checked before anything is sent: one bad entry fails the call, nothing written.
            caller: who asks (the REST layer passes the request's key).

        Large bytes items with an explicit warm/cold tier and codec are compressed here, in the
        caller's process, so the actor only writes, fsyncs and commits (the codec choice is the
        same one the actor would make, and is recorded the same way).

        Returns:
            The catalog records, in the order of ``items``.
        """
        return self._call("put_many", self._encode_large(put_requests(items)), caller)

    async def put_many_async(self, items: Sequence[Item], *, caller: Caller | None = None) -> list[dict[str, Any]]:
        """Async :meth:`put_many` (large items are encoded in a worker thread)."""
        reqs = put_requests(items)
        if any(self._encodes_here(r) for r in reqs):
            reqs = await asyncio.get_running_loop().run_in_executor(None, self._encode_large, reqs)
        return await self._acall("put_many", reqs, caller)

    @staticmethod
    def _encodes_here(r: PutRequest) -> bool:
        return (
            isinstance(r.data, (bytes, bytearray))
            and len(r.data) >= LOCAL_CODEC_MIN
            and r.tier in ("warm", "cold")
            and r.codec is not None
        )

    @classmethod
    def _encode_large(cls, reqs: list[PutRequest]) -> list[PutRequest]:
        return [
            r.with_data(encode_for(bytes(r.data), r.tier, r.codec, r.level)) if cls._encodes_here(r) else r
            for r in reqs
        ]

    def delete(self, item_id: str, *, caller: Caller | None = None) -> dict[str, Any]:
        """Delete an item (``caller`` must own it, or be admin); returns the bytes freed."""
        return self._call("delete", item_id, caller)

    async def delete_async(self, item_id: str, *, caller: Caller | None = None) -> dict[str, Any]:
        """Async :meth:`delete`."""
        return await self._acall("delete", item_id, caller)

    # ------------------------------------------------------------------------------------- reads
    def get(self, item_id: str, *, columns: list[str] | None = None, caller: Caller | None = None) -> Any:
        """The item: bytes, its JSON value or a ``pa.Table`` (``columns`` projects a table).

        HOT items come zero-copy from Ray's object store; every value is checksum-verified.

        Raises:
            NotFound: no such item (or one ``caller`` may not see).
            IntegrityError: the stored bytes are damaged (never returned).
        """
        out = self._call("fetch", item_id, columns, caller)
        if out[0] == "value":
            return out[1]
        try:
            value = ray.get(out[1][0], timeout=self._timeout_s)
        except Exception as e:  # noqa: BLE001 - translated, then re-raised
            raise translate_error(e, self.engine) from None
        return _finish(value, out[2], columns)

    async def get_async(self, item_id: str, *, columns: list[str] | None = None, caller: Caller | None = None) -> Any:
        """Async :meth:`get`."""
        out = await self._acall("fetch", item_id, columns, caller)
        if out[0] == "value":
            return out[1]
        try:
            value = await asyncio.wait_for(out[1][0], timeout=self._timeout_s)
        except asyncio.TimeoutError:
            raise EngineUnavailable(f"the {self.engine} engine did not answer in time", hint="retry") from None
        except Exception as e:  # noqa: BLE001 - every actor error becomes the package's own
            raise translate_error(e, self.engine) from None
        return _finish(value, out[2], columns)

    def retrieve(
        self, item_id: str, *, columns: list[str] | None = None, caller: Caller | None = None
    ) -> tuple[dict[str, Any], Any]:
        """The item's catalog record and its value, in one engine call (what a REST read needs).

        Returns:
            ``(record, value)``: the record as :meth:`info` gives it, the value as :meth:`get`.
        """
        return tuple(self._call("retrieve", item_id, columns, caller))

    async def retrieve_async(
        self, item_id: str, *, columns: list[str] | None = None, caller: Caller | None = None
    ) -> tuple[dict[str, Any], Any]:
        """Async :meth:`retrieve`."""
        return tuple(await self._acall("retrieve", item_id, columns, caller))

    def get_many(self, item_ids: list[str]) -> list[Any]:
        """Several items, in order.

        Plain bytes items in local warm/cold files are read and verified in this process when it
        runs on the actor's node (no copy through the actor); the rest, and anything that does not
        verify here, come through the actor (which reports damage).
        """
        node, locs = self._call("locate_many", item_ids)
        values, rest = self._read_located(node, locs)
        if rest:
            for k, v in zip(rest, self._call("get_many", [item_ids[k] for k in rest])):
                values[k] = v
        return values

    async def get_many_async(self, item_ids: list[str]) -> list[Any]:
        """Async :meth:`get_many` (local files are read in a worker thread)."""
        node, locs = await self._acall("locate_many", item_ids)
        values, rest = await asyncio.get_running_loop().run_in_executor(None, self._read_located, node, locs)
        if rest:
            for k, v in zip(rest, await self._acall("get_many", [item_ids[k] for k in rest])):
                values[k] = v
        return values

    @staticmethod
    def _read_located(node: str, locs: list[dict[str, Any] | None]) -> tuple[list[Any], list[int]]:
        """The located items this process can read and verify itself; the indexes of the others."""
        here = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        values: list[Any] = [None] * len(locs)
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
        return values, rest

    def info(self, item_id: str, *, caller: Caller | None = None) -> dict[str, Any]:
        """The item's catalog record (tier, codec, sizes, checksums, access statistics)."""
        return self._call("info", item_id, caller)

    async def info_async(self, item_id: str, *, caller: Caller | None = None) -> dict[str, Any]:
        """Async :meth:`info`."""
        return await self._acall("info", item_id, caller)

    def explain(self, item_id: str, *, caller: Caller | None = None) -> dict[str, Any]:
        """Why the item has its tier and codec (reason, probe ratio, candidates)."""
        return self._call("explain", item_id, caller)

    async def explain_async(self, item_id: str, *, caller: Caller | None = None) -> dict[str, Any]:
        """Async :meth:`explain`."""
        return await self._acall("explain", item_id, caller)

    def list_items(
        self, service: str | None = None, tier: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Catalog records by id, optionally of one service and/or tier, at most ``limit``."""
        return self._call("list_items", service, tier, limit)

    async def list_items_async(
        self, service: str | None = None, tier: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Async :meth:`list_items`."""
        return await self._acall("list_items", service, tier, limit)

    # ---------------------------------------------------------------------------- lifecycle
    def migrate(self, item_id: str, tier: str) -> dict[str, Any]:
        """Move an item to ``tier`` now (new copy written and verified before the old one goes)."""
        return self._call("migrate", item_id, tier)

    async def migrate_async(self, item_id: str, tier: str) -> dict[str, Any]:
        """Async :meth:`migrate`."""
        return await self._acall("migrate", item_id, tier)

    def optimize_tiering(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        """A lifecycle pass now (``now`` lets you plan for a future time); returns the migrations."""
        return self._call("optimize_tiering", dry_run, now)

    async def optimize_tiering_async(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        """Async :meth:`optimize_tiering`."""
        return await self._acall("optimize_tiering", dry_run, now)

    def optimize_service(
        self, service: str, parameters: dict[str, Any], *, caller: Caller | None = None
    ) -> dict[str, Any]:
        """Set a service's default tier, codec and lifecycle thresholds (``quota_bytes``: admin only)."""
        return self._call("optimize_service", service, parameters, caller)

    async def optimize_service_async(
        self, service: str, parameters: dict[str, Any], *, caller: Caller | None = None
    ) -> dict[str, Any]:
        """Async :meth:`optimize_service`."""
        return await self._acall("optimize_service", service, parameters, caller)

    def train_dictionary(self, service: str) -> dict[str, Any]:
        """Train (or retrain) the zstd dictionary of ``service`` from its small items."""
        return self._call("train_dictionary", service)

    async def train_dictionary_async(self, service: str) -> dict[str, Any]:
        """Async :meth:`train_dictionary`."""
        return await self._acall("train_dictionary", service)

    # ---------------------------------------------------------------------- metrics, health
    def metrics(self) -> dict[str, Any]:
        """Bytes raw and stored per tier, compression and dedup ratios, utilisation, backups."""
        return self._call("metrics")

    async def metrics_async(self) -> dict[str, Any]:
        """Async :meth:`metrics`."""
        return await self._acall("metrics")

    def health(self) -> dict[str, Any]:
        """``up`` or ``degraded`` (a tier short of free space), items, recovery and last pass."""
        return self._call("health")

    async def health_async(self) -> dict[str, Any]:
        """Async :meth:`health`."""
        return await self._acall("health")

    def verify(self, item_ids: list[str] | None = None) -> dict[str, Any]:
        """Check every (or the given) item against its checksums; lists the damaged ones."""
        return self._call("verify", item_ids)

    async def verify_async(self, item_ids: list[str] | None = None) -> dict[str, Any]:
        """Async :meth:`verify`."""
        return await self._acall("verify", item_ids)

    def repair(self, item_id: str) -> dict[str, Any]:
        """Restore a damaged (or lost) item from the latest snapshot that has it."""
        return self._call("repair", item_id)

    async def repair_async(self, item_id: str) -> dict[str, Any]:
        """Async :meth:`repair`."""
        return await self._acall("repair", item_id)

    def rebuild_catalog(self) -> dict[str, Any]:
        """Rebuild the engine's local catalog from the journal in its root (what a fresh node does at
        start; see :mod:`cognopt_ray.storage.journal`). A 409 when ``storage.journal`` is off."""
        return self._call("rebuild_catalog", _timeout=LONG_CALL_S)

    async def rebuild_catalog_async(self) -> dict[str, Any]:
        """Async :meth:`rebuild_catalog`."""
        return await self._acall("rebuild_catalog", _timeout=LONG_CALL_S)

    # ------------------------------------------------------------------------------ backups
    def backup(self, source: str | None = None, tag: str | None = None) -> dict[str, Any]:
        """Incremental snapshot of the store (default) or of a folder / pyarrow.fs path inside
        ``storage.backup_source_roots``; returns its id and the bytes it added."""
        return self._call("backup", source, tag, _timeout=LONG_CALL_S)

    async def backup_async(self, source: str | None = None, tag: str | None = None) -> dict[str, Any]:
        """Async :meth:`backup`."""
        return await self._acall("backup", source, tag, _timeout=LONG_CALL_S)

    def snapshots(self) -> list[dict[str, Any]]:
        """The backup snapshots, oldest first."""
        return self._call("snapshots")

    async def snapshots_async(self) -> list[dict[str, Any]]:
        """Async :meth:`snapshots`."""
        return await self._acall("snapshots")

    def restore(self, snapshot_id: str, item_ids: list[str] | None = None, target: str | None = None) -> dict[str, Any]:
        """Restore a snapshot (or ``'latest'``) into the store, or into a folder inside ``storage.restore_roots``."""
        return self._call("restore", snapshot_id, item_ids, target, _timeout=LONG_CALL_S)

    async def restore_async(
        self, snapshot_id: str, item_ids: list[str] | None = None, target: str | None = None
    ) -> dict[str, Any]:
        """Async :meth:`restore`."""
        return await self._acall("restore", snapshot_id, item_ids, target, _timeout=LONG_CALL_S)

    def check(self, read_data: bool | float = False, repair: bool = False) -> dict[str, Any]:
        """Verify the backup repository; ``repair`` drops damaged chunks so the next backup rewrites them."""
        return self._call("check", read_data, repair, _timeout=LONG_CALL_S)

    async def check_async(self, read_data: bool | float = False, repair: bool = False) -> dict[str, Any]:
        """Async :meth:`check`."""
        return await self._acall("check", read_data, repair, _timeout=LONG_CALL_S)

    def prune(
        self, keep_last: int | None = None, keep_daily: int | None = None, keep_weekly: int | None = None
    ) -> dict[str, Any]:
        """Forget snapshots outside the keep rules and remove the chunks no snapshot uses."""
        return self._call("prune", keep_last, keep_daily, keep_weekly, _timeout=LONG_CALL_S)

    async def prune_async(
        self, keep_last: int | None = None, keep_daily: int | None = None, keep_weekly: int | None = None
    ) -> dict[str, Any]:
        """Async :meth:`prune`."""
        return await self._acall("prune", keep_last, keep_daily, keep_weekly, _timeout=LONG_CALL_S)

    def take_snapshot_file(self, snapshot_id: str, dry_run: bool = False) -> bytes:
        """A snapshot file's bytes, removed from the repository unless ``dry_run`` (chunks stay)."""
        return self._call("take_snapshot_file", snapshot_id, dry_run)

    async def take_snapshot_file_async(self, snapshot_id: str, dry_run: bool = False) -> bytes:
        """Async :meth:`take_snapshot_file`."""
        return await self._acall("take_snapshot_file", snapshot_id, dry_run)

    def put_snapshot_file(self, snapshot_id: str, blob: bytes) -> dict[str, Any]:
        """Put back a snapshot file taken by :meth:`take_snapshot_file` (refused if it exists)."""
        return self._call("put_snapshot_file", snapshot_id, blob)

    async def put_snapshot_file_async(self, snapshot_id: str, blob: bytes) -> dict[str, Any]:
        """Async :meth:`put_snapshot_file`."""
        return await self._acall("put_snapshot_file", snapshot_id, blob)

    def path_roots(self) -> dict[str, list[str]]:
        """The roots backups may read and restores may write (``storage.backup_source_roots`` / ``restore_roots``)."""
        return self._call("path_roots")

    async def path_roots_async(self) -> dict[str, list[str]]:
        """Async :meth:`path_roots`."""
        return await self._acall("path_roots")


def _settings_key(settings: Settings) -> str:
    """A digest of everything in ``settings`` (the encryption key included, not shown)."""
    secret = settings.encryption_key.get_secret_value() if settings.encryption_key else ""
    return hashlib.sha256(f"{settings.model_dump_json()}|{secret}".encode()).hexdigest()[:16]


def client(settings: Settings | None = None, *, name: str = ACTOR_NAME) -> StorageClient:
    """This process's client of the storage actor ``name``, creating the actor if needed.

    One client per process for each ``name`` (and each distinct ``settings``): later calls return
    the same client, whose named handle stays valid across actor restarts.

    Args:
        settings: used when the actor is created; defaults to :func:`cognopt_ray.runtime.get_settings`.
        name: the actor name (tests and notebooks use other names to run separate stores).
    """
    from cognopt_ray.storage._actor import StoreActor

    def make() -> StorageClient:
        handle = runtime.get_or_create_actor(StoreActor, name, settings or runtime.get_settings(), max_concurrency=1)
        return StorageClient(handle)

    return process_client(name if settings is None else f"{name}|{_settings_key(settings)}", make)


__all__ = ["StorageClient", "client", "ACTOR_NAME", "LOCAL_CODEC_MIN"]
