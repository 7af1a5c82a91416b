"""Private NATS and RabbitMQ brokers on loopback, single or as a 3-member cluster.

For the tests and the benchmarks, like :mod:`agent.oms.demo.broker` for Mosquitto: every
member listens on 127.0.0.1 only (client, cluster, MQTT, Erlang distribution and epmd
ports, all free ones), keeps its data in ``workdir`` and can be killed (SIGKILL, no chance
to hand anything over) and started again on the same ports. Each member runs with the
settings a cluster needs for failover (see docs/brokers/): NATS ``mqtt { stream_replicas:
3 }``, RabbitMQ ``mqtt.durable_queue_type = quorum``; ``failover_settings=False`` leaves
the broker's defaults, to show what breaks without them.

A member is ready when a real MQTT client gets a persistent session and a QoS 1
subscription from it (on NATS that needs the JetStream streams, on RabbitMQ the plugin and
its queue): an open port alone is not enough.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from agent.errors import LinkUnavailable
from agent.oms.demo.broker import die_with_parent, free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")


def find_nats() -> str:
    """The nats-server binary (Debian: /usr/sbin/nats-server)."""
    found = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if found is None:
        raise LinkUnavailable("nats-server is not installed (sudo apt-get install nats-server)")
    return found


def find_rabbitmq() -> Path:
    """RabbitMQ's own scripts (Debian's /usr/sbin ones switch to the rabbitmq user)."""
    server = RABBITMQ_BIN / "rabbitmq-server"
    if not server.exists():
        raise LinkUnavailable(
            "rabbitmq-server is not installed (sudo apt-get install rabbitmq-server)"
        )
    return RABBITMQ_BIN


def missing_broker(kind: str) -> str | None:
    """Why a ``kind`` ("nats" or "rabbitmq") broker cannot be started here, or ``None``."""
    try:
        find_nats() if kind == "nats" else find_rabbitmq()
    except LinkUnavailable as exc:
        return str(exc)
    return None


# --- a minimal MQTT 3.1.1 probe (no client library: agent/link/transport.py owns aiomqtt) --


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _mqtt_packet(first: int, body: bytes) -> bytes:
    length, out = len(body), bytearray([first])
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    head = sock.recv(1)
    if not head:
        raise OSError("closed")
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)
        if not byte:
            raise OSError("closed")
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise OSError("closed")
        body += chunk
    return head[0], body


def mqtt_probe(
    port: int,
    client_id: str,
    *,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 2.0,
) -> bool:
    """Whether the broker on ``port`` gives a persistent session and a QoS 1 subscription.

    The session is removed again (a clean-session connect), so a probe leaves nothing.
    """
    flags = 0x00
    payload = _mqtt_string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += _mqtt_string(password)
    try:
        for clean in (False, True):
            with socket.create_connection(("127.0.0.1", port), timeout) as sock:
                sock.settimeout(timeout)
                connect = _mqtt_string("MQTT") + bytes([4, flags | (0x02 if clean else 0)])
                sock.sendall(_mqtt_packet(0x10, connect + struct.pack("!H", 30) + payload))
                kind, body = _read_packet(sock)
                if kind != 0x20 or len(body) < 2 or body[1] != 0:
                    return False
                if not clean:
                    sub = struct.pack("!H", 1) + _mqtt_string("wh/v1/_probe") + b"\x01"
                    sock.sendall(_mqtt_packet(0x82, sub))
                    kind, body = _read_packet(sock)
                    if kind != 0x90 or body[-1:] == b"\x80":
                        return False
                sock.sendall(b"\xe0\x00")
        return True
    except OSError:
        return False


# --- members and clusters ---------------------------------------------------------------


@dataclass
class Member:
    """One broker process of a cluster, with its ports (kept across restarts)."""

    name: str
    mqtt_port: int
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT`` of its MQTT listener."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def running(self) -> bool:
        """Whether its process is up."""
        return self.proc is not None and self.proc.poll() is None


class BrokerCluster:
    """What both kinds share: members, start, kill, restart, stop, context manager."""

    kind = ""
    start_timeout = 30.0

    def __init__(self, workdir: Path, members: int) -> None:
        if members < 1:
            raise ValueError("a cluster has at least one member")
        self.workdir = Path(workdir)
        self.members: list[Member] = []
        self.started_in: float | None = None  # seconds the whole cluster took to be ready

    @property
    def urls(self) -> list[str]:
        """Every member's MQTT URL, in member order (what ``broker.urls`` takes)."""
        return [m.url for m in self.members]

    @property
    def url(self) -> str:
        """The first member's URL (so a cluster stands in where a LocalBroker is used)."""
        return self.members[0].url

    def member_of(self, url: str | None) -> int:
        """The index of the member whose URL is ``url``."""
        for i, m in enumerate(self.members):
            if m.url == url:
                return i
        raise ValueError(f"{url!r} is no member of this {self.kind} cluster")

    def _spawn(self, member: Member) -> None:
        raise NotImplementedError

    def _probe(self, member: Member) -> bool:
        return mqtt_probe(member.mqtt_port, f"zone-agent-probe-{member.name}")

    def _wait_ready(self, indexes: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(indexes)
        while waiting and time.monotonic() < deadline:
            for i in list(waiting):
                member = self.members[i]
                if member.proc is not None and member.proc.poll() is not None:
                    raise LinkUnavailable(
                        f"{self.kind} member {member.name} exited at start; "
                        f"see {self.workdir / member.name}.log"
                    )
                if self._probe(member):
                    waiting.remove(i)
            if waiting:
                time.sleep(0.1)
        if waiting:
            names = ", ".join(self.members[i].name for i in waiting)
            raise LinkUnavailable(f"{self.kind} member(s) {names} not ready within {timeout} s")

    def start(self, timeout: float | None = None) -> None:
        """Start every member and wait until each gives MQTT sessions."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        for member in self.members:
            self._spawn(member)
        self._wait_ready(list(range(len(self.members))), timeout or self.start_timeout)
        self.started_in = time.monotonic() - began

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` (as a power cut would) and wait until it is gone."""
        member = self.members[index]
        proc, member.proc = member.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def terminate(self, index: int, timeout: float = 30.0) -> None:
        """Stop member ``index`` cleanly (SIGTERM; SIGKILL after ``timeout``)."""
        member = self.members[index]
        proc, member.proc = member.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def start_member(self, index: int, timeout: float | None = None) -> float:
        """Start member ``index`` again on its ports; returns seconds until it was ready."""
        began = time.monotonic()
        self._spawn(self.members[index])
        self._wait_ready([index], timeout or self.start_timeout)
        return time.monotonic() - began

    def stop(self) -> None:
        """Stop every member (SIGTERM, then SIGKILL) and anything they left running."""
        for i in range(len(self.members)):
            self.terminate(i, timeout=10.0)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _popen(self, member: Member, argv: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / f"{member.name}.log").open("ab")
        member.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
            process_group=0,  # kill() takes the whole group (RabbitMQ runs a shell first)
        )
        log.close()


