"""The reverse proxy's pure rules: client conditionals, byte ranges, Cache-Status, and the suite-found rules."""

from __future__ import annotations

import math
import time

from cognopt_ray.network.proxying import answer, byte_range, cache_status_field, not_modified
from cognopt_ray.network.rules import (
    StoredResponse,
    freshness_lifetime,
    hop_by_hop,
    http_date,
    parse_age,
    response_cache_control,
    storable,
)

ETAG = [("ETag", '"v1"'), ("Content-Type", "text/plain"), ("Last-Modified", http_date(1_000_000))]


def test_if_none_match_uses_weak_comparison_and_wins_over_if_modified_since():
    assert not_modified([("If-None-Match", 'W/"v1"')], 200, ETAG)
    assert not_modified([("If-None-Match", '"a", "v1", "b"')], 200, ETAG)
    assert not_modified([("If-None-Match", "*")], 200, ETAG)
    assert not not_modified([("If-None-Match", '"other"'), ("If-Modified-Since", http_date(2_000_000))], 200, ETAG)
    assert not not_modified([("If-None-Match", '"v1"')], 404, ETAG)


def test_if_modified_since_compares_last_modified_or_date():
    assert not_modified([("If-Modified-Since", http_date(1_000_000))], 200, ETAG)
    assert not not_modified([("If-Modified-Since", http_date(999_999))], 200, ETAG)
    assert not_modified([("If-Modified-Since", http_date(5))], 200, [("Date", http_date(5))])
    assert not not_modified([("If-Modified-Since", "not a date")], 200, ETAG)


def test_a_304_keeps_validators_and_drops_body_metadata():
    status, headers, body = answer("GET", [("If-None-Match", '"v1"')], 200, ETAG, b"body")
    assert (status, body) == (304, b"")
    assert ("ETag", '"v1"') in headers and all(k != "Content-Type" for k, _ in headers)


def test_byte_ranges():
    body = b"0123456789"
    assert byte_range("bytes=2-4", body, [])[::2] == (206, b"234")
    assert byte_range("bytes=7-", body, [])[::2] == (206, b"789")
    assert byte_range("bytes=-2", body, [])[::2] == (206, b"89")
    assert byte_range("bytes=5-100", body, [])[1] == [("Content-Range", "bytes 5-9/10")]
    assert byte_range("bytes=10-", body, [])[:2] == (416, [("Content-Range", "bytes */10")])
    assert byte_range("bytes=0-1,4-5", body, [])[0] == 200  # several ranges: the whole answer
    assert byte_range("items=0-1", body, [])[0] == 200
    assert byte_range("bytes=4-2", body, [])[0] == 200  # invalid: ignored


def test_if_range_must_match_for_a_206():
    h = [("ETag", '"r"')]
    assert answer("GET", [("Range", "bytes=0-0"), ("If-Range", '"r"')], 200, h, b"ab")[0] == 206
    assert answer("GET", [("Range", "bytes=0-0"), ("If-Range", '"old"')], 200, h, b"ab")[0] == 200


def test_cache_status_fields():
    assert cache_status_field("HIT", ttl=12.7) == "cognopt; hit; ttl=12"
    assert cache_status_field("MISS", fwd_status=200, stored=True) == "cognopt; fwd=miss; fwd-status=200; stored"
    assert cache_status_field("MISS", fwd_status=200, collapsed=True).endswith("collapsed")
    assert (
        cache_status_field("REVALIDATED", fwd_status=304, stored=True) == "cognopt; fwd=stale; fwd-status=304; stored"
    )
    assert cache_status_field("BYPASS", method="POST", fwd_status=201) == "cognopt; fwd=method; fwd-status=201"
    assert cache_status_field("BYPASS", method="GET") == "cognopt; fwd=bypass"
    assert cache_status_field("STALE") == "cognopt; hit; detail=stale"


def test_age_uses_the_first_member_and_an_invalid_one_means_stale():
    assert parse_age(None) == 0 and parse_age("7") == 7 and parse_age("0,7200") == 0 and parse_age("7200, 0") == 7200
    for bad in ("abc", "-7200", "7200.0", "7200;foo=bar", ""):
        assert math.isinf(parse_age(bad)), bad
    now = time.time()
    e = StoredResponse(
        "u", 200, [("Cache-Control", "max-age=3600"), ("Age", "abc")], b"", now, now, strategy="long_term"
    )
    assert not e.is_fresh(now) and e.response_headers(now)[-1] == ("Age", str(2**31))


def test_invalid_expires_is_stale():
    h = [("Expires", "0"), ("Date", http_date())]
    assert freshness_lifetime(200, h, "long_term") == 0.0


def test_targeted_fields_take_precedence():
    assert response_cache_control([("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=600")]) == {
        "max-age": "600"
    }
    sc = [("Cache-Control", "no-store"), ("Surrogate-Control", "max-age=600;cognopt, no-store;other")]
    assert response_cache_control(sc) == {"max-age": "600"}
    assert storable("GET", 200, [], sc, "long_term")[0]
    assert not storable(
        "GET", 200, [], [("Cache-Control", "max-age=60"), ("Surrogate-Control", "no-store")], "long_term"
    )[0]
    assert (
        freshness_lifetime(200, [("Cache-Control", "max-age=3600"), ("Surrogate-Control", "max-age=1")], "long_term")
        == 1
    )


def test_connection_listed_headers_are_hop_by_hop():
    names = hop_by_hop([("Connection", "close, X-Foo"), ("X-Foo", "1")])
    assert {"x-foo", "close", "keep-alive", "transfer-encoding"} <= names


def test_default_lifetime_off_gives_no_freshness_without_information():
    assert freshness_lifetime(200, [], "medium_term") == 3600
    assert freshness_lifetime(200, [], "medium_term", default_lifetime=False) == 0.0


def test_any_final_status_with_explicit_freshness_is_storable_but_partial_answers_are_not():
    assert storable("GET", 500, [], [("Cache-Control", "max-age=60")], "long_term")[0]
    assert not storable("GET", 500, [], [], "long_term")[0]
    assert not storable("GET", 206, [], [("Cache-Control", "max-age=60")], "long_term")[0]
