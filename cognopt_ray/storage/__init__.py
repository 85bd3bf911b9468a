"""The storage engine: tiered store, automatic codecs, Arrow tables, lifecycle, deduplicated backups.

Example:
    >>> import cognopt_ray
    >>> from cognopt_ray.storage import client
    >>> store = client()                                  # doctest: +SKIP
    >>> store.put("report-1", b"...", tier="warm")        # doctest: +SKIP
"""

from cognopt_ray.storage.backup import BackupRepository
from cognopt_ray.storage.client import ACTOR_NAME, StorageClient, client
from cognopt_ray.storage.codecs import CODEC_CHOICES, CODECS, TIERS, CodecChoice, choose_codec
from cognopt_ray.storage.models import DEFAULT_SERVICE, ItemInfo, PutRequest
from cognopt_ray.storage.store import TieredStore

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
