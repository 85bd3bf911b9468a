"""Settings: one pydantic model, filled from defaults, an optional YAML file and ``COGNOPT_*``.

Precedence, lowest first: built-in defaults, the YAML file (``--config FILE`` or
``COGNOPT_CONFIG``), environment variables, then keyword overrides. Environment variables are
named ``COGNOPT_<SETTING>``; nested values use ``__`` (``COGNOPT_SERVICES__AI_MODELS__MEMORY__POOL_SIZE=20``)
and lists or mappings may be given as JSON (``COGNOPT_API_KEYS='[...]'``).

A bad value fails at start with a :class:`~cognopt_ray.errors.ConfigError` that names the setting,
where it came from and the allowed values.

Example:
    >>> s = Settings.load(environ={"COGNOPT_MAX_BODY_BYTES": "1048576"})
    >>> s.max_body_bytes
    1048576
    >>> s.service("ai_models").memory.pool_size
    10
"""

from cognopt_ray.config._base import (
    CONFIG_ENV,
    ENV_PREFIX,
    SCOPE_RE,
    SERVICE_NAME_PATTERN,
    SERVICE_NAME_RE,
    CacheStrategy,
    Codec,
    CompressionLevel,
    KiB,
    MiB,
    PoolKind,
    Tier,
    check_service_name,
)
from cognopt_ray.config.engines import (
    CpuEngineSettings,
    MemoryEngineSettings,
    NetworkEngineSettings,
    ObjectStoreSettings,
    PriceSheet,
    StorageEngineSettings,
    SystemSettings,
    UpstreamSettings,
)
from cognopt_ray.config.services import (
    DEFAULT_SERVICES,
    ApiKeyRecord,
    CpuServiceSettings,
    MemoryServiceSettings,
    NetworkServiceSettings,
    ServiceCaps,
    ServiceSettings,
    StorageServiceSettings,
)
from cognopt_ray.config.settings import Settings

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SCOPE_RE",
    "SERVICE_NAME_PATTERN",
    "SERVICE_NAME_RE",
    "CacheStrategy",
    "Codec",
    "CompressionLevel",
    "KiB",
    "MiB",
    "PoolKind",
    "Tier",
    "check_service_name",
    "CpuEngineSettings",
    "MemoryEngineSettings",
    "NetworkEngineSettings",
    "UpstreamSettings",
    "PriceSheet",
    "ObjectStoreSettings",
    "StorageEngineSettings",
    "SystemSettings",
    "DEFAULT_SERVICES",
    "ApiKeyRecord",
    "CpuServiceSettings",
    "MemoryServiceSettings",
    "NetworkServiceSettings",
    "ServiceCaps",
    "ServiceSettings",
    "StorageServiceSettings",
    "Settings",
]
