"""Caps: how far a service's own key may change its settings through ``<engine>/optimize-service``.

The model is :class:`~cognopt_ray.config.ServiceCaps` (``services.<name>.caps``). Each cap left
unset is the service's configured value, so by default a ``service:<name>`` key may lower what
it has and never raise it. An admin raises caps in settings or at run time with
``PUT services/{name}/caps``, kept in ``<storage_root>/caps.json`` (re-read when it changes, so
every replica sharing the root sees it). Admin keys are not capped.

Example:
    >>> from cognopt_ray.config import Settings
    >>> s = Settings.load(environ={}, storage_root="/tmp/cognopt-doc-caps",
    ...                   services={"ai_models": {"cpu": {"max_workers": 4}}})
    >>> effective_caps(s, "ai_models", {}).max_workers
    4
    >>> over_caps(s, "ai_models", "cpu", {"max_workers": 8}, {})[0]["cap"]
    'max_workers'
"""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cognopt_ray._private.files import atomic_write
from cognopt_ray.config import ServiceCaps, Settings
from cognopt_ray.errors import Forbidden, InvalidInput

_TIER_HEAT = {"archive": 0, "cold": 1, "warm": 2, "hot": 3}
_STRATEGY_LIFE = {"no_cache": 0, "short_term": 1, "medium_term": 2, "long_term": 3, "persistent": 4}


def _count_over(value: Any, cap: Any) -> bool:  # 0 means "no cap" on both sides
    return bool(cap) and (not value or value > cap)


def _cores_over(value: Any, cap: Any) -> bool:
    return bool(cap) and not set(value or []) <= set(cap)


#: (engine, parameter) -> (cap name, is the value over the cap?)
RULES: dict[tuple[str, str], tuple[str, Callable[[Any, Any], bool]]] = {
    ("cpu", "max_workers"): ("max_workers", _count_over),
    ("cpu", "cpu_affinity"): ("cpu_affinity", _cores_over),
    ("storage", "default_tier"): ("default_tier", lambda v, c: _TIER_HEAT.get(v, 9) > _TIER_HEAT[c]),
    ("storage", "hot_to_warm_idle_s"): ("hot_to_warm_idle_s", lambda v, c: float(v) > c),
    ("network", "cache_strategy"): ("cache_strategy", lambda v, c: _STRATEGY_LIFE.get(v, 9) > _STRATEGY_LIFE[c]),
}


def configured_caps(settings: Settings, service: str) -> ServiceCaps:
    """The caps a service has before any admin change: its configured values."""
    svc = settings.service(service)
    affinity = svc.cpu.cpu_affinity if svc.cpu.cpu_affinity is not None else (settings.cpu.cpu_affinity or None)
    return ServiceCaps(
        max_workers=svc.cpu.max_workers,
        cpu_affinity=affinity,
        default_tier=svc.storage.default_tier,
        hot_to_warm_idle_s=svc.storage.hot_to_warm_idle_s,
        cache_strategy=svc.network.cache_strategy,
    )


def effective_caps(settings: Settings, service: str, overrides: dict[str, dict[str, Any]]) -> ServiceCaps:
    """Run-time overrides, then ``services.<name>.caps``, then the configured values."""
    base = configured_caps(settings, service).model_dump()
    base.update(settings.service(service).caps.model_dump(exclude_none=True))
    base.update({k: v for k, v in (overrides.get(service) or {}).items() if v is not None})
    return ServiceCaps(**base)


def over_caps(
    settings: Settings, service: str, engine: str, changes: dict[str, Any], overrides: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """The changes that go past a cap: ``[{"parameter", "value", "cap", "limit"}]`` (empty: all within)."""
    caps = effective_caps(settings, service, overrides)
    out = []
    for param, value in changes.items():
        rule = RULES.get((engine, param))
        if rule is None:
            continue
        cap, over = rule
        limit = getattr(caps, cap)
        try:
            is_over = limit is not None and over(value, limit)
        except (TypeError, ValueError):  # not a valid value at all: the engine answers 422 for it
            continue
        if is_over:
            out.append({"parameter": param, "value": value, "cap": cap, "limit": limit})
    return out


class CapsStore:
    """Run-time caps set by an admin, in ``<storage_root>/caps.json`` (``{service: {cap: value}}``)."""

    FILE_NAME = "caps.json"

    def __init__(self, root: str | Path) -> None:
        self._path = Path(root) / self.FILE_NAME
        self._data: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    def overrides(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            try:
                st = self._path.stat()
            except FileNotFoundError:
                self._data, self._stamp = {}, None
                return {}
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp != self._stamp:
                self._data = json.loads(self._path.read_text() or "{}")
                self._stamp = stamp
            return self._data

    def set(self, service: str, caps: ServiceCaps | None) -> None:
        """Replace the run-time caps of ``service`` (``None``: drop them, back to settings)."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self._path.read_text() or "{}") if self._path.exists() else {}
            except json.JSONDecodeError as e:
                raise InvalidInput(f"caps file {self._path} is corrupt: {e}") from None
            if caps is None:
                data.pop(service, None)
            else:
                data[service] = caps.model_dump(mode="json", exclude_none=True)
            atomic_write(self._path, json.dumps(data, indent=2, sort_keys=True).encode())

    def enforce(self, settings: Settings, principal: Any, service: str, engine: str, changes: dict[str, Any]) -> None:
        """Raise 403 naming the cap when a non-admin key asks for more than the caps of ``service``."""
        if principal.is_admin:
            return
        over = over_caps(settings, service, engine, changes, self.overrides())
        if not over:
            return
        first = over[0]
        names = ", ".join(f"{o['parameter']}={o['value']!r} (cap {o['limit']!r})" for o in over)
        raise Forbidden(
            f"service {service!r} may not set {names}: over its caps",
            hint=f"an admin raises services.{service}.caps.{first['cap']} in the settings or with "
            f"PUT services/{service}/caps; or ask within the caps",
            over=over,
        )
