"""The errors the storage engine raises, each with an HTTP status and a fix hint.

They are the package's own (:mod:`cognopt_ray.errors`), re-exported here so storage callers find
them in one place:

* :class:`InvalidInput` (422): an item id, service, tier, codec, level or snapshot id that is not valid.
* :class:`NotFound` (404): no such item (or one the caller may not see), snapshot or backup entry.
* :class:`Forbidden` (403): an id owned by another service, a reserved id, a path outside the
  configured roots, a cap only an admin may change.
* :class:`Conflict` (409): a snapshot file that exists already.
* :class:`InsufficientStorage` (507): a service over its ``quota_bytes``, a full tier.
* :class:`IntegrityError` (500): stored bytes that do not match their checksums (never returned).
"""

from __future__ import annotations

from cognopt_ray.errors import Conflict, Forbidden, InsufficientStorage, IntegrityError, InvalidInput, NotFound

__all__ = ["Conflict", "Forbidden", "InsufficientStorage", "IntegrityError", "InvalidInput", "NotFound"]
