"""Lazy public names of a package (PEP 562), so ``import cognopt_ray`` costs milliseconds.

A package lists its public names and the submodule each lives in; the submodule is imported
the first time the name is read (``from cognopt_ray.cpu import PriorityScheduler`` works as
before, it just imports Ray only then). Reading any other attribute that is a submodule
(``cognopt_ray.storage.backup``) imports it too, as an eager package did.

A public name may equal its submodule's name (``cognopt_ray.storage.client`` is both a module and
the ``client()`` function): the import system binds the module over the package attribute when
the submodule is first imported, so :class:`LazyPackage` keeps that binding out and the name
always means the public object, as it did when the package imported it eagerly.

Example (a package's ``__init__.py``)::

    from cognopt_ray._private import lazy

    lazy.install(__name__, {"PriorityScheduler": ".client", "QueueFull": ".errors"})
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyPackage(types.ModuleType):
    """A package module whose public names are imported on first use."""

    _lazy_exports: dict[str, str]

    def __getattr__(self, attr: str) -> Any:
        exports = self.__dict__.get("_lazy_exports", {})
        target = exports.get(attr)
        if target is None:
            if attr.startswith("__"):
                raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
            full = f"{self.__name__}.{attr}"
            try:
                return importlib.import_module(full)
            except ModuleNotFoundError as e:
                if e.name != full:
                    raise
                raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}") from None
        module, _, name = target.partition(":")
        value = getattr(importlib.import_module(module, self.__name__), name or attr)
        self.__dict__[attr] = value
        return value

    def __setattr__(self, attr: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and attr in self.__dict__.get("_lazy_exports", {})
            and value.__name__ == f"{self.__name__}.{attr}"
        ):
            return  # the submodule `client` must not hide the public `client()`
        super().__setattr__(attr, value)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # pickled by name, as cloudpickle pickles a plain module (a task that returns the package,
        # or a function whose globals hold it, must cross to a worker)
        return importlib.import_module, (self.__name__,)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("_lazy_exports", {})))


def install(package: str, exports: dict[str, str]) -> None:
    """Make ``package`` (its ``__name__``) lazy: ``exports`` maps each public name to the
    submodule that defines it (``".client"``, or ``".runtime:init"`` for another name there),
    imported when the name is first read."""
    mod = sys.modules[package]
    mod.__class__ = LazyPackage
    mod.__dict__["_lazy_exports"] = dict(exports)


__all__ = ["LazyPackage", "install"]
