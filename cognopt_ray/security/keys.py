"""API keys: generated once, stored only as SHA-256 hashes, compared in constant time.

A key looks like ``cok_<id>.<secret>``: the id is public (it is what the audit log records), the
secret is 32 random bytes. Only ``sha256(secret)`` is ever stored. A key given whole in
``COGNOPT_ADMIN_KEY`` may have any form of at least 16 characters; its hash is kept under the id
``env-admin``.

Example:
    >>> key, record = generate_key(["read"])
    >>> key.startswith("cok_")
    True
    >>> record.hash == hash_secret(key.split(".", 1)[1])
    True
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cognopt_ray._private.files import atomic_write
from cognopt_ray.config import ApiKeyRecord, Settings
from cognopt_ray.errors import InvalidInput, NotFound

KEY_RE = re.compile(r"^cok_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,128})$")
ENV_ADMIN_ID = "env-admin"
_DUMMY_HASH = "0" * 64


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a key's secret part (keys are 256-bit random, so no slow KDF is needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _iso(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


def parse_time(value: str) -> _dt.datetime:
    """An ISO-8601 time; one without a zone is taken as UTC. Raises ``InvalidInput``."""
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        raise InvalidInput(f"{value!r} is not an ISO-8601 time", hint="use e.g. 2030-01-31T12:00:00Z") from None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def generate_key(
    scopes: Iterable[str],
    *,
    note: str | None = None,
    expires_at: str | None = None,
    ttl_s: float | None = None,
) -> tuple[str, ApiKeyRecord]:
    """A new key and the record to store for it. The key itself is shown once and never stored.

    ``expires_at`` (ISO-8601) or ``ttl_s`` (seconds from now) make the key stop working then.
    """
    if expires_at is not None and ttl_s is not None:
        raise InvalidInput("give expires_at or ttl_s, not both")
    expiry = None
    if ttl_s is not None:
        if ttl_s <= 0:
            raise InvalidInput("ttl_s must be > 0")
        expiry = _iso(_now() + _dt.timedelta(seconds=ttl_s))
    elif expires_at is not None:
        t = parse_time(expires_at)
        if t <= _now():
            raise InvalidInput(f"expires_at {expires_at!r} is in the past", hint="give a future time or ttl_s")
        expiry = _iso(t)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id=key_id, hash=hash_secret(secret), scopes=list(scopes), created=_iso(_now()), note=note, expires_at=expiry
    )
    return f"cok_{key_id}.{secret}", record


def record_for_plain_key(key: str, *, key_id: str = ENV_ADMIN_ID, scopes: Iterable[str] = ("admin",)) -> ApiKeyRecord:
    """The stored form of a key given whole (``COGNOPT_ADMIN_KEY``)."""
    return ApiKeyRecord(id=key_id, hash=hash_secret(key), scopes=list(scopes))


def usable(record: ApiKeyRecord, now: _dt.datetime | None = None) -> str | None:
    """Why ``record`` no longer works (revoked, expired), or ``None`` when it does."""
    if record.revoked_at:
        return f"the API key {record.id} was revoked at {record.revoked_at}"
    if record.expires_at and parse_time(record.expires_at) <= (now or _now()):
        return f"the API key {record.id} expired at {record.expires_at}"
    return None


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key id (safe to log) and its scopes."""

    key_id: str
    scopes: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def can_read(self) -> bool:
        return self.is_admin or "read" in self.scopes

    def can_use_service(self, service: str) -> bool:
        return self.is_admin or f"service:{service}" in self.scopes

    def services(self) -> list[str]:
        return [s.split(":", 1)[1] for s in self.scopes if s.startswith("service:")]


#: Bumped by every write of a keys file in this process, so every :class:`KeyStore` of the process
#: (one per replica context, the CLI's, a test's) looks at its file on its next check.
_writes = [0]


