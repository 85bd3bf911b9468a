"""Counters of the network engine and the figures derived from them.

Every derived figure is a formula over measured counters (never a constant):

- ``cache_hit_rate`` = (HIT + STALE + REVALIDATED) ÷ cache lookups, where lookups are the GET
  requests the cache was allowed to answer (everything but BYPASS). A REVALIDATED answer counts
  as a hit: the origin sent headers only.
- ``origin_requests_avoided`` = HIT + STALE + coalesced waiters: requests answered without an
  origin request of their own.
- ``bandwidth_saved_mb`` = (bytes served to callers − bytes received from origins) ÷ 10⁶: what
  fetching every answer from the origin without compression would have cost, minus what it did
  cost. Negative is possible (conditional requests for bodies that changed).
- ``compression_ratio`` = bytes of origin bodies after decoding ÷ bytes on the wire (1.0 = no
  compression; 4.0 = the origin's content coding saved 75 %).
- ``connection_reuse_rate`` = reused connections ÷ (new + reused) connections.

Example:
    >>> m = NetworkMetrics()
    >>> m.record("HIT", served=1000)
    >>> m.snapshot()["cache_hit_rate"]
    1.0
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class NetworkMetrics:
    """Counters; :meth:`snapshot` adds the derived figures.

    Example:
        >>> m = NetworkMetrics()
        >>> m.origin(wire=250, decoded=1000)
        >>> m.record("MISS", served=1000); m.record("HIT", served=1000)
        >>> m.snapshot()["bandwidth_saved_mb"], m.snapshot()["compression_ratio"]
        (0.00175, 4.0)
    """

    requests: int = 0
    hits: int = 0
    near_hits: int = 0
    stale: int = 0
    revalidated: int = 0
    misses: int = 0
    bypass: int = 0
    coalesced: int = 0
    origin_requests: int = 0
    background_revalidations: int = 0
    origin_errors: int = 0
    refused: int = 0
    invalidations: int = 0
    cache_errors: int = 0
    stored: int = 0
    not_stored: int = 0
    bytes_from_origin: int = 0
    bytes_decoded_from_origin: int = 0
    bytes_served: int = 0
    request_bytes_raw: int = 0
    request_bytes_sent: int = 0
    connections_created: int = 0
    connections_reused: int = 0
    started: float = field(default_factory=time.time)

    def record(self, cache_status: str, *, served: int, coalesced: bool = False) -> None:
        """Count one answered request."""
        self.requests += 1
        self.bytes_served += served
        if coalesced:
            self.coalesced += 1
        key = {"HIT": "hits", "STALE": "stale", "REVALIDATED": "revalidated", "MISS": "misses", "BYPASS": "bypass"}[
            cache_status
        ]
        setattr(self, key, getattr(self, key) + 1)

    def origin(self, wire: int, decoded: int) -> None:
        """Count one origin response."""
        self.origin_requests += 1
        self.bytes_from_origin += wire
        self.bytes_decoded_from_origin += decoded

    def snapshot(self) -> dict[str, Any]:
        """Counters and derived figures (formulas in the module docstring)."""
        d = asdict(self)
        lookups = self.requests - self.bypass
        d["cache_lookups"] = lookups
        d["cache_hit_rate"] = (self.hits + self.stale + self.revalidated) / lookups if lookups else 0.0
        d["origin_requests_avoided"] = self.hits + self.stale + self.coalesced
        d["bandwidth_saved_mb"] = (self.bytes_served - self.bytes_from_origin) / 1e6
        d["compression_ratio"] = (
            (self.bytes_decoded_from_origin / self.bytes_from_origin) if self.bytes_from_origin else 1.0
        )
        conns = self.connections_created + self.connections_reused
        d["connection_reuse_rate"] = self.connections_reused / conns if conns else 0.0
        d["uptime_s"] = time.time() - self.started
        return d


__all__ = ["NetworkMetrics"]
