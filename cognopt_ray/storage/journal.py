"""The catalog journal: every catalog change written to the root before it is acknowledged.

The SQLite catalog lives on the local disk of the node that runs the storage engine. With the
journal on (``storage.journal``: ``on``, or ``auto`` = on when a tier root is not a local folder)
the root describes itself, as a restic repository does, and the local catalog is an index of it:

* every catalog transaction that changes an item, its inline blob, its archive chunk list, a
  chunk, a dictionary or a service's overrides writes one **entry** ``catalog/log/<seq>.rec`` to
  the journal root (default: the warm tier's root) *before* the SQLite commit, so before the
  caller's 201. If the write fails the transaction is rolled back and the caller gets the error
  (503, retryable): nothing is acknowledged that the root does not hold. Which rows changed is
  collected by temporary SQLite triggers, so no write path can forget its entry. Access counters
  (``last_access``, ``access_count``, ``score``) are not journaled: after a rebuild they restart
  from the values of the item's last change.
* every ``storage.journal_checkpoint_every`` entries a **checkpoint** ``catalog/checkpoint/<seq>.rec``
  (the whole catalog, inline blobs included) replaces the entries up to ``seq``.
* a node whose local catalog is empty, or behind the journal (its ``journal_seq`` is not the
  journal's last), **rebuilds** it from the newest checkpoint and the entries after it before it
  does anything else (start-up cleanup of unreferenced files included, so a fresh node never takes
  the items of the root for orphans). ``rebuild()`` does the same on request.

Trust: an entry says who owns an item, so whoever can write the bucket must not be able to forge
one. Entries are sealed (AES-GCM, sub-key ``cognopt storage journal``) when an ``encryption_key``
is configured, else signed (HMAC-SHA256 with a sub-key of the installation secret), and bound to
their name (``seq``), so an entry copied under another name does not open either. An entry that
does not open is refused, never applied (the rebuild fails with a clear error). A fresh node
therefore needs the same ``encryption_key`` or, without one, the same ``installation_secret``
(``COGNOPT_INSTALLATION_SECRET``). Entries are numbered without gaps; a missing number is
reported (``gaps``) and logged.

Writers: one storage engine at a time writes a root (the one ``cognopt.storage`` actor); a new
entry reuses the number of a write that failed, so a torn attempt is overwritten.

Example:
    >>> from cognopt_ray.storage.tiers import TierRoot
    >>> import tempfile, os
    >>> j = Journal(TierRoot(tempfile.mkdtemp()), Signer(os.urandom(32), b"storage journal"))
    >>> j.append({"items": {}})
    1
    >>> [seq for seq, _ in j.entries()]
    [1]
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sqlite3
import time
from typing import Any

import zstandard

from cognopt_ray._private import bounded
from cognopt_ray._private.sealer import Sealer, Signer
from cognopt_ray.errors import IntegrityError
from cognopt_ray.storage.catalog import ITEM_COLUMNS
from cognopt_ray.storage.tiers import TierRoot

logger = logging.getLogger(__name__)

PREFIX = "catalog"
FORMAT = 1
_MAX = 1 << 34  # an authenticated entry is trusted; the bound only stops a runaway
_NAME = re.compile(r"(\d{16})\.rec$")
_CHUNK_COLS = ("hash", "codec", "raw_size", "stored_size", "refcount", "location")

#: temporary triggers that note which keys a transaction changed (see the module docstring)
TRIGGERS = """
CREATE TEMP TABLE IF NOT EXISTS journal_dirty (kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, key));
CREATE TEMP TRIGGER IF NOT EXISTS j_items_i AFTER INSERT ON main.items
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('item', NEW.item_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_items_u AFTER UPDATE OF
  service, tier, kind, codec, raw_size, stored_size, checksum, stored_checksum, location, encrypted, created
  ON main.items BEGIN
  INSERT OR IGNORE INTO journal_dirty VALUES ('item', NEW.item_id);
  INSERT OR IGNORE INTO journal_dirty VALUES ('item', OLD.item_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_items_d AFTER DELETE ON main.items
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('item', OLD.item_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_ic_i AFTER INSERT ON main.item_chunks
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('item', NEW.item_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_ic_d AFTER DELETE ON main.item_chunks
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('item', OLD.item_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_blobs_i AFTER INSERT ON main.blobs
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('blob', NEW.key); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_blobs_u AFTER UPDATE ON main.blobs
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('blob', NEW.key); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_blobs_d AFTER DELETE ON main.blobs
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('blob', OLD.key); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_chunks_i AFTER INSERT ON main.chunks
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('chunk', NEW.hash); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_chunks_u AFTER UPDATE OF codec, raw_size, stored_size, location ON main.chunks
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('chunk', NEW.hash); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_chunks_d AFTER DELETE ON main.chunks
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('chunk', OLD.hash); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_dicts_i AFTER INSERT ON main.dicts
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('dict', CAST(NEW.dict_id AS TEXT)); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_dicts_d AFTER DELETE ON main.dicts
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('dict', CAST(OLD.dict_id AS TEXT)); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_svc_i AFTER INSERT ON main.service_settings
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('service', NEW.service); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_svc_u AFTER UPDATE ON main.service_settings
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('service', NEW.service); END;
CREATE TEMP TRIGGER IF NOT EXISTS j_svc_d AFTER DELETE ON main.service_settings
  BEGIN INSERT OR IGNORE INTO journal_dirty VALUES ('service', OLD.service); END;
"""

_TABLES = ("items", "blobs", "item_chunks", "chunks", "dicts", "service_settings")


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def _unb64(s: str | None) -> bytes | None:
    return None if s is None else base64.b64decode(s)


class Journal:
    """The journal of one root (see the module docstring).

    Args:
        root: the root that holds ``catalog/``.
        auth: a :class:`Sealer` (with an ``encryption_key``) or a :class:`Signer`.
        checkpoint_every: entries after which :meth:`maybe_checkpoint` writes a checkpoint.
    """

    def __init__(self, root: TierRoot, auth: Sealer | Signer, checkpoint_every: int = 1000) -> None:
        self.root = root
        self.auth = auth
        self.checkpoint_every = checkpoint_every
        self._listed = False
        self.last_seq = 0  # the newest entry (or checkpoint) number in the root
        self.checkpoint_seq = 0
        self.suspended = False  # while a rebuild applies the root's own state

    # -- names and authentication ------------------------------------------------------------------
    @staticmethod
    def _rel(kind: str, seq: int) -> str:
        return f"{PREFIX}/{kind}/{seq:016d}.rec"

    def _pack(self, obj: dict[str, Any], rel: str) -> bytes:
        data = zstandard.ZstdCompressor(level=3).compress(json.dumps(obj, separators=(",", ":")).encode())
        name = rel.encode()
        return self.auth.seal(data, name) if isinstance(self.auth, Sealer) else self.auth.sign(data, name)

    def _unpack(self, blob: bytes, rel: str) -> dict[str, Any]:
        try:
            data = self.auth.open(blob, rel.encode())
        except IntegrityError as e:
            raise IntegrityError(
                f"catalog journal object {rel!r} failed authentication ({e.message}); it is refused, not applied",
                hint="start every node with the same encryption_key, or without one the same installation_secret "
                "(COGNOPT_INSTALLATION_SECRET); if the object was tampered with, restore the root from a backup",
            ) from None
        return json.loads(bounded.zstd(data, _MAX))

    # -- listing -------------------------------------------------------------------------------------
    def _list(self, kind: str) -> list[tuple[int, str]]:
        out = []
        for rel in self.root.listdir(f"{PREFIX}/{kind}"):
            m = _NAME.search(rel)
            if m:
                out.append((int(m.group(1)), rel))
        return sorted(out)

    def entries(self) -> list[tuple[int, str]]:
        """``(seq, path)`` of the log entries, oldest first."""
        return self._list("log")

    def refresh(self) -> int:
        """List the root; returns the newest entry or checkpoint number."""
        entries, cps = self.entries(), self._list("checkpoint")
        self.checkpoint_seq = cps[-1][0] if cps else 0
        self.last_seq = max([s for s, _ in entries] + [self.checkpoint_seq])
        self._listed = True
        return self.last_seq

    def empty(self) -> bool:
        if not self._listed:
            self.refresh()
        return self.last_seq == 0

    # -- writing -------------------------------------------------------------------------------------
    def append(self, change: dict[str, Any]) -> int:
        """Write ``change`` as the next entry; returns its number (only advanced when the write succeeded)."""
        if not self._listed:
            self.refresh()
        seq = self.last_seq + 1
        rel = self._rel("log", seq)
        self.root.write(rel, self._pack({"v": FORMAT, "seq": seq, "time": time.time(), **change}, rel))
        self.last_seq = seq
        return seq

    def record(self, db: sqlite3.Connection) -> None:
        """The catalog's pre-commit hook: write the transaction's changes, or raise (rollback)."""
        if self.suspended:
            db.execute("DELETE FROM temp.journal_dirty")
            return
        dirty = db.execute("SELECT kind, key FROM temp.journal_dirty").fetchall()
        if not dirty:
            return
        change: dict[str, Any] = {"items": {}, "blobs": {}, "chunks": {}, "dicts": {}, "services": {}}
        for kind, key in dirty:
            if kind == "item":
                change["items"][key] = _item_state(db, key)
            elif kind == "blob":
                row = db.execute("SELECT data FROM blobs WHERE key=?", (key,)).fetchone()
                change["blobs"][key] = _b64(row[0]) if row else None
            elif kind == "chunk":
                row = db.execute(f"SELECT {', '.join(_CHUNK_COLS)} FROM chunks WHERE hash=?", (key,)).fetchone()
                change["chunks"][key] = dict(zip(_CHUNK_COLS, row)) if row else None
            elif kind == "dict":
                row = db.execute("SELECT service, data, created FROM dicts WHERE dict_id=?", (int(key),)).fetchone()
                change["dicts"][key] = {"service": row[0], "data": _b64(row[1]), "created": row[2]} if row else None
            elif kind == "service":
                row = db.execute("SELECT data FROM service_settings WHERE service=?", (key,)).fetchone()
                change["services"][key] = json.loads(row[0]) if row else None
        seq = self.append(change)
        db.execute("DELETE FROM temp.journal_dirty")
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('journal_seq', ?)", (str(seq),))

    def checkpoint(self, db: sqlite3.Connection) -> int:
        """Write the whole catalog as a checkpoint at the current number, then drop what it replaces."""
        if not self._listed:
            self.refresh()
        seq = self.last_seq = max(self.last_seq, 1)
        state = _full_state(db)
        rel = self._rel("checkpoint", seq)
        self.root.write(rel, self._pack({"v": FORMAT, "seq": seq, "time": time.time(), **state}, rel))
        self.checkpoint_seq = seq
        for s, r in self.entries():
            if s <= seq:
                self.root.delete(r)
        for s, r in self._list("checkpoint"):
            if s < seq:
                self.root.delete(r)
        logger.info("catalog journal checkpoint %d written (%d items)", seq, len(state["items"]))
        return seq

    def maybe_checkpoint(self, db: sqlite3.Connection) -> None:
        if self.last_seq - self.checkpoint_seq >= self.checkpoint_every:
            self.checkpoint(db)

    # -- rebuilding ----------------------------------------------------------------------------------
    def rebuild(self, db: sqlite3.Connection) -> dict[str, Any]:
        """Replace the catalog's contents (inside transaction ``db``) with the root's state."""
        self.refresh()
        for t in _TABLES:
            db.execute(f"DELETE FROM {t}")
        applied = 0
        start = 0
        cps = self._list("checkpoint")
        if cps:
            start, rel = cps[-1]
            _apply(db, self._unpack(self.root.read(rel), rel))
        gaps: list[int] = []
        expect = start + 1
        for seq, rel in self.entries():
            if seq <= start:
                continue
            if seq != expect:
                gaps.extend(range(expect, seq))
            _apply(db, self._unpack(self.root.read(rel), rel))
            applied += 1
            expect = seq + 1
        db.execute("UPDATE chunks SET refcount=(SELECT COUNT(*) FROM item_chunks ic WHERE ic.hash=chunks.hash)")
        db.execute("DELETE FROM temp.journal_dirty")
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('journal_seq', ?)", (str(self.last_seq),))
        if gaps:
            logger.error(
                "catalog journal entries %s are missing from %s: their changes are lost", gaps[:20], self.root.uri
            )
        items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        logger.info(
            "catalog rebuilt from %s: checkpoint %d + %d entries, %d items", self.root.uri, start, applied, items
        )
        return {"checkpoint": start, "entries": applied, "items": items, "last_seq": self.last_seq, "gaps": gaps}


def local_seq(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key='journal_seq'").fetchone()
    return int(row[0]) if row else 0


def _item_state(db: sqlite3.Connection, item_id: str) -> dict[str, Any] | None:
    row = db.execute(f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE item_id=?", (item_id,)).fetchone()
    if row is None:
        return None
    out = dict(zip(ITEM_COLUMNS, row))
    out["chunks"] = [
        h for (h,) in db.execute("SELECT hash FROM item_chunks WHERE item_id=? ORDER BY seq", (item_id,)).fetchall()
    ]
    return out


def _full_state(db: sqlite3.Connection) -> dict[str, Any]:
    ids = [r[0] for r in db.execute("SELECT item_id FROM items").fetchall()]
    return {
        "items": {i: _item_state(db, i) for i in ids},
        "blobs": {k: _b64(d) for k, d in db.execute("SELECT key, data FROM blobs").fetchall()},
        "chunks": {
            r[0]: dict(zip(_CHUNK_COLS, r))
            for r in db.execute(f"SELECT {', '.join(_CHUNK_COLS)} FROM chunks").fetchall()
        },
        "dicts": {
            str(i): {"service": s, "data": _b64(d), "created": c}
            for i, s, d, c in db.execute("SELECT dict_id, service, data, created FROM dicts").fetchall()
        },
        "services": {s: json.loads(d) for s, d in db.execute("SELECT service, data FROM service_settings").fetchall()},
    }


def _apply(db: sqlite3.Connection, change: dict[str, Any]) -> None:
    """Apply one entry or checkpoint (last writer wins per key)."""
    for item_id, st in (change.get("items") or {}).items():
        db.execute("DELETE FROM items WHERE item_id=?", (item_id,))
        db.execute("DELETE FROM item_chunks WHERE item_id=?", (item_id,))
        if st is None:
            continue
        db.execute(
            f"INSERT INTO items ({', '.join(ITEM_COLUMNS)}) VALUES ({', '.join('?' * len(ITEM_COLUMNS))})",
            tuple(st[c] for c in ITEM_COLUMNS),
        )
        db.executemany(
            "INSERT INTO item_chunks (item_id, seq, hash) VALUES (?, ?, ?)",
            [(item_id, n, h) for n, h in enumerate(st.get("chunks") or [])],
        )
    for key, data in (change.get("blobs") or {}).items():
        if data is None:
            db.execute("DELETE FROM blobs WHERE key=?", (key,))
        else:
            db.execute("INSERT OR REPLACE INTO blobs (key, data) VALUES (?, ?)", (key, _unb64(data)))
    for h, row in (change.get("chunks") or {}).items():
        if row is None:
            db.execute("DELETE FROM chunks WHERE hash=?", (h,))
        else:
            db.execute(
                f"INSERT OR REPLACE INTO chunks ({', '.join(_CHUNK_COLS)}) VALUES ({', '.join('?' * len(_CHUNK_COLS))})",
                tuple(row[c] for c in _CHUNK_COLS),
            )
    for key, d in (change.get("dicts") or {}).items():
        if d is None:
            db.execute("DELETE FROM dicts WHERE dict_id=?", (int(key),))
        else:
            db.execute(
                "INSERT OR REPLACE INTO dicts (dict_id, service, data, created) VALUES (?, ?, ?, ?)",
                (int(key), d["service"], _unb64(d["data"]), d["created"]),
            )
    for svc, data in (change.get("services") or {}).items():
        if data is None:
            db.execute("DELETE FROM service_settings WHERE service=?", (svc,))
        else:
            db.execute("INSERT OR REPLACE INTO service_settings (service, data) VALUES (?, ?)", (svc, json.dumps(data)))


def wanted(settings: Any, roots: dict[str, TierRoot]) -> bool:
    """Whether the journal is on (``storage.journal``; ``auto``: a tier or journal root is not local)."""
    mode = settings.storage.journal
    if mode != "auto":
        return mode == "on"
    jr = settings.storage.journal_root
    return any(not r.local for r in roots.values()) or bool(jr and "://" in jr and not jr.startswith("file://"))


def open_journal(settings: Any, roots: dict[str, TierRoot]) -> Journal | None:
    """The journal of these settings, or ``None`` when it is off."""
    if not wanted(settings, roots):
        return None
    cfg = settings.storage
    root = TierRoot(cfg.journal_root) if cfg.journal_root else roots["warm"]
    if settings.encryption_key is not None:
        auth: Sealer | Signer = Sealer(settings.encryption_key.get_secret_value(), b"cognopt storage journal")
    else:
        auth = Signer.from_settings(settings, b"storage journal")
    return Journal(root, auth, cfg.journal_checkpoint_every)


__all__ = ["Journal", "TRIGGERS", "open_journal", "wanted", "local_seq"]
