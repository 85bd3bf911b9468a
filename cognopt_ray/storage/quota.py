"""Limits on stored bytes: each service's ``quota_bytes`` and each tier's ``tier_capacity_bytes``.

A write that would pass a service's quota is refused (507) before anything is committed; a
write that would fill a tier first demotes that tier's coldest items, and is refused if that
does not make room.
"""

from __future__ import annotations

from cognopt_ray.errors import InsufficientStorage
from cognopt_ray.storage.blobs import Prepared


class Quotas:
    """Service quotas and tier capacity (a part of :class:`~cognopt_ray.storage.store.TieredStore`)."""

    def _owners(self, ids: list[str]) -> dict[str, tuple[str, int]]:
        """``item id -> (owning service, stored size)`` of those ids that exist."""
        out: dict[str, tuple[str, int]] = {}
        for s in range(0, len(ids), 500):
            part = ids[s : s + 500]
            out.update(
                (i, (svc, size))
                for i, svc, size in self.catalog.query(
                    f"SELECT item_id, service, stored_size FROM items WHERE item_id IN ({','.join('?' * len(part))})",
                    tuple(part),
                )
            )
        return out

    def quota(self, service: str) -> int | None:
        """The service's storage quota in stored bytes (``quota_bytes``, else ``storage.default_quota_bytes``)."""
        q = self.service_settings(service).get("quota_bytes")
        return q if q is not None else self.cfg.default_quota_bytes

    def service_usage(self, service: str) -> int:
        """Stored bytes of the service's items (spilled ``memory-evicted:<service>:`` items included)."""
        return int(
            self.catalog.query("SELECT COALESCE(SUM(stored_size),0) FROM items WHERE service=?", (service,))[0][0]
        )

    def _check_quota(self, prepared: list[Prepared], owners: dict[str, tuple[str, int]]) -> None:
        add: dict[str, int] = {}
        for p in prepared:
            svc = p.rec.service
            old = owners.get(p.rec.item_id)
            add[svc] = add.get(svc, 0) + p.rec.stored_size - (old[1] if old and old[0] == svc else 0)
        for svc, extra in add.items():
            quota = self.quota(svc)
            if quota is None or extra <= 0:
                continue
            used = self.service_usage(svc)
            if used + extra > quota:
                raise InsufficientStorage(
                    f"service {svc!r} is over its storage quota: {used} of {quota} bytes used, {extra} more "
                    "needed; nothing was written",
                    hint=f"an admin can raise services.{svc}.storage.quota_bytes (or storage.default_quota_bytes, "
                    "or POST storage/optimize-service with quota_bytes); or delete items of the service",
                    service=svc,
                    quota_bytes=quota,
                    used_bytes=used,
                )

    def _check_capacity(self, prepared: list[Prepared]) -> None:
        add: dict[str, int] = {}
        for p in prepared:
            add[p.rec.tier] = add.get(p.rec.tier, 0) + p.rec.stored_size
        for tier, extra in add.items():
            cap = self.cfg.tier_capacity_bytes.get(tier)
            if not cap:
                continue
            used = self._tier_stored(tier)
            if used + extra <= cap:
                continue
            if tier != "archive":
                self._demote_for_capacity(tier, used + extra - cap, exclude={p.rec.item_id for p in prepared})
                used = self._tier_stored(tier)
            if used + extra > cap:
                raise InsufficientStorage(
                    f"tier {tier!r} is full: {used} of {cap} bytes used, {extra} more needed; nothing was written",
                    hint=f"raise storage.tier_capacity_bytes.{tier}, delete items, or store into another tier",
                )

    def _tier_stored(self, tier: str) -> int:
        if tier == "archive":
            rows = self.catalog.query("SELECT COALESCE(SUM(stored_size),0) FROM chunks")
            rows2 = self.catalog.query(
                "SELECT COALESCE(SUM(stored_size),0) FROM items WHERE tier='archive' AND kind='table'"
            )
            return int(rows[0][0]) + int(rows2[0][0])
        return int(self.catalog.query("SELECT COALESCE(SUM(stored_size),0) FROM items WHERE tier=?", (tier,))[0][0])


__all__ = ["Quotas"]
