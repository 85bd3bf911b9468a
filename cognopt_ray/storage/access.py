"""Who may touch which stored item: owners, reserved ids, the caller passed by the REST layer.

Id model (see docs/decisions.md, "Trust boundary: storage"): item ids stay one global namespace;
every row of the catalog has an owner (its ``service``). The storage actor checks the owner under
its store lock, in the same critical section that writes, so no race lets two services share an id:

* a write (put, delete) under an id owned by another service is refused with 403, unless the
  caller is ``admin`` (the overwrite is logged here and audited by the REST layer);
* a caller that may not read a service gets, for that service's ids, exactly the answer it gets
  for ids that do not exist (404 ``item 'X' does not exist``), on retrieve, info, explain, delete;
* ids starting with a :data:`RESERVED_PREFIXES` entry belong to the engines themselves.
  ``chunk:`` names archive chunk blobs in the catalog and is refused for every caller;
  ``memory-evicted:<service>:`` (memory spill) and ``cognopt:`` may only be written by in-cluster
  Python code, and a ``memory-evicted:<service>:`` id only with ``service=<service>``. Over REST,
  no key may write a reserved id; only ``admin`` may read or delete one.

Python callers of :class:`~cognopt_ray.storage.StorageClient` pass no caller: they are in-cluster
code (``INTERNAL``), still bound by ownership (the ``service`` they write under must own the id).

Example:
    >>> Caller(services=("ai_models",)).may_read("code_generation")
    False
    >>> reserved_prefix("memory-evicted:ai_models:a1")
    'memory-evicted:'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cognopt_ray.errors import Forbidden, NotFound

#: Id prefixes the engines use internally.
RESERVED_PREFIXES = ("memory-evicted:", "chunk:", "cognopt:")
SPILL_PREFIX = "memory-evicted:"


@dataclass(frozen=True)
class Caller:
    """The identity a request acts with.

    Args:
        key_id: the API key id (for logs), ``None`` for in-cluster code.
        admin: the ``admin`` scope: may overwrite other services' ids and change caps.
        services: the services this caller may write (``None`` = any, in-cluster code only).
        read_all: may read every service (the ``read`` scope).
        external: came through the REST API (reserved ids refused).
    """

    key_id: str | None = None
    admin: bool = False
    services: tuple[str, ...] | None = None
    read_all: bool = False
    external: bool = False

    @classmethod
    def from_principal(cls, principal: Any) -> Caller:
        """The caller of a REST request (``principal`` is a :class:`cognopt_ray.security.Principal`)."""
        return cls(
            key_id=principal.key_id,
            admin=principal.is_admin,
            services=tuple(principal.services()),
            read_all=principal.can_read(),
            external=True,
        )

    def may_write(self, service: str) -> bool:
        return self.admin or self.services is None or service in self.services

    def may_read(self, service: str) -> bool:
        return self.read_all or self.may_write(service)


INTERNAL = Caller()


def reserved_prefix(item_id: str) -> str | None:
    return next((p for p in RESERVED_PREFIXES if item_id.startswith(p)), None)


def missing(item_id: str) -> NotFound:
    """The one answer for an id that does not exist or that the caller may not see."""
    return NotFound(f"item {item_id!r} does not exist", hint="check the id, or list items with GET storage/items")


def _reserved(item_id: str, prefix: str) -> Forbidden:
    return Forbidden(
        f"item id {item_id!r} is reserved: ids starting with {prefix!r} belong to the engines",
        hint=f"choose an id that does not start with any of {list(RESERVED_PREFIXES)}",
    )


def check_write_id(item_id: str, service: str, caller: Caller) -> None:
    """Refuse a write of a reserved id by this caller (raises :class:`Forbidden`)."""
    prefix = reserved_prefix(item_id)
    if prefix is None:
        return
    if prefix == "chunk:" or caller.external:
        raise _reserved(item_id, prefix)
    if prefix == SPILL_PREFIX and not item_id.startswith(f"{SPILL_PREFIX}{service}:"):
        raise Forbidden(
            f"item id {item_id!r} is a spill id of another service than {service!r}",
            hint=f"spill ids of service {service!r} start with '{SPILL_PREFIX}{service}:'",
        )


def check_read_id(item_id: str, caller: Caller) -> None:
    """Over REST only ``admin`` may read or delete a reserved id."""
    prefix = reserved_prefix(item_id)
    if prefix is not None and caller.external and not caller.admin:
        raise _reserved(item_id, prefix)


def check_owner(item_id: str, owner: str, service: str, caller: Caller) -> bool:
    """May ``caller`` write ``item_id`` (owned by ``owner``) as ``service``? ``True`` when an admin
    takes over another service's id (the caller audits it); raises otherwise."""
    if owner == service:
        return False
    if caller.admin:
        return True
    if not caller.may_read(owner):
        # The caller may not see the owner: the refusal must not say who owns the id.
        raise Forbidden(
            f"item id {item_id!r} is not available to service {service!r}",
            hint="choose another id (prefixing ids with the service name avoids clashes)",
        )
    raise Forbidden(
        f"item {item_id!r} belongs to service {owner!r}, not {service!r}; nothing was written",
        hint=f"write it as service {owner!r} with a key for that service, or choose another id",
    )


__all__ = [
    "Caller",
    "INTERNAL",
    "RESERVED_PREFIXES",
    "SPILL_PREFIX",
    "reserved_prefix",
    "missing",
    "check_write_id",
    "check_read_id",
    "check_owner",
]
