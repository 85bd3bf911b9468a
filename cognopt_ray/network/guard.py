"""SSRF guard: which URLs the engine may fetch for its callers.

Rules, in order (the refusal names the rule):

1. ``scheme``: only ``http`` and ``https``.
2. ``host``: a host must be present; user-info (``user@host``) is refused.
3. ``allowlist``: a host name in ``settings.network.allowlist`` is allowed whatever it resolves to;
   an address inside an allowlisted IP/CIDR is allowed.
4. ``global-address``: every other address must be global (``ipaddress`` ``is_global``), also the
   IPv4 address embedded in IPv4-mapped (``::ffff:a.b.c.d``), 6to4 (``2002::/16``), NAT64
   (``64:ff9b::/96``, ``64:ff9b:1::/48``) and Teredo forms. Numeric host forms that the C library
   accepts (``2130706433``, ``0x7f000001``, ``127.1``, ``0177.0.0.1``) are converted to the address
   they mean before they are judged.

Host names are resolved once, by :class:`GuardedResolver`, which aiohttp's connector uses: the
addresses it checks are the addresses the connection goes to (no second lookup that could be
answered differently). Redirects are followed by the client by hand, each hop checked again.

Example:
    >>> g = SsrfGuard(allowlist=["127.0.0.1"])
    >>> g.check_address("127.0.0.1") is None
    True
    >>> SsrfGuard().check_address("169.254.169.254")
    'global-address'
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from cognopt_ray.network.errors import InvalidRequest, UrlRefused

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class GuardRefusal(OSError):
    """Raised inside the resolver (aiohttp wraps OSErrors of resolvers); carries the refusal."""

    def __init__(self, refused: UrlRefused) -> None:
        super().__init__(refused.message)
        self.refused = refused


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, Teredo), if any."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    for net in _NAT64:
        if addr in net:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def parse_numeric_host(host: str) -> IpAddress | None:
    """The address a numeric host means, accepting the legacy IPv4 forms ``inet_aton`` accepts.

    ``"2130706433"``, ``"0x7f000001"``, ``"127.1"`` and ``"0177.0.0.1"`` all mean 127.0.0.1.
    Returns None for host names.
    """
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        pass
    if "%" in h:  # zone id
        try:
            return ipaddress.ip_address(h.split("%", 1)[0])
        except ValueError:
            return None
    parts = h.split(".")
    if not h or not all(p and (p.isdigit() or p.lower().startswith("0x")) for p in parts):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(h))
    except OSError:
        return None


@dataclass(frozen=True)
class CheckedUrl:
    """A URL the guard accepted: the URL to request (numeric hosts in canonical form) and its host."""

    url: URL
    host: str


class SsrfGuard:
    """Judges URLs and addresses against the allowlist and the global-address rule.

    Args:
        allowlist: host names, IP addresses and CIDRs (``settings.network.allowlist``).

    Example:
        >>> SsrfGuard(["10.0.0.0/8"]).check_url("http://10.1.2.3/x").host
        '10.1.2.3'
        >>> SsrfGuard().check_address("::ffff:127.0.0.1")
        'global-address'
    """

    def __init__(self, allowlist: Iterable[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.wildcards: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in allowlist:
            item = item.strip().lower()
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if item.startswith("*."):
                self.wildcards.append(item[1:])
            else:
                self.hosts.add(item.rstrip("."))
        self._checked: dict[str, CheckedUrl] = {}

    def host_allowlisted(self, host: str) -> bool:
        h = host.lower().rstrip(".")
        return h in self.hosts or any(h.endswith(w) for w in self.wildcards)

    def check_address(self, address: str | IpAddress) -> str | None:
        """None when ``address`` may be reached, else the name of the rule that refuses it."""
        addr = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(addr in net for net in self.networks if net.version == addr.version):
            return None
        if isinstance(addr, ipaddress.IPv6Address):
            v4 = embedded_ipv4(addr)
            if v4 is not None:
                if any(v4 in net for net in self.networks if net.version == 4):
                    return None
                if not v4.is_global:
                    return "global-address"
        return None if addr.is_global else "global-address"

    def check_url(self, url: str | URL) -> CheckedUrl:
        """Check the parts of a URL that need no DNS; numeric hosts are judged here.

        Raises:
            InvalidRequest: the URL cannot be parsed.
            UrlRefused: a rule refuses it (``rule`` says which).
        """
        key = str(url)
        hit = self._checked.get(key)
        if hit is not None:
            return hit
        checked = self._check_url(url)
        if len(self._checked) >= 4096:
            self._checked.clear()
        self._checked[key] = checked
        return checked

    def _check_url(self, url: str | URL) -> CheckedUrl:
        try:
            u = url if isinstance(url, URL) else URL(str(url))
        except (ValueError, TypeError) as e:
            raise InvalidRequest(
                f"URL {str(url)[:200]!r} is not valid: {e}", hint="send an absolute http(s) URL"
            ) from None
        if u.scheme and u.scheme.lower() not in ("http", "https"):
            raise _refused(str(url), "scheme", f"scheme {u.scheme!r} is not allowed; only http and https are")
        if not u.is_absolute() or not u.scheme:
            raise InvalidRequest(f"URL {str(url)[:200]!r} is not absolute", hint="send an absolute http(s) URL")
        host = u.raw_host
        if not host:
            raise InvalidRequest(f"URL {str(url)[:200]!r} has no host", hint="send an absolute http(s) URL")
        if u.raw_user is not None or u.raw_password is not None:
            raise _refused(str(url), "userinfo", "credentials in the URL (user@host) are not allowed")
        if self.host_allowlisted(host):
            return CheckedUrl(u, host)
        numeric = parse_numeric_host(host)
        if numeric is not None:
            rule = self.check_address(numeric)
            if rule is not None:
                raise _refused(
                    str(url), rule, f"address {numeric} (host {host!r}) is not global and not in the allowlist"
                )
            canonical = str(numeric) if numeric.version == 4 else f"[{numeric}]"
            if canonical.strip("[]") != host.strip("[]"):
                u = u.with_host(str(numeric))
            return CheckedUrl(u, str(numeric))
        return CheckedUrl(u, host)

    def check_resolved(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses of ``host`` that pass; raises :class:`UrlRefused` if any is refused.

        Every address must pass (a name that resolves to one internal address among global ones
        is refused: the connection could go to either).
        """
        addrs = list(addresses)
        if self.host_allowlisted(host):
            return addrs
        if not addrs:
            raise _refused(host, "resolution", f"host {host!r} did not resolve to any address")
        for a in addrs:
            rule = self.check_address(a.split("%", 1)[0])
            if rule is not None:
                raise _refused(
                    host, rule, f"host {host!r} resolves to {a}, which is not global and not in the allowlist"
                )
        return addrs


def _refused(url: str, rule: str, why: str) -> UrlRefused:
    return UrlRefused(
        f"URL {url[:200]!r} refused by the SSRF guard (rule {rule!r}): {why}",
        hint="request a public http(s) URL, or add the host or its CIDR to settings.network.allowlist",
        rule=rule,
    )


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that resolves once and lets the connector use only checked addresses."""

    def __init__(self, guard: SsrfGuard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        numeric = parse_numeric_host(host)
        if numeric is not None:
            infos: list[Any] = [
                (socket.AF_INET if numeric.version == 4 else socket.AF_INET6, 0, 0, "", (str(numeric), port))
            ]
        else:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        addresses = [info[4][0] for info in infos]
        try:
            self.guard.check_resolved(host, addresses)
        except UrlRefused as e:
            raise GuardRefusal(e) from None
        out: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            out.append(
                {
                    "hostname": host,
                    "host": sockaddr[0],
                    "port": port,
                    "family": fam,
                    "proto": proto,
                    "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                }
            )
        return out

    async def close(self) -> None:
        return None


__all__ = ["SsrfGuard", "GuardedResolver", "GuardRefusal", "CheckedUrl", "embedded_ipv4", "parse_numeric_host"]
