"""Webhook URLs against SSRF (agent/oms/site/urlguard.py), without a broker.

The rules on addresses given literally; names through DNS, whose answers are the one thing
mocked (an OS fact: which address a name has); delivery through the real dispatcher, guarded
client and receivers on loopback sockets: a name that now resolves to a forbidden address is
refused at the connection, the address connected to is the one checked while the Host header
and the TLS name stay the name; the answer is read bounded, the attempt bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest

from agent.errors import ConfigError
from agent.oms.site import urlguard
from agent.oms.site.log import NewEvent, SqliteLog, Webhook, now_ms
from agent.oms.site.service import HeadNotifier
from agent.oms.site.settings import WebhookConfig, load_site
from agent.oms.site.urlguard import Refused, UrlGuard
from agent.oms.site.webhooks import Dispatcher, new_secret
from tests.site_harness import Receiver

real_getaddrinfo = socket.getaddrinfo


@contextlib.contextmanager
def dns(answers: dict[str, list[str]]) -> Iterator[dict[str, list[str]]]:
    """Names in ``answers`` resolve to those addresses (changeable while it runs)."""

    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            if not answers[host]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [
                (
                    socket.AF_INET6 if ":" in a else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (a, port, 0, 0) if ":" in a else (a, port),
                )
                for a in answers[host]
            ]
        return real_getaddrinfo(host, port, *args, **kwargs)

    with mock.patch.object(urlguard, "getaddrinfo", fake):
        yield answers


def check(guard: UrlGuard, url: str) -> str | None:
    """The refusal's reason, ``None`` when the URL may be registered."""
    try:
        asyncio.run(guard.check(url))
    except Refused as exc:
        return str(exc)
    return None


LAN = UrlGuard([ipaddress.ip_network("10.0.0.0/8")])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://169.254.10.1/", "link-local"),
        ("http://127.0.0.1:8910/v1/webhooks", "loopback"),
        ("http://2130706433:15672/api", "loopback"),  # 127.0.0.1 spelled as a number
        ("http://0x7f.1/", "loopback"),
        ("http://localhost:1883/", "loopback"),
        ("http://0.0.0.0:8910/", "unspecified"),
        ("https://192.168.1.10/hook", "private"),
        ("https://172.16.0.1/hook", "private"),
        ("https://100.64.0.1/hook", "shared"),
        ("https://224.0.0.1/", "multicast"),
        ("https://[::1]/", "loopback"),
        ("https://[fe80::1]/", "link-local"),
        ("https://[fd00::1]/", "unique-local"),
        ("https://[::ffff:127.0.0.1]/", "loopback"),
        ("https://[::ffff:a9fe:a9fe]/", "cloud metadata"),
        ("https://[64:ff9b::a9fe:a9fe]/", "cloud metadata"),  # NAT64 of 169.254.169.254
        ("https://[2002:c0a8:101::1]/", "private"),  # 6to4 of 192.168.1.1
        ("http://93.184.216.34/hook", "plain http to a public address"),
        ("https://oms:s3cret@93.184.216.34/hook", "credentials"),
        ("ftp://10.1.2.3/hook", "http or https only"),
        ("file:///etc/passwd", "http or https only"),
    ],
)
def test_a_url_to_an_address_neither_public_nor_allowed_is_refused(url: str, why: str) -> None:
    reason = check(LAN, url)
    assert reason is not None and why in reason, reason
    assert "s3cret" not in reason


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook",  # public, https
        "https://[2606:4700:4700::1111]/hook",
        "http://10.1.2.3:8080/hook",  # the allowed LAN: plain http too
        "https://10.200.0.1/hook",
    ],
)
def test_public_https_and_the_allowed_networks_are_accepted(url: str) -> None:
    assert check(LAN, url) is None


