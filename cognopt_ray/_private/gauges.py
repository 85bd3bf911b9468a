"""Prometheus gauges through ``ray.util.metrics``: one registry that every engine and the system layer use.

A :class:`Gauges` is declared with its names (description and label keys each); :meth:`Gauges.set`
creates a gauge the first time it is set and skips values that are not numbers (``None`` means
"not measured", and an absent series says that better than a 0). :meth:`Gauges.export` runs a
function that sets several and never raises: metrics export must never break the caller.

Ray's metrics agent on the node publishes them on its Prometheus endpoint with ``ray_`` prepended.

Example:
    >>> g = Gauges({"cognopt_demo_items": ("items held", ("tier",))})   # doctest: +SKIP
    >>> g.set("cognopt_demo_items", 3, tier="hot")                       # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class Gauges:
    """A set of named gauges, created on first use in this process.

    Args:
        names: gauge name → (description, label keys).
    """

    def __init__(self, names: dict[str, tuple[str, tuple[str, ...]]]) -> None:
        self.names = dict(names)
        self._made: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _gauge(self, name: str) -> Any:
        with self._lock:
            g = self._made.get(name)
            if g is None:
                from ray.util.metrics import Gauge

                desc, tags = self.names[name]
                g = self._made[name] = Gauge(name, description=desc, tag_keys=tags)
            return g

    def set(self, name: str, value: Any, **tags: str) -> None:
        """Set one gauge; a value that is not a number (``None``, a bool, text) is skipped."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        self._gauge(name).set(float(value), tags=tags or None)

    def export(self, fill: Callable[[], None], what: str) -> None:
        """Run ``fill`` (which calls :meth:`set`); log and swallow any error."""
        try:
            fill()
        except Exception:
            logger.debug("could not export %s gauges", what, exc_info=True)


__all__ = ["Gauges"]
