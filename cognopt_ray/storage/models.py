"""The typed objects crossing the storage engine's boundary: :class:`PutRequest` in (each value
checked once, when the request is made), :class:`ItemInfo` out (a catalog record as the API shows it).

Example:
    >>> PutRequest("report-1", b"...", tier="warm").service
    'default'
    >>> PutRequest("../etc/passwd", b"")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cognopt_ray.errors.InvalidInput: item id '../etc/passwd' is not allowed ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, get_type_hints

from pydantic import create_model

from cognopt_ray.config import check_service_name
from cognopt_ray.errors import InvalidInput
from cognopt_ray.storage import codecs
from cognopt_ray.storage.catalog import ItemRecord, check_item_id

#: The service of items stored without one.
DEFAULT_SERVICE = "default"


def check_service(name: Any) -> str:
    """A valid service name, or :class:`InvalidInput` (422) naming the allowed form."""
    try:
        return check_service_name(name)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


@dataclass(frozen=True)
class PutRequest:
    """One item to store (an entry of :meth:`~cognopt_ray.storage.StorageClient.put_many`).

    Args:
        item_id: 1-200 characters from ``A-Z a-z 0-9 . _ - : @ +`` (see
            :func:`~cognopt_ray.storage.catalog.check_item_id`).
        data: bytes, a JSON value, or a table (``pa.Table``, ``pa.RecordBatch``, pandas DataFrame).
        service: the owning service (default ``default``).
        tier: ``hot``, ``warm``, ``cold`` or ``archive``; ``None`` = the service's ``default_tier``.
        codec: ``auto`` or a codec name; ``None`` = the service's codec.
        level: the codec level (only with an explicit codec; range checked).

    Raises:
        InvalidInput: an id, service, tier, codec or level that is not valid.
    """

    item_id: str
    data: Any
    service: str = DEFAULT_SERVICE
    tier: str | None = None
    codec: str | None = None
    level: int | None = None

    def __post_init__(self) -> None:
        check_item_id(self.item_id)
        object.__setattr__(self, "service", check_service(self.service or DEFAULT_SERVICE))
        object.__setattr__(self, "tier", self.tier or None)  # empty = the service's default
        object.__setattr__(self, "codec", self.codec or None)
        if self.tier is not None:
            codecs.check_tier(self.tier)
        if self.codec is not None:
            codecs.check_codec(self.codec)
            if self.codec != "auto":
                codecs.requested(self.codec, self.level)

    @classmethod
    def of(cls, item: PutRequest | Mapping[str, Any]) -> PutRequest:
        """``item`` itself, or the request a dict with the same keys describes."""
        if isinstance(item, PutRequest):
            return item
        if not isinstance(item, Mapping):
            raise InvalidInput(f"a put entry must be a PutRequest or a dict, not {type(item).__name__}")
        unknown = set(item) - {"item_id", "data", "service", "tier", "codec", "level"}
        if unknown:
            raise InvalidInput(
                f"unknown put fields {sorted(unknown)}", hint="use item_id, data, service, tier, codec, level"
            )
        return cls(
            item.get("item_id"),
            item.get("data"),
            item.get("service") or DEFAULT_SERVICE,
            item.get("tier"),
            item.get("codec"),
            item.get("level"),
        )

    def with_data(self, data: Any) -> PutRequest:
        """The same request carrying ``data`` instead (already checked: not validated again)."""
        out = object.__new__(PutRequest)
        for name in ("item_id", "service", "tier", "codec", "level"):
            object.__setattr__(out, name, getattr(self, name))
        object.__setattr__(out, "data", data)
        return out


def put_requests(items: Any) -> list[PutRequest]:
    """A non-empty list of :class:`PutRequest` with distinct ids, from requests or dicts."""
    if not isinstance(items, (list, tuple)) or not items:
        raise InvalidInput("put_many needs a non-empty list of items")
    out = [PutRequest.of(it) for it in items]
    seen: set[str] = set()
    for r in out:
        if r.item_id in seen:
            raise InvalidInput(f"item id {r.item_id!r} appears twice in one batch")
        seen.add(r.item_id)
    return out


def _item_info_fields() -> dict[str, Any]:
    """ItemRecord's fields, with ``codec`` the codec's name and ``codec_choice`` the recorded choice."""
    hints = get_type_hints(ItemRecord)
    out: dict[str, Any] = {}
    for f in fields(ItemRecord):
        if f.name == "codec":
            out["codec"] = (str, ...)
            out["codec_choice"] = (hints["codec"], ...)
        else:
            out[f.name] = (hints[f.name], ...)
    return out


#: :meth:`ItemRecord.public` as a model (the response of the storage routes), made from
#: :class:`~cognopt_ray.storage.catalog.ItemRecord` so that the two never drift apart.
ItemInfo = create_model("ItemInfo", **_item_info_fields())


__all__ = ["PutRequest", "ItemInfo", "DEFAULT_SERVICE", "check_service", "put_requests"]
