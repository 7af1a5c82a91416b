"""Helpers for the site service's tests: a site file, the service as a child process, a
webhook receiver that keeps what it gets, and a pick node with many slots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from agent.oms.demo.broker import LocalBroker
from tests.harness import SITE

TOKEN = "test-token-0123456789abcdef"


def site_file(
    tmp_path: Path,
    broker: LocalBroker | None,
    *,
    name: str = "site",
    log: str = "",
    extra: str = "",
    allow_networks: tuple[str, ...] = ("127.0.0.0/8", "::1"),
) -> Path:
    """A site file for the test broker; ``log`` replaces the [log] table's body.

    Webhooks may go to ``allow_networks`` (loopback: the tests' receivers) and public
    addresses.
    """
    lines = [
        f'site = "{SITE}"',
        "[broker]",
        f'urls = ["{broker.url if broker else "mqtt://127.0.0.1:1"}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
        "[log]",
        log or f'path = "{tmp_path / (name + ".db")}"',
        "[webhooks]",
        "retry_s = [0.05, 0.1, 0.2]",
        "timeout_s = 5",
        f"allow_networks = {json.dumps(list(allow_networks))}",
        extra,
    ]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class SiteProcess:
    """``zone-agent site serve FILE --port 0`` as a child process."""

    def __init__(
        self, path: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        self.path = path
        self.args = args
        self.ready = path.with_suffix(".ready")
        self.log = path.with_suffix(".log")
        self.env = {**os.environ, "ZONE_AGENT_SITE_TOKENS": TOKEN, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.ready_data: dict[str, Any] = {}

    def start(self, timeout: float = 30) -> None:
        """Start it and wait until its API listens."""
        self.ready.unlink(missing_ok=True)
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "site",
                "serve",
                str(self.path),
                "--port",
                "0",
                "--ready-file",
                str(self.ready),
                *self.args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"site service exited {self.proc.returncode}:\n{self.text()}")
            try:
                data = json.loads(self.ready.read_text())
                if data["pid"] == self.proc.pid:
                    self.url = data["url"]
                    self.ready_data = data
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"site service not ready in {timeout} s:\n{self.text()}")

    def text(self) -> str:
        """What it printed."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        """An HTTP client of its API."""
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=40)

    def wait_role(self, role: str, timeout: float = 30) -> None:
        """Wait until its health says ``role``."""
        deadline = time.monotonic() + timeout
        seen = None
        with self.client() as api:
            while time.monotonic() < deadline:
                seen = api.get("/v1/health").json()["role"]
                if seen == role:
                    return
                time.sleep(0.05)
        raise AssertionError(f"role {seen}, expected {role}:\n{self.text()}")

    def kill(self) -> None:
        """SIGKILL."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def stop(self) -> None:
        """Make sure it is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Receiver:
    """A webhook endpoint on ``host`` (a loopback address) that keeps every request.

    ``fail`` requests are answered ``fail_status`` first (retries, disabling), and every
    request whose body ``fail_when`` says so; with a ``Location: location`` header when
    that is set (a redirect).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.fail = 0
        self.fail_when: Callable[[bytes], bool] | None = None
        self.fail_status = 500
        self.location: str | None = None
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    status = 204
                    if receiver.fail > 0:
                        receiver.fail -= 1
                        status = receiver.fail_status
                    elif receiver.fail_when is not None and receiver.fail_when(body):
                        status = receiver.fail_status
                    else:
                        receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(status)
                if status != 204 and receiver.location is not None:
                    self.send_header("location", receiver.location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        """Every event received, in order (batches unpacked)."""
        out: list[dict[str, Any]] = []
        with self.lock:
            for _, body in self.got:
                data = json.loads(body)
                out.extend(data["data"]["events"] if data["type"] == "events" else [data["data"]])
        return out


def pick_node(tmp_path: Path, broker: LocalBroker, node: str, slots: int) -> Path:
    """A pick node of ``slots`` LED + confirm slots on simulated GPIO (A1.., 2 pins each)."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{node}"',
        'role = "pick"',
        f'state_dir = "{tmp_path / node}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
        "double_press_s = 0",
    ]
    for i in range(slots):
        lines += [
            "[[devices.slots]]",
            f'id = "{node}-S{i + 1}"',
            f"led = {2 + 2 * i}",
            f"confirm = {3 + 2 * i}",
        ]
    path = tmp_path / f"{node}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
