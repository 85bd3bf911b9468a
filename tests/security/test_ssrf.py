"""The SSRF guard, end to end: through the REST route, with real listeners that must never be hit.

The test app allowlists 127.0.0.1 only (its origins run there). Internal addresses get a real
listener where one can be bound (127.0.0.2), so a refusal is the guard's doing, not a connection
error, and the listener's hit counter proves no byte reached it.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import requests
from aiohttp import web

from cognopt_ray.config import Settings
from cognopt_ray.network import OptimizedClient, UrlRefused
from tests.support.origin import Origin

#: generous: the first use of an engine starts Ray workers, slow on a busy 2-core machine
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def internal():
    """An HTTP listener on 127.0.0.2 (loopback, not allowlisted)."""
    o = Origin(_free_port("127.0.0.2"), host="127.0.0.2")
    o.routes["/secret"] = lambda request: web.Response(text="internal secret")
    yield o
    o.close()


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def total_hits(o) -> int:
    return sum(o.hits.values())


def fetch(api_server, url: str, role: str = "admin"):
    return requests.post(
        api_server.url("network/optimize-request"), headers=api_server.headers(role), json={"url": url}, timeout=60
    )


def internal_urls(port: int) -> list[str]:
    return [
        # loopback other than the allowlisted address, and the IPv6 loopback
        f"http://127.0.0.2:{port}/secret",
        f"http://[::1]:{port}/",
        # private, shared, link-local, unspecified, cloud metadata
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        # IPv4-mapped, NAT64 (well-known and local-use), 6to4 and Teredo forms
        f"http://[::ffff:127.0.0.2]:{port}/secret",
        "http://[::ffff:a9fe:a9fe]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        f"http://[64:ff9b::127.0.0.2]:{port}/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://[2001:0:4136:e378:8000:63bf:56ff:fefd]/",
        # decimal, hex, octal and short IPv4 forms
        f"http://2130706434:{port}/secret",
        f"http://0x7f000002:{port}/secret",
        f"http://0177.0.0.2:{port}/secret",
        f"http://127.2:{port}/secret",
        "http://2852039166/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://10.1/",
        # other schemes and credentials
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "ftp://127.0.0.1/",
        f"http://user:pw@127.0.0.1:{port}/",
    ]


def test_the_route_refuses_internal_addresses(api_server, internal):
    for url in internal_urls(internal.port):
        r = fetch(api_server, url)
        assert r.status_code in (403, 422), (url, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("application/problem+json")
        if r.status_code == 403:
            assert "SSRF" in r.json()["detail"] or "not allowed" in r.json()["detail"], r.json()
    assert total_hits(internal) == 0


def test_a_redirect_to_an_internal_address_is_refused(api_server, internal):
    origin = Origin()
    try:
        targets = [
            f"http://127.0.0.2:{internal.port}/secret",
            f"http://[::ffff:127.0.0.2]:{internal.port}/secret",
            f"http://2130706434:{internal.port}/secret",
            "http://169.254.169.254/latest/meta-data/",
            "http://[64:ff9b::a9fe:a9fe]/",
            f"http://[::1]:{internal.port}/",
        ]
        for i, target in enumerate(targets):
            for code in (301, 302, 303, 307, 308):
                path = f"/r{i}-{code}"
                origin.routes[path] = (lambda t, c: lambda request: web.Response(status=c, headers={"Location": t}))(
                    target, code
                )
                r = fetch(api_server, origin.url(path))
                assert r.status_code == 403, (target, code, r.status_code, r.text[:300])
                assert origin.hits[path] == 1  # the allowed origin was asked; the hop was refused
        # a relative redirect that stays on the allowed origin is followed
        origin.routes["/hop"] = lambda request: web.Response(status=302, headers={"Location": "/final"})
        origin.routes["/final"] = lambda request: web.Response(text="fine")
        r = fetch(api_server, origin.url("/hop"))
        assert r.status_code == 200 and r.json()["body"] == "fine", r.text[:300]
    finally:
        origin.close()
    assert total_hits(internal) == 0


def test_a_name_that_resolves_to_loopback_is_refused():
    """No allowlist: ``localhost`` and the names /etc/hosts maps to 127.0.0.1 are refused at resolution."""
    origin = Origin()
    origin.routes["/x"] = lambda request: web.Response(text="local")
    names = ["localhost"]
    try:
        hosts = open("/etc/hosts").read().split()
        names += [h for h in ("runsc", "vm", socket.gethostname()) if h in hosts]
    except OSError:
        pass

    async def go():
        client = OptimizedClient(Settings.load(storage_root="/tmp/cognopt-ssrf-unused", network={"allowlist": []}))
        try:
            for name in names:
                with pytest.raises(UrlRefused) as e:
                    await client.request(f"http://{name}:{origin.port}/x")
                assert e.value.extra["rule"] in ("global-address", "resolution"), (name, e.value.extra)
        finally:
            await client.close()

    try:
        asyncio.run(go())
        assert origin.hits["/x"] == 0
    finally:
        origin.close()


def test_an_allowlisted_host_name_still_checks_redirects():
    """An origin allowed by name cannot bounce the client to an internal address either."""
    origin = Origin()
    origin.routes["/bounce"] = lambda request: web.Response(status=302, headers={"Location": "http://169.254.169.254/"})

    async def go():
        client = OptimizedClient(
            Settings.load(storage_root="/tmp/cognopt-ssrf-unused", network={"allowlist": ["localhost"]})
        )
        try:
            with pytest.raises(UrlRefused):
                await client.request(f"http://localhost:{origin.port}/bounce")
        finally:
            await client.close()

    try:
        asyncio.run(go())
        assert origin.hits["/bounce"] == 1
    finally:
        origin.close()