class KeyStore:
    """The keys a server accepts: from settings, from ``<storage_root>/keys.json`` and ``COGNOPT_ADMIN_KEY``.

    Checks are answered from memory: the file is looked at (its inode, size and mtime) at most
    every ``settings.keys_recheck_s`` and re-read only when it changed. A key id not seen before
    makes the store look at once (so ``cognopt keys create`` and ``POST auth/keys`` take effect on
    the next call), and so does any write of a keys file in this process (``DELETE auth/keys/{id}``
    takes effect on the replica's next call); a revocation made by another process (another
    replica, ``cognopt keys revoke``) takes effect within ``keys_recheck_s``. A revocation of a key
    that comes from settings is kept in the file too (a copy of its record with ``revoked_at``),
    and wins over settings.
    """

    FILE_NAME = "keys.json"

    def __init__(self, settings: Settings, extra: Iterable[ApiKeyRecord] = ()) -> None:
        self._path = settings.root / self.FILE_NAME
        self._recheck_s = settings.keys_recheck_s
        self._static: dict[str, ApiKeyRecord] = {r.id: r for r in settings.api_keys}
        for r in extra:
            self._static[r.id] = r
        if settings.admin_key is not None:
            rec = record_for_plain_key(settings.admin_key.get_secret_value())
            self._static[rec.id] = rec
        self._file_records: dict[str, ApiKeyRecord] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._merged_records: dict[str, ApiKeyRecord] | None = None
        self._looked_at = -math.inf
        self._seen_writes = -1
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def _reload(self) -> None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            if self._stamp is not None or self._merged_records is None:
                self._file_records, self._stamp, self._merged_records = {}, None, None
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        records = [ApiKeyRecord.model_validate(r) for r in json.loads(self._path.read_text() or "[]")]
        self._file_records = {r.id: r for r in records}
        self._stamp = stamp
        self._merged_records = None

    def _merged(self, *, look: bool = False) -> dict[str, ApiKeyRecord]:
        """The records in force; the file is looked at when ``look``, when this process wrote a
        keys file, or when the last look is ``keys_recheck_s`` old. Never modify the answer."""
        now = time.monotonic()
        with self._lock:
            if look or self._seen_writes != _writes[0] or now - self._looked_at >= self._recheck_s:
                self._seen_writes = _writes[0]
                self._reload()
                self._looked_at = now
            if self._merged_records is None:
                merged = {**self._file_records, **self._static}
                for key_id, rec in self._file_records.items():
                    if rec.revoked_at and key_id in merged:
                        merged[key_id] = merged[key_id].model_copy(update={"revoked_at": rec.revoked_at})
                self._merged_records = merged
            return self._merged_records

    def records(self) -> list[ApiKeyRecord]:
        return list(self._merged(look=True).values())

    def check(self, key: str | None) -> tuple[Principal | None, str]:
        """The principal for ``key`` (constant-time compare), or ``None`` and why it was refused."""
        if not key:
            return None, "no API key given"
        m = KEY_RE.match(key)
        key_id = m.group(1) if m else ENV_ADMIN_ID
        records = self._merged()
        if key_id not in records:  # perhaps a key made a moment ago by another process
            records = self._merged(look=True)
        rec = records.get(key_id)
        candidate = hash_secret(m.group(2) if m else key)
        ok = hmac.compare_digest(candidate, rec.hash if rec else _DUMMY_HASH)
        if not (ok and rec):
            return None, "the API key is not valid"
        why = usable(rec)
        if why:
            return None, why
        return Principal(rec.id, tuple(rec.scopes)), "ok"

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for ``key``, or ``None`` when it is missing, unknown, revoked or expired."""
        return self.check(key)[0]

    def _update(self, change: Callable[[list[dict]], Any]) -> Any:
        """Run ``change`` on the file's records under an exclusive lock and write them back atomically."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self._path.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                existing = json.loads(self._path.read_text() or "[]") if self._path.exists() else []
            except json.JSONDecodeError as e:
                raise InvalidInput(f"keys file {self._path} is corrupt: {e}") from None
            out = change(existing)
            atomic_write(self._path, json.dumps(existing, indent=2).encode())
            _writes[0] += 1
            return out

    def add(self, record: ApiKeyRecord) -> None:
        """Append a record to the keys file (atomic, safe against concurrent writers)."""
        self._update(lambda existing: existing.append(record.model_dump(mode="json")))

    def revoke(self, key_id: str) -> ApiKeyRecord:
        """Mark ``key_id`` revoked; it stops working on the next call. ``NotFound`` for an unknown id."""
        static = self._static.get(key_id)
        when = _iso(_now())

        def change(existing: list[dict]) -> ApiKeyRecord:
            for i, raw in enumerate(existing):
                if raw.get("id") == key_id:
                    rec = ApiKeyRecord.model_validate(raw)
                    if not rec.revoked_at:
                        rec = rec.model_copy(update={"revoked_at": when})
                        existing[i] = rec.model_dump(mode="json")
                    return rec
            if static is None:
                raise NotFound(f"no API key has the id {key_id!r}", hint="GET auth/keys lists the key ids")
            rec = static.model_copy(update={"revoked_at": when})
            existing.append(rec.model_dump(mode="json"))
            return rec

        return self._update(change)

    def ensure_first_admin(self, note: str = "first-run admin key") -> str | None:
        """On a root without a usable admin key, create one and return it (once); else ``None``.

        Only the hash is stored, so a later start cannot show the key again.
        """

        def change(existing: list[dict]) -> str | None:
            for raw in existing:
                rec = ApiKeyRecord.model_validate(raw)
                if "admin" in rec.scopes and usable(rec) is None:
                    return None
            key, rec = generate_key(["admin"], note=note)
            existing.append(rec.model_dump(mode="json"))
            return key

        return self._update(change)


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
