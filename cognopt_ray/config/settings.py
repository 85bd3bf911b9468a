"""The top-level :class:`Settings` and how it is loaded (defaults, YAML file, environment, overrides)."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator

from cognopt_ray.config._base import (
    CONFIG_ENV,
    ENV_PREFIX,
    MiB,
    _Model,
    check_service_name,
)
from cognopt_ray.config.engines import (
    CpuEngineSettings,
    MemoryEngineSettings,
    NetworkEngineSettings,
    StorageEngineSettings,
    SystemSettings,
)
from cognopt_ray.config.services import (
    DEFAULT_SERVICES,
    ApiKeyRecord,
    ServiceSettings,
)
from cognopt_ray.errors import ConfigError


class Settings(_Model):
    """All settings of cognopt_ray.

    Attributes:
        storage_root: folder (or pyarrow.fs URI) for the catalog, blobs, keys and the audit log.
        redis_url: ``redis://host:port/db``; unset means the in-cluster cache backend.
        admin_key: an admin API key accepted as is (``COGNOPT_ADMIN_KEY``); never logged.
        api_keys: stored keys (hashes only) with their scopes.
        max_body_bytes: request bodies above this are answered 413.
        encryption_key: base64 of 32 bytes; enables AES-GCM at rest.
        installation_secret: base64 of 32 bytes shared by every node that may run the storage
            engine (``COGNOPT_INSTALLATION_SECRET``); unset, each storage root makes its own at
            first start (``<root>/keys/installation.secret``). Signatures (the catalog journal's
            without an ``encryption_key``, spilled values) derive from it, so a node started with a
            fresh local state dir needs the same one to trust what the others wrote.
        services: per-service settings; the spec's services ship as defaults, any other name
            uses ``default_service``.
        health_cache_s: ``GET health`` answers from a document at most this old; the engines
            are asked at most once per this many seconds per replica, whatever the call rate.
        audit_unauthenticated_per_minute: 401 answers (no key, or an unknown one) written to
            the audit log per replica and minute; the rest are counted into the next entry.
        keys_recheck_s: how often a replica looks at ``keys.json`` for changes made by another
            process (another replica, the CLI); a change made through the replica itself, and a
            key id it has not seen, take effect at once. 0: look on every request.
        audit_data_plane: also audit the successes of the data-plane routes (storage/store,
            memory/allocate and deallocate, cpu/optimize-tasks, network/optimize-request); their
            failures and every other mutating route are always audited.
    """

    storage_root: str = Field(default="./.cognopt", validate_default=True)
    redis_url: str | None = None
    admin_key: SecretStr | None = None
    api_keys: list[ApiKeyRecord] = Field(default_factory=list)
    max_body_bytes: int = Field(default=64 * MiB, ge=1, le=16 * 1024 * MiB)
    encryption_key: SecretStr | None = None
    installation_secret: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    detached_engines: bool = False
    health_timeout_s: float = Field(default=2.0, gt=0, le=60)
    health_cache_s: float = Field(default=5.0, ge=0.5, le=3600)
    audit_unauthenticated_per_minute: int = Field(default=60, ge=0, le=100_000)
    audit_data_plane: bool = False
    keys_recheck_s: float = Field(default=1.0, ge=0, le=60)
    services: dict[str, ServiceSettings] = Field(default_factory=dict)
    default_service: ServiceSettings = Field(default_factory=ServiceSettings)
    cpu: CpuEngineSettings = Field(default_factory=CpuEngineSettings)
    memory: MemoryEngineSettings = Field(default_factory=MemoryEngineSettings)
    storage: StorageEngineSettings = Field(default_factory=StorageEngineSettings)
    network: NetworkEngineSettings = Field(default_factory=NetworkEngineSettings)
    system: SystemSettings = Field(default_factory=SystemSettings)

    @field_validator("storage_root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not v or "\x00" in v:
            raise ValueError("storage_root must be a folder path or a pyarrow.fs URI")
        if "://" in v:
            return v
        return str(Path(v).expanduser().resolve())

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not re.match(r"^(redis|rediss|unix)://", v):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return v

    @field_validator("admin_key")
    @classmethod
    def _admin_key(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("admin_key must be at least 16 characters (use `cognopt keys create`)")
        return v

    @field_validator("encryption_key", "installation_secret")
    @classmethod
    def _key_32(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        """Both keys are base64 of 32 random bytes; empty means "not set"."""
        if v is None or not v.get_secret_value():
            return None
        try:
            raw = base64.b64decode(v.get_secret_value(), validate=True)
        except ValueError:  # binascii.Error, or text that is not ASCII
            raise ValueError(f"{info.field_name} must be base64 of 32 random bytes") from None
        if len(raw) != 32:
            raise ValueError(f"{info.field_name} must decode to 32 bytes, got {len(raw)}")
        return v

    @field_validator("services")
    @classmethod
    def _service_names(cls, v: dict[str, ServiceSettings]) -> dict[str, ServiceSettings]:
        for name in v:
            check_service_name(name)
        return v

    @model_validator(mode="before")
    @classmethod
    def _merge_default_services(cls, data: Any) -> Any:
        if isinstance(data, dict):
            merged = {k: json.loads(json.dumps(s)) for k, s in DEFAULT_SERVICES.items()}
            for name, svc in (data.get("services") or {}).items():
                merged[name] = _deep_merge(merged.get(name, {}), svc if isinstance(svc, dict) else {})
            data = {**data, "services": merged}
        return data

    # -- lookups -------------------------------------------------------------------------------
    def service(self, name: str) -> ServiceSettings:
        """The settings of ``name``; unknown but valid names get ``default_service``."""
        check_service_name(name)
        return self.services.get(name) or self.default_service

    @property
    def root(self) -> Path:
        """The storage root as a local path (URIs are for the storage tiers only)."""
        if "://" in self.storage_root:
            return Path(os.environ.get("COGNOPT_LOCAL_STATE", "./.cognopt")).resolve()
        return Path(self.storage_root)

    def to_overrides(self) -> dict[str, Any]:
        """A plain dict that recreates these settings in another process (secrets included)."""
        data = self.model_dump(mode="python")
        for key in ("admin_key", "encryption_key", "installation_secret"):
            secret = getattr(self, key)
            data[key] = secret.get_secret_value() if secret is not None else None
        return data

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from defaults, a YAML file, the environment and overrides.

        Raises:
            ConfigError: naming the setting, where its value came from and what is allowed.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        sources: dict[str, str] = {}
        path = config_file or env.get(CONFIG_ENV)
        if path:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file {str(p)!r} does not exist", hint="pass an existing YAML file")
            try:
                loaded = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"config file {str(p)!r} must hold a mapping of settings")
            data = _deep_merge(data, loaded)
            for k in loaded:
                sources[k] = f"config file {p}"
        env_data, env_sources = _from_environ(env)
        data = _deep_merge(data, env_data)
        sources.update(env_sources)
        data = _deep_merge(data, overrides)
        for k in overrides:
            sources[k] = "argument"
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_explain(e, sources)) from None


def _from_environ(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV or key == "COGNOPT_LOCAL_STATE":
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        value: Any = raw
        if raw.strip().startswith(("{", "[")):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise ConfigError(f"setting {parts[0]!r} (from {key}): value is not valid JSON") from None
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"setting {parts[0]!r} (from {key}) conflicts with another variable")
        node[parts[-1]] = value
        sources[parts[0]] = f"environment variable {key}"
    return data, sources


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _explain(err: ValidationError, sources: Mapping[str, str]) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(settings)"
        top = str(e["loc"][0]) if e["loc"] else ""
        src = sources.get(top, "default")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_fields(err, e["loc"]))
            msg = f"unknown setting; allowed here: {allowed}"
        shown = "***" if "key" in loc or "secret" in loc else repr(e.get("input"))[:80]
        lines.append(f"setting {loc!r} (from {src}): {msg}; got {shown}")
    return "invalid settings: " + "; ".join(lines)


def _allowed_fields(err: ValidationError, loc: tuple) -> list[str]:
    model: Any = Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            if model is Settings or part in ("services",):
                model = ServiceSettings
                continue
            if isinstance(part, str) and model is ServiceSettings:
                continue
            return []
        ann = field.annotation
        model = (
            ann
            if isinstance(ann, type) and issubclass(ann, BaseModel)
            else (ServiceSettings if part == "services" else None)
        )
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


__all__ = ["Settings"]
