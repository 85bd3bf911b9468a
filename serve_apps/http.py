"""HTTP plumbing shared by every router: context, API-key auth, audit, body limit, problem+json errors.

Auth runs as ASGI middleware *before* routing, so a caller without a valid key gets 401 for any
path under the API prefix, existing or not, and learns nothing about the routes. Scopes are then
checked per route with the dependencies below (403 when the key lacks the scope).

The audit log is written in one place, :class:`AuditMiddleware` (outside auth): one entry for
every mutating request (success or failure) and every 401 or 403 answer, with the action
``<group>.<route>`` and the result ``ok``, ``denied`` (401/403) or ``error``. Routes only add the
target and details of their entry with :func:`audit`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cognopt_ray.config import Settings
from cognopt_ray.errors import CognoptError, Forbidden, PayloadTooLarge, Unauthorized
from cognopt_ray.security import AuditLog, KeyStore, Principal
from cognopt_ray.security.caps import CapsStore
from cognopt_ray.security.keys import key_from_headers

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v0/optimization"
#: Paths under the prefix that need no key.
OPEN_PATHS = {f"{API_PREFIX}/health"}
PROBLEM_JSON = "application/problem+json"


@dataclass
class ApiContext:
    """What the routers need from the replica: settings, the key store, the audit log, the caps."""

    settings: Settings
    keys: KeyStore
    audit: AuditLog
    caps: CapsStore | None = None
    health: Any = None  # the replica's HealthCache, made on the first GET health
    _unauth: _UnauthLimiter = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.caps is None:
            self.caps = CapsStore(self.settings.root)
        if self._unauth is None:
            self._unauth = _UnauthLimiter(self.settings.audit_unauthenticated_per_minute)


_context: ApiContext | None = None


def set_context(ctx: ApiContext) -> None:
    """Install the replica's context. Serve ships the FastAPI app to the replica by value, so the
    context lives in this module (one per replica process) rather than on the app object."""
    global _context
    _context = ctx


def get_context() -> ApiContext:
    if _context is None:
        raise RuntimeError("the API is not configured: call configure_api() first")
    return _context


def context(request: Request | None = None) -> ApiContext:
    """The replica's context (FastAPI dependency form)."""
    return get_context()


