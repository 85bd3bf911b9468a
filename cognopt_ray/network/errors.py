"""The network engine's errors: each maps to the HTTP status a gateway would answer."""

from __future__ import annotations

from cognopt_ray.errors import CognoptError, Forbidden, InvalidInput


class UrlRefused(Forbidden):
    """The SSRF guard refused a URL (HTTP 403); ``rule`` names the rule that refused it."""

    title = "URL refused"


class BadGateway(CognoptError):
    """The origin could not be reached or answered something unusable (HTTP 502)."""

    status = 502
    title = "Bad gateway"
    retryable = True


class OriginTimeout(CognoptError):
    """The origin did not answer in time, or a must-revalidate entry could not be revalidated (HTTP 504)."""

    status = 504
    title = "Gateway timeout"
    retryable = True


class InvalidRequest(InvalidInput):
    """An invalid method, URL or header (HTTP 422)."""


__all__ = ["UrlRefused", "BadGateway", "OriginTimeout", "InvalidRequest"]
