"""The one sealer: AES-GCM at rest, HMAC signatures, and the per-installation secret.

Everything the package writes from caller data goes through here, so there is one key
derivation and one format:

* :class:`Sealer` encrypts and authenticates (AES-GCM, ``cryptography``) with a sub-key derived
  by HKDF-SHA256 from the configured ``encryption_key`` and a *purpose* (``b"cognopt blobs"``,
  ``b"cognopt backup"``, ``b"cognopt network cache"``...), so the configured key itself never
  encrypts anything. Sealed format: ``b"CG1" + nonce(12) + ciphertext + tag(16)``. The
  associated data binds a sealed blob to its name (item id, chunk hash, cache key), so a blob
  copied under another name fails to open.
* :class:`Signer` authenticates without encrypting (HMAC-SHA256 with a sub-key of the
  per-installation secret). It is what lets a Python-only format (pickle) cross a trust
  boundary at all: a signed blob is ``b"CS1" + tag(32) + payload`` and :meth:`Signer.open`
  checks the tag, bound to the blob's name, *before* anything is decoded. Data a caller, an
  origin, Redis or a file could have written carries no valid tag and is refused.
* :func:`installation_secret` is 32 random bytes created once per storage root at first start
  (``<root>/keys/installation.secret``, mode 0600, created with ``O_EXCL`` so concurrent
  starts agree), or the ``installation_secret`` setting (``COGNOPT_INSTALLATION_SECRET``) when
  several nodes must share it. Signing keys derive from it; the encryption key, when configured, is mixed in so
  that rotating it also rotates signatures.

Keys are never logged.

Example:
    >>> import base64, os
    >>> box = Sealer(base64.b64encode(os.urandom(32)).decode(), b"cognopt blobs")
    >>> box.open(box.seal(b"secret", b"id1"), b"id1")
    b'secret'
    >>> signer = Signer(os.urandom(32), b"cognopt spill")
    >>> signer.open(signer.sign(b"payload", b"name"), b"name")
    b'payload'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cognopt_ray.errors import IntegrityError

MAGIC = b"CG1"
SIGNED_MAGIC = b"CS1"
_TAG_LEN = 32


def derive_key(master: bytes, purpose: bytes, length: int = 32) -> bytes:
    """An HKDF-SHA256 sub-key of ``master`` for one ``purpose``."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=purpose).derive(master)


