"""RFC 9111 / RFC 5861 rules as pure functions: storability, freshness, age, Vary, stale windows."""

import math
import time

from cognopt_ray.network.rules import (
    StoredResponse,
    clamp_strategy,
    credentials_in,
    freshness_lifetime,
    header,
    http_date,
    invalidates,
    parse_cache_control,
    storable,
    vary_key,
    vary_names,
)


def test_parse_cache_control():
    cc = parse_cache_control('public, Max-Age=60, no-cache="Set-Cookie, X", stale-if-error=5')
    assert cc == {"public": None, "max-age": "60", "no-cache": "Set-Cookie, X", "stale-if-error": "5"}


def test_storable_rules():
    ok = [("Cache-Control", "max-age=60")]
    assert storable("GET", 200, [], ok, "medium_term") == (True, "")
    assert not storable("GET", 200, [], [("Cache-Control", "no-store")], "medium_term")[0]
    assert not storable("GET", 200, [("Cache-Control", "no-store")], ok, "medium_term")[0]
    assert "private" in storable("GET", 200, [], [("Cache-Control", "private, max-age=60")], "medium_term")[1]
    assert not storable("POST", 200, [], ok, "medium_term")[0]
    assert not storable("GET", 200, [], ok, "no_cache")[0]
    assert not storable("GET", 206, [], ok, "medium_term")[0]
    assert not storable("GET", 500, [], [], "medium_term")[0]
    assert not storable("GET", 302, [], [], "medium_term")[0]  # needs explicit freshness
    assert storable("GET", 302, [], ok, "medium_term")[0]
    assert not storable("GET", 200, [], [("Vary", "*"), *ok], "medium_term")[0]
    auth = [("Authorization", "Bearer x")]
    assert not storable("GET", 200, auth, ok, "medium_term")[0]
    for cc in ("public, max-age=60", "s-maxage=60"):
        assert storable("GET", 200, auth, [("Cache-Control", cc)], "medium_term")[0], cc
    # RFC 9111 3.5 allows must-revalidate too; a cache shared by services does not (issue 13)
    assert not storable("GET", 200, auth, [("Cache-Control", "max-age=60, must-revalidate")], "medium_term")[0]


def test_every_credential_header_prevents_storage_unless_public():
    ok = [("Cache-Control", "max-age=60")]
    for h in ("Cookie", "Proxy-Authorization", "X-Api-Key", "api-key", "X-Auth-Token"):
        assert not storable("GET", 200, [(h, "v")], ok, "medium_term")[0], h
        assert storable("GET", 200, [(h, "v")], [("Cache-Control", "public, max-age=60")], "medium_term")[0], h
    assert storable("GET", 200, [("X-Tenant-Token", "v")], ok, "medium_term")[0]
    assert not storable("GET", 200, [("X-Tenant-Token", "v")], ok, "medium_term", ["x-tenant-token"])[0]
    assert credentials_in([("Cookie", "a"), ("Accept", "b"), ("X-API-KEY", "c")]) == ["cookie", "x-api-key"]


def test_request_strategy_is_clamped_to_the_service():
    assert clamp_strategy(None, "medium_term") == "medium_term"
    assert clamp_strategy("persistent", "medium_term") == "medium_term"
    assert clamp_strategy("short_term", "medium_term") == "short_term"
    assert clamp_strategy("no_cache", "persistent") == "no_cache"
    assert clamp_strategy("long_term", "no_cache") == "no_cache"


def test_a_request_cap_shortens_freshness_of_a_hit():
    e = _entry([("Cache-Control", "max-age=600")], age_at_store=100)
    assert e.is_fresh() and not e.is_fresh(cap=50)


def test_a_304_never_brings_a_cookie_into_the_cache():
    e = _entry([("Cache-Control", "max-age=600")])
    fresh = e.refreshed([("Set-Cookie", "s=1"), ("Set-Cookie2", "s=2"), ("ETag", '"x"')], time.time(), time.time())
    assert header(fresh.headers, "set-cookie") is None and header(fresh.headers, "set-cookie2") is None
    assert header(fresh.headers, "etag") == '"x"'


def test_freshness_sources_and_strategy_cap():
    date = "Tue, 01 Jan 2030 00:00:00 GMT"
    assert freshness_lifetime(200, [("Cache-Control", "max-age=60, s-maxage=30")], "long_term") == 30
    assert freshness_lifetime(200, [("Cache-Control", "max-age=60")], "long_term") == 60
    assert freshness_lifetime(200, [("Cache-Control", "max-age=100000")], "short_term") == 300  # capped
    assert freshness_lifetime(200, [("Cache-Control", "max-age=100000")], "persistent") == 100000
    assert freshness_lifetime(200, [("Date", date), ("Expires", "Tue, 01 Jan 2030 00:02:00 GMT")], "long_term") == 120
    assert freshness_lifetime(200, [("Date", date), ("Expires", "0")], "long_term") == 0  # invalid Expires = stale
    lm = "Sat, 22 Dec 2029 00:00:00 GMT"  # 10 days before Date: heuristic 1 day
    assert freshness_lifetime(200, [("Date", date), ("Last-Modified", lm)], "long_term") == 86400
    assert freshness_lifetime(200, [("Date", date), ("Last-Modified", lm)], "medium_term") == 3600
    assert (
        freshness_lifetime(200, [("Date", date), ("Last-Modified", lm)], "long_term", heuristic_fraction=0.05) == 43200
    )
    # nothing said: the strategy's lifetime
    assert freshness_lifetime(200, [], "short_term") == 300
    assert math.isinf(freshness_lifetime(200, [], "persistent"))
    assert freshness_lifetime(302, [], "long_term") == 0
    # the origin's restrictions win
    assert freshness_lifetime(200, [("Cache-Control", "no-cache, max-age=600")], "long_term") == 0
    assert freshness_lifetime(200, [("Cache-Control", "max-age=0")], "persistent") == 0
    assert freshness_lifetime(200, [("Cache-Control", "max-age=abc")], "long_term") == 0