class NatsCluster(BrokerCluster):
    """NATS servers with JetStream and the MQTT gateway, clustered when more than one.

    Args:
        workdir: configs, logs and JetStream data.
        members: how many servers (1: a single broker, no cluster block).
        failover_settings: ``stream_replicas`` = members (False: NATS's default, 1).
        extra_config: more lines for every member's config (e.g. ``authorization``).
    """

    kind = "nats"
    start_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        members: int = 3,
        *,
        failover_settings: bool = True,
        extra_config: str = "",
    ) -> None:
        super().__init__(workdir, members)
        find_nats()
        self.failover_settings = failover_settings
        self.extra_config = extra_config
        self.probe_user: tuple[str, str] | None = None
        for i in range(members):
            self.members.append(
                Member(f"n{i + 1}", free_port(), {"client": free_port(), "cluster": free_port()})
            )

    def config(self, member: Member) -> str:
        """The nats-server config of ``member``."""
        lines = [
            f"server_name: {member.name}",
            f"listen: 127.0.0.1:{member.ports['client']}",
            f'jetstream {{ store_dir: "{self.workdir / member.name}-js" }}',
        ]
        if len(self.members) > 1:
            routes = ", ".join(f"nats-route://127.0.0.1:{m.ports['cluster']}" for m in self.members)
            lines.append(
                f"cluster {{ name: zone-agent, listen: 127.0.0.1:{member.ports['cluster']}, "
                f"routes: [{routes}] }}"
            )
        replicas = f", stream_replicas: {len(self.members)}" if self.failover_settings else ""
        lines.append(f"mqtt {{ host: 127.0.0.1, port: {member.mqtt_port}{replicas} }}")
        lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def _spawn(self, member: Member) -> None:
        conf = self.workdir / f"{member.name}.conf"
        conf.write_text(self.config(member))
        self._popen(member, [find_nats(), "-c", str(conf)], {**os.environ})

    def _probe(self, member: Member) -> bool:
        user, password = self.probe_user or (None, None)
        return mqtt_probe(
            member.mqtt_port, f"zone-agent-probe-{member.name}", username=user, password=password
        )


