"""AES-GCM at rest for blobs and backup chunks (``cryptography``), when a key is configured.

Sealed format: ``b"CG1" + nonce(12) + ciphertext + tag(16)``. The associated data binds a sealed
blob to its name (item id or chunk hash), so a blob copied under another name fails to open.
Sub-keys are derived per use with HKDF-SHA256 (``info=b"cognopt blobs"`` / ``b"cognopt backup"``),
so the configured key itself never encrypts anything. Keys are never logged.

Example:
    >>> import base64, os
    >>> box = Sealer(base64.b64encode(os.urandom(32)).decode(), b"cognopt blobs")
    >>> box.open(box.seal(b"secret", b"id1"), b"id1")
    b'secret'
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cognopt_ray.errors import IntegrityError

MAGIC = b"CG1"


class Sealer:
    """Encrypts and authenticates byte strings with a sub-key of the configured key."""

    def __init__(self, key_b64: str, purpose: bytes) -> None:
        master = base64.b64decode(key_b64)
        self.key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master)
        self._aead = AESGCM(self.key)

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
            raise IntegrityError("an encrypted blob failed authentication (damaged or wrong key)",
                                 hint="check encryption_key, or restore the item with repair(item_id)") from None


__all__ = ["Sealer"]
