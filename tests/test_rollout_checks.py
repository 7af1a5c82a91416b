"""Rollout mistakes stop with exit 2 and ``file:line: field: reason``, before they loop.

systemd restarts a node that exits 1 and leaves one that exits 2 (the unit's
RestartPreventExitStatus=2): a CA, certificate or key file that is not there, and an HTTP
port another program holds, cannot be fixed by a restart. Certificates are made by openssl
as an installer would; the port is held by a real listening socket.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.config import HttpConfig, load_config
from agent.errors import ConfigError
from agent.oms.demo.broker import free_port
from tests.harness import node_file, node_in_process
from tests.test_security_e2e import make_pki

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


class _NoBroker:
    """A broker URL nothing answers on: these nodes stop before they would connect."""

    url = "mqtts://127.0.0.1:1"


def tls_node(tmp_path: Path, pki: Path, **names: str) -> Path:
    """A pick node with a client certificate; ``names`` replace the files' names."""
    files = {"ca_file": "ca.crt", "cert_file": "client.crt", "key_file": "client.key", **names}
    extra = "".join(f'{field} = "{pki / name}"\n' for field, name in files.items())
    return node_file(tmp_path, _NoBroker(), extra=extra)  # type: ignore[arg-type]


def line_of(path: Path, key: str) -> int:
    """The 1-based line ``key = ...`` is written on."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(f"{key} ="))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    folder = tmp_path_factory.mktemp("pki")
    make_pki(folder)
    return folder


@needs_openssl
def test_good_tls_files_pass_check_config(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(tls_node(tmp_path, pki))]) == 0, capsys.readouterr().err


@needs_openssl
@pytest.mark.parametrize("field", ["ca_file", "cert_file", "key_file"])
def test_a_missing_tls_file_is_exit_2_at_check_config_and_at_run(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str], field: str
) -> None:
    path = tls_node(tmp_path, pki, **{field: f"missing-{field}.pem"})
    expected = (
        f"{path}:{line_of(path, field)}: broker.{field}: {pki}/missing-{field}.pem: no such file"
    )
    assert main(["check-config", str(path)]) == 2
    assert expected in capsys.readouterr().err.splitlines()
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err.splitlines() and "Traceback" not in err


@needs_openssl
def test_a_key_of_another_certificate_is_named(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tls_node(tmp_path, pki, key_file="server.key")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    where = f"{path}:{line_of(path, 'key_file')}: broker.key_file: "
    assert err.startswith(where + f"{pki}/client.crt and {pki}/server.key do not make"), err
    assert "KEY_VALUES_MISMATCH" in err


@needs_openssl
def test_a_ca_file_that_is_no_certificate_is_named(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tls_node(tmp_path, pki, ca_file="client.csr")  # a request, not a certificate
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:{line_of(path, 'ca_file')}: broker.ca_file: "), err
    assert "no PEM certificate in it" in err


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_http_port_in_use_is_exit_2_with_the_line_at_run(
    tmp_path: Path, held_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    path = node_file(tmp_path, _NoBroker(), extra=f"[http]\nport = {held_port}\n")  # type: ignore[arg-type]
    path.write_text(path.read_text().replace("mqtts://", "mqtt://"))
    assert main(["check-config", str(path)]) == 0  # a port is only taken at run time
    capsys.readouterr()
    assert main(["run", str(path), "--simulate"]) == 2
    err = capsys.readouterr().err
    line = line_of(path, "port")
    expected = f"{path}:{line}: http.port: 127.0.0.1:{held_port} is already in use"
    assert expected in err and "Traceback" not in err, err


def test_metrics_port_in_use_names_its_own_field(
    tmp_path: Path, held_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = f"[http]\nmetrics_port = {held_port}\n"
    path = node_file(tmp_path, _NoBroker(), extra=extra)  # type: ignore[arg-type]
    path.write_text(path.read_text().replace("mqtts://", "mqtt://"))
    assert main(["run", str(path), "--simulate"]) == 2
    err = capsys.readouterr().err
    expected = f"{path}:{line_of(path, 'metrics_port')}: http.metrics_port: 127.0.0.1:{held_port}"
    assert expected in err and "Traceback" not in err, err


# ----- /metrics for the LAN on a listener of its own -----


def test_nothing_but_the_local_screen_listens_by_default() -> None:
    http = HttpConfig()
    assert (http.bind, http.metrics_bind, http.metrics_port) == ("127.0.0.1", "127.0.0.1", None)


def test_metrics_port_cannot_be_the_screens(tmp_path: Path) -> None:
    path = node_file(tmp_path, _NoBroker(), extra="[http]\nport = 9100\nmetrics_port = 9100\n")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"http\.metrics_port: .*is the screen's port"):
        load_config(path, env={})


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.broker
def test_the_metrics_listener_serves_metrics_and_nothing_else(
    tmp_path: Path, broker: object
) -> None:
    metrics_port = free_port()
    extra = f'[http]\nmetrics_bind = "127.0.0.1"\nmetrics_port = {metrics_port}\n'
    path = node_file(tmp_path, broker, extra=extra)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with node_in_process(path) as running:
            control = (running.config.state_dir / "control.json").read_text()
            screen = control.split('"url": "')[1].split('"')[0]
            lan = f"http://127.0.0.1:{metrics_port}"
            results = await asyncio.gather(
                *(
                    asyncio.to_thread(_get, url)
                    for url in (
                        f"{lan}/metrics",
                        f"{lan}/api/state",
                        f"{lan}/",
                        f"{lan}/sim",
                        f"{screen}/api/state",
                        f"{screen}/metrics",
                    )
                )
            )
            (metrics, state, page, sim, screen_state, screen_metrics) = results
            assert metrics[0] == 200 and "zone_node_info{" in metrics[1]
            assert "process_resident_memory_bytes" in metrics[1]
            for status, body in (state, page, sim):
                assert status == 404 and "serves GET /metrics only" in body
            assert screen_state[0] == 200 and '"node":"zone-a1"' in screen_state[1]
            assert screen_metrics[0] == 200  # the kiosk's server keeps it too

    asyncio.run(scenario())
