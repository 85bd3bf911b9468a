"""SSRF guard: the default (only global addresses) and the allowlist, without any traffic."""

import asyncio

import pytest

from cognopt_ray.network.errors import InvalidRequest, UrlRefused
from cognopt_ray.network.guard import GuardedResolver, GuardRefusal, SsrfGuard, embedded_ipv4, parse_numeric_host

INTERNAL_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/x",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/",
    "http://100.64.0.1/",
    "http://[::1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    # IPv4-mapped, 6to4, NAT64 (well-known and local-use) and Teredo forms of internal addresses
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b::10.0.0.1]/",
    "http://[64:ff9b:1::a00:1]/",
    # decimal, hex, octal and short IPv4 forms
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_default_refuses_non_global_addresses(url):
    with pytest.raises(UrlRefused) as e:
        SsrfGuard().check_url(url)
    assert e.value.extra["rule"] == "global-address"
    assert e.value.status == 403 and "allowlist" in e.value.hint


@pytest.mark.parametrize(
    "url,rule",
    [
        ("ftp://example.org/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1/", "scheme"),
        ("http://user:pw@8.8.8.8/", "userinfo"),
    ],
)
def test_scheme_and_userinfo_rules(url, rule):
    with pytest.raises(UrlRefused) as e:
        SsrfGuard().check_url(url)
    assert e.value.extra["rule"] == rule


@pytest.mark.parametrize("url", ["not a url", "/relative/path", "http:///nohost", ""])
def test_invalid_urls_are_422(url):
    with pytest.raises((InvalidRequest, UrlRefused)) as e:
        SsrfGuard().check_url(url)
    assert e.value.status in (422, 403)


def test_global_addresses_pass_without_traffic():
    g = SsrfGuard()
    for addr in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"):
        assert g.check_address(addr) is None, addr
    assert str(g.check_url("http://134744072/").url) == "http://8.8.8.8/"  # decimal form judged and canonicalised


def test_allowlist_of_addresses_cidrs_and_hosts():
    g = SsrfGuard(["127.0.0.1", "10.0.0.0/8", "internal.example", "*.corp.example"])
    assert g.check_address("127.0.0.1") is None
    assert g.check_address("10.20.30.40") is None
    assert g.check_address("::ffff:10.1.1.1") is None
    assert g.check_address("127.0.0.2") == "global-address"
    assert g.check_address("192.168.0.1") == "global-address"
    assert g.check_url("http://127.1:9/").url.host == "127.0.0.1"  # short form allowed, sent canonical
    assert g.check_url("http://internal.example/").host == "internal.example"
    assert g.check_resolved("internal.example", ["192.168.1.1"]) == ["192.168.1.1"]
    assert g.check_resolved("a.corp.example", ["10.0.0.9"])
    with pytest.raises(UrlRefused):
        g.check_resolved("other.example", ["192.168.1.1"])
    with pytest.raises(UrlRefused):  # one internal address among global ones is enough to refuse
        SsrfGuard().check_resolved("mixed.example", ["8.8.8.8", "127.0.0.1"])


def test_numeric_forms_and_embedded_ipv4():
    assert str(parse_numeric_host("2130706433")) == "127.0.0.1"
    assert str(parse_numeric_host("0x7f000001")) == "127.0.0.1"
    assert str(parse_numeric_host("127.1")) == "127.0.0.1"
    assert str(parse_numeric_host("0177.0.0.01")) == "127.0.0.1"
    assert parse_numeric_host("example.org") is None
    import ipaddress

    assert str(embedded_ipv4(ipaddress.IPv6Address("64:ff9b::a9fe:a9fe"))) == "169.254.169.254"
    assert str(embedded_ipv4(ipaddress.IPv6Address("2002:0a00:0001::"))) == "10.0.0.1"


def test_resolver_checks_the_addresses_it_returns():
    async def go():
        refused = GuardedResolver(SsrfGuard())
        with pytest.raises(GuardRefusal) as e:
            await refused.resolve("localhost", 80)
        assert e.value.refused.extra["rule"] == "global-address"
        ok = await GuardedResolver(SsrfGuard(["127.0.0.0/8", "::1"])).resolve("localhost", 80, family=0)
        assert ok and all(r["host"] in ("127.0.0.1", "::1") for r in ok)
        assert all(r["port"] == 80 for r in ok)

    asyncio.run(go())