# -- problem documents ----------------------------------------------------------------------------
def problem(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_response(err: CognoptError, instance: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="cognopt"'} if err.status == 401 else None
    if err.retryable:
        headers = {**(headers or {}), "Retry-After": "2"}
    return JSONResponse(err.to_problem(instance), status_code=err.status, media_type=PROBLEM_JSON, headers=headers)


async def _asgi_send_problem(send: Callable, resp: JSONResponse) -> None:
    await send({"type": "http.response.start", "status": resp.status_code, "headers": resp.raw_headers})
    await send({"type": "http.response.body", "body": resp.body})


def _relative_path(scope: dict) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


# -- middleware -------------------------------------------------------------------------------------
class AuthMiddleware:
    """Authenticates every request under the API prefix except the open paths; 401 otherwise."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _relative_path(scope)
        protected = path.startswith(API_PREFIX) and path.rstrip("/") not in OPEN_PATHS
        if protected:
            ctx = get_context()
            authorization = x_api_key = None
            for k, v in scope.get("headers", ()):
                if len(k) in (9, 13):  # only the two headers a key comes in are decoded
                    name = k.lower()
                    if name == b"x-api-key":
                        x_api_key = v.decode("latin-1")
                    elif name == b"authorization":
                        authorization = v.decode("latin-1")
            principal, why = ctx.keys.check(key_from_headers(authorization, x_api_key))
            if principal is None:
                hint = (
                    "send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                    if why.endswith(("given", "valid"))
                    else "ask an admin for a new key (POST auth/keys or `cognopt keys create`)"
                )
                return await _asgi_send_problem(send, error_response(Unauthorized(why, hint=hint), path))
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
#: Actions whose names predate the ``<group>.<endpoint>`` rule; kept so the log reads the same.
ACTION_NAMES = {
    "auth.create_key": "auth.key_create",
    "auth.revoke_key": "auth.key_revoke",
    "storage.delete_item": "storage.delete",
    "network.optimize_pooling": "network.optimize-pooling",
    "network.optimize_service": "network.optimize-service",
    "network.purge": "network.cache.purge",
    "system.post_optimize_all": "system.optimize_all",
    "system.post_cleanup": "system.cleanup",
    "system.post_restore": "system.cleanup_restore",
    "system.post_automation": "system.automation",
    "services.put_caps": "services.caps_set",
    "services.delete_caps": "services.caps_delete",
}
#: Mutating routes of the data plane (a service's own traffic): their successes are audited only
#: with ``audit_data_plane`` (one fsynced line per store or fetch is too much); failures always are.
DATA_PLANE = {
    "storage.store",
    "memory.allocate",
    "memory.deallocate",
    "cpu.optimize_tasks",
    "network.optimize_request",
    "network.proxy",
}


class _UnauthLimiter:
    """At most ``per_minute`` audit entries a minute for 401s; the rest are counted, not written."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._window = 0.0
        self._count = 0
        self.suppressed = 0
        self._lock = threading.Lock()

    def allow(self) -> tuple[bool, int]:
        """(write this one?, how many were left out before it)."""
        with self._lock:
            now = time.monotonic()
            if now - self._window >= 60:
                self._window, self._count = now, 0
            if self._count >= self.per_minute:
                self.suppressed += 1
                return False, 0
            self._count += 1
            left_out, self.suppressed = self.suppressed, 0
            return True, left_out


class _RouteNames:
    """(method, path) -> endpoint name, from the app's routes (built once, on first use)."""

    def __init__(self, router: Any) -> None:
        self._router = router
        self._table: list[tuple[re.Pattern, set[str], str]] | None = None

    def _build(self) -> list[tuple[re.Pattern, set[str], str]]:
        table = []
        stack = list(self._router.routes)
        while stack:
            r = stack.pop(0)
            if hasattr(r, "effective_route_contexts"):
                stack[:0] = list(r.effective_route_contexts())
            elif getattr(r, "path_regex", None) is not None and getattr(r, "methods", None):
                table.append((r.path_regex, set(r.methods), r.name))
        return table

    def name(self, method: str, path: str) -> str | None:
        if self._table is None:
            self._table = self._build()
        for regex, methods, name in self._table:
            if method in methods and regex.match(path):
                return name
        return None


def action_name(names: _RouteNames | None, method: str, path: str) -> str:
    """``<group>.<route>``: the first path segment under the prefix and the route's endpoint name."""
    rest = path[len(API_PREFIX) :].strip("/")
    group = rest.split("/", 1)[0] or "api"
    name = names.name(method, path) if names is not None else None
    action = f"{group}.{name or 'unknown_route'}"
    return ACTION_NAMES.get(action, action)


class AuditMiddleware:
    """Writes one audit entry for every mutating request and every 401/403 under the API prefix.

    The entry is written before the last byte of the answer is sent, so a client that has its
    answer can read its entry. A route adds the target and details with :func:`audit`.
    """

    def __init__(self, app: Any, router: Any = None) -> None:
        self.app = app
        self._names = _RouteNames(router) if router is not None else None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _relative_path(scope)
        if not path.startswith(API_PREFIX):
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        method = scope.get("method", "GET")
        status = 500
        written = False

        async def write(code: int, error: str | None = None) -> None:
            nonlocal written
            if written or not (method in MUTATING or code in (401, 403) or "audit" in state):
                return
            written = True
            try:
                params = dict(scope.get("path_params") or {})
                await asyncio.get_running_loop().run_in_executor(
                    None, self._record, state, method, path, code, error, params
                )
            except Exception:
                logger.exception("audit entry for %s %s not written", method, path)

        async def audited_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                await write(status)
            await send(message)

        try:
            await self.app(scope, receive, audited_send)
        except Exception as e:
            await write(500, type(e).__name__)
            raise

    def _record(self, state: dict, method: str, path: str, code: int, error: str | None, params: dict) -> None:
        ctx = get_context()
        principal: Principal | None = state.get("principal")
        note = state.get("audit") or {}
        details: dict[str, Any] = dict(note.get("details") or {})
        if code == 401 and principal is None:
            allowed, left_out = ctx._unauth.allow()
            if not allowed:
                return
            if left_out:
                details["suppressed_before"] = left_out
        result = "ok" if code < 400 else "denied" if code in (401, 403) else "error"
        given = note.get("result")
        if given and given != result:
            details["outcome"] = given  # e.g. dry_run, or the route's error text
        if error:
            details["error"] = error
        details["status"] = code
        details["method"] = method
        action = note.get("action") or action_name(self._names, method, path)
        if result == "ok" and action in DATA_PLANE and not ctx.settings.audit_data_plane:
            return
        target = note.get("target") if note else next((str(v) for v in params.values()), None)
        ctx.audit.record(principal.key_id if principal else None, action, target, result, **details)


class _BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answers 413 for bodies over ``settings.max_body_bytes`` without reading them whole.

    A declared ``Content-Length`` over the limit is refused before any byte is read; a chunked
    body is counted as it streams in and refused as soon as it passes the limit.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = get_context().settings.max_body_bytes
        path = _relative_path(scope)
        has_body = False
        for k, v in scope.get("headers", ()):
            name = k.lower()
            if name == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    return await _asgi_send_problem(send, problem(400, "Bad request", "Content-Length is not a number"))
                if declared > limit:
                    return await _asgi_send_problem(send, error_response(_too_large(declared, limit), path))
                has_body = has_body or declared > 0
            elif name == b"transfer-encoding":
                has_body = True
        if not has_body:  # no body to count (HTTP/1.1: neither Content-Length nor Transfer-Encoding)
            return await self.app(scope, receive, send)
        seen = 0
        overflow = False
        replaced = False

        async def limited_receive() -> dict:
            nonlocal seen, overflow
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    overflow = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            # Frameworks turn an exception raised while reading the body into their own 400;
            # once the limit was passed, whatever the app answers is replaced by the 413.
            nonlocal replaced
            if overflow:
                if not replaced:
                    replaced = True
                    await _asgi_send_problem(send, error_response(_too_large(seen, limit), path))
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not replaced:
                replaced = True
                await _asgi_send_problem(send, error_response(_too_large(seen, limit), path))


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body of at least {size} bytes is over the limit of {limit} bytes",
        hint="send less data per request or raise max_body_bytes (COGNOPT_MAX_BODY_BYTES)",
        limit=limit,
    )


# -- error handlers ---------------------------------------------------------------------------------
def install_error_handlers(api: FastAPI) -> None:
    """Every error becomes ``application/problem+json``; internals never leak into a 500."""

    @api.exception_handler(CognoptError)
    async def _cognopt(request: Request, exc: CognoptError) -> JSONResponse:
        return error_response(exc, request.url.path)

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        return problem(
            422, "Invalid input", detail, errors=json.loads(json.dumps(errors, default=str)), instance=request.url.path
        )

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {404: "Not found", 405: "Method not allowed", 400: "Bad request"}
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return problem(
            exc.status_code,
            titles.get(exc.status_code, "HTTP error"),
            detail,
            headers=getattr(exc, "headers", None),
            instance=request.url.path,
        )

    _document_problems(api)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(
            500, "Internal error", f"unexpected {type(exc).__name__}; see the replica log", instance=request.url.path
        )


_PROBLEM_SCHEMA = {
    "title": "Problem",
    "type": "object",
    "description": "An RFC 9457 problem document",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "hint": {"type": "string"},
    },
    "required": ["title", "status", "detail"],
    "additionalProperties": True,
}
_PROBLEM_STATUSES = {
    "401": "No API key, or an unknown one",
    "403": "The key lacks the scope",
    "404": "Not found",
    "409": "Conflict with the current state",
    "413": "Body over the limit",
    "422": "Invalid input",
    "503": "An engine is restarting (retryable)",
    "507": "A storage tier is full",
}


