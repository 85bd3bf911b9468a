"""``GET /health``: open, reports Ray, each engine that exists and Redis."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from cognopt_ray.system.health import check_health
from serve_apps.http import context

router = APIRouter(tags=["system"])


class ComponentHealth(BaseModel):
    status: Literal["up", "degraded", "down", "not_configured"]
    reason: str | None = None
    model_config = {"extra": "allow"}


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "down"]
    time: str
    ray: ComponentHealth
    engines: dict[str, ComponentHealth]
    redis: ComponentHealth


@router.get("/health", response_model=HealthResponse, summary="Health of Ray, the engines and Redis")
async def health(request: Request) -> Any:
    """Open to everyone. 200 when the API answers (``status`` says ok/degraded), 503 when Ray is down."""
    doc = await check_health(context(request).settings)
    code = 503 if doc["ray"]["status"] == "down" else 200
    return JSONResponse(HealthResponse.model_validate(doc).model_dump(exclude_none=True), status_code=code)