def _entry(headers, *, age_at_store=0.0, strategy="long_term", request_time=None):
    now = time.time()
    return StoredResponse(
        "http://h/x",
        200,
        [("Date", http_date(now - age_at_store)), *headers],
        b"body",
        request_time or now,
        now,
        {},
        strategy,
    )


def test_age_calculation_rfc9111():
    e = _entry([("Age", "30")])
    assert 30 <= e.current_age() < 32
    e = _entry([], age_at_store=50)  # apparent age from Date
    assert 50 <= e.current_age() < 52
    now = time.time()
    e = StoredResponse("u", 200, [("Date", http_date(now)), ("Age", "10")], b"", now - 5, now)  # response delay 5
    assert 15 <= e.current_age(now) < 16
    assert e.current_age(now + 100) >= 115


def test_fresh_stale_and_request_directives():
    e = _entry([("Cache-Control", "max-age=60")])
    assert e.is_fresh()
    assert not e.is_fresh(request_headers=[("Cache-Control", "no-cache")])
    assert not e.is_fresh(request_headers=[("Cache-Control", "max-age=0")])
    assert not e.is_fresh(request_headers=[("Cache-Control", "min-fresh=120")])
    stale = _entry([("Cache-Control", "max-age=60"), ("Age", "100")])
    assert not stale.is_fresh()
    assert hdr(stale.response_headers(), "age") >= 100


def hdr(headers, name):
    return int(dict((k.lower(), v) for k, v in headers)[name])


def test_stale_windows_rfc5861():
    swr = _entry([("Cache-Control", "max-age=60, stale-while-revalidate=100"), ("Age", "100")])
    assert swr.may_serve_while_revalidating() and not swr.may_serve_on_error()
    too_old = _entry([("Cache-Control", "max-age=60, stale-while-revalidate=10"), ("Age", "100")])
    assert not too_old.may_serve_while_revalidating()
    sie = _entry([("Cache-Control", "max-age=60, stale-if-error=100"), ("Age", "100")])
    assert sie.may_serve_on_error() and not sie.may_serve_while_revalidating()
    plain = _entry([("Cache-Control", "max-age=60"), ("Age", "100")])
    assert plain.may_serve_on_error(request_headers=[("Cache-Control", "stale-if-error=1000")])
    mr = _entry(
        [
            ("Cache-Control", "max-age=60, must-revalidate, stale-if-error=1000, stale-while-revalidate=1000"),
            ("Age", "100"),
        ]
    )
    assert mr.must_revalidate() and not mr.may_serve_on_error() and not mr.may_serve_while_revalidating()
    assert _entry([("Cache-Control", "s-maxage=60")]).must_revalidate()


def test_vary_and_variants():
    assert vary_names([("Vary", "Accept-Language, accept-encoding")]) == ["accept-encoding", "accept-language"]
    assert vary_names([("Vary", "Accept, *")]) == ["*"]
    key = vary_key(["accept-language"], [("Accept-Language", "EN,  fr")])
    assert key == {"accept-language": "en, fr"}
    e = StoredResponse("u", 200, [], b"", 0, 0, key)
    assert e.matches([("accept-language", "en,   FR")])
    assert not e.matches([("Accept-Language", "de")])
    assert not e.matches([])


def test_304_refresh_updates_headers_and_keeps_body():
    e = _entry([("Cache-Control", "max-age=0"), ("ETag", '"v1"'), ("X-Version", "1")])
    r = e.refreshed(
        [("Cache-Control", "max-age=60"), ("X-Version", "2"), ("Content-Length", "0")], time.time(), time.time()
    )
    h = dict(r.headers)
    assert h["X-Version"] == "2" and h["Cache-Control"] == "max-age=60" and "Content-Length" not in h
    assert r.body == b"body" and r.is_fresh()
    assert ("If-None-Match", '"v1"') in e.validators()


def test_ttl_is_freshness_plus_stale_window():
    e = _entry([("Cache-Control", "max-age=100, stale-while-revalidate=50")])
    assert 148 <= e.ttl(keep_stale_s=3600) <= 150
    e = _entry([("Cache-Control", "max-age=100"), ("ETag", '"x"')])  # validators: kept to revalidate
    assert 3690 <= e.ttl(keep_stale_s=3600) <= 3700
    assert _entry([], strategy="persistent").ttl(10) is None


def test_unsafe_methods_invalidate():
    assert invalidates("POST", 201) and invalidates("DELETE", 204) and invalidates("PUT", 303)
    assert not invalidates("POST", 500) and not invalidates("GET", 200) and not invalidates("HEAD", 200)
