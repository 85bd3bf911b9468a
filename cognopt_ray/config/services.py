"""Per-service settings (cpu, memory, storage, network, caps), the spec's default services, stored API keys."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from cognopt_ray.config._base import (
    SCOPE_RE,
    CacheStrategy,
    Codec,
    CompressionLevel,
    KiB,
    MiB,
    PoolKind,
    Tier,
    _Model,
)
from cognopt_ray.priority import Priority


class CpuServiceSettings(_Model):
    """CPU policy of one service."""

    max_workers: int = Field(default=0, ge=0, description="cap on concurrent tasks; 0 = no cap")
    priority_threshold: Literal["critical", "high", "medium", "low", "background"] = Field(
        default="background", description="tasks of this service below this level wait while higher work is queued"
    )
    pool_kind: PoolKind = "cpu"
    cpu_affinity: list[int] | None = Field(
        default=None, description="cores this service's cpu tasks are pinned to on each node; None: the engine's"
    )

    @field_validator("priority_threshold", mode="before")
    @classmethod
    def _threshold(cls, v: Any) -> Any:
        try:
            return Priority.parse(v).name.lower()
        except ValueError as e:
            raise ValueError(str(e)) from None


class MemoryServiceSettings(_Model):
    """Memory pool of one service: ``pool_size`` blocks of ``block_size`` bytes.

    ``eviction`` is what a full pool does: ``lru`` evicts the least-recently-used unpinned
    transient allocations, ``none`` refuses the allocation (``PoolFull``). ``transient_ttl_s``
    is how long a transient allocation lives when the caller gives no TTL (0 = until evicted or
    deallocated); the cleanup sweep frees expired ones. ``max_spill_bytes`` bounds the bytes of
    this service's evicted allocations held in the storage engine's WARM tier (``evict_to``):
    above it the oldest spilled allocations are deleted (counted as ``spill_dropped``); 0 = evicted
    data is never spilled.
    """

    pool_size: int = Field(default=16, ge=1, le=1_000_000)
    block_size: int = Field(default=256 * KiB, ge=1 * KiB, le=1024 * MiB)
    eviction: Literal["lru", "none"] = "lru"
    transient_ttl_s: float = Field(default=0.0, ge=0, le=365 * 86400)
    max_spill_bytes: int = Field(default=256 * MiB, ge=0, le=1024 * 1024 * MiB)


class StorageServiceSettings(_Model):
    """Storage defaults of one service."""

    default_tier: Tier = "warm"
    codec: Codec = "auto"
    hot_to_warm_idle_s: float = Field(default=15 * 60, gt=0)
    warm_to_cold_idle_s: float = Field(default=30 * 86400, gt=0)
    cold_to_archive_idle_s: float = Field(default=90 * 86400, gt=0)
    #: stored bytes this service may hold (spilled memory items included); None = storage.default_quota_bytes
    quota_bytes: int | None = Field(default=None, ge=0)


class NetworkServiceSettings(_Model):
    """Network defaults of one service.

    ``cache_strategy`` gives the lifetime of responses whose origin says nothing and caps the
    lifetime the origin gives; ``compression_level`` picks the encodings offered to origins
    (``none`` asks for identity) and the level used for request bodies; request bodies are
    compressed only when ``compress_request_bodies`` is on (most origins do not accept them).
    """

    cache_strategy: CacheStrategy = "medium_term"
    compression_level: CompressionLevel = "balanced"
    compress_request_bodies: bool = False


class ServiceCaps(_Model):
    """How far a service's own key may change its settings through ``<engine>/optimize-service``.

    Each cap left unset is the service's configured value, so a ``service:<name>`` key can lower
    what it has but never raise it; an admin raises a cap here (``services.<name>.caps.<cap>``)
    or at run time with ``PUT services/{name}/caps``. Admin keys are not capped.

    Attributes:
        max_workers: the highest ``cpu.max_workers`` (0: no cap, any value may be set).
        cpu_affinity: the cores ``cpu.cpu_affinity`` may name (unset: the configured affinity,
            else the engine's ``cpu.cpu_affinity``; both empty: any core).
        default_tier: the hottest ``storage.default_tier`` (hot > warm > cold > archive).
        hot_to_warm_idle_s: the longest ``storage.hot_to_warm_idle_s`` (time items stay hot).
        cache_strategy: the longest-lived ``network.cache_strategy``.
    """

    max_workers: int | None = Field(default=None, ge=0, le=1_000_000)
    cpu_affinity: list[int] | None = Field(default=None, max_length=4096)
    default_tier: Tier | None = None
    hot_to_warm_idle_s: float | None = Field(default=None, gt=0)
    cache_strategy: CacheStrategy | None = None

    @field_validator("cpu_affinity")
    @classmethod
    def _cores(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(c < 0 for c in v):
            raise ValueError("cpu_affinity holds core numbers >= 0")
        return None if v is None else sorted(set(v))


class ServiceSettings(_Model):
    """Everything the engines know about one service."""

    cpu: CpuServiceSettings = Field(default_factory=CpuServiceSettings)
    memory: MemoryServiceSettings = Field(default_factory=MemoryServiceSettings)
    storage: StorageServiceSettings = Field(default_factory=StorageServiceSettings)
    network: NetworkServiceSettings = Field(default_factory=NetworkServiceSettings)
    caps: ServiceCaps = Field(default_factory=ServiceCaps)


def _svc(pool_size: int = 16, block_size: int = 256 * KiB, **cpu: Any) -> dict[str, Any]:
    return {"memory": {"pool_size": pool_size, "block_size": block_size}, "cpu": cpu}


#: The services the platform document names, with its pool sizes.
DEFAULT_SERVICES: dict[str, dict[str, Any]] = {
    "ai_models": _svc(10, 1 * MiB),
    "code_generation": _svc(20, 512 * KiB),
    "voice_processing": _svc(15, 256 * KiB),
    "payment_processing": _svc(5, 64 * KiB, priority_threshold="background"),
    "smart_coding_ai": _svc(),
    "ai_orchestrator": _svc(),
    "agent_system": _svc(),
    "voice_to_app": _svc(),
    "ethical_ai": _svc(),
}


class ApiKeyRecord(_Model):
    """An API key as stored: its public id, the SHA-256 of its secret part, its scopes.

    ``expires_at`` (ISO-8601, UTC) ends the key at that time; ``revoked_at`` is set by
    ``DELETE auth/keys/{id}`` and ends it at once.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(min_length=1)
    created: str | None = None
    note: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, v: list[str]) -> list[str]:
        for s in v:
            if not SCOPE_RE.match(s):
                raise ValueError(f"scope {s!r} is not one of 'admin', 'read', 'service:<name>'")
        return v
