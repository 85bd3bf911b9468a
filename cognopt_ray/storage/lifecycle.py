"""Lifecycle of stored items: tiering passes (demotion by idle time, promotion by score,
demotion for tier capacity) and migration between tiers.

A migration writes and verifies the new copy, switches the catalog row in one transaction, and
only then deletes the old copy: a crash at any point leaves one complete version.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from cognopt_ray.errors import IntegrityError
from cognopt_ray.storage import codecs
from cognopt_ray.storage.blobs import Prepared, b3, hash_file
from cognopt_ray.storage.catalog import ItemRecord

logger = logging.getLogger(__name__)

NEXT_TIER = {"hot": "warm", "warm": "cold", "cold": "archive"}


class Lifecycle:
    """Tiering passes and migrations (a part of :class:`~cognopt_ray.storage.store.TieredStore`)."""

    def migrate(self, item_id: str, tier: str, reason: str = "requested") -> dict[str, Any]:
        """Move an item to ``tier``: write and verify the new copy, switch the catalog, then delete the old."""
        codecs.check_tier(tier)
        with self._lock:
            rec = self.record(item_id)
            if rec.tier == tier:
                return {"item_id": item_id, "from": tier, "to": tier, "moved": False, "reason": "already there"}
            auto = rec.codec.get("auto", True)
            if rec.kind == "table":
                p = self._migrate_table(rec, tier)
            else:
                raw = self._read_bytes(rec)
                codec = "auto" if auto else rec.codec["codec"]
                level = None if auto else rec.codec.get("level")
                p = self._prepare(
                    item_id,
                    raw if rec.kind == "bytes" else json.loads(raw),
                    rec.service,
                    tier,
                    codec,
                    level,
                    keep_created=rec.created,
                )
                p.hot_value = raw if tier == "hot" else None
                self._verify_prepared(p)
            self._maybe_fail("migrate.after_copy")
            p.rec.last_access, p.rec.access_count, p.rec.score = rec.last_access, rec.access_count, rec.score
            if rec.item_id in self._access:
                p.rec.last_access, p.rec.access_count, p.rec.score = self._access[rec.item_id]
            try:
                self._commit([p])
            except BaseException:
                self._discard([p])
                raise
            self.counters["migrations"] += 1
            return {
                "item_id": item_id,
                "from": rec.tier,
                "to": tier,
                "moved": True,
                "reason": reason,
                "stored_before": rec.stored_size,
                "stored_after": p.rec.stored_size,
            }

    def _hash_ok(self, rec: ItemRecord) -> bool:
        try:
            return hash_file(self.roots[rec.tier], self._loc_file(rec.location)) == rec.stored_checksum
        except (FileNotFoundError, OSError):
            return False

    def _verify_prepared(self, p: Prepared) -> None:
        """Read the new copy back and check it before the old one may go."""
        rec = p.rec
        if rec.location == "inline":
            return  # committed together with its row; checked on read
        if rec.location == "chunks":
            for _h, new in p.chunks or []:
                if new is not None and new["location"].startswith("file:"):
                    if b3(self.roots["archive"].read(new["location"][5:])) != new["stored_checksum"]:
                        raise IntegrityError(
                            f"the new archive copy of {rec.item_id!r} did not verify",
                            hint="check the archive tier's storage",
                        )
            return
        if b3(self.roots[rec.tier].read(self._loc_file(rec.location))) != rec.stored_checksum:
            raise IntegrityError(
                f"the new {rec.tier} copy of {rec.item_id!r} did not verify", hint="check that tier's storage"
            )

    def plan_tiering(self, now: float | None = None) -> list[dict[str, Any]]:
        """The migrations a lifecycle pass would make now (demotions by idle time, promotions by
        score, demotions for tier capacity)."""
        now = time.time() if now is None else now
        self.flush_access()
        half = self.cfg.lrfu_half_life_s
        plan: dict[str, dict[str, Any]] = {}
        svc_cache: dict[str, dict[str, Any]] = {}
        recs = self.catalog.items()
        for rec in recs:
            svc = svc_cache.setdefault(rec.service, self.service_settings(rec.service))
            idle = now - rec.last_access
            score = rec.score * math.pow(2.0, -max(0.0, idle) / half)
            limits = {
                "hot": svc["hot_to_warm_idle_s"],
                "warm": svc["warm_to_cold_idle_s"],
                "cold": svc["cold_to_archive_idle_s"],
            }
            if rec.tier in ("cold", "archive") and score >= self.cfg.promote_score:
                plan[rec.item_id] = {
                    "item_id": rec.item_id,
                    "from": rec.tier,
                    "to": "warm",
                    "reason": f"promoted: score {score:.2f} >= {self.cfg.promote_score}",
                }
            elif rec.tier == "warm" and self.cfg.hot_promote_score and score >= self.cfg.hot_promote_score:
                plan[rec.item_id] = {
                    "item_id": rec.item_id,
                    "from": "warm",
                    "to": "hot",
                    "reason": f"promoted: score {score:.2f} >= {self.cfg.hot_promote_score}",
                }
            elif rec.tier in limits and idle >= limits[rec.tier]:
                plan[rec.item_id] = {
                    "item_id": rec.item_id,
                    "from": rec.tier,
                    "to": NEXT_TIER[rec.tier],
                    "reason": f"idle {idle:.0f} s >= {limits[rec.tier]:.0f} s",
                }
        for tier, cap in self.cfg.tier_capacity_bytes.items():
            if tier == "archive" or not cap:
                continue
            staying = [r for r in recs if r.tier == tier and r.item_id not in plan]
            used = sum(r.stored_size for r in staying)
            staying.sort(key=lambda r: r.score * math.pow(2.0, -max(0.0, now - r.last_access) / half))
            for r in staying:
                if used <= cap:
                    break
                plan[r.item_id] = {
                    "item_id": r.item_id,
                    "from": tier,
                    "to": NEXT_TIER[tier],
                    "reason": f"tier {tier} over capacity ({used} > {cap} bytes)",
                }
                used -= r.stored_size
        return list(plan.values())

    def optimize_tiering(self, dry_run: bool = False, now: float | None = None) -> dict[str, Any]:
        """One lifecycle pass: plan, and unless ``dry_run`` carry out each migration."""
        with self._lock:
            plan = self.plan_tiering(now)
            done, failed = [], []
            if not dry_run:
                for m in plan:
                    try:
                        done.append(self.migrate(m["item_id"], m["to"], m["reason"]))
                    except Exception as e:  # noqa: BLE001 - one bad item must not stop the pass
                        logger.warning("migration of %s failed: %s", m["item_id"], e)
                        failed.append({**m, "error": str(e)})
            return {"dry_run": dry_run, "planned": plan, "migrated": done, "failed": failed}

    def _demote_for_capacity(self, tier: str, need: int, exclude: set[str]) -> None:
        half = self.cfg.lrfu_half_life_s
        now = time.time()
        recs = [r for r in self.catalog.items("tier=?", (tier,)) if r.item_id not in exclude]
        recs.sort(key=lambda r: r.score * math.pow(2.0, -max(0.0, now - r.last_access) / half))
        for r in recs:
            if need <= 0:
                break
            self.migrate(r.item_id, NEXT_TIER[tier], f"tier {tier} over capacity")
            need -= r.stored_size


__all__ = ["Lifecycle", "NEXT_TIER"]
