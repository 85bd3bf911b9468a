"""The caching rules of a shared HTTP cache (RFC 9111) with the stale extensions (RFC 5861).

Pure functions and one dataclass, no I/O: what may be stored, for how long it is fresh, how old a
stored response is, which variant a request selects, when stale data may be served, and how a
304 refreshes a stored response. The cache strategy of the service (``no_cache``, ``short_term``
5 min, ``medium_term`` 1 h, ``long_term`` 24 h, ``persistent``) gives the lifetime when the origin
says nothing and caps the lifetime when the origin says more; the origin's restrictions
(``no-store``, ``private``, ``no-cache``, ``must-revalidate``) always win.

The cache is shared by several services, so RFC 9111 3.5 (a response to a request with
``Authorization`` is stored only when it says ``public`` or ``s-maxage``) is extended to every
credential-bearing request header (:data:`CREDENTIAL_HEADERS` plus the names a setting adds), and
``must-revalidate`` alone no longer makes such a response shareable. ``Set-Cookie`` is never kept
(:data:`NEVER_STORED_HEADERS`). A request may ask for less caching than its service's strategy,
never more (:func:`clamp_strategy`).

Example:
    >>> h = [("Cache-Control", "public, max-age=600"), ("Date", "Tue, 01 Jan 2030 00:00:00 GMT")]
    >>> freshness_lifetime(200, h, "short_term")   # capped by the strategy: 5 minutes
    300.0
    >>> storable("GET", 200, [], [("Cache-Control", "no-store")], "long_term")[0]
    False
    >>> storable("GET", 200, [("X-Api-Key", "k")], [("Cache-Control", "max-age=60")], "long_term")[0]
    False
    >>> clamp_strategy("persistent", "medium_term")
    'medium_term'
"""

from __future__ import annotations

import email.utils
import functools
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Headers = list[tuple[str, str]]

#: Lifetime of a response whose origin gives no freshness, and cap of the lifetime it gives.
STRATEGY_LIFETIME_S: dict[str, float] = {
    "no_cache": 0.0,
    "short_term": 300.0,
    "medium_term": 3600.0,
    "long_term": 86400.0,
    "persistent": math.inf,
}
#: Statuses a cache may store without explicit freshness (RFC 9110 15.1); 206 left out on purpose.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
#: Final statuses whose semantics this cache understands well enough to store them.
UNDERSTOOD_STATUSES = HEURISTIC_STATUSES | frozenset({302, 303, 307})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Strategies from the least to the most caching.
STRATEGY_ORDER = ("no_cache", "short_term", "medium_term", "long_term", "persistent")
#: Request headers that carry a credential (lower-case); ``settings.network.credential_headers`` adds more.
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key", "x-auth-token"}
)
#: Response headers a shared cache never stores nor replays.
NEVER_STORED_HEADERS = ("set-cookie", "set-cookie2")
#: This cache's device token in ``Surrogate-Capability`` / ``Surrogate-Control`` targets.
SURROGATE_NAME = "cognopt"
#: Hop-by-hop header names (RFC 9110 7.6.1), never forwarded nor stored by a proxy.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
#: Headers a 304 does not carry over to the stored response (RFC 9111 3.2).
_NOT_UPDATED = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "content-range", "connection", "content-md5"}
)


# -- header helpers -----------------------------------------------------------------------------
def header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """All values of ``name`` joined by ``", "`` (case-insensitive), or None."""
    name = name.lower()
    vals = [v for k, v in headers if k.lower() == name]
    return ", ".join(vals) if vals else None


def without(headers: Iterable[tuple[str, str]], *names: str) -> Headers:
    """``headers`` without the given names (case-insensitive)."""
    drop = {n.lower() for n in names}
    return [(k, v) for k, v in headers if k.lower() not in drop]


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """``"max-age=60, no-cache"`` → ``{"max-age": "60", "no-cache": None}`` (names lower-cased)."""
    out: dict[str, str | None] = {}
    if not value:
        return out
    for part in _split_commas(value):
        if not part:
            continue
        name, eq, arg = part.partition("=")
        name = name.strip().lower()
        if not name:
            continue
        arg = arg.strip()
        if arg.startswith('"') and arg.endswith('"') and len(arg) >= 2:
            arg = arg[1:-1]
        out.setdefault(name, arg if eq else None)
    return out


