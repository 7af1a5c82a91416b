"""Webhook URLs against server-side request forgery (SSRF).

Anyone with an API token registers the URLs the service then POSTs the site's events to; a
URL must not turn the service into a way into the machine (loopback: the broker's admin
port, the API itself), the cloud's metadata service (169.254.169.254) or the LAN. The rules,
after OWASP's SSRF cheat sheet (case 2: "any external address", a block list plus an allow
list) and the webhook senders that do this well (Svix's ``whitelist_subnets`` resolver,
Stripe's Smokescreen, GitLab's "requests to the local network"):

1. ``http`` or ``https`` only, and no ``user:password@`` (it would be stored and listed with
   the endpoint; a receiver authenticates a message by its ``webhook-signature``).
2. Every address the host has is public (not loopback, private, link-local, shared, reserved,
   documentation, multicast..., IPv4 inside IPv6 included), or inside the site file's
   ``[webhooks] allow_networks`` (the warehouse LAN; loopback for the demo and the tests).
   Unspecified (``0.0.0.0``: this host) and multicast addresses never.
3. Plain ``http`` only when every address is inside ``allow_networks``: events leave the
   site's own networks encrypted (the signature stops forgery, not reading). ``https_only``
   refuses plain http everywhere.

The API checks a URL when it is registered (422, the rule that failed). Delivery checks it
again for every request (a stored URL, a changed site file), and a name at every connection
it opens (DNS that now answers otherwise: DNS rebinding): the connector below resolves the
name itself (no cache), checks each address and hands aiohttp only the addresses it checked
to connect to, while the Host header, TLS SNI and the certificate check keep the name.
Names resolve on a small pool of threads of their own, so a slow DNS server does not take
the threads the event log works on. webhooks.py never follows a redirect (a 3xx is a failed
attempt), reads at most the start of an answer and bounds an attempt, resolution included,
by ``[webhooks] timeout_s``.

Environment proxies (``HTTPS_PROXY``) are not used for webhooks: the guard checks the
address it connects to, which would be the proxy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from socket import getaddrinfo
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.tracing import Trace

    from agent.oms.site.settings import WebhookConfig

log = logging.getLogger("agent.oms.site.urlguard")

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

RESOLVE_TIMEOUT_S = 5.0
"""The longest a registration waits for DNS."""

_DNS_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns")

# IANA's special-purpose address registries, the blocks that are not globally reachable
# (written out rather than taken from ipaddress.is_global, whose answers vary between
# Python versions: 3.11 calls multicast global). Checked in order: the first match names why.
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("0.0.0.0/32", "unspecified (this host)"),
        ("0.0.0.0/8", "'this network'"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.169.254/32", "link-local (the cloud metadata service)"),
        ("169.254.0.0/16", "link-local"),
        ("10.0.0.0/8", "private"),
        ("172.16.0.0/12", "private"),
        ("192.168.0.0/16", "private"),
        ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("198.18.0.0/15", "benchmarking"),
        ("255.255.255.255/32", "broadcast"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified (this host)"),
        ("::1/128", "loopback"),
        ("fd00:ec2::254/128", "unique-local (the cloud metadata service)"),
        ("fc00::/7", "unique-local"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignment"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("::/96", "IPv4-compatible (deprecated)"),
    )
)
_NEVER = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/32", "255.255.255.255/32", "224.0.0.0/4", "::/128", "ff00::/8")
)
"""Not a receiver's address even when allowed: 0.0.0.0 connects to this host."""
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

_plain_http: ContextVar[bool] = ContextVar("webhook_plain_http", default=False)
"""Whether the request that opens a connection is plain http (set by ``GuardedConnector``)."""


