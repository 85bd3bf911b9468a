"""The append-only audit log: one JSON line per mutating admin action.

Each entry records when, who (the key id, never the key), what (action and target) and the
result. Lines are appended under an exclusive ``flock`` and fsynced, so concurrent replicas and
engines never interleave half lines and an acknowledged entry survives a crash.

Example:
    >>> log = AuditLog("/tmp/cognopt-doc-audit")                      # doctest: +SKIP
    >>> log.record("admin1", "system.cleanup", "cache", "ok", removed=3)  # doctest: +SKIP
    >>> log.read(action="system.cleanup")[-1]["details"]["removed"]    # doctest: +SKIP
    3
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class AuditLog:
    """Append-only JSON-lines audit log under ``<root>/audit/audit.jsonl``.

    Args:
        root: the storage root (a local folder).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self._path = Path(root) / "audit" / "audit.jsonl"

    @property
    def path(self) -> Path:
        return self._path

    def record(self, key_id: str | None, action: str, target: str | None, result: str, **details: Any) -> dict:
        """Append one entry and return it. ``result`` is ``ok``, ``error: …``, ``dry_run`` and the like."""
        entry = {
            "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
            "key_id": key_id or "-",
            "action": action,
            "target": target,
            "result": result,
        }
        if details:
            entry["details"] = details
        line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def _lines(self) -> Iterator[dict]:
        try:
            with open(self._path, "rb") as f:
                for raw in f:
                    try:
                        yield json.loads(raw)
                    except json.JSONDecodeError:
                        continue  # a torn last line after a crash is skipped, never fatal
        except FileNotFoundError:
            return

    def read(
        self,
        *,
        action: str | None = None,
        key_id: str | None = None,
        target: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 1000,
    ) -> list[dict]:
        """Entries matching every filter given, oldest first, the last ``limit`` of them.

        ``action`` matches exactly or as a prefix ending in ``.`` (``"storage."``); ``since`` and
        ``until`` are ISO-8601 times compared against ``time``.
        """
        out = []
        for e in self._lines():
            if action and not (
                e.get("action") == action or (action.endswith(".") and str(e.get("action", "")).startswith(action))
            ):
                continue
            if key_id and e.get("key_id") != key_id:
                continue
            if target and e.get("target") != target:
                continue
            if since and e.get("time", "") < since:
                continue
            if until and e.get("time", "") > until:
                continue
            out.append(e)
        return out[-limit:] if limit else out