def test_https_only_and_the_addresses_never_allowed() -> None:
    strict = UrlGuard([ipaddress.ip_network("10.0.0.0/8")], https_only=True)
    assert "https only" in (check(strict, "http://10.1.2.3/hook") or "")
    assert check(strict, "https://10.1.2.3/hook") is None
    everything = UrlGuard([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")])
    assert check(everything, "http://192.168.1.10/hook") is None
    assert "never" in (check(everything, "http://0.0.0.0:8910/") or "")  # that is this host
    assert "never" in (check(everything, "http://[::]:8910/") or "")


def test_a_name_is_checked_by_every_address_it_has() -> None:
    with dns(
        {
            "erp.example.test": ["93.184.216.34", "2606:4700:4700::1111"],
            "split.example.test": ["93.184.216.34", "10.9.9.9"],
            "lan-oms.example.test": ["10.9.9.9"],
            "nowhere.example.test": [],
        }
    ):
        assert check(LAN, "https://erp.example.test/hook") is None
        assert check(UrlGuard(), "https://erp.example.test/hook") is None
        reason = check(UrlGuard(), "https://split.example.test/hook") or ""
        assert "split.example.test resolves to an address that is private" in reason
        assert "10.9.9.9" not in reason  # the API does not map the LAN for a caller
        assert check(LAN, "http://lan-oms.example.test/hook") is None
        assert "private" in (check(UrlGuard(), "http://lan-oms.example.test/hook") or "")
        assert "does not resolve" in (check(LAN, "https://nowhere.example.test/") or "")


def test_the_site_file_names_a_mistaken_network_by_line(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('site = "dc1"\n[webhooks]\nallow_networks = ["10.20.0.5/16"]\n')
    with pytest.raises(ConfigError) as err:
        load_site(path, env={})
    assert err.value.field == "webhooks.allow_networks"
    assert "'10.20.0.5/16' has host bits set: '10.20.0.0/16'?" in err.value.reason
    assert err.value.where(err.value.field).endswith(":3")
    path.write_text('site = "dc1"\n[webhooks]\nallow_networks = ["10.20.0.0/16", "::1"]\n')
    assert load_site(path, env={}).webhooks.allow_networks == (
        ipaddress.ip_network("10.20.0.0/16"),
        ipaddress.ip_network("::1/128"),
    )


# --- delivery ----------------------------------------------------------------------------


def receivers_on_one_port() -> tuple[Receiver, Receiver]:
    """A receiver on 127.0.0.2 and a trap on 127.0.0.1, at the same port."""
    for _ in range(20):
        allowed = Receiver(host="127.0.0.2")
        port = allowed.server.server_address[1]
        try:
            trap = Receiver(host="127.0.0.1", port=port)
        except OSError as exc:
            allowed.server.server_close()
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return allowed, trap
    raise AssertionError("no port free on both 127.0.0.1 and 127.0.0.2")


async def until(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_a_name_rebound_to_a_forbidden_address_is_refused_at_delivery(tmp_path: Path) -> None:
    allowed, trap = receivers_on_one_port()
    port = allowed.server.server_address[1]
    url = f"http://hooks.example.test:{port}/hook"
    settings = WebhookConfig(retry_s=[0.05], timeout_s=5, allow_networks=["127.0.0.2/32"])
    log = SqliteLog(tmp_path / "site.db")

    async def scenario() -> None:
        head = HeadNotifier()
        dispatcher = Dispatcher(log, settings, head)
        guard = UrlGuard.from_settings(settings)
        try:
            with dns({"hooks.example.test": ["127.0.0.2"]}) as answers:
                await guard.check(url)  # registered while it resolved to the LAN receiver
                hook = Webhook("wh_rebind", url, new_secret(), (), 1, True, 0, 0, "", now_ms())
                await asyncio.to_thread(log.add_webhook, hook)
                await dispatcher.start()

                async def emit(n: int) -> None:
                    event = NewEvent("n1", "s1", n, "rebind_check", now_ms(), {"n": n})
                    await asyncio.to_thread(log.append, [event])
                    head.notify(await asyncio.to_thread(log.head))

                await emit(1)

                async def delivered() -> bool:
                    return len(allowed.events()) == 1

                await until(delivered)
                headers, _ = allowed.got[0]
                assert headers["host"] == f"hooks.example.test:{port}"

                answers["hooks.example.test"] = ["127.0.0.1"]  # DNS rebinding
                await emit(2)

                async def disabled() -> bool:
                    found = await asyncio.to_thread(log.webhook, "wh_rebind")
                    return found is not None and not found.enabled

                await until(disabled)
                attempts = await asyncio.to_thread(log.attempts, "wh_rebind")
                assert [a["status"] for a in attempts] == [0, 0]
                for attempt in attempts:
                    assert "refused" in attempt["error"], attempt
                    assert (
                        "hooks.example.test resolves to an address that is loopback"
                        in (attempt["error"])
                    )
                assert trap.got == [] and len(allowed.events()) == 1
        finally:
            await dispatcher.close()

    with allowed, trap:
        asyncio.run(asyncio.wait_for(scenario(), 60))
    log.close()


def test_stored_urls_the_rules_now_refuse_are_refused_at_delivery(tmp_path: Path) -> None:
    # Registered under an older site file, or before the rules: every request is checked.
    allowed, trap = receivers_on_one_port()
    port = allowed.server.server_address[1]
    settings = WebhookConfig(retry_s=[0.05], timeout_s=5, allow_networks=["127.0.0.2/32"])
    log = SqliteLog(tmp_path / "site.db")
    stored = {
        "wh_loopback": (f"http://127.0.0.1:{port}/hook", "127.0.0.1 is loopback, not in"),
        "wh_mapped": (f"http://[::ffff:127.0.0.1]:{port}/hook", "is loopback, not in"),
        "wh_userinfo": (f"http://oms:pw@127.0.0.2:{port}/hook", "credentials in the URL"),
        "wh_scheme": (f"ftp://127.0.0.2:{port}/hook", "NonHttpUrlClientError"),  # aiohttp's
    }

    async def scenario() -> None:
        head = HeadNotifier()
        dispatcher = Dispatcher(log, settings, head)
        try:
            for hook_id, (url, _) in stored.items():
                hook = Webhook(hook_id, url, new_secret(), (), 1, True, 0, 0, "", now_ms())
                await asyncio.to_thread(log.add_webhook, hook)
            event = NewEvent("n1", "s1", 1, "stored_check", now_ms(), {"n": 1})
            await asyncio.to_thread(log.append, [event])
            head.notify(await asyncio.to_thread(log.head))
            await dispatcher.start()

            async def all_disabled() -> bool:
                return not any(h.enabled for h in await asyncio.to_thread(log.webhooks))

            await until(all_disabled)
            for hook_id, (_, why) in stored.items():
                attempts = await asyncio.to_thread(log.attempts, hook_id)
                assert [a["status"] for a in attempts] == [0, 0], (hook_id, attempts)
                assert all(why in a["error"] for a in attempts), (hook_id, attempts)
        finally:
            await dispatcher.close()

    with allowed, trap:
        asyncio.run(asyncio.wait_for(scenario(), 60))
        assert trap.got == [] and allowed.got == []
    log.close()


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_https_connects_to_the_checked_address_under_the_name(tmp_path: Path) -> None:
    cert, key = make_certificate(tmp_path, "hooks.example.test")
    other_cert, _ = make_certificate(tmp_path, "other.example.test")
    server_names: list[str | None] = []
    hosts: list[str] = []
    ports: list[int] = []

    async def scenario() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        context.sni_callback = lambda sock, name, ctx: server_names.append(name)

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("host:"):
                        hosts.append(line.split(":", 1)[1].strip())
                writer.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.2", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        ports.append(port)
        trusted = ssl.create_default_context(cafile=str(cert))
        trusted.load_verify_locations(cafile=str(other_cert))
        guard = UrlGuard([ipaddress.ip_network("127.0.0.2/32")])
        async with (
            server,
            aiohttp.ClientSession(connector=urlguard.GuardedConnector(guard)) as session,
        ):
            with dns({"hooks.example.test": ["127.0.0.2"], "other.example.test": ["127.0.0.2"]}):
                url = f"https://hooks.example.test:{port}/hook"
                async with session.post(url, data=b"{}", ssl=trusted) as ok:
                    assert ok.status == 204
                # The certificate is checked against the name in the URL, not the address.
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    other = f"https://other.example.test:{port}/hook"
                    async with session.post(other, data=b"{}", ssl=trusted):
                        pass

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert server_names[:2] == ["hooks.example.test", "other.example.test"]
    assert hosts == [f"hooks.example.test:{ports[0]}"]  # the refused one sent nothing


def test_the_answer_is_read_bounded_and_the_attempt_bounded_in_time(tmp_path: Path) -> None:
    written: list[int] = []
    settings = WebhookConfig(retry_s=[0.05], timeout_s=1.5, allow_networks=["127.0.0.0/8"])
    log = SqliteLog(tmp_path / "site.db")

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 500 Oops\r\ncontent-length: 1000000000\r\n\r\n")
        sent = 0
        try:
            while sent < 1_000_000_000:
                writer.write(b"x" * 65536)
                await writer.drain()
                sent += 65536
        except ConnectionError:
            pass
        written.append(sent)
        writer.close()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(200):  # a header line every 0.1 s: no single read waits long
                writer.write(b"x-wait: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)
        writer.close()

    async def scenario() -> None:
        head = HeadNotifier()
        dispatcher = Dispatcher(log, settings, head)
        big = await asyncio.start_server(flood, "127.0.0.1", 0)
        slow = await asyncio.start_server(drip, "127.0.0.1", 0)
        try:
            async with big, slow:
                for name, server in (("wh_big", big), ("wh_slow", slow)):
                    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
                    hook = Webhook(name, url, new_secret(), (), 1, True, 0, 0, "", now_ms())
                    await asyncio.to_thread(log.add_webhook, hook)
                event = NewEvent("n1", "s1", 1, "bounded_check", now_ms(), {"n": 1})
                await asyncio.to_thread(log.append, [event])
                head.notify(await asyncio.to_thread(log.head))
                start = time.monotonic()
                await dispatcher.start()

                async def both_disabled() -> bool:
                    hooks = await asyncio.to_thread(log.webhooks)
                    return not any(h.enabled for h in hooks)

                await until(both_disabled)
                took = time.monotonic() - start
                big_attempts = await asyncio.to_thread(log.attempts, "wh_big")
                slow_attempts = await asyncio.to_thread(log.attempts, "wh_slow")
                for _ in range(100):
                    if written:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await dispatcher.close()
        assert [(a["status"], a["error"]) for a in big_attempts] == [(500, "x" * 200)] * 2
        assert [a["status"] for a in slow_attempts] == [0, 0]
        assert all("Timeout" in a["error"] for a in slow_attempts), slow_attempts
        assert took < 2 * 1.5 + 1.5, took  # two attempts of at most timeout_s each

    asyncio.run(asyncio.wait_for(scenario(), 60))
    log.close()
    # The receiver could push only what the sockets' buffers hold before the reader stopped.
    assert written and written[0] < 64 * 1024 * 1024, written