def response_cache_control(response_headers: Iterable[tuple[str, str]]) -> dict[str, str | None]:
    """The directives this cache obeys: the first present of ``CDN-Cache-Control`` (RFC 9213: a
    CDN-class shared cache uses its targeted field and ignores ``Cache-Control``),
    ``Surrogate-Control`` (W3C Edge Architecture; directives untargeted or targeted at
    :data:`SURROGATE_NAME`), else ``Cache-Control``."""
    headers = list(response_headers)
    targeted = parse_cache_control(header(headers, "cdn-cache-control"))
    if targeted:
        return targeted
    surrogate = _surrogate_control(header(headers, "surrogate-control"))
    if surrogate:
        return surrogate
    return parse_cache_control(header(headers, "cache-control"))


def _surrogate_control(value: str | None) -> dict[str, str | None]:
    """``Surrogate-Control`` directives for this cache: ``max-age=60;cognopt, no-store;other`` →
    ``{"max-age": "60"}`` (a ``;target`` naming another surrogate is left out)."""
    out: dict[str, str | None] = {}
    if not value:
        return out
    for part in _split_commas(value):
        directive, _, target = part.partition(";")
        if target.strip() and target.strip().lower() != SURROGATE_NAME:
            continue
        for name, arg in parse_cache_control(directive).items():
            out.setdefault(name, arg)
    return out


def hop_by_hop(headers: Iterable[tuple[str, str]]) -> set[str]:
    """The names (lower-case) a proxy never forwards nor stores: the fixed hop-by-hop set plus
    every name listed in ``Connection`` (RFC 9110 7.6.1)."""
    headers = list(headers)
    names = set(HOP_BY_HOP)
    for v in (v for k, v in headers if k.lower() in ("connection", "proxy-connection")):
        names.update(n.strip().lower() for n in v.split(",") if n.strip())
    return names


def _split_commas(value: str) -> list[str]:
    parts, cur, quoted = [], [], False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def _seconds(cc: dict[str, str | None], name: str) -> float | None:
    """A delta-seconds directive; a malformed value counts as 0 (RFC 9111 1.2.2 / 4.2.1)."""
    if name not in cc:
        return None
    raw = cc[name]
    try:
        return float(max(0, int(raw or "")))
    except ValueError:
        return 0.0


def parse_age(value: str | None) -> float:
    """The ``Age`` of a response (RFC 9111 5.1): the first member of a list; absent = 0. A value
    that is not a non-negative integer (``abc``, ``-1``, ``1.5``, ``10;x=y``) makes the response
    stale (infinitely old): a shared cache cannot tell how old it is."""
    if value is None:
        return 0.0
    first = value.split(",")[0].strip()
    return float(first) if first.isdigit() else math.inf


def parse_http_date(value: str | None) -> float | None:
    """An HTTP date as a Unix timestamp, or None when absent or invalid."""
    if not value:
        return None
    return _parse_http_date(value)


@functools.lru_cache(maxsize=8192)
def _parse_http_date(value: str) -> float | None:
    try:
        dt = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    return dt.timestamp()


def http_date(ts: float | None = None) -> str:
    """A Unix timestamp as an IMF-fixdate."""
    return email.utils.formatdate(time.time() if ts is None else ts, usegmt=True)