class Sealer:
    """Encrypts and authenticates byte strings with a sub-key of the configured key.

    Args:
        key_b64: the configured ``encryption_key`` (base64 of 32 bytes).
        purpose: what the sub-key is for; different purposes never share a key.
    """

    def __init__(self, key_b64: str, purpose: bytes) -> None:
        master = base64.b64decode(key_b64)
        self.key = derive_key(master, purpose)
        self._aead = AESGCM(self.key)

    @classmethod
    def from_settings(cls, settings: Any, purpose: bytes) -> Sealer | None:
        """The sealer for ``purpose``, or ``None`` when no ``encryption_key`` is configured."""
        secret = getattr(settings, "encryption_key", None)
        return cls(secret.get_secret_value(), purpose) if secret is not None else None

    def seal(self, data: bytes | memoryview, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return MAGIC + nonce + self._aead.encrypt(nonce, bytes(data), aad)

    def open(self, blob: bytes | memoryview, aad: bytes) -> bytes:
        blob = bytes(blob)
        if not blob.startswith(MAGIC):
            raise IntegrityError("an encrypted blob lacks its header", hint="restore it with repair(item_id)")
        try:
            return self._aead.decrypt(blob[3:15], blob[15:], aad)
        except InvalidTag:
            raise IntegrityError(
                "an encrypted blob failed authentication (damaged or wrong key)",
                hint="check encryption_key, or restore the item with repair(item_id)",
            ) from None

    def keyed_name(self, name: str) -> str:
        """A keyed hash of ``name`` (hex), for names that must not reveal what they name."""
        return hmac.new(self.key, name.encode(), hashlib.sha256).hexdigest()


def is_sealed(blob: bytes | memoryview) -> bool:
    """Whether ``blob`` is in the sealed (encrypted) format."""
    return bytes(blob[:3]) == MAGIC


class Signer:
    """HMAC-SHA256 signatures with a sub-key of the per-installation secret.

    Args:
        secret: the installation secret (:func:`installation_secret`).
        purpose: what the sub-key is for (``b"cognopt values"``...).
    """

    def __init__(self, secret: bytes, purpose: bytes) -> None:
        self._key = derive_key(secret, b"cognopt sign " + purpose)

    @classmethod
    def from_settings(cls, settings: Any, purpose: bytes) -> Signer:
        return cls(installation_secret(settings), purpose)

    def tag(self, payload: bytes | memoryview, name: bytes) -> bytes:
        mac = hmac.new(self._key, len(name).to_bytes(4, "big") + name, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def sign(self, payload: bytes | memoryview, name: bytes) -> bytes:
        """``b"CS1" + tag + payload``, the tag binding ``payload`` to ``name``."""
        return SIGNED_MAGIC + self.tag(payload, name) + bytes(payload)

    def open(self, blob: bytes | memoryview, name: bytes) -> bytes:
        """The payload of a signed blob; :class:`IntegrityError` unless the tag checks out."""
        blob = bytes(blob)
        if not blob.startswith(SIGNED_MAGIC) or len(blob) < 3 + _TAG_LEN:
            raise IntegrityError(
                "a value that must be signed by this installation carries no signature",
                hint="it was not written by this installation; it is refused, not decoded",
            )
        tag, payload = blob[3 : 3 + _TAG_LEN], blob[3 + _TAG_LEN :]
        if not hmac.compare_digest(tag, self.tag(payload, name)):
            raise IntegrityError(
                "a signed value failed its signature check (written elsewhere or tampered with)",
                hint="it is refused, not decoded",
            )
        return payload


_secrets: dict[str, bytes] = {}


def installation_secret(settings: Any) -> bytes:
    """The per-installation secret: 32 random bytes made at first start under the storage root.

    With an ``encryption_key`` configured the secret is HKDF-mixed with it. Several processes
    starting at once agree: the file is created with ``O_EXCL`` and a loser reads the winner's.
    """
    enc = getattr(settings, "encryption_key", None)
    shared = getattr(settings, "installation_secret", None)
    if shared is not None:  # the same on every node (COGNOPT_INSTALLATION_SECRET): no local file
        raw = base64.b64decode(shared.get_secret_value())
        return derive_key(raw + base64.b64decode(enc.get_secret_value()), b"cognopt installation") if enc else raw
    root = Path(settings.root)
    path = root / "keys" / "installation.secret"
    cache_key = f"{path}|{hashlib.sha256(enc.get_secret_value().encode()).hexdigest() if enc else ''}"
    if cache_key in _secrets:
        return _secrets[cache_key]
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = None
    for _ in range(50):
        try:
            raw = path.read_bytes()
            if len(raw) == 32:
                break
            raw = None
            import time

            time.sleep(0.02)  # another process is writing it
        except FileNotFoundError:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            raw = os.urandom(32)
            try:
                os.write(fd, raw)
                os.fsync(fd)
            finally:
                os.close(fd)
            break
    if raw is None:
        raise IntegrityError(
            f"the installation secret {path} is not 32 bytes",
            hint="remove it only if nothing signed with it must be read again",
        )
    secret = derive_key(raw + base64.b64decode(enc.get_secret_value()), b"cognopt installation") if enc else raw
    _secrets[cache_key] = secret
    return secret


__all__ = ["Sealer", "Signer", "installation_secret", "derive_key", "is_sealed", "MAGIC", "SIGNED_MAGIC"]
