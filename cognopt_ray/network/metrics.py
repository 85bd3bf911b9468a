"""Counters of the network engine and the figures derived from them.

Every derived figure is a formula over measured counters (never a constant), and ``None`` when
the counters it needs are empty (no request, no origin byte, no connection):

- ``cache_hit_rate`` = (HIT + STALE + REVALIDATED) ÷ cache lookups, where lookups are the GET
  requests the cache was allowed to answer (everything but BYPASS). A REVALIDATED answer counts
  as a hit: the origin sent headers only. ``None`` before the first lookup.
- ``origin_requests_avoided`` = HIT + STALE + coalesced waiters: requests answered without an
  origin request of their own.
- ``bandwidth_saved_mb`` = ``bytes_saved`` ÷ 10⁶, where ``bytes_saved`` = Σ over answers of
  (wire bytes a plain client sending the same ``Accept-Encoding`` would have received − wire
  bytes received for it). Per answer: a HIT or a STALE answer saves the stored entry's wire
  size (the size the body arrived with, for that ``Accept-Encoding``); a REVALIDATED answer its
  wire size minus the 304's body bytes; a coalesced waiter the wire size of the leader's answer;
  a MISS, a BYPASS and a stale answer served because the origin failed save 0 (the origin's own
  content coding is not our saving: a plain client gets it too); a background revalidation costs
  the wire bytes it received (a plain client would not have made it), so the figure can be
  negative. An answer whose plain wire size is unknown (an entry stored for another
  ``Accept-Encoding``, or by a version that did not record it) adds nothing and is counted in
  ``bytes_saved_unmeasured``. ``None`` before the first request.
- ``compression_ratio`` = bytes of origin bodies after decoding ÷ bytes on the wire (1.0 = no
  compression; 4.0 = the origin's content coding saved 75 %). ``None`` before the first origin
  byte.
- ``connection_reuse_rate`` = reused connections ÷ (new + reused) connections; ``None`` before
  the first connection.

Example:
    >>> m = NetworkMetrics()
    >>> m.snapshot()["cache_hit_rate"] is None
    True
    >>> m.record("HIT", served=1000, plain_wire=250)
    >>> m.snapshot()["cache_hit_rate"], m.snapshot()["bandwidth_saved_mb"]
    (1.0, 0.00025)
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
        >>> m.record("MISS", served=1000, plain_wire=250, wire=250); m.record("HIT", served=1000, plain_wire=250)
        >>> m.snapshot()["bandwidth_saved_mb"], m.snapshot()["compression_ratio"]
        (0.00025, 4.0)
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
    bytes_saved: int = 0
    bytes_saved_unmeasured: int = 0
    request_bytes_raw: int = 0
    request_bytes_sent: int = 0
    connections_created: int = 0
    connections_reused: int = 0
    started: float = field(default_factory=time.time)

    def record(
        self, cache_status: str, *, served: int, plain_wire: int | None, wire: int = 0, coalesced: bool = False
    ) -> None:
        """Count one answered request: ``served`` decoded bytes to the caller, ``wire`` bytes received
        from origins for it, ``plain_wire`` what a plain client would have received (None: unknown)."""
        self.requests += 1
        self.bytes_served += served
        self.saved(plain_wire, wire)
        if coalesced:
            self.coalesced += 1
        key = {"HIT": "hits", "STALE": "stale", "REVALIDATED": "revalidated", "MISS": "misses", "BYPASS": "bypass"}[
            cache_status
        ]
        setattr(self, key, getattr(self, key) + 1)

    def saved(self, plain_wire: int | None, wire: int = 0) -> None:
        """Add ``plain_wire − wire`` to ``bytes_saved`` (an unknown ``plain_wire`` is counted as unmeasured)."""
        if plain_wire is None:
            self.bytes_saved_unmeasured += 1
        else:
            self.bytes_saved += plain_wire - wire

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
        d["cache_hit_rate"] = (self.hits + self.stale + self.revalidated) / lookups if lookups else None
        d["origin_requests_avoided"] = self.hits + self.stale + self.coalesced
        d["bandwidth_saved_mb"] = self.bytes_saved / 1e6 if self.requests else None
        d["compression_ratio"] = (
            (self.bytes_decoded_from_origin / self.bytes_from_origin) if self.bytes_from_origin else None
        )
        conns = self.connections_created + self.connections_reused
        d["connection_reuse_rate"] = self.connections_reused / conns if conns else None
        d["uptime_s"] = time.time() - self.started
        return d


__all__ = ["NetworkMetrics"]
