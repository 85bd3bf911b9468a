"""The Ray Serve deployment: a FastAPI ingress under ``/api/v0/optimization``.

No engine logic lives here: each router translates HTTP to engine client calls.

Run it with ``cognopt serve`` (prints the URL and an admin key) or ``serve run
serve_apps/serve_config.yaml`` from the repository root (then set ``COGNOPT_ADMIN_KEY`` or create
a key with ``cognopt keys create --scope admin``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

import cognopt_ray
from cognopt_ray import runtime
from cognopt_ray.config import ApiKeyRecord, Settings
from cognopt_ray.security import AuditLog, KeyStore
from serve_apps import (
    admin_routes,
    cpu_routes,
    dashboard_routes,
    health_routes,
    memory_routes,
    network_routes,
    storage_routes,
    system_routes,
)
from serve_apps.compression import CompressionMiddleware
from serve_apps.http import (
    API_PREFIX,
    ApiContext,
    AuditMiddleware,
    AuthMiddleware,
    BodyLimitMiddleware,
    install_error_handlers,
    set_context,
)

logger = logging.getLogger(__name__)


#: One router module per group; each exposes ``router`` (an APIRouter with paths relative to the prefix).
ROUTERS = [
    health_routes,
    admin_routes,
    cpu_routes,
    memory_routes,
    storage_routes,
    network_routes,
    system_routes,
]


def create_api() -> FastAPI:
    """The FastAPI app with every router, the middleware and the problem+json handlers."""
    api = FastAPI(
        title="cognopt_ray optimization API",
        version=cognopt_ray.__version__,
        description="CPU, memory, storage and network optimisation engines on Ray. "
        "Every route but /health needs an API key (Authorization: Bearer <key> or X-API-Key).",
    )
    # Starlette runs the last added middleware first: audit, auth, then the body limit, then the routes.
    api.add_middleware(CompressionMiddleware)
    api.add_middleware(BodyLimitMiddleware)
    api.add_middleware(AuthMiddleware)
    api.add_middleware(AuditMiddleware, router=api.router)
    install_error_handlers(api)
    for module in ROUTERS:
        api.include_router(module.router, prefix=API_PREFIX)
    api.include_router(dashboard_routes.router)  # GET /dashboard, outside the prefix: the page itself needs no key
    return api


def configure_api(settings: Settings, extra_keys: list[ApiKeyRecord] | None = None) -> None:
    """Install settings, keys and the audit log for this replica's routes (once per replica)."""
    set_context(ApiContext(settings=settings, keys=KeyStore(settings, extra_keys or []), audit=AuditLog(settings.root)))


api = create_api()


@serve.deployment(name="OptimizationAPI", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class OptimizationAPI:
    """One replica of the API. Engines are shared named actors, so replicas hold no engine state.

    Args:
        config_file: a YAML settings file readable on the replica's node (optional).
        settings: setting overrides (plain values; secrets only as hashes in ``api_keys``).
    """

    def __init__(self, config_file: str | None = None, settings: dict[str, Any] | None = None) -> None:
        loaded = Settings.load(config_file, **(settings or {}))
        runtime.init(settings=loaded, detached=True)
        if loaded.cpu.tasks:  # cpu.tasks: registered before the replica answers (a bad path stops it)
            from cognopt_ray.cpu.configured import register_configured

            register_configured(loaded)
        configure_api(loaded)
        if loaded.system.automation_enabled:  # the engines' passes on timers (cognopt.system, idempotent)
            from cognopt_ray.system import automation

            try:
                automation.start(loaded)
            except Exception as e:  # noqa: BLE001 - the API serves without automation; health shows it
                logger.warning("automation did not start: %s", e)
        logger.info("cognopt_ray API replica ready (storage root %s)", loaded.storage_root)


def app_builder(args: dict[str, Any] | None = None) -> serve.Application:
    """Serve application builder used by ``serve run`` / ``serve deploy`` and ``cognopt serve``.

    ``args`` (from the config's ``args:``): ``config_file`` and ``settings`` (overrides).
    """
    args = dict(args or {})
    return OptimizationAPI.bind(args.get("config_file"), args.get("settings"))