class RabbitCluster(BrokerCluster):
    """RabbitMQ nodes with the MQTT plugin, clustered when more than one.

    Clustered by classic-config peer discovery, with a private epmd on a free loopback port
    and a private Erlang cookie.

    Args:
        workdir: configs, logs, Mnesia and quorum data.
        members: how many nodes.
        failover_settings: ``mqtt.durable_queue_type = quorum`` (False: classic queues).
        extra_config: more rabbitmq.conf lines for every node.
    """

    kind = "rabbitmq"
    start_timeout = 120.0

    def __init__(
        self,
        workdir: Path,
        members: int = 3,
        *,
        failover_settings: bool = True,
        extra_config: str = "",
    ) -> None:
        super().__init__(workdir, members)
        self.bin = find_rabbitmq()
        self.failover_settings = failover_settings
        self.extra_config = extra_config
        self.epmd_port = free_port()
        self.probe_user: tuple[str, str] | None = None
        for i in range(members):
            self.members.append(
                Member(f"r{i + 1}", free_port(), {"amqp": free_port(), "dist": free_port()})
            )

    def start(self, timeout: float | None = None) -> None:
        """Start the members one after the other, each ready before the next joins.

        Started together, a member sometimes never gets into RabbitMQ 3.10's MQTT client-id
        registry (its log repeats "MQTT cannot accept a connection: client ID registration
        timed out" for minutes); joined one at a time, as an operator would, it does.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        deadline = began + (timeout or self.start_timeout)
        for i, member in enumerate(self.members):
            self._spawn(member)
            self._wait_ready([i], max(1.0, deadline - time.monotonic()))
        self.started_in = time.monotonic() - began

    def node_name(self, member: Member) -> str:
        """The Erlang node name, ``rN@localhost``."""
        return f"{member.name}@localhost"

    def config(self, member: Member) -> str:
        """The rabbitmq.conf of ``member``."""
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{member.ports['amqp']}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{member.mqtt_port}",
            "distribution.listener.interface = 127.0.0.1",
            "mqtt.tcp_listen_options.nodelay = true",
            "log.console = true",
            "log.file = false",
        ]
        if self.failover_settings:
            lines.append("mqtt.durable_queue_type = quorum")
        if len(self.members) > 1:
            lines.append("cluster_formation.peer_discovery_backend = classic_config")
            for i, m in enumerate(self.members):
                lines.append(
                    f"cluster_formation.classic_config.nodes.{i + 1} = {self.node_name(m)}"
                )
        lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def env(self, member: Member) -> dict[str, str]:
        """The environment its scripts (server and rabbitmqctl) run with."""
        home = self.workdir / "home"
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            home.mkdir(parents=True, exist_ok=True)
            cookie.write_text(os.urandom(16).hex())
            cookie.chmod(0o600)
        base = self.workdir / member.name
        return {
            **os.environ,
            "HOME": str(home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.node_name(member),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(member.ports["amqp"]),
            "RABBITMQ_DIST_PORT": str(member.ports["dist"]),
            "RABBITMQ_CONFIG_FILE": str(base) + ".conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base) + ".plugins",
            "RABBITMQ_MNESIA_BASE": str(base) + "-mnesia",
            "RABBITMQ_LOG_BASE": str(base) + "-log",
            "RABBITMQ_PID_FILE": str(base) + ".pid",
        }

    def _spawn(self, member: Member) -> None:
        base = self.workdir / member.name
        Path(str(base) + ".conf").write_text(self.config(member))
        Path(str(base) + ".plugins").write_text("[rabbitmq_mqtt].\n")
        self._popen(member, [str(self.bin / "rabbitmq-server")], self.env(member))

    def _probe(self, member: Member) -> bool:
        user, password = self.probe_user or (None, None)
        return mqtt_probe(
            member.mqtt_port, f"zone-agent-probe-{member.name}", username=user, password=password
        )

    def ctl(self, *args: str, member: int = 0, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl ARGS`` against member ``member``; its output (raises on failure)."""
        m = self.members[member]
        done = subprocess.run(
            [str(self.bin / "rabbitmqctl"), "-n", self.node_name(m), *args],
            env=self.env(m),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise LinkUnavailable(f"rabbitmqctl {args[0]} failed: {done.stderr.strip()[:300]}")
        return done.stdout

    def stop(self) -> None:
        """Stop every node, then the private epmd."""
        super().stop()
        epmd = shutil.which("epmd")
        if epmd is not None and self.members:
            subprocess.run(
                [epmd, "-kill"],
                env=self.env(self.members[0]),
                capture_output=True,
                timeout=10,
                check=False,
            )
