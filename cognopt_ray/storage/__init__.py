"""The storage engine: tiered store, automatic codecs, Arrow tables, lifecycle, deduplicated backups.

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray.storage import client
    >>> store = client()                                  # doctest: +SKIP
    >>> store.put("report-1", b"...", tier="warm")        # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cognopt_ray._private import lazy as _lazy

if TYPE_CHECKING:
    from cognopt_ray.storage.backup import BackupRepository
    from cognopt_ray.storage.client import ACTOR_NAME, StorageClient, client
    from cognopt_ray.storage.codecs import CODEC_CHOICES, CODECS, TIERS, CodecChoice, choose_codec
    from cognopt_ray.storage.models import DEFAULT_SERVICE, ItemInfo, PutRequest
    from cognopt_ray.storage.store import TieredStore

_lazy.install(
    __name__,
    {
        "BackupRepository": ".backup",
        "ACTOR_NAME": ".client",
        "StorageClient": ".client",
        "client": ".client",
        "CODEC_CHOICES": ".codecs",
        "CODECS": ".codecs",
        "TIERS": ".codecs",
        "CodecChoice": ".codecs",
        "choose_codec": ".codecs",
        "DEFAULT_SERVICE": ".models",
        "ItemInfo": ".models",
        "PutRequest": ".models",
        "TieredStore": ".store",
    },
)

__all__ = [
    "StorageClient",
    "client",
    "ACTOR_NAME",
    "PutRequest",
    "ItemInfo",
    "DEFAULT_SERVICE",
    "TieredStore",
    "BackupRepository",
    "CodecChoice",
    "choose_codec",
    "TIERS",
    "CODECS",
    "CODEC_CHOICES",
]
