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
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cognopt_ray._private.files import atomic_write
from cognopt_ray.config import ApiKeyRecord, Settings
from cognopt_ray.errors import InvalidInput

KEY_RE = re.compile(r"^cok_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,128})$")
ENV_ADMIN_ID = "env-admin"
_DUMMY_HASH = "0" * 64


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a key's secret part (keys are 256-bit random, so no slow KDF is needed)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def generate_key(scopes: Iterable[str], *, note: str | None = None) -> tuple[str, ApiKeyRecord]:
    """A new key and the record to store for it. The key itself is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        id=key_id,
        hash=hash_secret(secret),
        scopes=list(scopes),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        note=note,
    )
    return f"cok_{key_id}.{secret}", record


def record_for_plain_key(key: str, *, key_id: str = ENV_ADMIN_ID, scopes: Iterable[str] = ("admin",)) -> ApiKeyRecord:
    """The stored form of a key given whole (``COGNOPT_ADMIN_KEY``)."""
    return ApiKeyRecord(id=key_id, hash=hash_secret(key), scopes=list(scopes))


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


class KeyStore:
    """The keys a server accepts: from settings, from ``<storage_root>/keys.json`` and ``COGNOPT_ADMIN_KEY``.

    The file is re-read when it changes, so ``cognopt keys create`` takes effect on a running
    server without a restart.
    """

    FILE_NAME = "keys.json"

    def __init__(self, settings: Settings, extra: Iterable[ApiKeyRecord] = ()) -> None:
        self._path = settings.root / self.FILE_NAME
        self._static: dict[str, ApiKeyRecord] = {r.id: r for r in settings.api_keys}
        for r in extra:
            self._static[r.id] = r
        if settings.admin_key is not None:
            rec = record_for_plain_key(settings.admin_key.get_secret_value())
            self._static[rec.id] = rec
        self._file_records: dict[str, ApiKeyRecord] = {}
        self._mtime: float | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def _reload(self) -> None:
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            self._file_records, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        records = [ApiKeyRecord.model_validate(r) for r in json.loads(self._path.read_text() or "[]")]
        self._file_records = {r.id: r for r in records}
        self._mtime = mtime

    def records(self) -> list[ApiKeyRecord]:
        with self._lock:
            self._reload()
            return list({**self._file_records, **self._static}.values())

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal for ``key``, or ``None`` when it is missing or unknown (constant-time compare)."""
        if not key:
            return None
        with self._lock:
            self._reload()
            records = {**self._file_records, **self._static}
        m = KEY_RE.match(key)
        if m:
            rec = records.get(m.group(1))
            candidate = hash_secret(m.group(2))
            ok = hmac.compare_digest(candidate, rec.hash if rec else _DUMMY_HASH)
            return Principal(rec.id, tuple(rec.scopes)) if ok and rec else None
        rec = records.get(ENV_ADMIN_ID)
        ok = hmac.compare_digest(hash_secret(key), rec.hash if rec else _DUMMY_HASH)
        return Principal(rec.id, tuple(rec.scopes)) if ok and rec else None

    def add(self, record: ApiKeyRecord) -> None:
        """Append a record to the keys file (atomic, safe against concurrent writers)."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self._path.with_suffix(".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                existing = json.loads(self._path.read_text() or "[]") if self._path.exists() else []
            except json.JSONDecodeError as e:
                raise InvalidInput(f"keys file {self._path} is corrupt: {e}") from None
            existing.append(record.model_dump(mode="json"))
            atomic_write(self._path, json.dumps(existing, indent=2).encode())


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key``."""
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def env_admin_key() -> str | None:
    return os.environ.get("COGNOPT_ADMIN_KEY") or None
