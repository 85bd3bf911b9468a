"""The package's exceptions.

Every error the package raises on purpose is a :class:`CognoptError`. Each carries an HTTP status
(used by the REST API to answer ``application/problem+json``), a short title, a message that says
what went wrong and a hint that says how to fix it.

Example:
    >>> from cognopt_ray.errors import NotFound
    >>> err = NotFound("allocation 'a1' does not exist", hint="list allocations with GET memory/metrics")
    >>> err.status
    404
"""

from __future__ import annotations

from typing import Any


class CognoptError(Exception):
    """Base class of the package's errors.

    Args:
        message: What went wrong, in one sentence.
        hint: How to fix it (optional).
        **extra: Extra machine-readable fields added to the problem document.
    """

    status: int = 500
    title: str = "Internal error"
    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None, **extra: Any) -> None:
        self.message = message
        self.hint = hint
        self.extra = extra
        super().__init__(message if not hint else f"{message} ({hint})")

    def __reduce__(self):  # keep message, hint and extra across Ray's pickling
        return (_rebuild, (type(self), self.message, self.hint, self.extra))

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """This error as an RFC 9457 problem document."""
        doc: dict[str, Any] = {
            "type": f"https://cognopt-ray.dev/problems/{type(self).__name__}",
            "title": self.title,
            "status": self.status,
            "detail": self.message,
        }
        if self.hint:
            doc["hint"] = self.hint
        if self.retryable:
            doc["retryable"] = True
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


def _rebuild(cls, message, hint, extra):
    return cls(message, hint=hint, **extra)


class ConfigError(CognoptError):
    """A setting has a value that is not allowed."""

    status = 500
    title = "Invalid configuration"


class InvalidInput(CognoptError):
    """The caller sent something that cannot be accepted (HTTP 422)."""

    status = 422
    title = "Invalid input"


class NotFound(CognoptError):
    """The named thing does not exist (HTTP 404)."""

    status = 404
    title = "Not found"


class Conflict(CognoptError):
    """The request conflicts with the current state (HTTP 409)."""

    status = 409
    title = "Conflict"


class PayloadTooLarge(CognoptError):
    """A body or a piece of data is over a configured limit (HTTP 413)."""

    status = 413
    title = "Payload too large"


class Unauthorized(CognoptError):
    """No API key, or an unknown one (HTTP 401)."""

    status = 401
    title = "Unauthorized"


class Forbidden(CognoptError):
    """The API key lacks the scope this action needs (HTTP 403)."""

    status = 403
    title = "Forbidden"


class InsufficientStorage(CognoptError):
    """A storage tier has no space left (HTTP 507)."""

    status = 507
    title = "Insufficient storage"


class IntegrityError(CognoptError):
    """Stored bytes do not match their checksum; they are never returned."""

    status = 500
    title = "Integrity check failed"


class EngineUnavailable(CognoptError):
    """An engine actor is down or restarting; the call may be retried (HTTP 503)."""

    status = 503
    title = "Engine unavailable"
    retryable = True


class StorageBackendError(CognoptError):
    """The object store behind a tier root or the backup repository did not answer, or refused the
    request (HTTP 503 when retrying may help: connection refused, timeouts, 5xx; 502 otherwise)."""

    status = 503
    title = "Storage backend unavailable"
    retryable = True


class StorageBackendRefused(StorageBackendError):
    """The object store answered but refused the request (credentials, permissions, no such bucket):
    retrying the same request does not help (HTTP 502)."""

    status = 502
    title = "Storage backend refused the request"
    retryable = False


__all__ = [
    "CognoptError",
    "ConfigError",
    "InvalidInput",
    "NotFound",
    "Conflict",
    "PayloadTooLarge",
    "Unauthorized",
    "Forbidden",
    "InsufficientStorage",
    "IntegrityError",
    "EngineUnavailable",
    "StorageBackendError",
    "StorageBackendRefused",
]
