"""``system/cleanup``: expired and unreferenced data goes to a quarantine, not to the bin.

What a cleanup collects, engine by engine:

- **network**: expired entries of the in-cluster HTTP cache (``cognopt.network_cache``); Redis
  expires its own keys, so nothing is taken there.
- **memory**: expired transient allocations and allocations of removed services (what the pools'
  sweep would free), with their values.
- **storage**: backup snapshots beyond ``settings.system.snapshot_keep_last`` (their snapshot
  files). The chunks only those snapshots use are *unreferenced chunks*: they stay in the
  repository while the snapshots sit in quarantine (so a restore is complete) and are deleted
  by a prune when the quarantine entry is purged after its retention.

Each item goes to ``<storage_root>/quarantine/<id>/`` (``entry.json`` + ``data.bin``, written to a
temp name, fsynced, renamed) before it is removed from its engine, so nothing is lost between the
two steps. ``data.bin`` is signed (HMAC-SHA256, purpose ``b"cognopt quarantine"`` of the
per-installation secret, bound to the quarantine id, category and target) and, with an
``encryption_key``, sealed (AES-GCM, same binding); the signature is checked before anything is
read back, so a file someone else put under ``quarantine/`` is refused (:class:`IntegrityError`),
never restored into an engine. A memory allocation's value is stored in the tagged codec of
:mod:`cognopt_ray._private.values` (a pickle only for Python objects, and only inside the signature). :func:`restore` puts an item back where it came from; :func:`purge_expired` deletes
items whose retention (``settings.system.quarantine_retention_s``) has passed.

Example:
    >>> report = asyncio.run(run_cleanup(settings, dry_run=True))   # doctest: +SKIP
    >>> report["items"]                                             # doctest: +SKIP
    []
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cognopt_ray._private.files import atomic_write, fsync_dir
from cognopt_ray._private.sealer import Sealer, Signer, is_sealed
from cognopt_ray.config import Settings
from cognopt_ray.errors import IntegrityError, InvalidInput, NotFound

logger = logging.getLogger(__name__)

CATEGORIES = ("network_cache", "memory_allocations", "storage_snapshots")
PURPOSE = b"cognopt quarantine"
_ID_RE = re.compile(r"^q[0-9a-f]{16}$")


class Quarantine:
    """Items removed by a cleanup, kept restorable for a retention window.

    Args:
        root: the storage root (a local folder); items live under ``<root>/quarantine``.
        retention_s: how long an item stays restorable.
        signer: signs ``data.bin`` (default: from the installation secret under ``root``).
        sealer: encrypts ``data.bin`` when an ``encryption_key`` is configured.

    Example:
        >>> q = Quarantine("/tmp/cognopt-doc", retention_s=60)               # doctest: +SKIP
        >>> e = q.put("network_cache", "network", "k", b"body", {"ttl": 1})   # doctest: +SKIP
        >>> q.load(e["id"])[1]                                               # doctest: +SKIP
        b'body'
    """

    def __init__(
        self, root: str | os.PathLike, retention_s: float, *, signer: Signer | None = None, sealer: Sealer | None = None
    ) -> None:
        self.dir = Path(root) / "quarantine"
        self.retention_s = retention_s
        self.signer = signer or Signer.from_settings(SimpleNamespace(root=Path(root)), PURPOSE)
        self.sealer = sealer

    @staticmethod
    def _name(qid: str, category: str, target: str) -> bytes:
        return f"{qid}\x00{category}\x00{target}".encode()

    def _path(self, qid: str) -> Path:
        if not isinstance(qid, str) or not _ID_RE.match(qid):
            raise InvalidInput(f"quarantine id {qid!r} is not valid", hint="use an id from GET system/quarantine")
        return self.dir / qid

    def put(self, category: str, engine: str, target: str, data: bytes, meta: dict[str, Any]) -> dict[str, Any]:
        """Keep ``data`` (durable before this returns) and return the entry."""
        now = time.time()
        qid = f"q{secrets.token_hex(8)}"
        entry = {
            "id": qid,
            "category": category,
            "engine": engine,
            "target": target,
            "bytes": len(data),
            "quarantined": now,
            "purge_after": now + self.retention_s,
            "meta": meta,
        }
        d = self.dir / qid
        d.mkdir(parents=True, exist_ok=False)
        name = self._name(qid, category, target)
        blob = self.signer.sign(data, name)
        if self.sealer is not None:
            blob = self.sealer.seal(blob, name)
        atomic_write(d / "data.bin", blob)
        atomic_write(d / "entry.json", json.dumps(entry, default=str).encode())  # the entry file is the commit
        fsync_dir(self.dir)
        return entry

    def entry(self, qid: str) -> dict[str, Any]:
        p = self._path(qid) / "entry.json"
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise NotFound(
                f"quarantine item {qid!r} does not exist (restored or purged)",
                hint="list them with GET system/quarantine",
            ) from None

    def load(self, qid: str) -> tuple[dict[str, Any], bytes]:
        """The entry and its data; :class:`IntegrityError` unless this installation wrote that data there."""
        e = self.entry(qid)
        blob = (self._path(qid) / "data.bin").read_bytes()
        name = self._name(qid, str(e.get("category")), str(e.get("target")))
        if self.sealer is not None:
            if not is_sealed(blob):
                raise IntegrityError(
                    f"quarantine item {qid!r} is not encrypted although an encryption_key is "
                    "configured; it is refused, not restored",
                    hint="purge it (it was not written here)",
                )
            blob = self.sealer.open(blob, name)
        return e, self.signer.open(blob, name)

    def remove(self, qid: str) -> None:
        d = self._path(qid)
        (d / "entry.json").unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)

    def list(self, category: str | None = None) -> list[dict[str, Any]]:
        out = []
        if not self.dir.is_dir():
            return out
        for d in sorted(self.dir.iterdir()):
            try:
                e = json.loads((d / "entry.json").read_text())
            except (OSError, ValueError):
                continue  # no committed entry: a cleanup died before its commit
            if category is None or e.get("category") == category:
                out.append(e)
        out.sort(key=lambda e: e["quarantined"])
        return out


def quarantine_for(settings: Settings) -> Quarantine:
    return Quarantine(
        settings.root,
        settings.system.quarantine_retention_s,
        signer=Signer.from_settings(settings, PURPOSE),
        sealer=Sealer.from_settings(settings, PURPOSE),
    )


def _check_categories(categories: list[str] | None) -> list[str]:
    cats = list(categories) if categories else list(CATEGORIES)
    bad = [c for c in cats if c not in CATEGORIES]
    if bad:
        raise InvalidInput(f"unknown cleanup categories {bad}", hint=f"use some of {list(CATEGORIES)}")
    return cats


# -- collecting ------------------------------------------------------------------------------------
async def _network(q: Quarantine, dry_run: bool) -> list[dict[str, Any]]:
    from cognopt_ray import network

    net = await asyncio.get_running_loop().run_in_executor(None, network.client)
    taken = await net.expired_entries_async(take=not dry_run)
    out = []
    for key, data, expired_at in taken:
        meta = {"key": key, "expired_at": expired_at}
        if dry_run:
            out.append(
                {"category": "network_cache", "engine": "network", "target": key, "bytes": len(data), "meta": meta}
            )
        else:
            out.append(q.put("network_cache", "network", key, data, meta))
    return out


def _memory(q: Quarantine, dry_run: bool) -> list[dict[str, Any]]:
    from cognopt_ray import memory
    from cognopt_ray._private import values as _values

    pools = memory.client()
    candidates = pools.expired_allocations()
    if dry_run:
        return [
            {"category": "memory_allocations", "engine": "memory", "target": m["id"], "bytes": m["nbytes"], "meta": m}
            for m in candidates
        ]
    out = []
    for meta, value in pools.take_allocations([m["id"] for m in candidates]):
        out.append(q.put("memory_allocations", "memory", meta["id"], _values.encode(value, signed=True), meta))
    return out


def _storage(q: Quarantine, dry_run: bool, keep_last: int) -> list[dict[str, Any]]:
    from cognopt_ray import storage

    store = storage.client()
    snaps = store.snapshots()
    beyond = snaps[: max(0, len(snaps) - keep_last)]
    out = []
    for s in beyond:
        sid = s["snapshot_id"]
        meta = {"snapshot_id": sid, "time": s.get("time"), "tag": s.get("tag"), "keep_last": keep_last}
        blob = store.take_snapshot_file(sid, dry_run=True)
        if dry_run:
            out.append(
                {"category": "storage_snapshots", "engine": "storage", "target": sid, "bytes": len(blob), "meta": meta}
            )
            continue
        entry = q.put("storage_snapshots", "storage", sid, blob, meta)  # durable first ...
        store.take_snapshot_file(sid)  # ... then removed from the repository
        out.append(entry)
    return out


async def run_cleanup(
    settings: Settings, *, dry_run: bool = False, categories: list[str] | None = None
) -> dict[str, Any]:
    """Move what is expired or beyond retention into the quarantine (or only list it with ``dry_run``).

    Returns ``{"dry_run", "items": [...], "by_category": {cat: {"items", "bytes"}}, "purged": [...]}``.
    """
    cats = _check_categories(categories)
    q = quarantine_for(settings)
    loop = asyncio.get_running_loop()
    jobs = {}
    if "network_cache" in cats:
        jobs["network_cache"] = _network(q, dry_run)
    if "memory_allocations" in cats:
        jobs["memory_allocations"] = loop.run_in_executor(None, _memory, q, dry_run)
    if "storage_snapshots" in cats:
        jobs["storage_snapshots"] = loop.run_in_executor(None, _storage, q, dry_run, settings.system.snapshot_keep_last)
    results = await asyncio.gather(*jobs.values(), return_exceptions=True)
    items: list[dict[str, Any]] = []
    by_cat: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for cat, res in zip(jobs, results):
        if isinstance(res, BaseException):
            errors[cat] = f"{type(res).__name__}: {res}"
            logger.warning("cleanup of %s failed: %s", cat, res)
            continue
        items.extend(res)
        by_cat[cat] = {"items": len(res), "bytes": sum(i["bytes"] for i in res)}
    purged = [] if dry_run else await loop.run_in_executor(None, purge_expired, settings)
    return {
        "dry_run": dry_run,
        "items": items,
        "by_category": by_cat,
        "errors": errors,
        "purged": purged,
        "retention_s": settings.system.quarantine_retention_s,
    }


# -- restoring and purging ---------------------------------------------------------------------------
def restore(settings: Settings, qid: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Put a quarantined item back into its engine and drop it from the quarantine."""
    q = quarantine_for(settings)
    entry, data = q.load(qid)
    cat = entry["category"]
    if dry_run:
        return {"restored": False, "dry_run": True, "entry": entry}
    if cat == "network_cache":
        from cognopt_ray import network

        # back for one more hour in the backend; its HTTP freshness is what it was (stale entries revalidate)
        network.client().restore_entry(entry["meta"]["key"], data, ttl_s=3600.0)
        result: dict[str, Any] = {"key": entry["meta"]["key"]}
    elif cat == "memory_allocations":
        from cognopt_ray import memory
        from cognopt_ray._private import values as _values

        # ``data`` passed the quarantine's signature check in q.load: only then may it hold a pickle
        result = memory.client().restore_allocation(entry["meta"], _values.decode_verified(data))
    elif cat == "storage_snapshots":
        from cognopt_ray import storage

        result = storage.client().put_snapshot_file(entry["target"], data)
    else:  # pragma: no cover - only written by this module
        raise InvalidInput(f"quarantine item {qid!r} has unknown category {cat!r}")
    q.remove(qid)
    return {"restored": True, "dry_run": False, "entry": entry, "result": result}


def purge_expired(settings: Settings, now: float | None = None) -> list[dict[str, Any]]:
    """Delete quarantined items past their retention; a purged snapshot's chunks go with a prune."""
    q = quarantine_for(settings)
    now = time.time() if now is None else now
    purged = []
    for e in q.list():
        if e["purge_after"] <= now:
            q.remove(e["id"])
            purged.append({"id": e["id"], "category": e["category"], "target": e["target"], "bytes": e["bytes"]})
    if any(p["category"] == "storage_snapshots" for p in purged):
        from cognopt_ray import storage

        store = storage.client()
        held = {e["target"] for e in q.list("storage_snapshots")}
        if not held:  # chunks of quarantined snapshots must stay; prune only when none is held
            try:
                store.prune(keep_last=max(1, len(store.snapshots())))
            except Exception as ex:  # noqa: BLE001 - cleanup reports a failed prune and finishes its other passes
                logger.warning("prune after purging snapshots failed: %s", ex)
    return purged


__all__ = ["Quarantine", "CATEGORIES", "run_cleanup", "restore", "purge_expired", "quarantine_for"]
