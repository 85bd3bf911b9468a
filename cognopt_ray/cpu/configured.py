"""Tasks named in the settings (``cpu.tasks: {name: "package.module:function"}``).

``POST cpu/optimize-tasks`` runs only registered tasks. A server started with ``cognopt serve``
(or ``serve run serve_apps/serve_config.yaml``) registers the tasks its settings name, so a
user reaches them over REST without writing a driver: ``cognopt serve --task
primes=cognopt_ray.examples.tasks:count_primes``, or in YAML::

    cpu:
      tasks:
        primes: cognopt_ray.examples.tasks:count_primes
        factorial: math:factorial

:func:`resolve` imports every path (the CLI calls it before starting Ray, so a typo stops the
start at once); :func:`register_configured` registers them with the scheduler (the API replica
calls it when it starts). A path that does not import, or names something that is not callable,
raises :class:`~cognopt_ray.errors.ConfigError` naming the setting and the path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from cognopt_ray.config import Settings
from cognopt_ray.errors import ConfigError


def load(name: str, path: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (the function part may be dotted: ``module:Class.method``).

    Raises:
        ConfigError: naming ``cpu.tasks.<name>`` and what went wrong.
    """
    setting = f"cpu.tasks.{name}"
    hint = f"set {setting} to an importable 'package.module:function' (or drop it); e.g. math:factorial"
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{setting}: {path!r} is not 'package.module:function'", hint=hint)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the same setting error
        raise ConfigError(
            f"{setting}: cannot import module {module_name!r} of {path!r}: {type(e).__name__}: {e}", hint=hint
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{setting}: module {module_name!r} has no {attr!r} (from {path!r})", hint=hint) from None
    if not callable(obj):
        raise ConfigError(f"{setting}: {path!r} is a {type(obj).__name__}, not a function", hint=hint)
    return obj


def resolve(settings: Settings) -> dict[str, Callable[..., Any]]:
    """Import every task of ``settings.cpu.tasks``; ``{name: function}``."""
    return {name: load(name, path) for name, path in settings.cpu.tasks.items()}


def register_configured(settings: Settings) -> list[str]:
    """Import and register every task of ``settings.cpu.tasks`` with the scheduler; their names."""
    from cognopt_ray.cpu.client import client

    functions = resolve(settings)
    scheduler = client()
    for name, fn in functions.items():
        scheduler.register_task(name, fn)
    return sorted(functions)


def parse_task_option(option: str) -> tuple[str, str]:
    """``name=package.module:function`` (the ``--task`` option) → ``(name, path)``."""
    name, sep, path = option.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ConfigError(
            f"--task {option!r} is not name=package.module:function",
            hint="e.g. --task primes=cognopt_ray.examples.tasks:count_primes",
        )
    return name.strip(), path.strip()


__all__ = ["load", "parse_task_option", "register_configured", "resolve"]
