"""Keys, services, caps and the audit log: ``auth/whoami``, ``auth/keys``, ``services``, ``system/audit``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from cognopt_ray.config import SCOPE_RE, SERVICE_NAME_PATTERN, ServiceCaps, ServiceSettings, check_service_name
from cognopt_ray.errors import InvalidInput
from cognopt_ray.security import Principal
from cognopt_ray.security.caps import effective_caps
from cognopt_ray.security.keys import generate_key, usable
from serve_apps.http import audit, authorize_service, context, current_principal, require_admin

router = APIRouter()
SERVICE_PATH = Path(..., pattern=SERVICE_NAME_PATTERN, description="service name: a-z, 0-9, _; 1-63 chars")


class WhoAmI(BaseModel):
    key_id: str
    scopes: list[str]


@router.get("/auth/whoami", response_model=WhoAmI, tags=["auth"], summary="The calling key's id and scopes")
async def whoami(principal: Principal = Depends(current_principal)) -> WhoAmI:
    return WhoAmI(key_id=principal.key_id, scopes=list(principal.scopes))


class KeyCreateRequest(BaseModel):
    scopes: list[str] = Field(min_length=1, max_length=32, examples=[["service:ai_models"]])
    note: str | None = Field(default=None, max_length=200)
    expires_at: str | None = Field(default=None, max_length=40, description="ISO-8601 time the key stops working")
    ttl_s: float | None = Field(
        default=None, gt=0, le=100 * 365 * 86400, description="seconds until the key stops working"
    )


class KeyCreateResponse(BaseModel):
    key: str = Field(description="the key; shown once, only its hash is stored")
    id: str
    scopes: list[str]
    expires_at: str | None = None


class KeyInfo(BaseModel):
    id: str
    scopes: list[str]
    created: str | None = None
    note: str | None = None
    expires_at: str | None = None
    revoked_at: str | None = None
    active: bool = Field(description="false once revoked or expired")


@router.post(
    "/auth/keys", response_model=KeyCreateResponse, status_code=201, tags=["auth"], summary="Create an API key (admin)"
)
def create_key(
    body: KeyCreateRequest, request: Request, principal: Principal = Depends(require_admin)
) -> KeyCreateResponse:
    bad = [s for s in body.scopes if not SCOPE_RE.match(s)]
    if bad:
        raise InvalidInput(f"invalid scopes {bad}", hint="use 'admin', 'read' or 'service:<name>'")
    key, record = generate_key(body.scopes, note=body.note, expires_at=body.expires_at, ttl_s=body.ttl_s)
    context(request).keys.add(record)
    audit(request, "auth.key_create", record.id, "ok", scopes=record.scopes, expires_at=record.expires_at)
    return KeyCreateResponse(key=key, id=record.id, scopes=record.scopes, expires_at=record.expires_at)


@router.get(
    "/auth/keys", response_model=list[KeyInfo], tags=["auth"], summary="List API keys, never their secrets (admin)"
)
def list_keys(request: Request, principal: Principal = Depends(require_admin)) -> list[KeyInfo]:
    return [
        KeyInfo(**r.model_dump(exclude={"hash"}), active=usable(r) is None) for r in context(request).keys.records()
    ]


@router.delete(
    "/auth/keys/{key_id}",
    response_model=KeyInfo,
    tags=["auth"],
    summary="Revoke an API key: it stops working at once on every replica (admin)",
)
def revoke_key(
    request: Request,
    key_id: str = Path(..., pattern=r"^[A-Za-z0-9_-]{1,64}$"),
    principal: Principal = Depends(require_admin),
) -> KeyInfo:
    audit(request, "auth.key_revoke", key_id, "error")
    record = context(request).keys.revoke(key_id)
    audit(request, "auth.key_revoke", key_id, "ok", scopes=record.scopes)
    return KeyInfo(**record.model_dump(exclude={"hash"}), active=False)


class ServiceInfo(BaseModel):
    name: str
    configured: bool = Field(description="false when the service uses default_service")
    settings: ServiceSettings


@router.get("/services", response_model=list[ServiceInfo], tags=["services"], summary="Services with their settings")
def list_services(request: Request, principal: Principal = Depends(current_principal)) -> list[ServiceInfo]:
    settings = context(request).settings
    names = sorted(settings.services) if principal.can_read() else sorted(principal.services())
    return [ServiceInfo(name=n, configured=n in settings.services, settings=settings.service(n)) for n in names]


@router.get(
    "/services/{service_name}",
    response_model=ServiceInfo,
    tags=["services"],
    summary="One service's effective settings",
)
def get_service(
    request: Request, service_name: str = SERVICE_PATH, principal: Principal = Depends(current_principal)
) -> ServiceInfo:
    check_service_name(service_name)
    authorize_service(principal, service_name, write=False)
    settings = context(request).settings
    return ServiceInfo(
        name=service_name, configured=service_name in settings.services, settings=settings.service(service_name)
    )


class CapsInfo(BaseModel):
    service_name: str
    caps: ServiceCaps = Field(description="what a service key may set at most (admin keys are not capped)")
    overrides: dict[str, Any] = Field(description="caps set at run time with PUT services/{name}/caps")


def _caps_info(request: Request, service: str) -> CapsInfo:
    ctx = context(request)
    assert ctx.caps is not None
    overrides = ctx.caps.overrides()
    return CapsInfo(
        service_name=service,
        caps=effective_caps(ctx.settings, service, overrides),
        overrides=overrides.get(service, {}),
    )


@router.get(
    "/services/{service_name}/caps",
    response_model=CapsInfo,
    tags=["services"],
    summary="A service's caps: the most its own key may set through optimize-service",
)
def get_caps(
    request: Request, service_name: str = SERVICE_PATH, principal: Principal = Depends(current_principal)
) -> CapsInfo:
    check_service_name(service_name)
    authorize_service(principal, service_name, write=False)
    return _caps_info(request, service_name)


@router.put(
    "/services/{service_name}/caps",
    response_model=CapsInfo,
    tags=["services"],
    summary="Set a service's caps at run time (admin); unset fields fall back to the settings",
)
def put_caps(
    body: ServiceCaps, request: Request, service_name: str = SERVICE_PATH, principal: Principal = Depends(require_admin)
) -> CapsInfo:
    check_service_name(service_name)
    ctx = context(request)
    assert ctx.caps is not None
    ctx.caps.set(service_name, body)
    audit(request, "services.caps_set", service_name, "ok", caps=body.model_dump(mode="json", exclude_none=True))
    return _caps_info(request, service_name)


@router.delete(
    "/services/{service_name}/caps",
    response_model=CapsInfo,
    tags=["services"],
    summary="Drop a service's run-time caps, back to the settings (admin)",
)
def delete_caps(
    request: Request, service_name: str = SERVICE_PATH, principal: Principal = Depends(require_admin)
) -> CapsInfo:
    check_service_name(service_name)
    ctx = context(request)
    assert ctx.caps is not None
    ctx.caps.set(service_name, None)
    audit(request, "services.caps_delete", service_name, "ok")
    return _caps_info(request, service_name)


class AuditEntry(BaseModel):
    time: str
    key_id: str
    action: str
    target: str | None = None
    result: str
    details: dict[str, Any] | None = None


@router.get("/system/audit", response_model=list[AuditEntry], tags=["system"], summary="Read the audit log (admin)")
def read_audit(
    request: Request,
    action: str | None = Query(None, max_length=100, description="exact action, or a prefix ending in '.'"),
    key_id: str | None = Query(None, max_length=64),
    target: str | None = Query(None, max_length=300),
    since: str | None = Query(None, max_length=40, description="ISO-8601 time"),
    until: str | None = Query(None, max_length=40, description="ISO-8601 time"),
    limit: int = Query(100, ge=1, le=10_000),
    principal: Principal = Depends(require_admin),
) -> list[AuditEntry]:
    entries = context(request).audit.read(
        action=action, key_id=key_id, target=target, since=since, until=until, limit=limit
    )
    return [AuditEntry.model_validate(e) for e in entries]
