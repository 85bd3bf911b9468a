"""Session fixtures: one real Ray, a real redis-server, the Serve app over real HTTP on 127.0.0.1."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.helpers import RedisServer, free_port, wait_http

RAY_NUM_CPUS = 4
API = "/api/v0/optimization"


@pytest.fixture(scope="session")
def session_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cognopt-root")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_factory(tmp_path):
    """Start extra redis-servers for one test (to kill them, for instance)."""
    started: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}").start()
        started.append(server)
        return server

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-protocol server on 127.0.0.1 (moto's server mode) for the whole session."""
    from tests.support.s3 import S3Server

    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_session(session_root):
    """One local Ray for the whole session, with a fixed number of CPUs."""
    import ray

    import cognopt_ray
    from cognopt_ray.config import Settings

    os.environ.pop("RAY_ADDRESS", None)
    settings = Settings.load(storage_root=str(session_root / "engines"))
    for attempt in range(3):  # on a busy machine the raylet may miss Ray's fixed 30 s start-up wait
        try:
            cognopt_ray.init(settings=settings, num_cpus=RAY_NUM_CPUS, include_dashboard=False, log_to_driver=False)
            break
        except Exception as e:
            if "timed out during startup" not in str(e) or attempt == 2:
                raise
            ray.shutdown()
    yield ray
    cognopt_ray.shutdown()


@dataclass
class ApiServer:
    base: str  # http://127.0.0.1:port
    keys: dict[str, str]  # role -> key
    root: Path

    def url(self, path: str, prefix: str = "") -> str:
        return f"{self.base}{prefix}{API}/{path.lstrip('/')}"

    def headers(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


#: Keys the test apps accept, by role.
ROLES = {
    "admin": ["admin"],
    "read": ["read"],
    "svc_ai": ["service:ai_models"],
    "svc_pay": ["service:payment_processing"],
    "svc_code": ["service:code_generation"],
}
MAX_BODY = 1024 * 1024


@pytest.fixture(scope="session")
def api_server(ray_session, redis_server, session_root, origin):
    """The Serve app, deployed once, reached over real HTTP.

    Three applications share the Serve instance: ``/`` (Redis configured and up), ``/noredis``
    (Redis not configured) and ``/redisdown`` (Redis configured, nothing listening).
    """
    from ray import serve

    from cognopt_ray.security.keys import generate_key
    from serve_apps.optimization_api import app_builder

    port = free_port()
    keys, records = {}, []
    for role, scopes in ROLES.items():
        key, rec = generate_key(scopes, note=f"test {role}")
        keys[role] = key
        records.append(rec.model_dump(mode="json"))
    base_settings = {
        "storage_root": str(session_root / "api"),
        "api_keys": records,
        "max_body_bytes": MAX_BODY,
        "health_timeout_s": 5,
        "network": {
            "allowlist": ["127.0.0.1"],
            "assets_dir": str(session_root / "assets"),
            # the caching reverse proxy (tests/integration/test_network_proxy.py) in front of the session's origin
            "upstreams": {
                "origin": {"url": origin.url(""), "service": "code_generation"},
                "origin-follow": {"url": origin.url(""), "service": "code_generation", "follow_redirects": True},
            },
        },
        # registered by the replica at start (cpu.tasks), as `cognopt serve --task` does
        "cpu": {"tasks": {"count_primes": "cognopt_ray.examples.tasks:count_primes"}},
    }
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    apps = {
        "cognopt-test": ("/", {**base_settings, "redis_url": redis_server.url}),
        "cognopt-noredis": ("/noredis", base_settings),
        "cognopt-redisdown": ("/redisdown", {**base_settings, "redis_url": f"redis://127.0.0.1:{free_port()}/0"}),
    }
    for name, (prefix, settings) in apps.items():
        serve.run(app_builder({"settings": settings}), name=name, route_prefix=prefix, blocking=False)
    server = ApiServer(base=f"http://127.0.0.1:{port}", keys=keys, root=session_root / "api")
    for prefix in ("", "/noredis", "/redisdown"):
        wait_http(server.url("health", prefix), timeout=120, expect=None)
    yield server
    serve.shutdown()


@pytest.fixture(scope="session")
def origin():
    """One real aiohttp origin on 127.0.0.1 for the whole session; tests add their own routes
    (``@origin.route()`` makes a unique path)."""
    from tests.support.origin import Origin

    o = Origin()
    yield o
    o.close()


#: The engines every module of the session shares (made by the session's Serve apps and clients).
SHARED_ENGINES = {
    "cognopt.cpu",
    "cognopt.memory",
    "cognopt.memory_cache",
    "cognopt.storage",
    "cognopt.network",
    "cognopt.network_cache",
    "cognopt.system",
}


@pytest.fixture(autouse=True, scope="module")
def _private_actors_end_with_their_module():
    """Actors a module made under names of its own (private engines, probes) are killed when the
    module ends, so their loops do not load the machine for the rest of the session. (The runtime
    keeps the handle that created each engine, so nothing else frees them.)"""
    yield
    import ray

    from cognopt_ray import runtime

    if not ray.is_initialized():
        return
    for name in runtime.list_engine_actors():
        if name not in SHARED_ENGINES:
            actor = runtime.get_actor(name)
            if actor is not None:
                ray.kill(actor, no_restart=True)
