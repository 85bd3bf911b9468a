"""Hand-written hostile input on every route of the live schema: path traversal in every id,
malformed JSON, wrong content types, huge and empty bodies, unicode, negative and overflowing
numbers. Every answer is a 4xx problem document (never a 5xx), and nothing is read or written
outside the storage root."""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote

import pytest
import requests

from tests.conftest import MAX_BODY
from tests.security.conftest import warm_up
from tests.security.routes import MUTATING, OPEN, offline_schema, routes

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)

ROUTES = [r for r in routes(offline_schema()) if r.key not in OPEN]
WITH_PARAMS = [r for r in ROUTES if "{" in r.path]
WITH_BODY = [r for r in ROUTES if "requestBody" in r.operation]

TRAVERSAL = [
    "..",
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "%00",
    "a%00b",
    "~root",
    "%252e%252e%252f",
    "items/../../keys.json",
    "..;/..;/keys.json",
]


def _raw(api_server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection(api_server.base.split("//", 1)[1], timeout=120)
    hdrs = {**api_server.headers("admin"), **(headers or {})}
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def _assert_clean_4xx(status, headers, data, what):
    assert 400 <= status < 500, (what, status, data[:300])
    assert b"root:x:" not in data and b"[fonts]" not in data, what
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("application/problem+json"), (what, ctype)


@pytest.mark.parametrize("route", WITH_PARAMS, ids=str)
def test_path_traversal_in_every_id(api_server, route):
    # the engines make their folders on first use, and refusals are audited: both exist before counting
    warm_up(api_server)
    _raw(
        api_server,
        "POST",
        "/api/v0/optimization/storage/prune",
        b"{}",
        {"Content-Type": "application/json", **api_server.headers("read")},
    )  # a 403, audited
    before = sorted(p.name for p in api_server.root.iterdir())
    for value in TRAVERSAL:
        path = "/api/v0/optimization" + route.path.replace("{", "\x00").split("\x00")[0] + value
        path += route.path.split("}", 1)[1] if "}" in route.path else ""
        status, headers, data = _raw(
            api_server,
            route.method.upper(),
            path,
            b"{}" if route.method in MUTATING else None,
            {"Content-Type": "application/json"},
        )
        _assert_clean_4xx(status, headers, data, (route.path, value))
    assert sorted(p.name for p in api_server.root.iterdir()) == before  # nothing new at the root


@pytest.mark.parametrize("route", WITH_BODY, ids=str)
def test_malformed_wrong_empty_and_huge_bodies(api_server, route):
    url = "/api/v0/optimization" + route.concrete("x1")
    cases = {
        "malformed": (b'{"item_id": "a", "data": ', "application/json"),
        "not_an_object": (b"[1, 2, 3]", "application/json"),
        "nul_bytes": (b'{"a": "\x00\x00"}', "application/json"),
        "bad_utf8": (b'{"a": "\xff\xfe"}', "application/json"),
        "empty": (b"", "application/json"),
        "wrong_type": (b"item_id=a&data=b", "application/x-www-form-urlencoded"),
        "xml": (b"<a>1</a>", "application/xml"),
        "deep": (b"[" * 5000 + b"]" * 5000, "application/json"),
    }
    for name, (body, ctype) in cases.items():
        status, headers, data = _raw(api_server, route.method.upper(), url, body, {"Content-Type": ctype})
        if name == "empty" and status < 300:
            continue  # routes whose body is all optional accept an empty one
        _assert_clean_4xx(status, headers, data, (route.path, name))
    # over the limit, declared: refused before it is read
    huge = b'{"data": "' + b"x" * (MAX_BODY + 10) + b'"}'
    status, headers, data = _raw(api_server, route.method.upper(), url, huge, {"Content-Type": "application/json"})
    assert status == 413, (route.path, status, data[:200])


def test_a_chunked_body_over_the_limit_is_refused(api_server):
    def gen():
        for _ in range(MAX_BODY // 65536 + 4):
            yield b"x" * 65536

    r = requests.post(
        api_server.url("storage/store?item_id=chunked"),
        data=gen(),
        timeout=120,
        headers={**api_server.headers("admin"), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 413, r.text[:200]
    assert (
        requests.get(
            api_server.url("storage/items/chunked"), headers=api_server.headers("admin"), timeout=30
        ).status_code
        == 404
    )


NUMBERS = [-1, -(2**63), 2**63, 2**64 + 1, 10**30, 1e308, -1e308, 0.5, "1e999", "NaN", "Infinity", True, None, "12"]


def _numeric_fields(route, schema: dict) -> list[str]:
    """The integer/number fields of a route's JSON body (none: the route is not a case of the test)."""
    content = route.operation["requestBody"]["content"]
    body_schema = (content.get("application/json") or {}).get("schema", {})
    if "$ref" in body_schema:
        body_schema = schema["components"]["schemas"][body_schema["$ref"].rsplit("/", 1)[1]]
    return [k for k, v in body_schema.get("properties", {}).items() if _is_number(v, schema)]


def _is_number(prop: dict, schema: dict) -> bool:
    types = {prop.get("type")} | {a.get("type") for a in prop.get("anyOf", [])}
    return bool(types & {"integer", "number"})


#: POST routes whose body has a numeric field, with those fields (routes without one are not cases)
WITH_NUMBERS = [
    pytest.param(r, fields, id=str(r))
    for r in WITH_BODY
    if r.method == "post" and (fields := _numeric_fields(r, offline_schema()))
]


@pytest.mark.parametrize(("route", "fields"), WITH_NUMBERS)
def test_negative_and_overflowing_numbers(api_server, route, fields):
    """Every integer/number field of the body, set to extreme values: a 4xx or a success, never 5xx."""
    url = "/api/v0/optimization" + route.concrete("x1")
    for f in fields:
        for value in NUMBERS:
            literal = value if isinstance(value, str) and value in ("1e999", "NaN", "Infinity") else json.dumps(value)
            body = f'{{"{f}": {literal}}}'.encode()
            status, headers, data = _raw(api_server, "POST", url, body, {"Content-Type": "application/json"})
            assert status < 500, (route.path, f, value, status, data[:300])


UNICODE = ["é", "名前", "\u202eevil", "a\u200bb", "😀", "\ud7ff", "ǅ", "İ", "ﬁ", "Ａ"]


def test_unicode_ids_and_values(api_server):
    h = api_server.headers("admin")
    for u in UNICODE:
        item = f"uni-{u}"
        r = requests.post(
            api_server.url("storage/store"), headers=h, timeout=60, json={"item_id": item, "data": {"text": u * 10}}
        )
        assert r.status_code in (201, 422), (u, r.status_code, r.text[:200])
        r = requests.get(api_server.url(f"storage/retrieve/{quote(item, safe='')}"), headers=h, timeout=60)
        assert r.status_code in (200, 404, 422), (u, r.status_code)
        # unicode service names are refused, not mangled into another service's name
        r = requests.post(
            api_server.url("memory/allocate"), headers=h, timeout=60, json={"service_name": f"ai_models{u}", "data": 1}
        )
        assert r.status_code == 422, (u, r.status_code, r.text[:200])
    # unicode values come back exactly
    value = {"text": "".join(UNICODE[:5] + UNICODE[6:]), "nested": ["é", {"名": "😀"}]}
    r = requests.post(
        api_server.url("storage/store"), headers=h, timeout=60, json={"item_id": "uni-value", "data": value}
    )
    assert r.status_code == 201, r.text[:200]
    assert requests.get(api_server.url("storage/retrieve/uni-value"), headers=h, timeout=60).json() == value
    r = requests.post(
        api_server.url("memory/allocate"), headers=h, timeout=60, json={"service_name": "ai_models", "data": value}
    )
    assert r.status_code == 201, r.text[:200]
    aid = r.json()["allocation_id"]
    assert requests.get(api_server.url(f"memory/allocations/{aid}"), headers=h, timeout=60).json() == value
