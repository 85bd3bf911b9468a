"""Network routes: ``network/optimize-request``, ``optimize-pooling``, ``metrics``,
``optimize-service``, ``cache/purge``, ``assets/{name}`` and the caching reverse proxy
``proxy/{upstream}/{path}`` (any method; :mod:`serve_apps.network_proxy`).

Only HTTP translation here; the engine (:mod:`cognopt_ray.network`) does the work.
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cognopt_ray import network
from cognopt_ray.config import SERVICE_NAME_PATTERN, CacheStrategy, CompressionLevel
from cognopt_ray.errors import Forbidden, InvalidInput, NotFound
from cognopt_ray.security import Principal
from serve_apps import network_proxy
from serve_apps.http import audit, authorize_service, context, current_principal, require_admin, require_read

router = APIRouter()
TAGS = ["network"]
# Any method, unknown ones included (a Starlette route without a method list); not in the OpenAPI schema.
router.add_route("/network/proxy/{upstream}", network_proxy.proxy, methods=[], name="proxy", include_in_schema=False)
router.add_route(
    "/network/proxy/{upstream}/{path:path}", network_proxy.proxy, methods=[], name="proxy", include_in_schema=False
)


class _Req(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OptimizeRequest(_Req):
    """An outbound request to perform through the cache, the pool and the SSRF guard."""

    request_id: str | None = Field(default=None, max_length=200)
    url: str = Field(..., min_length=1, max_length=8192, examples=["https://api.example.com/data"])
    method: str = Field(default="GET", pattern=r"^[A-Za-z]{1,16}$")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="request headers; an answer to a request carrying a credential (Authorization, "
        "Cookie, X-Api-Key, ...) is cached only when it says public or s-maxage, and "
        "credentials are dropped on cross-origin redirects",
    )
    body: str | None = None
    body_encoding: Literal["utf-8", "base64"] = "utf-8"
    service_name: str | None = Field(default=None, pattern=SERVICE_NAME_PATTERN)
    cache_strategy: CacheStrategy | None = Field(
        default=None,
        description="ask for less caching than the service's configured strategy (never more: it is "
        "clamped to it); the cache is partitioned by service_name",
    )
    compression_level: CompressionLevel | None = None
    follow_redirects: bool = True
    timeout_s: float | None = Field(default=None, gt=0, le=3600, description="shortens the origin timeout")


class OptimizeResponse(BaseModel):
    request_id: str | None
    url: str
    status: int
    headers: dict[str, str]
    body: str
    body_encoding: Literal["utf-8", "base64"]
    cache_status: Literal["HIT", "MISS", "REVALIDATED", "STALE", "BYPASS"]
    coalesced: bool
    redirects: list[str]
    timings_ms: dict[str, float]


class PoolingRequest(_Req):
    limit: int | None = Field(default=None, ge=0, le=100_000)
    limit_per_host: int | None = Field(default=None, ge=0, le=100_000)
    keepalive_timeout_s: float | None = Field(default=None, gt=0, le=3600)


class ServiceRequest(_Req):
    service_name: str = Field(..., pattern=SERVICE_NAME_PATTERN)
    optimization_type: Literal["network"] = "network"
    parameters: dict[str, Any] = Field(default_factory=dict)


class PurgeRequest(_Req):
    url: str | None = Field(default=None, max_length=8192)
    prefix: str | None = Field(default=None, min_length=1, max_length=8192)


def _engine() -> network.NetworkEngine:
    return network.client()


@router.post(
    "/network/optimize-request",
    response_model=OptimizeResponse,
    tags=TAGS,
    summary="Perform an outbound request through the cache, coalescing and the pool",
)
async def optimize_request(req: OptimizeRequest, principal: Principal = Depends(current_principal)) -> OptimizeResponse:
    if req.service_name:
        authorize_service(principal, req.service_name, write=True)
    elif not principal.is_admin:
        raise Forbidden(
            "requests without service_name need the 'admin' scope", hint="pass the service_name your key is scoped to"
        )
    body: bytes | None = None
    if req.body is not None:
        if req.body_encoding == "base64":
            try:
                body = base64.b64decode(req.body, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput("body is not valid base64", hint='send base64 or "body_encoding": "utf-8"') from None
        else:
            body = req.body.encode()
    t0 = time.perf_counter()
    r = await _engine().request_async(
        req.url,
        req.method,
        list(req.headers.items()),
        body,
        service=req.service_name,
        cache_strategy=req.cache_strategy,
        compression_level=req.compression_level,
        follow_redirects=req.follow_redirects,
        request_id=req.request_id,
        timeout_s=req.timeout_s,
    )
    headers: dict[str, str] = {}
    for k, v in r.headers:
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    try:
        text, enc = r.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, enc = base64.b64encode(r.body).decode(), "base64"
    timings = {**r.timings_ms, "route": (time.perf_counter() - t0) * 1000}
    return OptimizeResponse(
        request_id=r.request_id,
        url=r.url,
        status=r.status,
        headers=headers,
        body=text,
        body_encoding=enc,
        cache_status=r.cache_status,
        coalesced=r.coalesced,
        redirects=r.redirects,
        timings_ms=timings,
    )


@router.post(
    "/network/optimize-pooling", tags=TAGS, summary="Reconfigure the connection pool (in-flight requests finish)"
)
async def optimize_pooling(
    req: PoolingRequest, request: Request, _: Principal = Depends(require_admin)
) -> dict[str, Any]:
    params = req.model_dump(exclude_none=True)
    if not params:
        raise InvalidInput("give at least one of limit, limit_per_host, keepalive_timeout_s")
    result = await _engine().configure_pooling_async(**params)
    audit(request, "network.optimize-pooling", "pool", "ok", **params)
    return result


@router.get("/network/metrics", tags=TAGS, summary="Hit rate, origin requests saved, bytes saved, coalesced requests")
async def metrics(_: Principal = Depends(require_read)) -> dict[str, Any]:
    return await _engine().metrics_async()


@router.post("/network/optimize-service", tags=TAGS, summary="A service's cache strategy and compression level")
async def optimize_service(
    req: ServiceRequest, request: Request, principal: Principal = Depends(current_principal)
) -> dict[str, Any]:
    authorize_service(principal, req.service_name, write=True)
    from serve_apps.http import enforce_caps  # service keys: only within the caps an admin sets

    enforce_caps(request, principal, req.service_name, "network", req.parameters)
    result = await _engine().optimize_service_async(req.service_name, **req.parameters)
    audit(request, "network.optimize-service", req.service_name, "ok", **req.parameters)
    return result


@router.post("/network/cache/purge", tags=TAGS, summary="Drop cached responses by URL or URL prefix")
async def purge(req: PurgeRequest, request: Request, _: Principal = Depends(require_admin)) -> dict[str, Any]:
    n = await _engine().purge_async(req.url, req.prefix)
    audit(request, "network.cache.purge", req.url or req.prefix, "ok", purged=n)
    return {"purged": n, "url": req.url, "prefix": req.prefix}


@router.get(
    "/network/assets/{name:path}",
    tags=TAGS,
    summary="A built static asset (ETag, 304, precompressed variants)",
    response_class=Response,
)
async def asset(
    request: Request, name: str = Path(..., max_length=1024), _: Principal = Depends(require_read)
) -> Response:
    from cognopt_ray.network import assets

    root = context(request).settings.network.assets_dir
    if not root:
        raise NotFound(
            "no assets folder is configured",
            hint="set settings.network.assets_dir to a folder built by `cognopt assets build`",
        )
    r = assets.resolve(
        root,
        name,
        if_none_match=request.headers.get("if-none-match"),
        accept_encoding=request.headers.get("accept-encoding"),
    )
    return Response(content=r.body, status_code=r.status, headers=r.headers)
