"""The app's routes, read from its OpenAPI schema, so a new route is covered by the suites at once."""

from __future__ import annotations

import re
from dataclasses import dataclass

API = "/api/v0/optimization"
MUTATING = {"post", "put", "patch", "delete"}
#: Routes that answer without a key.
OPEN = {("get", "/health")}
#: Mutating routes that are the data plane of a service (store, allocate, run tasks, fetch), not
#: admin actions: they are authorised per service and not written to the audit log.
DATA_PLANE = {
    ("post", "/storage/store"),
    ("post", "/memory/allocate"),
    ("post", "/memory/deallocate"),
    ("post", "/cpu/optimize-tasks"),
    ("post", "/network/optimize-request"),
}


@dataclass(frozen=True)
class Route:
    method: str  # lower case
    path: str  # relative to the prefix, with {params}
    operation: dict

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    def concrete(self, value: str = "x1") -> str:
        """The path with every parameter replaced by ``value``."""
        return re.sub(r"\{[^}]+\}", value, self.path)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}"


def routes(schema: dict) -> list[Route]:
    out = []
    for path, ops in schema["paths"].items():
        if not path.startswith(API):
            continue
        for method, op in ops.items():
            if method in ("get", "post", "put", "patch", "delete"):
                out.append(Route(method, path[len(API) :], op))
    return sorted(out, key=lambda r: (r.path, r.method))


def offline_schema() -> dict:
    """The schema of the app as built in this process (no server needed; used for parametrizing)."""
    from serve_apps.optimization_api import create_api

    return create_api().openapi()
