"""The memory engine's exceptions (each a :class:`~cognopt_ray.errors.CognoptError` with its HTTP status)."""

from __future__ import annotations

from cognopt_ray.errors import CognoptError, Conflict


class PoolFull(Conflict):
    """A pool has no room for an allocation and nothing it may evict (HTTP 409)."""

    title = "Pool full"


class NotAcceptable(CognoptError):
    """The value exists but has no representation the caller can be given (HTTP 406)."""

    status = 406
    title = "Not acceptable"


__all__ = ["PoolFull", "NotAcceptable"]
