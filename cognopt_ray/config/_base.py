"""What every settings model shares: names, value types, the base model, the service-name check."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "COGNOPT_"
CONFIG_ENV = "COGNOPT_CONFIG"
#: A service name: 1-63 characters a-z, 0-9 and _, starting with a letter (the one definition;
#: request models use the pattern, everything else :func:`check_service_name`).
SERVICE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
SERVICE_NAME_RE = re.compile(SERVICE_NAME_PATTERN)
SCOPE_RE = re.compile(rf"^(admin|read|service:{SERVICE_NAME_PATTERN[1:-1]})$")

Tier = Literal["hot", "warm", "cold", "archive"]
Codec = Literal["auto", "none", "zlib", "gzip", "bz2", "lzma", "zstd", "lz4"]
CacheStrategy = Literal["no_cache", "short_term", "medium_term", "long_term", "persistent"]
CompressionLevel = Literal["none", "fast", "balanced", "max"]
PoolKind = Literal["cpu", "io"]

KiB = 1024
MiB = 1024 * KiB


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_service_name(name: str) -> str:
    """Validate a service name; raises ``ValueError`` naming the allowed form."""
    if not isinstance(name, str) or not SERVICE_NAME_RE.match(name):
        raise ValueError(
            f"service name {name!r} is invalid: use 1-63 characters a-z, 0-9 and _, starting with a letter"
        )
    return name