def _document_problems(api: FastAPI) -> None:
    """Every operation's schema says what its errors look like: ``application/problem+json``.

    FastAPI documents 422 as its own ``HTTPValidationError`` (``detail`` a list); this API answers
    every error as a problem document, so the schema must say so (clients and fuzzers check it).
    """
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema:
            return api.openapi_schema
        schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
        schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = _PROBLEM_SCHEMA
        ref = {"$ref": "#/components/schemas/Problem"}
        for path, ops in schema.get("paths", {}).items():
            for op in ops.values():
                responses = op.setdefault("responses", {})
                for code, text in _PROBLEM_STATUSES.items():
                    if code == "401" and path.rstrip("/").endswith("/health"):
                        continue
                    responses[code] = {"description": text, "content": {PROBLEM_JSON: {"schema": ref}}}
        for name in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(name, None)
        api.openapi_schema = schema
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


# -- scope dependencies -----------------------------------------------------------------------------
async def current_principal(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if principal is None:  # only reachable if a route is mounted outside the prefix
        raise Unauthorized("no API key given", hint="send 'Authorization: Bearer <key>'")
    return principal


async def require_read(principal: Principal = Depends(current_principal)) -> Principal:
    """Any GET that shows state: scopes ``read`` or ``admin`` (service keys use service routes)."""
    if not principal.can_read():
        raise Forbidden("this key lacks the 'read' scope", hint="use a key with scope 'read' or 'admin'")
    return principal


async def require_admin(principal: Principal = Depends(current_principal)) -> Principal:
    """Mutations of the whole system: scope ``admin``."""
    if not principal.is_admin:
        raise Forbidden("this action needs the 'admin' scope", hint="use a key created with --scope admin")
    return principal


def authorize_service(principal: Principal, service: str, *, write: bool) -> None:
    """Per-service routes: ``admin``, ``service:<service>``, or ``read`` for reads only."""
    if principal.can_use_service(service):
        return
    if not write and principal.can_read():
        return
    raise Forbidden(
        f"this key may not {'change' if write else 'read'} service {service!r}",
        hint=f"use a key with scope 'service:{service}' or 'admin'",
    )


def audit(request: Request, action: str, target: str | None, result: str, **details: Any) -> None:
    """Name the target and details of this request's audit entry (written by :class:`AuditMiddleware`).

    ``result`` is the route's own word (``ok``, ``dry_run``, ``error: …``); the entry's result is
    ``ok``/``denied``/``error`` from the answer's status, the route's word kept as ``outcome``
    when it differs. A later call in the same request replaces an earlier one.
    """
    request.state.audit = {"action": action, "target": target, "result": result, "details": details}


def enforce_caps(request: Request, principal: Principal, service: str, engine: str, changes: dict[str, Any]) -> None:
    """403 when a service key asks ``<engine>/optimize-service`` for more than the service's caps."""
    ctx = context(request)
    assert ctx.caps is not None
    ctx.caps.enforce(ctx.settings, principal, service, engine, changes)


AsyncHandler = Callable[..., Awaitable[Any]]
