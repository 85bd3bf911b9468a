"""``GET health`` (open: statuses only) and ``GET health/details`` (a key with ``read``: everything).

Both answer from the replica's :class:`~cognopt_ray.system.health.HealthCache`: the engines and
Redis are asked at most once per ``health_cache_s`` per replica, however often either is called,
so an open endpoint cannot be used to stall an engine. The open answer carries no versions,
counts, addresses or reasons.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cognopt_ray.security import Principal
from cognopt_ray.system.health import HealthCache, summary
from serve_apps.http import ApiContext, context, require_read

router = APIRouter(tags=["system"])

Status = Literal["up", "degraded", "down", "not_configured"]


class ComponentStatus(BaseModel):
    status: Status
    model_config = {"extra": "forbid"}


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "down"]
    time: str
    ray: ComponentStatus
    engines: dict[str, ComponentStatus]
    redis: ComponentStatus


class ComponentHealth(BaseModel):
    status: Status
    reason: str | None = None
    model_config = {"extra": "allow"}


class HealthDetails(BaseModel):
    status: Literal["ok", "degraded", "down"]
    time: str
    ray: ComponentHealth
    engines: dict[str, ComponentHealth]
    redis: ComponentHealth


def _cache(ctx: ApiContext) -> HealthCache:
    if ctx.health is None:
        ctx.health = HealthCache(ctx.settings)
    return ctx.health


def _code(doc: dict[str, Any]) -> int:
    return 503 if doc["ray"]["status"] == "down" else 200


@router.get("/health", response_model=HealthResponse, summary="Up, degraded or down: overall, Ray, each engine, Redis")
async def health(request: Request) -> Any:
    """Open to everyone. 200 when the API answers (``status`` says ok/degraded), 503 when Ray is down.

    Statuses only; ``GET health/details`` (scope ``read``) has the versions, counts and reasons.
    """
    doc = await _cache(context(request)).get()
    return JSONResponse(HealthResponse.model_validate(summary(doc)).model_dump(), status_code=_code(doc))


@router.get(
    "/health/details",
    response_model=HealthDetails,
    summary="The health document with versions, counts, addresses and reasons (read)",
)
async def health_details(request: Request, principal: Principal = Depends(require_read)) -> Any:
    doc = await _cache(context(request)).get()
    return JSONResponse(HealthDetails.model_validate(doc).model_dump(exclude_none=True), status_code=_code(doc))
