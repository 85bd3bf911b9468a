"""The caching reverse proxy: ``/api/v0/optimization/network/proxy/{upstream}/{path}``, any method.

An HTTP client points its base URL at ``.../network/proxy/<name>`` and talks to the upstream
named ``<name>`` in ``settings.network.upstreams`` through the network engine (SSRF guard, the
upstream's service's cache partition, coalescing, the pool, metrics). Only HTTP translation
here: the engine answers conditionals, ranges and ``HEAD`` from its cache
(:mod:`cognopt_ray.network.proxying`).

* Authenticated like every route (``Authorization: Bearer`` or ``X-API-Key``); the key needs the
  scope ``service:<upstream's service>`` or ``admin``. Neither header is forwarded.
* Request headers are forwarded except hop-by-hop ones (and those ``Connection`` lists), ``Host``,
  ``Accept-Encoding`` (the engine offers its own codings) and the API key (``X-API-Key``, and
  ``Authorization`` unless the key came in ``X-API-Key`` and ``Authorization`` holds no key of
  ours: then it is the upstream's credential, and the cache treats the request as credentialed).
  ``Surrogate-Capability: cognopt="Surrogate/1.0"`` is added, so origins may target
  ``Surrogate-Control`` at this cache.
* An absolute ``Location`` or ``Content-Location`` naming the upstream is rewritten to name the
  proxy route (relative ones are passed as they are).
* The origin's status and headers come back as they are, with ``Age`` on cached answers and
  ``Cache-Status`` (RFC 9211); bodies over :data:`STREAM_FROM` bytes are streamed in chunks;
  the API's compression middleware encodes the body for clients that accept gzip or zstd.
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from yarl import URL

from cognopt_ray import network
from cognopt_ray.errors import InvalidInput, NotFound
from cognopt_ray.network.messages import NetworkRequest
from cognopt_ray.network.rules import SURROGATE_NAME, hop_by_hop
from serve_apps.http import MUTATING, audit, authorize_service, current_principal, get_context

#: Bodies at least this large are sent in chunks of :data:`CHUNK` bytes.
STREAM_FROM = 1 << 20
CHUNK = 256 * 1024
#: Request headers never forwarded upstream (besides hop-by-hop ones).
#: ``x-request-id`` is Ray Serve's own per-request id (unique, so it would defeat coalescing).
_NOT_FORWARDED = {"host", "authorization", "x-api-key", "content-length", "accept-encoding", "expect", "x-request-id"}
_LOCATIONS = ("location", "content-location")
#: Response headers the proxy sets itself.
_NOT_RETURNED = {"content-length"}


def _target(request: Request, upstream: str, base: str) -> str:
    """The upstream URL of this request: the base URL + the raw path after the upstream's name + the query."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    raw_path = raw.decode("latin-1").split("?", 1)[0]
    marker = f"/network/proxy/{upstream}"
    idx = raw_path.find(marker)
    rest = raw_path[idx + len(marker) :] if idx >= 0 else "/"
    query = request.scope.get("query_string", b"").decode("latin-1")
    target = base.rstrip("/") + (rest or "/") + (f"?{query}" if query else "")
    try:
        url, root = URL(target), URL(base)
    except ValueError:
        raise InvalidInput(f"the proxied path {rest[:200]!r} is not a valid URL path") from None
    if url.origin() != root.origin() or not url.path.startswith(root.path.rstrip("/")):
        raise InvalidInput(
            f"the proxied path {rest[:200]!r} leaves the upstream's base URL",
            hint="remove '..' segments from the path",
        )
    return target


def _key_in_x_api_key(headers: list[tuple[str, str]]) -> bool:
    """Whether the request's API key came in ``X-API-Key`` and ``Authorization`` does not carry
    one of ours too (then ``Authorization`` is a credential for the upstream and is forwarded)."""
    x_key = next((v for k, v in headers if k.lower() == "x-api-key"), "")
    auth = next((v for k, v in headers if k.lower() == "authorization"), None)
    if not x_key.strip() or auth is None:
        return False
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        principal, _ = get_context().keys.check(value.strip())
        return principal is None
    return True


def _rewrite_location(value: str, base: str, public: str) -> str:
    """An absolute ``Location`` / ``Content-Location`` naming the upstream, rewritten to name the proxy route."""
    root = base.rstrip("/")
    if value == root or value.startswith(root + "/") or value.startswith(root + "?"):
        return public + value[len(root) :]
    return value  # a relative reference resolves against the proxy URL by itself


def _chunks(body: bytes) -> Iterator[bytes]:
    view = memoryview(body)
    for i in range(0, len(body), CHUNK):
        yield bytes(view[i : i + CHUNK])


async def proxy(request: Request) -> Response:
    """Forward one request to an upstream through the engine; answer with the origin's response."""
    principal = await current_principal(request)
    name = request.path_params["upstream"]
    ups = get_context().settings.network.upstreams
    up = ups.get(name)
    if up is None:
        raise NotFound(
            f"no upstream named {name[:100]!r}",
            hint=f"configured upstreams: {', '.join(sorted(ups)) or 'none'}; add it to settings.network.upstreams",
        )
    authorize_service(principal, up.service, write=True)
    method = request.method.upper()
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope.get("headers", [])]
    drop = hop_by_hop(raw) | _NOT_FORWARDED
    if _key_in_x_api_key(raw):
        drop.discard("authorization")  # X-API-Key carried our key: Authorization is the upstream's
    headers = [(k, v) for k, v in raw if k.lower() not in drop]
    headers.append(("Surrogate-Capability", f'{SURROGATE_NAME}="Surrogate/1.0"'))
    body = await request.body()
    if method in MUTATING:
        audit(request, "network.proxy", name, "ok", method=method)
    r = await network.client().send_async(
        NetworkRequest(
            _target(request, name, up.url),
            method,
            headers,
            body or None,
            service=up.service,
            cache_strategy=up.strategy_cap,
            follow_redirects=up.follow_redirects,
            timeout_s=up.timeout_s,
            proxy=True,
            default_lifetime=up.default_lifetime,
        )
    )
    public = str(request.url).split("/network/proxy/", 1)[0] + f"/network/proxy/{name}"
    hop = hop_by_hop(r.headers) | _NOT_RETURNED
    out = [
        (
            k.lower().encode("latin-1"),
            (_rewrite_location(v, up.url, public) if k.lower() in _LOCATIONS else v).encode("latin-1"),
        )
        for k, v in r.headers
        if k.lower() not in hop
    ]
    if len(r.body) >= STREAM_FROM and method != "HEAD":
        resp: Response = StreamingResponse(_chunks(r.body), status_code=r.status)
        resp.raw_headers = [(b"content-length", str(len(r.body)).encode())]
    else:
        resp = Response(content=b"" if method == "HEAD" else r.body, status_code=r.status)
        resp.raw_headers = [h for h in resp.raw_headers if h[0] != b"content-type"]
    resp.raw_headers = resp.raw_headers + out
    return resp


__all__ = ["proxy", "STREAM_FROM"]