def credentials_in(request_headers: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> list[str]:
    """The credential-bearing header names (lower-case) present in a request."""
    names = CREDENTIAL_HEADERS | {n.lower() for n in extra}
    return sorted({k.lower() for k, _ in request_headers if k.lower() in names})


def clamp_strategy(requested: str | None, configured: str) -> str:
    """The strategy in force: the request's when it asks for less caching than the service's, else the service's."""
    if requested is None:
        return configured
    return requested if STRATEGY_ORDER.index(requested) < STRATEGY_ORDER.index(configured) else configured


# -- storing ------------------------------------------------------------------------------------
def storable(
    method: str,
    status: int,
    request_headers: Sequence[tuple[str, str]],
    response_headers: Sequence[tuple[str, str]],
    strategy: str,
    credential_headers: Iterable[str] = (),
) -> tuple[bool, str]:
    """Whether a shared cache may store this response (RFC 9111 3, 3.5), and why not.

    ``credential_headers`` are header names that carry credentials besides :data:`CREDENTIAL_HEADERS`.

    Returns:
        ``(True, "")`` or ``(False, reason)``.
    """
    if strategy == "no_cache":
        return False, "cache strategy no_cache"
    if method.upper() != "GET":
        return False, f"method {method.upper()} is not cached"
    req_cc = parse_cache_control(header(request_headers, "cache-control"))
    cc = response_cache_control(response_headers)
    if "no-store" in req_cc:
        return False, "request says no-store"
    if "must-understand" in cc:  # RFC 9111 5.2.2.3: only a status this cache understands; then no-store yields
        if status not in UNDERSTOOD_STATUSES:
            return False, f"must-understand and status {status} is not one this cache understands"
    elif "no-store" in cc:
        return False, "response says no-store"
    if "private" in cc:
        return False, "response is private (a shared cache never stores it)"
    explicit = "s-maxage" in cc or "max-age" in cc or header(response_headers, "expires") is not None
    if status not in UNDERSTOOD_STATUSES and not (explicit and 200 <= status < 600 and status not in (206, 304)):
        return False, f"status {status} is not cached without explicit freshness"
    vary = vary_names(response_headers)
    if vary == ["*"]:
        return False, "Vary: * never matches a later request"
    creds = credentials_in(request_headers, credential_headers)
    if creds and not ("public" in cc or "s-maxage" in cc):
        return (
            False,
            f"request carries credentials ({', '.join(creds)}) and the response does not say public or s-maxage",
        )
    if not explicit and status not in HEURISTIC_STATUSES and "public" not in cc:
        return False, f"status {status} needs explicit freshness to be cached"
    return True, ""


def freshness_lifetime(
    status: int,
    response_headers: Sequence[tuple[str, str]],
    strategy: str,
    *,
    heuristic_fraction: float = 0.1,
    default_lifetime: bool = True,
) -> float:
    """Seconds the response stays fresh (RFC 9111 4.2.1, 4.2.2), capped by the strategy.

    Formula: the first of ``s-maxage``, ``max-age``, ``Expires − Date``; else, with
    ``Last-Modified``, ``heuristic_fraction × (Date − Last-Modified)``; else the strategy's
    lifetime for heuristically cacheable statuses (0 with ``default_lifetime=False``, as a plain
    RFC 9111 cache). The result is ``min(that, strategy cap)``; ``no-cache`` makes it 0 (stored,
    but revalidated before every use). ``CDN-Cache-Control``, when present, replaces
    ``Cache-Control``; an ``Expires`` that is not a valid HTTP date means already expired.
    """
    cap = STRATEGY_LIFETIME_S[strategy]
    cc = response_cache_control(response_headers)
    if "no-cache" in cc:
        return 0.0
    for name in ("s-maxage", "max-age"):
        v = _seconds(cc, name)
        if v is not None:
            return min(v, cap)
    expires_raw = header(response_headers, "expires")
    if expires_raw is not None:
        expires = parse_http_date(expires_raw)
        date = parse_http_date(header(response_headers, "date")) or time.time()
        return 0.0 if expires is None else min(max(0.0, expires - date), cap)
    last_modified = parse_http_date(header(response_headers, "last-modified"))
    if status in HEURISTIC_STATUSES or "public" in cc:
        if last_modified is not None:
            date = parse_http_date(header(response_headers, "date")) or time.time()
            return min(max(0.0, heuristic_fraction * (date - last_modified)), cap)
        return cap if default_lifetime else 0.0
    return 0.0


def vary_names(response_headers: Sequence[tuple[str, str]]) -> list[str]:
    """The request header names in ``Vary`` (lower-cased, sorted); ``["*"]`` for ``Vary: *``."""
    raw = header(response_headers, "vary")
    if not raw:
        return []
    names = sorted({n.strip().lower() for n in raw.split(",") if n.strip()})
    return ["*"] if "*" in names else names


def _norm(value: str | None) -> str | None:
    """A selecting header value normalised: whitespace around list commas dropped, runs collapsed, lower-case."""
    return None if value is None else ", ".join(" ".join(p.split()) for p in value.split(",")).lower()


def vary_key(names: Sequence[str], request_headers: Sequence[tuple[str, str]]) -> dict[str, str | None]:
    """The selecting header values of a request (normalised: whitespace collapsed, lower-case)."""
    return {n: _norm(header(request_headers, n)) for n in names}


# -- the stored response --------------------------------------------------------------------------
@dataclass
class StoredResponse:
    """A response as the cache keeps it (body decoded, ``Content-Encoding`` removed).

    Attributes:
        url: the request URL (the primary cache key).
        status: the origin's status.
        headers: response headers, without hop-by-hop and content-coding headers.
        body: the decoded body.
        request_time / response_time: when the request that produced it was sent and answered.
        vary: the selecting request header values (secondary key).
        strategy: the cache strategy in force when it was stored.
        wire / accept: the body's size on the wire and the ``Accept-Encoding`` it was fetched with
            (None: not recorded), for ``bandwidth_saved_mb`` (:meth:`plain_wire`).
    """

    url: str
    status: int
    headers: Headers
    body: bytes
    request_time: float
    response_time: float
    vary: dict[str, str | None] = field(default_factory=dict)
    strategy: str = "medium_term"
    heuristic_fraction: float = 0.1
    default_lifetime: bool = True
    wire: int | None = None
    accept: str | None = None

    def plain_wire(self, accept_encoding: str) -> int | None:
        """Wire bytes a plain client sending ``accept_encoding`` would receive for this body: the
        size it arrived with when fetched with the same ``Accept-Encoding``; its decoded size
        for ``identity``; else unknown (None)."""
        if self.wire is not None and self.accept == accept_encoding:
            return self.wire
        if accept_encoding == "identity":
            return len(self.body)
        return None

    # -- ages and lifetimes (RFC 9111 4.2.3) ---------------------------------------------------
    def __post_init__(self) -> None:
        self._initial_age: float | None = None
        self._lifetime: float | None = None
        self._cc: dict[str, str | None] | None = None

    def current_age(self, now: float | None = None) -> float:
        """``corrected_initial_age + resident_time`` as RFC 9111 4.2.3 defines them."""
        now = time.time() if now is None else now
        if self._initial_age is None:
            self._initial_age = self._corrected_initial_age()
        return self._initial_age + max(0.0, now - self.response_time)

    def _corrected_initial_age(self) -> float:
        date = parse_http_date(header(self.headers, "date"))
        apparent_age = max(0.0, self.response_time - date) if date is not None else 0.0
        age_value = parse_age(header(self.headers, "age"))
        response_delay = max(0.0, self.response_time - self.request_time)
        return max(apparent_age, age_value + response_delay)

    @property
    def cache_control(self) -> dict[str, str | None]:
        if self._cc is None:
            self._cc = response_cache_control(self.headers)
        return self._cc

    def lifetime(self) -> float:
        if self._lifetime is None:
            self._lifetime = freshness_lifetime(
                self.status,
                self.headers,
                self.strategy,
                heuristic_fraction=self.heuristic_fraction,
                default_lifetime=self.default_lifetime,
            )
        return self._lifetime

    def is_fresh(
        self, now: float | None = None, request_headers: Sequence[tuple[str, str]] = (), cap: float = math.inf
    ) -> bool:
        """Fresh for this request: age below the lifetime (at most ``cap``, the request's strategy)
        and the request's own limits."""
        req_cc = parse_cache_control(header(request_headers, "cache-control")) if request_headers else {}
        if "no-cache" in req_cc or (not req_cc and request_headers and header(request_headers, "pragma") == "no-cache"):
            return False
        age = self.current_age(now)
        lifetime = min(self.lifetime(), cap)
        req_max_age = _seconds(req_cc, "max-age")
        if req_max_age is not None and age > req_max_age:
            return False
        min_fresh = _seconds(req_cc, "min-fresh") or 0.0
        return age + min_fresh < lifetime

    def must_revalidate(self) -> bool:
        """No stale use at all: ``must-revalidate``, ``proxy-revalidate`` or ``s-maxage`` (shared cache)."""
        cc = self.cache_control
        return "must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc or "no-cache" in cc

    def staleness(self, now: float | None = None) -> float:
        return max(0.0, self.current_age(now) - self.lifetime())

    def may_serve_while_revalidating(self, now: float | None = None) -> bool:
        """RFC 5861 3: stale by no more than ``stale-while-revalidate`` seconds."""
        if self.must_revalidate():
            return False
        window = _seconds(self.cache_control, "stale-while-revalidate")
        return window is not None and self.staleness(now) <= window

    def may_serve_on_error(self, now: float | None = None, request_headers: Sequence[tuple[str, str]] = ()) -> bool:
        """RFC 5861 4: stale by no more than ``stale-if-error`` (response or request) seconds."""
        if self.must_revalidate():
            return False
        windows = [
            w
            for w in (
                _seconds(self.cache_control, "stale-if-error"),
                _seconds(parse_cache_control(header(request_headers, "cache-control")), "stale-if-error"),
            )
            if w is not None
        ]
        return bool(windows) and self.staleness(now) <= max(windows)

    def stale_window(self) -> float:
        """Seconds after expiry during which this entry may still be served stale."""
        if self.must_revalidate():
            return 0.0
        cc = self.cache_control
        return max(_seconds(cc, "stale-while-revalidate") or 0.0, _seconds(cc, "stale-if-error") or 0.0)

    def validators(self) -> Headers:
        """Conditional request headers (``If-None-Match``, ``If-Modified-Since``) for revalidation."""
        out: Headers = []
        etag = header(self.headers, "etag")
        if etag:
            out.append(("If-None-Match", etag))
        lm = header(self.headers, "last-modified")
        if lm:
            out.append(("If-Modified-Since", lm))
        return out

    def matches(self, request_headers: Sequence[tuple[str, str]]) -> bool:
        """Whether a request selects this variant (RFC 9111 4.1)."""
        return all(_norm(header(request_headers, n)) == v for n, v in self.vary.items())

    def refreshed(
        self, not_modified_headers: Sequence[tuple[str, str]], request_time: float, response_time: float
    ) -> StoredResponse:
        """This response with its headers updated from a 304 (RFC 9111 4.3.4)."""
        # the stored ETag stays: a 304 naming another one does not describe this body (RFC 9111 4.3.4)
        keep = {"etag"} if header(self.headers, "etag") is not None else set()
        update = [
            (k, v)
            for k, v in not_modified_headers
            if k.lower() not in _NOT_UPDATED and k.lower() not in NEVER_STORED_HEADERS and k.lower() not in keep
        ]
        names = {k.lower() for k, _ in update}
        headers = [(k, v) for k, v in self.headers if k.lower() not in names] + update
        return StoredResponse(
            self.url,
            self.status,
            headers,
            self.body,
            request_time,
            response_time,
            dict(self.vary),
            self.strategy,
            self.heuristic_fraction,
            self.default_lifetime,
            self.wire,
            self.accept,
        )

    def ttl(self, keep_stale_s: float) -> float | None:
        """How long a backend keeps the entry: freshness + the stale window, plus ``keep_stale_s``
        when it has validators (so it can still be revalidated); None = no expiry."""
        lifetime = self.lifetime()
        if math.isinf(lifetime):
            return None
        remaining = max(0.0, lifetime - self.current_age())
        extra = self.stale_window()
        if self.validators():
            extra = max(extra, keep_stale_s)
        return remaining + extra

    def response_headers(self, now: float | None = None) -> Headers:
        """Headers to send with a cache hit: the stored ones with ``Age`` set (RFC 9111 5.1)."""
        return without(self.headers, "age") + [("Age", str(int(min(self.current_age(now), 2**31))))]


def invalidates(method: str, status: int) -> bool:
    """An unsafe method's 2xx/3xx invalidates the URL it targeted (RFC 9111 4.4)."""
    return method.upper() not in SAFE_METHODS and 200 <= status < 400


__all__ = [
    "STRATEGY_LIFETIME_S",
    "STRATEGY_ORDER",
    "CREDENTIAL_HEADERS",
    "NEVER_STORED_HEADERS",
    "credentials_in",
    "clamp_strategy",
    "HEURISTIC_STATUSES",
    "StoredResponse",
    "storable",
    "freshness_lifetime",
    "parse_cache_control",
    "response_cache_control",
    "hop_by_hop",
    "HOP_BY_HOP",
    "parse_http_date",
    "parse_age",
    "SURROGATE_NAME",
    "http_date",
    "vary_names",
    "vary_key",
    "invalidates",
    "header",
    "without",
]
