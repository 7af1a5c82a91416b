"""Security: TLS is one setting away (mqtts://, CA file, client certificates); passwords
authenticate and never reach a log line or a message."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker, free_port
from tests.harness import SITE, node_file, node_in_process

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate for the node."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=zone-agent test CA",
        cwd=d,
    )
    for name, san in (("server", "IP:127.0.0.1"), ("client", "DNS:zone-a1")):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.crt",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )


def test_node_connects_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    make_pki(pki)
    tls_port = free_port()
    extra = (
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
        "require_certificate true\n"
    )
    with LocalBroker(tmp_path / "broker", extra_config=extra) as broker:
        tls = (
            f'ca_file = "{pki / "ca.crt"}"\ncert_file = "{pki / "client.crt"}"\n'
            f'key_file = "{pki / "client.key"}"\n'
        )
        path = node_file(tmp_path, broker, extra=tls)
        path.write_text(path.read_text().replace(broker.url, f"mqtts://127.0.0.1:{tls_port}"))

        async def scenario() -> None:
            oms = OmsClient(
                BrokerConfig(urls=[broker.url]), SITE
            )  # the OMS stays on plain loopback
            async with oms, node_in_process(path) as running:
                async with asyncio.timeout(10):
                    await running.node.online.wait()
                assert running.node.transport.url == f"mqtts://127.0.0.1:{tls_port}"
                assert (await oms.call("zone-a1", "ping", {})).status == "accepted"

        asyncio.run(scenario())


def test_an_untrusted_broker_is_refused(tmp_path: Path) -> None:
    pki, other = tmp_path / "pki", tmp_path / "other"
    make_pki(pki)
    make_pki(other)
    tls_port = free_port()
    extra = (
        f"listener {tls_port} 127.0.0.1\n"
        f"cafile {pki / 'ca.crt'}\ncertfile {pki / 'server.crt'}\nkeyfile {pki / 'server.key'}\n"
    )
    with LocalBroker(tmp_path / "broker", extra_config=extra) as broker:
        path = node_file(tmp_path, broker, extra=f'ca_file = "{other / "ca.crt"}"\n')
        path.write_text(path.read_text().replace(broker.url, f"mqtts://127.0.0.1:{tls_port}"))

        async def scenario() -> None:
            async with node_in_process(path) as running:
                await asyncio.sleep(1.5)
                assert not running.node.online.is_set()

        asyncio.run(scenario())


SECRET = "hunter2-Zq7-secret"


@pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed"
)
@pytest.mark.parametrize("password", [SECRET, "wrong-" + SECRET])
def test_password_authenticates_and_never_appears_in_logs(
    tmp_path: Path, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "zone-a1", SECRET], check=True)
    passwd.chmod(0o600)
    extra = f"password_file {passwd}\nper_listener_settings false\n"
    with LocalBroker(tmp_path / "broker", extra_config=extra) as broker:
        conf = broker.workdir / "mosquitto.conf"
        conf.write_text(conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
        broker.restart()
        path = node_file(tmp_path, broker, extra='username = "zone-a1"\n')
        caplog.set_level(logging.DEBUG)

        async def scenario() -> tuple[bool, bytes]:
            env = {"ZONE_AGENT_BROKER_PASSWORD": password}
            async with node_in_process(path, env=env) as running:
                assert running.config.broker.password is not None
                await asyncio.sleep(1.0)
                return running.node.online.is_set(), running.node._birth(
                    running.node.transport.link
                )

        online, birth = asyncio.run(scenario())
        assert online is (password == SECRET)
        assert "cannot connect" in caplog.text or online
        assert SECRET not in caplog.text
        assert SECRET.encode() not in birth
