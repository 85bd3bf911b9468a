"""Memory routes: allocate, read back, deallocate, GC tuning, metrics, pool resize/policy."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from cognopt_ray import memory
from cognopt_ray.config import SERVICE_NAME_PATTERN
from cognopt_ray.errors import InvalidInput
from cognopt_ray.security import Principal
from serve_apps.http import audit, authorize_service, current_principal, require_admin, require_read

router = APIRouter(tags=["memory"])
SERVICE_RE = SERVICE_NAME_PATTERN
MemoryTypeField = Literal["transient", "persistent"]


def _client() -> memory.MemoryPools:
    return memory.client()


class AllocateRequest(BaseModel):
    service_name: str = Field(pattern=SERVICE_RE, examples=["ai_models"])
    data: Any = Field(description="any JSON value, or base64 bytes with encoding 'base64'")
    memory_type: MemoryTypeField = "transient"
    encoding: Literal["json", "base64"] = "json"
    pin: bool = False
    ttl_s: float | None = Field(default=None, ge=0, description="transient only; default: the pool's transient_ttl_s")


class AllocateResponse(BaseModel):
    allocation_id: str
    service_name: str
    memory_type: str
    pinned: bool
    kind: str
    nbytes: int
    blocks: int
    evicted: list[str] = Field(description="allocations evicted (LRU) to make room")
    expires: float | None = None


async def _allocate(
    request: Request, principal: Principal, service: str, value: Any, memory_type: str, pin: bool, ttl_s: float | None
) -> AllocateResponse:
    authorize_service(principal, service, write=True)
    doc = await _client().allocate_info_async(service, value, memory_type=memory_type, pin=pin, ttl_s=ttl_s)
    return AllocateResponse(**doc)


@router.post(
    "/memory/allocate",
    response_model=AllocateResponse,
    status_code=201,
    summary="Put data into a service's pool (JSON with data, or application/octet-stream)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": AllocateRequest.model_json_schema()},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            }
        }
    },
)
async def allocate(
    request: Request,
    service_name: str | None = Query(None, pattern=SERVICE_RE, description="octet-stream bodies only"),
    memory_type: MemoryTypeField = Query("transient", description="octet-stream bodies only"),
    pin: bool = Query(False),
    ttl_s: float | None = Query(None, ge=0),
    principal: Principal = Depends(current_principal),
) -> AllocateResponse:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if ctype == "application/octet-stream":
        if service_name is None:
            raise InvalidInput(
                "service_name query parameter is required for octet-stream bodies",
                hint="POST memory/allocate?service_name=ai_models",
            )
        return await _allocate(request, principal, service_name, body, memory_type, pin, ttl_s)
    try:
        req = AllocateRequest.model_validate_json(body or b"{}")
    except ValueError as e:  # pydantic's ValidationError (bad JSON too) → 422
        from pydantic import ValidationError

        if isinstance(e, ValidationError):
            from fastapi.exceptions import RequestValidationError

            raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None
        raise InvalidInput(f"body is not valid JSON: {e}") from None
    value: Any = req.data
    if req.encoding == "base64":
        if not isinstance(req.data, str):
            raise InvalidInput("data must be a base64 string when encoding is 'base64'")
        try:
            value = base64.b64decode(req.data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("data is not valid base64") from None
    return await _allocate(request, principal, req.service_name, value, req.memory_type, req.pin, req.ttl_s)


@router.get(
    "/memory/allocations/{allocation_id}",
    summary="Read an allocation back",
    responses={
        200: {"content": {"application/octet-stream": {}, "application/json": {}}},
        406: {"description": "a Python object: never sent as a pickle; read it with the Python client"},
    },
)
async def read_allocation(
    allocation_id: str = Path(..., max_length=100), principal: Principal = Depends(current_principal)
) -> Response:
    """JSON values come back as JSON; bytes as ``application/octet-stream``; numpy arrays as their
    raw bytes with ``X-Cognopt-Dtype`` and ``X-Cognopt-Shape``; Arrow tables and arrays as an Arrow
    IPC stream. Python objects are 406: a REST reader is never sent a pickle."""
    service = memory.MemoryPools.service_of(allocation_id)
    authorize_service(principal, service, write=False)
    out = await _client().get_portable_async(allocation_id)
    headers = {"X-Cognopt-Kind": out.kind}
    if out.kind == "json":
        return JSONResponse(out.value, headers=headers)
    return Response(out.data, media_type="application/octet-stream", headers={**headers, **out.headers})


class DeallocateRequest(BaseModel):
    allocation_id: str = Field(max_length=100)


class DeallocateResponse(BaseModel):
    allocation_id: str
    service_name: str
    blocks_freed: int
    nbytes: int
    spilled: bool = Field(default=False, description="it had been evicted to WARM; its copy there is deleted")


@router.post("/memory/deallocate", response_model=DeallocateResponse, summary="Free an allocation")
async def deallocate(body: DeallocateRequest, principal: Principal = Depends(current_principal)) -> DeallocateResponse:
    service = memory.MemoryPools.service_of(body.allocation_id)
    authorize_service(principal, service, write=True)
    return DeallocateResponse(**await _client().deallocate_async(body.allocation_id))


class GcResponse(BaseModel):
    thresholds_before: list[int]
    thresholds_after: list[int]
    pause_p50_ms_before: float | None
    pause_p99_ms_before: float | None
    pause_p50_ms_after: float | None
    pause_p99_ms_after: float | None
    collections_before: int
    collections_after: int
    decision: str
    memory_percent: float
    workers: dict[str, Any]
    time: float


@router.post("/memory/optimize-gc", response_model=GcResponse, summary="Run a GC tuning pass now (admin)")
async def optimize_gc(request: Request, principal: Principal = Depends(require_admin)) -> GcResponse:
    doc = await _client().optimize_gc_async()
    audit(
        request,
        "memory.optimize_gc",
        None,
        "ok",
        thresholds_before=doc["thresholds_before"],
        thresholds_after=doc["thresholds_after"],
    )
    return GcResponse(**doc)


class MetricsResponse(BaseModel):
    pools: dict[str, dict[str, Any]]
    totals: dict[str, Any]
    pool_hit_rate: float | None = Field(description="Σ hits / Σ (hits + misses) over all pools")
    memory_efficiency: float | None = Field(description="Σ bytes held / Σ (blocks used × block_size)")
    cleanup: dict[str, Any]
    object_store: list[dict[str, Any]]
    gc: dict[str, Any]
    cache: dict[str, Any] | None = None
    reloaded_persistent: int
    evict_to: str | None = None


@router.get("/memory/metrics", response_model=MetricsResponse, summary="Pools, cache, object store, GC")
async def metrics(principal: Principal = Depends(require_read)) -> MetricsResponse:
    return MetricsResponse(**await _client().metrics_async())


class OptimizeServiceRequest(BaseModel):
    service_name: str = Field(pattern=SERVICE_RE)
    optimization_type: Literal["resize", "policy", "remove", "memory"] = Field(
        description="resize: pool_size/block_size; policy: eviction/transient_ttl_s; remove: retire the pool; "
        "memory: any of the four parameters"
    )
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"pool_size": 20}])


class OptimizeServiceResponse(BaseModel):
    service_name: str
    optimization_type: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    evicted: list[str] = Field(default_factory=list)
    removed: bool = False
    allocations_to_free: int | None = None
    note: str | None = None


@router.post(
    "/memory/optimize-service",
    response_model=OptimizeServiceResponse,
    summary="Resize, re-policy or remove a service's pool (admin)",
)
async def optimize_service(
    body: OptimizeServiceRequest, request: Request, principal: Principal = Depends(require_admin)
) -> OptimizeServiceResponse:
    try:
        doc = await _client().optimize_service_async(body.service_name, body.optimization_type, body.parameters)
    except Exception as e:
        audit(
            request,
            "memory.optimize_service",
            body.service_name,
            "error",
            optimization_type=body.optimization_type,
            parameters=body.parameters,
            error=type(e).__name__,
        )
        raise
    audit(
        request,
        "memory.optimize_service",
        body.service_name,
        "ok",
        optimization_type=body.optimization_type,
        parameters=body.parameters,
    )
    return OptimizeServiceResponse(**doc)