def _is_name(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


class Refused(Exception):
    """A webhook URL or address the rules refuse; the message says which rule and why."""

    def __init__(self, reason: str, address: IPAddress | None = None) -> None:
        super().__init__(reason)
        self.address = address


def canonical(ip: IPAddress) -> IPAddress:
    """``ip``, an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 it maps."""
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def not_public(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address; ``None`` when it is one."""
    ip = canonical(ip)
    if isinstance(ip, IPv6Address):
        # IPv4 carried inside IPv6 reaches that IPv4 address through a gateway.
        if ip in _NAT64:
            inner: IPv4Address | None = IPv4Address(int(ip) & 0xFFFFFFFF)
        else:
            inner = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None and (why := not_public(inner)) is not None:
            return f"{why}, as IPv4 inside IPv6"
    for network, why in _SPECIAL:
        if ip.version == network.version and ip in network:
            return why
    return None


class UrlGuard:
    """The rules for webhook URLs of one site (module docstring).

    Args:
        allow_networks: non-public networks receivers may be in (``[webhooks]``).
        https_only: refuse plain http everywhere.
        resolve_timeout_s: the longest to wait for DNS.
    """

    def __init__(
        self,
        allow_networks: Iterable[IPNetwork] = (),
        https_only: bool = False,
        resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        self.allow_networks = tuple(allow_networks)
        self.https_only = https_only
        self.resolve_timeout_s = resolve_timeout_s

    @classmethod
    def from_settings(cls, settings: WebhookConfig) -> UrlGuard:
        """The guard of a site file's ``[webhooks]`` table."""
        return cls(
            settings.allow_networks,
            settings.https_only,
            min(RESOLVE_TIMEOUT_S, settings.timeout_s),
        )

    def allowed_inside(self, ip: IPAddress) -> bool:
        """Whether ``ip`` is inside ``allow_networks``."""
        ip = canonical(ip)
        return any(ip.version == n.version and ip in n for n in self.allow_networks)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why a webhook may not connect to ``ip``; ``None`` when it may."""
        plain = canonical(ip)
        if any(plain.version == n.version and plain in n for n in _NEVER):
            return f"{not_public(plain)}, never a receiver"
        if self.allowed_inside(plain):
            return None
        why = not_public(plain)
        if why is None:
            return None
        return f"{why}, not in [webhooks] allow_networks"

    def check_url(self, url: str | URL, auth: bool = False) -> URL:
        """The URL as delivery sees it, if its scheme, credentials and host pass (rule 1).

        ``auth``: the request carries credentials from elsewhere than the URL.
        """
        try:
            parsed = url if isinstance(url, URL) else URL(url)
        except (TypeError, ValueError) as exc:
            raise Refused(f"not a URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise Refused(f"the scheme is {parsed.scheme!r}: http or https only")
        if parsed.raw_user or parsed.raw_password or auth:
            raise Refused(
                "credentials in the URL (user:password@) are refused: they would be stored and "
                "listed with the endpoint; a receiver checks the webhook-signature instead"
            )
        if not parsed.raw_host:
            raise Refused("the URL has no host")
        if self.https_only and parsed.scheme != "https":
            raise Refused("plain http: this site takes https only ([webhooks] https_only)")
        return parsed

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The addresses of ``host`` (an address itself, or a name asked of DNS)."""
        with contextlib.suppress(ValueError):
            return [ipaddress.ip_address(host)]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                infos = await loop.run_in_executor(
                    _DNS_POOL,
                    functools.partial(getaddrinfo, host, port, type=socket.SOCK_STREAM),
                )
        except TimeoutError:
            raise Refused(f"{host}: no answer from DNS in {self.resolve_timeout_s:g} s") from None
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise Refused(f"{host} does not resolve ({reason})") from None
        found: list[IPAddress] = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(str(sockaddr[0]))
                if ip not in found:
                    found.append(ip)
        if not found:
            raise Refused(f"{host} has no IPv4 or IPv6 address")
        return found

    async def addresses(self, host: str, port: int, plain_http: bool) -> list[IPAddress]:
        """Every address of ``host``, each allowed (rules 2 and 3); ``Refused`` otherwise."""
        found = await self.resolve(host, port)
        for ip in found:
            why = self.refusal(ip)
            if why is not None:
                what = f"{host} resolves to an address that" if _is_name(host) else host
                raise Refused(f"{what} is {why}", ip)
        if plain_http and not all(self.allowed_inside(ip) for ip in found):
            raise Refused(
                "plain http to a public address: use https (the signature stops forgery, "
                "not reading), or allow the receiver's network in [webhooks] allow_networks"
            )
        return found

    async def check(self, url: str) -> None:
        """Check a URL being registered (``Refused`` says which rule failed)."""
        parsed = self.check_url(url)
        assert parsed.raw_host is not None and parsed.port is not None  # http(s) has both
        await self.addresses(parsed.raw_host, parsed.port, parsed.scheme == "http")


class RefusedConnection(aiohttp.ClientConnectionError):
    """A delivery's connection the rules refuse: a failed attempt, like one not answered."""


class _GuardedResolver(AbstractResolver):
    """Resolves a name to the addresses the guard allows, or refuses the connection."""

    def __init__(self, guard: UrlGuard) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The checked addresses of ``host`` (``RefusedConnection`` if one is not allowed)."""
        try:
            found = await self.guard.addresses(host, port, _plain_http.get())
        except Refused as exc:
            log.warning("webhook: %s:%d refused (%s): %s", host, port, exc.address, exc)
            raise RefusedConnection(f"refused: {exc}") from None
        return [
            {
                "hostname": host,
                "host": str(ip),
                "port": port,
                "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for ip in found
        ]

    async def close(self) -> None:
        """Nothing to release (the pool of DNS threads is the module's)."""


class GuardedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, opening connections only where the guard allows.

    A name is resolved by the guard for every new connection (aiohttp's DNS cache is off:
    each connection is checked against what DNS says now); an address in the URL, which
    aiohttp connects to without asking a resolver, is checked here.
    """

    def __init__(self, guard: UrlGuard) -> None:
        super().__init__(resolver=_GuardedResolver(guard), use_dns_cache=False)
        self.guard = guard

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.connector.Connection:
        """A pooled or new connection for ``req``, if its URL passes the rules."""
        plain = not req.is_ssl()
        try:
            # aiohttp moves a URL's user:password@ into an Authorization header.
            url = self.guard.check_url(req.url, auth="authorization" in req.headers)
            assert url.raw_host is not None and url.port is not None
            if not _is_name(url.raw_host):
                await self.guard.addresses(url.raw_host, url.port, plain)
        except Refused as exc:
            raise RefusedConnection(f"refused: {exc}") from None
        # A new connection is resolved inside this call, in this task (the DNS cache is off):
        # the resolver reads the scheme from here.
        token = _plain_http.set(plain)
        try:
            return await super().connect(req, traces, timeout)
        finally:
            _plain_http.reset(token)


def connector(settings: WebhookConfig) -> GuardedConnector:
    """The connector a webhook session is made with (in the loop that uses it)."""
    return GuardedConnector(UrlGuard.from_settings(settings))
