"""Keys, services and the audit log: ``auth/whoami``, ``auth/keys``, ``services``, ``system/audit``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from cognopt_ray.config import SCOPE_RE, ServiceSettings, check_service_name
from cognopt_ray.errors import InvalidInput
from cognopt_ray.security import Principal
from cognopt_ray.security.keys import generate_key
from serve_apps.http import audit, authorize_service, context, current_principal, require_admin

router = APIRouter()
SERVICE_PATH = Path(..., pattern=r"^[a-z][a-z0-9_]{0,62}$", description="service name: a-z, 0-9, _; 1-63 chars")


class WhoAmI(BaseModel):
    key_id: str
    scopes: list[str]


@router.get("/auth/whoami", response_model=WhoAmI, tags=["auth"], summary="The calling key's id and scopes")
def whoami(principal: Principal = Depends(current_principal)) -> WhoAmI:
    return WhoAmI(key_id=principal.key_id, scopes=list(principal.scopes))


class KeyCreateRequest(BaseModel):
    scopes: list[str] = Field(min_length=1, max_length=32, examples=[["service:ai_models"]])
    note: str | None = Field(default=None, max_length=200)


class KeyCreateResponse(BaseModel):
    key: str = Field(description="the key; shown once, only its hash is stored")
    id: str
    scopes: list[str]


@router.post("/auth/keys", response_model=KeyCreateResponse, status_code=201, tags=["auth"],
             summary="Create an API key (admin)")
def create_key(body: KeyCreateRequest, request: Request, principal: Principal = Depends(require_admin)) -> KeyCreateResponse:
    bad = [s for s in body.scopes if not SCOPE_RE.match(s)]
    if bad:
        raise InvalidInput(f"invalid scopes {bad}", hint="use 'admin', 'read' or 'service:<name>'")
    key, record = generate_key(body.scopes, note=body.note)
    context(request).keys.add(record)
    audit(request, "auth.key_create", record.id, "ok", scopes=record.scopes)
    return KeyCreateResponse(key=key, id=record.id, scopes=record.scopes)


class ServiceInfo(BaseModel):
    name: str
    configured: bool = Field(description="false when the service uses default_service")
    settings: ServiceSettings


@router.get("/services", response_model=list[ServiceInfo], tags=["services"], summary="Services with their settings")
def list_services(request: Request, principal: Principal = Depends(current_principal)) -> list[ServiceInfo]:
    settings = context(request).settings
    names = sorted(settings.services) if principal.can_read() else sorted(principal.services())
    return [ServiceInfo(name=n, configured=n in settings.services, settings=settings.service(n)) for n in names]


@router.get("/services/{service_name}", response_model=ServiceInfo, tags=["services"],
            summary="One service's effective settings")
def get_service(request: Request, service_name: str = SERVICE_PATH,
                principal: Principal = Depends(current_principal)) -> ServiceInfo:
    check_service_name(service_name)
    authorize_service(principal, service_name, write=False)
    settings = context(request).settings
    return ServiceInfo(name=service_name, configured=service_name in settings.services,
                       settings=settings.service(service_name))


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
    entries = context(request).audit.read(action=action, key_id=key_id, target=target, since=since, until=until, limit=limit)
    return [AuditEntry.model_validate(e) for e in entries]

