"""What the caching reverse proxy adds on top of the cache: the client's own conditional and
``Range`` requests answered from a stored response, and the ``Cache-Status`` field (RFC 9211).

Pure functions, no I/O. The engine applies them to the answer of a request made in proxy mode
(:attr:`NetworkRequest.proxy <cognopt_ray.network.messages.NetworkRequest.proxy>`):

* a ``200`` whose validators match the request's ``If-None-Match`` (weak comparison, RFC 9110
  13.1.2) or, without one, ``If-Modified-Since`` becomes a ``304`` (:func:`not_modified`);
* a ``200`` answering a single-range ``Range: bytes=...`` request (and a matching ``If-Range``)
  becomes a ``206`` with ``Content-Range``, or a ``416`` when no byte of it exists
  (:func:`byte_range`); several ranges get the whole ``200`` (allowed by RFC 9110 14.2).

Example:
    >>> h = [("ETag", '"v1"'), ("Content-Type", "text/plain")]
    >>> not_modified([("If-None-Match", 'W/"v1"')], 200, h)
    True
    >>> byte_range("bytes=2-4", b"0123456789", h)[:2]
    (206, [('ETag', '"v1"'), ('Content-Type', 'text/plain'), ('Content-Range', 'bytes 2-4/10')])
    >>> cache_status_field("HIT", ttl=30)
    'cognopt; hit; ttl=30'
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cognopt_ray.network.rules import Headers, header, parse_http_date, without

#: The client's conditional and range request headers: answered by the proxy from a stored
#: response, so a miss fetches (and stores) the whole response instead of forwarding them.
CLIENT_CONDITIONALS = ("if-none-match", "if-modified-since")
#: Headers a 304 does not repeat (representation metadata of the body it does not send).
_NOT_IN_304 = ("content-length", "content-type", "content-range", "content-encoding", "content-language")
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
#: The name this cache uses in ``Cache-Status``.
CACHE_NAME = "cognopt"


def _etags(value: str) -> list[str]:
    """The entity-tags of an ``If-None-Match`` / ``ETag`` list, opaque parts only (weak comparison)."""
    out = []
    for part in re.findall(r'(?:[Ww]/)?"[^"]*"|[^,\s]+', value):
        tag = part.strip()
        if tag[:2] in ("W/", "w/"):
            tag = tag[2:]
        out.append(tag)
    return out


def not_modified(request_headers: Sequence[tuple[str, str]], status: int, response_headers: Headers) -> bool:
    """Whether the request's conditionals say its client already holds this response (RFC 9110 13.2.2).

    ``If-None-Match`` first (``*`` or any entity-tag equal to the response's under weak
    comparison); only without it, ``If-Modified-Since`` (the response's ``Last-Modified``, else
    its ``Date``, is not later).
    """
    if status != 200:
        return False
    inm = header(request_headers, "if-none-match")
    if inm is not None:
        etag = header(response_headers, "etag")
        if inm.strip() == "*":
            return True
        if etag is None:
            return False
        mine = _etags(etag)
        return bool(mine) and mine[0] in _etags(inm)
    ims = parse_http_date(header(request_headers, "if-modified-since"))
    if ims is None:
        return False
    when = parse_http_date(header(response_headers, "last-modified")) or parse_http_date(
        header(response_headers, "date")
    )
    return when is not None and when <= ims


def not_modified_headers(response_headers: Headers) -> Headers:
    """The headers of a ``304`` made from a stored ``200`` (RFC 9110 15.4.5)."""
    return without(response_headers, *_NOT_IN_304)


def byte_range(range_value: str, body: bytes, response_headers: Headers) -> tuple[int, Headers, bytes]:
    """A ``200`` cut to one ``Range: bytes=`` range: ``(206, headers, part)``, ``(416, headers, b"")``
    when the range starts past the end, or ``(200, headers, body)`` when it is not one byte range."""
    m = _RANGE.match(range_value)
    if m is None or (not m.group(1) and not m.group(2)):
        return 200, response_headers, body
    size = len(body)
    first_s, last_s = m.group(1), m.group(2)
    if first_s:
        first = int(first_s)
        last = min(int(last_s), size - 1) if last_s else size - 1
        if last_s and int(last_s) < first:
            return 200, response_headers, body  # invalid range: ignored (RFC 9110 14.1.1)
    else:
        n = int(last_s)
        if n == 0:
            return 416, without(response_headers, "content-length") + [("Content-Range", f"bytes */{size}")], b""
        first, last = max(0, size - n), size - 1
    if first >= size:
        return 416, without(response_headers, "content-length") + [("Content-Range", f"bytes */{size}")], b""
    headers = without(response_headers, "content-length", "content-range") + [
        ("Content-Range", f"bytes {first}-{last}/{size}")
    ]
    return 206, headers, body[first : last + 1]


def if_range_holds(request_headers: Sequence[tuple[str, str]], response_headers: Headers) -> bool:
    """``If-Range`` absent, or naming the response's strong ``ETag`` or exact ``Last-Modified``."""
    value = header(request_headers, "if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        etag = header(response_headers, "etag")
        return etag is not None and etag.strip() == value
    lm = header(response_headers, "last-modified")
    return lm is not None and lm.strip() == value


def cache_status_field(
    cache_status: str,
    *,
    method: str = "GET",
    fwd_status: int | None = None,
    stored: bool = False,
    collapsed: bool = False,
    ttl: float | None = None,
) -> str:
    """The ``Cache-Status`` field value (RFC 9211) of one answer.

    ``HIT`` → ``hit`` (with ``ttl``, seconds of freshness left); ``STALE`` → ``hit`` with
    ``detail=stale``; ``MISS`` → ``fwd=miss``; ``REVALIDATED`` → ``fwd=stale``; ``BYPASS`` →
    ``fwd=method`` for a method the cache does not store, else ``fwd=bypass``; ``fwd-status``,
    ``stored`` and ``collapsed`` (a coalesced request) when they apply.
    """
    parts = [CACHE_NAME]
    if cache_status == "HIT":
        parts.append("hit")
        if ttl is not None:
            parts.append(f"ttl={int(ttl)}")
    elif cache_status == "STALE":
        parts += ["hit", "detail=stale"]
    else:
        fwd = {"MISS": "miss", "REVALIDATED": "stale"}.get(cache_status)
        if fwd is None:
            fwd = "method" if method.upper() not in ("GET", "HEAD") else "bypass"
        parts.append(f"fwd={fwd}")
        if fwd_status is not None:
            parts.append(f"fwd-status={fwd_status}")
        if stored:
            parts.append("stored")
        if collapsed:
            parts.append("collapsed")
    return "; ".join(parts)


__all__ = [
    "CLIENT_CONDITIONALS",
    "CACHE_NAME",
    "not_modified",
    "not_modified_headers",
    "byte_range",
    "if_range_holds",
    "cache_status_field",
    "answer",
]


def answer(
    method: str, request_headers: Sequence[tuple[str, str]], status: int, headers: Headers, body: bytes
) -> tuple[int, Headers, bytes]:
    """The proxy's answer to its client: a ``304`` when the client's conditionals match, a
    ``206``/``416`` for a single byte range of a ``200``, else the response as it is."""
    if method in ("GET", "HEAD") and not_modified(request_headers, status, headers):
        return 304, not_modified_headers(headers), b""
    rng = header(request_headers, "range")
    if method == "GET" and rng and status == 200 and if_range_holds(request_headers, headers):
        return byte_range(rng, body, headers)
    return status, headers, body
