"""The catalog: SQLite in the storage root, one row per item, updated only after data is durable.

Columns of ``items``: item id, service, tier, kind (``bytes``, ``json`` or ``table``), codec (the
recorded :class:`~cognopt_ray.storage.codecs.CodecChoice` as JSON), raw size, stored size,
checksum (BLAKE3 of the raw bytes; of the stored file for tables), stored checksum (BLAKE3 of the
bytes at rest), location (``inline`` = in the ``blobs`` table of this database, ``file:<path>`` =
a file in the tier root, ``chunks`` = the archive chunk store), created, last access, access
count and the lifecycle score.

SQLite runs in WAL mode with ``synchronous=FULL``: a committed transaction is on disk. Small
payloads (under ``inline_max_bytes``) live in the ``blobs`` table, so they are written and made
durable in the same transaction as their catalog row (that is the group commit of
``put_many``).

Item ids: 1 to 200 characters from ``A-Z a-z 0-9 . _ - : @ +``, starting with a letter or digit,
never containing ``..``. Anything else (``../x``, absolute paths, NUL, slashes, over-long ids) is
refused with :class:`~cognopt_ray.errors.InvalidInput`.

Example:
    >>> check_item_id("model-weights_v2.bin")
    'model-weights_v2.bin'
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cognopt_ray.errors import InvalidInput

logger = logging.getLogger(__name__)

ITEM_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,199}$")
ITEM_ID_RULE = "1-200 characters from A-Z a-z 0-9 . _ - : @ +, starting with a letter or digit, without '..'"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    tier TEXT NOT NULL,
    kind TEXT NOT NULL,
    codec TEXT NOT NULL,
    raw_size INTEGER NOT NULL,
    stored_size INTEGER NOT NULL,
    checksum TEXT NOT NULL,
    stored_checksum TEXT NOT NULL,
    location TEXT NOT NULL,
    encrypted INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    last_access REAL NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0,
    score REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_tier ON items(tier, last_access);
CREATE INDEX IF NOT EXISTS items_service ON items(service);
CREATE TABLE IF NOT EXISTS blobs (key TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dicts (
    dict_id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, data BLOB NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    hash TEXT PRIMARY KEY, codec TEXT NOT NULL, raw_size INTEGER NOT NULL, stored_size INTEGER NOT NULL,
    refcount INTEGER NOT NULL, location TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS item_chunks (
    item_id TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (item_id, seq)
);
CREATE TABLE IF NOT EXISTS service_settings (service TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

ITEM_COLUMNS = (
    "item_id",
    "service",
    "tier",
    "kind",
    "codec",
    "raw_size",
    "stored_size",
    "checksum",
    "stored_checksum",
    "location",
    "encrypted",
    "created",
    "last_access",
    "access_count",
    "score",
)


def check_item_id(item_id: Any) -> str:
    """Validate an item id (see the module docstring); raises :class:`InvalidInput` (422)."""
    if not isinstance(item_id, str) or not ITEM_ID_RE.match(item_id) or ".." in item_id:
        shown = repr(item_id)[:60]
        raise InvalidInput(f"item id {shown} is not allowed", hint=f"use {ITEM_ID_RULE}")
    return item_id


@dataclass
class ItemRecord:
    """One catalog row."""

    item_id: str
    service: str
    tier: str
    kind: str
    codec: dict[str, Any]
    raw_size: int
    stored_size: int
    checksum: str
    stored_checksum: str
    location: str
    encrypted: bool
    created: float
    last_access: float
    access_count: int
    score: float

    @classmethod
    def from_row(cls, row: tuple) -> ItemRecord:
        d = dict(zip(ITEM_COLUMNS, row))
        d["codec"] = json.loads(d["codec"])
        d["encrypted"] = bool(d["encrypted"])
        return cls(**d)

    def to_row(self) -> tuple:
        d = self.__dict__.copy()
        d["codec"] = json.dumps(d["codec"], sort_keys=True)
        d["encrypted"] = int(d["encrypted"])
        return tuple(d[c] for c in ITEM_COLUMNS)

    def public(self) -> dict[str, Any]:
        """The record as the API shows it (the fields of :class:`~cognopt_ray.storage.models.ItemInfo`)."""
        d = self.__dict__.copy()
        d["codec_choice"] = d.pop("codec")
        d["codec"] = d["codec_choice"]["codec"]
        return d


_SELECT_ONE = f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE item_id=?"


class Catalog:
    """The SQLite catalog (thread-safe: one connection behind a lock).

    Args:
        path: the database file (created with its folder).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._depth = 0
        #: called with the connection just before each COMMIT (the journal: raising rolls back)
        self.before_commit: Callable[[sqlite3.Connection], None] | None = None
        #: called after each COMMIT (the journal's checkpoints); errors are logged, never raised
        self.after_commit: Callable[[sqlite3.Connection], None] | None = None

    def attach_journal(self, journal: Any) -> None:
        """Note every change in temporary triggers and write it to ``journal`` before each commit."""
        from cognopt_ray.storage.journal import TRIGGERS

        with self._lock:
            self._db.executescript(TRIGGERS)
            self.before_commit = journal.record
            self.after_commit = journal.maybe_checkpoint

    def empty(self) -> bool:
        """Whether the catalog holds nothing (no item, dictionary or service override)."""
        return not any(self.query(f"SELECT 1 FROM {t} LIMIT 1") for t in ("items", "dicts", "service_settings"))

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction (nested calls join the outer one); committed durably on exit."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
                if self.before_commit is not None:
                    self.before_commit(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                self._depth = 0
                raise
            self._db.execute("COMMIT")
            self._depth = 0
            if self.after_commit is not None:
                try:
                    self.after_commit(self._db)
                except Exception as e:  # noqa: BLE001 - the change is committed and journaled already
                    logger.warning("catalog journal checkpoint failed (retried after the next change): %s", e)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- items -----------------------------------------------------------------------------------
    def get(self, item_id: str) -> ItemRecord | None:
        rows = self.query(_SELECT_ONE, (item_id,))
        return ItemRecord.from_row(rows[0]) if rows else None

    def items(self, where: str = "1", args: tuple = ()) -> list[ItemRecord]:
        rows = self.query(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE {where}", args)
        return [ItemRecord.from_row(r) for r in rows]

    def upsert(self, db: sqlite3.Connection, rec: ItemRecord) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO items ({', '.join(ITEM_COLUMNS)}) VALUES ({', '.join('?' * len(ITEM_COLUMNS))})",
            rec.to_row(),
        )

    def touch_many(self, updates: list[tuple[float, int, float, str]]) -> None:
        """Record accesses: ``(last_access, access_count, score, item_id)`` rows (one transaction)."""
        if not updates:
            return
        with self.tx() as db:
            db.executemany("UPDATE items SET last_access=?, access_count=?, score=? WHERE item_id=?", updates)

    # -- blobs, dictionaries, service overrides ----------------------------------------------------
    def blob(self, key: str) -> bytes | None:
        rows = self.query("SELECT data FROM blobs WHERE key=?", (key,))
        return rows[0][0] if rows else None

    def dictionaries(self) -> dict[int, tuple[str, bytes]]:
        return {r[0]: (r[1], r[2]) for r in self.query("SELECT dict_id, service, data FROM dicts")}

    def add_dictionary(self, service: str, data: bytes, now: float) -> int:
        with self.tx() as db:
            cur = db.execute("INSERT INTO dicts (service, data, created) VALUES (?, ?, ?)", (service, data, now))
            return int(cur.lastrowid)

    def service_overrides(self) -> dict[str, dict[str, Any]]:
        return {r[0]: json.loads(r[1]) for r in self.query("SELECT service, data FROM service_settings")}

    def set_service_override(self, service: str, data: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO service_settings (service, data) VALUES (?, ?)", (service, json.dumps(data))
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["Catalog", "ItemRecord", "check_item_id", "ITEM_ID_RULE", "ITEM_ID_RE"]
