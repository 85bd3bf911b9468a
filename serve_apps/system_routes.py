"""System routes: ``system/metrics``, ``system/optimize-all``, ``system/cleanup`` (+ restore,
quarantine), ``system/report`` and ``system/automation``. HTTP to :mod:`cognopt_ray.system` calls only."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from cognopt_ray.errors import CognoptError, InvalidInput
from cognopt_ray.security import Principal
from cognopt_ray.system import automation
from cognopt_ray.system.cleanup import CATEGORIES, quarantine_for, restore, run_cleanup
from cognopt_ray.system.metrics import system_metrics
from cognopt_ray.system.optimize import optimize_all
from cognopt_ray.system.report import system_report, to_markdown
from serve_apps.http import audit, context, require_admin, require_read

router = APIRouter(tags=["system"])


class SystemOverview(BaseModel):
    overall_efficiency: float | None = Field(description="100 × Σ wᵢ·sᵢ / Σ wᵢ over the engines with a known score")
    optimization_status: Literal["active", "degraded"]
    last_updated: str = Field(description="when the counters were read (ISO-8601, UTC)")
    engine_scores: dict[str, float | None]
    weights: dict[str, float]
    engines_unavailable: list[str] | None = None


class CpuFigures(BaseModel):
    cpu_efficiency: float | None
    load_balance_score: float | None
    tasks_processed: int | None


class MemoryFigures(BaseModel):
    memory_efficiency: float | None
    pool_hit_rate: float | None
    cache_hit_rate: float | None


class StorageFigures(BaseModel):
    compression_ratio: float | None
    tier_utilization: dict[str, float | None]


class NetworkFigures(BaseModel):
    cache_hit_rate: float | None
    compression_ratio: float | None
    bandwidth_saved_mb: float | None


class Savings(BaseModel):
    storage_bytes_saved: int | None
    network_bytes_saved: int | None
    memory_bytes_shared: int | None
    origin_requests_avoided: int | None
    cpu_seconds_run: float | None
    critical_wait_s_total: float | None


class SystemMetrics(BaseModel):
    """The dashboard document; its shape and formulas are in ``docs/metrics.md``."""

    system_overview: SystemOverview
    cpu_optimization: CpuFigures
    memory_optimization: MemoryFigures
    storage_optimization: StorageFigures
    network_optimization: NetworkFigures
    savings: Savings


@router.get(
    "/system/metrics",
    response_model=SystemMetrics,
    response_model_exclude_none=False,
    summary="Every engine's figures, computed from their counters now",
)
async def get_system_metrics(request: Request, principal: Principal = Depends(require_read)) -> Any:
    return await system_metrics(context(request).settings)


# -- optimize-all ------------------------------------------------------------------------------------
class OptimizeAllRequest(BaseModel):
    dry_run: bool = Field(default=False, description="say what each pass would do, change nothing")
    passes: list[str] | None = Field(
        default=None,
        max_length=10,
        description="a subset of memory.gc, memory.pool_sweep, storage.tiering, "
        "network.cache_sweep, cpu.rebalance (default all)",
    )


class PassResult(BaseModel):
    status: Literal["ok", "error"]
    seconds: float
    action: str | None = None
    before: Any = None
    after: Any = None
    error: str | None = None
    model_config = {"extra": "allow"}


class OptimizeAllResponse(BaseModel):
    dry_run: bool
    started: float
    seconds: float
    status: Literal["ok", "partial"]
    passes: dict[str, PassResult]


@router.post(
    "/system/optimize-all",
    response_model=OptimizeAllResponse,
    summary="Every engine's optimisation pass, concurrently (admin; audited)",
)
async def post_optimize_all(
    request: Request, body: OptimizeAllRequest | None = None, principal: Principal = Depends(require_admin)
) -> Any:
    body = body or OptimizeAllRequest()
    try:
        result = await optimize_all(context(request).settings, dry_run=body.dry_run, passes=body.passes)
    except CognoptError as e:
        audit(request, "system.optimize_all", None, f"error: {e}", dry_run=body.dry_run)
        raise
    audit(
        request,
        "system.optimize_all",
        ",".join(result["passes"]),
        "dry_run" if body.dry_run else result["status"],
        dry_run=body.dry_run,
        actions={k: v.get("action") or v.get("error") for k, v in result["passes"].items()},
    )
    return result


# -- cleanup and quarantine --------------------------------------------------------------------------
class CleanupRequest(BaseModel):
    dry_run: bool = False
    categories: list[str] | None = Field(
        default=None, max_length=10, description="network_cache, memory_allocations, storage_snapshots (default all)"
    )


class QuarantineItem(BaseModel):
    id: str | None = Field(default=None, description="absent in a dry run: nothing was moved")
    category: str
    engine: str
    target: str
    bytes: int
    quarantined: float | None = None
    purge_after: float | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class CleanupResponse(BaseModel):
    dry_run: bool
    items: list[QuarantineItem]
    by_category: dict[str, dict[str, int]]
    errors: dict[str, str]
    purged: list[dict[str, Any]]
    retention_s: float


@router.post(
    "/system/cleanup",
    response_model=CleanupResponse,
    summary="Expired and unreferenced data to the quarantine (reversible; admin; audited)",
)
async def post_cleanup(
    request: Request, body: CleanupRequest | None = None, principal: Principal = Depends(require_admin)
) -> Any:
    body = body or CleanupRequest()
    settings = context(request).settings
    try:
        result = await run_cleanup(settings, dry_run=body.dry_run, categories=body.categories)
    except CognoptError as e:
        audit(request, "system.cleanup", None, f"error: {e}", dry_run=body.dry_run)
        raise
    audit(
        request,
        "system.cleanup",
        ",".join(body.categories or CATEGORIES),
        "dry_run" if body.dry_run else ("ok" if not result["errors"] else "partial"),
        dry_run=body.dry_run,
        by_category=result["by_category"],
        errors=result["errors"],
        quarantined=[i.get("id") for i in result["items"]],
        purged=[p["id"] for p in result["purged"]],
    )
    return result


class RestoreRequest(BaseModel):
    id: str = Field(pattern=r"^q[0-9a-f]{16}$", description="a quarantine id from system/cleanup or system/quarantine")
    dry_run: bool = False


class RestoreResponse(BaseModel):
    restored: bool
    dry_run: bool
    entry: QuarantineItem
    result: dict[str, Any] | None = None


@router.post(
    "/system/cleanup/restore", response_model=RestoreResponse, summary="Bring a quarantined item back (admin; audited)"
)
async def post_restore(request: Request, body: RestoreRequest, principal: Principal = Depends(require_admin)) -> Any:
    settings = context(request).settings
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(None, lambda: restore(settings, body.id, dry_run=body.dry_run))
    except CognoptError as e:
        audit(request, "system.cleanup_restore", body.id, f"error: {e}", dry_run=body.dry_run)
        raise
    audit(
        request,
        "system.cleanup_restore",
        body.id,
        "dry_run" if body.dry_run else "ok",
        category=result["entry"]["category"],
        item=result["entry"]["target"],
    )
    return result


@router.get("/system/quarantine", response_model=list[QuarantineItem], summary="What the quarantine holds (admin)")
def get_quarantine(
    request: Request, category: str | None = Query(None, max_length=40), principal: Principal = Depends(require_admin)
) -> Any:
    return quarantine_for(context(request).settings).list(category)


# -- automation --------------------------------------------------------------------------------------
class AutomationRequest(BaseModel):
    action: Literal["start", "stop", "run_now"]
    loop: str | None = Field(
        default=None, max_length=40, description="for run_now: gc, tiering, cache_sweep, pool_sweep or scheduler_check"
    )


@router.get("/system/automation", summary="The automation loops: intervals, last run and result (read)")
async def get_automation(request: Request, principal: Principal = Depends(require_read)) -> Any:
    return await automation.astatus()


@router.post("/system/automation", summary="Start, stop or run a loop now (admin; audited)")
async def post_automation(
    request: Request, body: AutomationRequest, principal: Principal = Depends(require_admin)
) -> Any:
    if body.action == "start":
        result = await automation.astart(context(request).settings)
    elif body.action == "stop":
        result = await automation.astop()
    else:
        if not body.loop:
            raise InvalidInput("run_now needs 'loop'", hint=f"one of {sorted(automation.LOOPS)}")
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(None, automation.run_now, body.loop)
        except CognoptError as e:
            audit(request, "system.automation", body.loop, f"error: {e}", operation=body.action)
            raise
    audit(request, "system.automation", body.loop, "ok", operation=body.action)
    return result


# -- report ------------------------------------------------------------------------------------------
@router.get(
    "/system/report",
    summary="The savings report from the engines' counters (read); JSON or Markdown",
    responses={200: {"content": {"application/json": {}, "text/markdown": {}}}},
)
async def get_report(
    request: Request, format: Literal["json", "markdown"] = Query("json"), principal: Principal = Depends(require_read)
) -> Any:
    doc = await system_report(context(request).settings)
    if format == "markdown":
        return PlainTextResponse(to_markdown(doc), media_type="text/markdown; charset=utf-8")
    return doc
