"""The MQTT transport on its own, against real Mosquitto processes: how it walks the broker
URLs, notices a connection closed during the handshake, reports what failed, and falls
back from MQTT 5 to 3.1.1 on a broker that only speaks 3.1.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.link.settings import BrokerConfig
from agent.link.transport import MqttTransport, Subscription
from agent.oms.demo.broker import LocalBroker, free_port

pytestmark = pytest.mark.broker

TOPIC = "wh/v1/test/n1/cmd/+"


class ClosingListener:
    """A TCP port that accepts every connection and closes it at once (a load balancer
    in front of a broker that is not up), counting the connections it took."""

    def __init__(self) -> None:
        self.port = free_port()
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ClosingListener:
        async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            writer.close()

        self._server = await asyncio.start_server(close_at_once, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Front:
    """A TCP front for a Mosquitto that reads the client's CONNECT and then, by ``mode``:

    * ``"v311_only"``: behaves as a 3.1.1-only broker (NATS, RabbitMQ): an MQTT 5 CONNECT
      gets the 3.1.1 CONNACK "unacceptable protocol version" (20 02 00 01) and the
      connection is closed; a 3.1.1 CONNECT is passed through byte for byte;
    * ``"stall"``: passes the CONNECT and everything the broker sends, then drops what the
      client sends without closing: the CONNACK arrives, no SUBACK ever does (a cluster
      member whose session store has no quorum).
    """

    def __init__(self, broker_port: int, mode: str) -> None:
        self.port = free_port()
        self.broker_port = broker_port
        self.mode = mode
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.read(64)  # CONNECT: fixed header, "\0\4MQTT", protocol level
        name_at = head.find(b"\x00\x04MQTT")
        level = head[name_at + 6] if name_at >= 0 and len(head) > name_at + 6 else 0
        if self.mode == "v311_only" and level != 4:
            self.refused += 1
            writer.write(b"\x20\x02\x00\x01")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        up_writer.write(head)
        self._writers.append(up_writer)  # an unreferenced writer closes its socket

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter | None) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if dst is not None:
                        dst.write(data)
                        await dst.drain()
            if dst is not None:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, None if self.mode == "stall" else up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def __aenter__(self) -> Front:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._pipes):
            task.cancel()
        for writer in self._writers:
            writer.close()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


def _transport(urls: list[str], **broker: object) -> MqttTransport:
    return MqttTransport(
        BrokerConfig(urls=urls, backoff_initial_s=0.05, backoff_max_s=0.2, **broker),
        client_id="transport-test",
        subscriptions=[Subscription(TOPIC)],
        on_message=lambda topic, payload: None,
    )


async def _up_on(transport: MqttTransport, timeout: float) -> str | None:
    task = asyncio.create_task(transport.run())
    try:
        async with asyncio.timeout(timeout):
            await transport.connected.wait()
        return transport.url
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_connection_closed_in_the_handshake_fails_at_once_not_after_the_timeout(
    tmp_path: Path, broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # With a 60 s handshake timeout, waiting for it would miss the 20 s the test allows;
    # the log names the close, not a time-out.
    async def scenario() -> None:
        async with ClosingListener() as closing:
            transport = _transport([closing.url, closing.url, broker.url], connect_timeout_s=60)
            assert await _up_on(transport, timeout=20) == broker.url
            assert closing.accepted == 2

    with caplog.at_level(logging.WARNING, "agent.link"):
        asyncio.run(scenario())
    failures = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(failures) == 2
    assert all("closed the connection before CONNACK" in m for m in failures)
    assert not any("timed out" in m for m in failures)


def test_a_member_that_fails_the_session_set_up_is_left_for_the_next_one(
    tmp_path: Path, broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    # Two members answer CONNECT but never SUBACK; the third serves. The transport must walk
    # on to the third and say what failed, not loop between the first two at the shortest
    # backoff (it reset its backoff at CONNACK and retried one member forever).
    async def scenario() -> None:
        async with Front(broker.port, "stall") as bad1, Front(broker.port, "stall") as bad2:
            with LocalBroker(tmp_path / "good") as good:
                transport = _transport([bad1.url, bad2.url, good.url], connect_timeout_s=0.5)
                assert await _up_on(transport, timeout=20) == good.url
                return bad1.port, bad2.port

    with caplog.at_level(logging.WARNING, "agent.link"):
        port1, port2 = asyncio.run(scenario())
    failed = [r.getMessage() for r in caplog.records if "session set-up failed" in r.getMessage()]
    assert len(failed) == 2, failed
    assert f"subscribe to {TOPIC}" in failed[0]
    assert f"127.0.0.1:{port1}" in failed[0] and f"127.0.0.1:{port2}" in failed[1]


def test_attempts_alternate_between_members_and_back_off_while_all_fail() -> None:
    # Two closed ports: the attempts alternate between them; the log line names the next
    # member and a delay that does not shrink while nothing succeeds.
    delays: list[float] = []
    targets: list[str] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if "next try" in msg:
                targets.append(msg.split("next try ")[1].split(" in ")[0])
                delays.append(float(msg.split(" in ")[-1].split(" s")[0]))

    ports = [free_port(), free_port()]
    urls = [f"mqtt://127.0.0.1:{p}" for p in ports]
    handler = Recorder()
    logging.getLogger("agent.link").addHandler(handler)
    try:
        transport = MqttTransport(
            BrokerConfig(urls=urls, backoff_initial_s=0.01, backoff_max_s=0.16),
            client_id="transport-test",
            subscriptions=[],
            on_message=lambda topic, payload: None,
        )
        with contextlib.suppress(TimeoutError):
            asyncio.run(_up_on(transport, timeout=2))
    finally:
        logging.getLogger("agent.link").removeHandler(handler)
    assert len(targets) >= 6
    assert targets[:4] == [urls[1], urls[0], urls[1], urls[0]]
    # jitter keeps each delay within [50 %, 100 %] of min(cap, initial * 2^n)
    assert all(d <= 0.16 for d in delays)
    assert delays[5] >= 0.08 - 0.001


def test_mqtt5_refused_by_a_311_broker_falls_back_and_says_so(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with Front(broker.port, "v311_only") as front:
            transport = _transport([front.url], protocol="5")
            assert await _up_on(transport, timeout=20) == front.url
            assert front.refused == 1

    with caplog.at_level(logging.WARNING, "agent.link"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "refused MQTT 5" in r.getMessage()]
    assert len(said) == 1
    assert "using MQTT 3.1.1" in said[0]


def test_a_reset_connection_is_a_warning_saying_what_happens_next(
    broker: LocalBroker, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        transport = _transport([broker.url])
        task = asyncio.create_task(transport.run())
        try:
            async with asyncio.timeout(10):
                await transport.connected.wait()
                broker.stop()  # the peer goes away under an open connection
                while transport.connected.is_set():
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    link = [r for r in caplog.records if r.name.startswith("agent.link")]
    assert not [r for r in link if r.levelno >= logging.ERROR], [r.getMessage() for r in link]
    lost = [r for r in link if "lost" in r.getMessage()]
    assert lost and lost[0].levelno == logging.WARNING
    assert "next try" in lost[0].getMessage()


def test_the_socket_error_filter_leaves_other_paho_errors_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    paho_log = logging.getLogger("agent.link.mqtt")
    with caplog.at_level(logging.DEBUG, "agent.link.mqtt"):
        paho_log.error("failed to receive on socket: %s", "[Errno 104] Connection reset by peer")
        paho_log.error("Caught exception in on_message: %s", "boom")
    levels = {r.getMessage().split(":")[0]: r.levelno for r in caplog.records}
    assert levels["failed to receive on socket"] == logging.DEBUG
    assert levels["Caught exception in on_message"] == logging.ERROR


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="no mosquitto_passwd")
@pytest.mark.parametrize("password", ["wrong", "right"])
def test_a_stop_that_comes_with_the_connack_still_stops_the_transport(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, password: str
) -> None:
    """``run()`` cancelled in the loop iteration that takes the broker's CONNACK ends.

    aiomqtt waits for CONNACK with ``asyncio.wait_for``, which on Python 3.11 answers a
    cancel that comes once its future is done with that future's outcome. With a refusal the
    transport took it for one more refused login and went on trying for ever, so ``oms watch``
    with a wrong password hung in its shutdown (1 in 6 under load); with an accepting CONNACK
    it went on to serve the session. paho's "Received CONNACK" log line comes right before it
    hands over the CONNACK: a cancel there hits the window every time.
    """
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "oms", "right"], check=True)
    passwd.chmod(0o600)
    extra = f"password_file {passwd}\nper_listener_settings false\nallow_anonymous false\n"
    cancels: list[str] = []

    async def scenario(url: str) -> bool:
        transport = _transport([url], username="oms", password=password)
        task = asyncio.create_task(transport.run())

        class CancelAtConnack(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("Received CONNACK") and not cancels:
                    cancels.append(record.getMessage())
                    task.cancel()

        handler = CancelAtConnack()
        logging.getLogger("agent.link.mqtt").addHandler(handler)
        try:
            done, _ = await asyncio.wait({task}, timeout=10)
        finally:
            logging.getLogger("agent.link.mqtt").removeHandler(handler)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return task in done and task.cancelled()

    with (
        LocalBroker(tmp_path / "broker", extra_config=extra) as secured,
        caplog.at_level(logging.DEBUG, "agent.link.mqtt"),
    ):
        stopped = asyncio.run(scenario(secured.url))
    assert cancels, "no CONNACK seen"
    assert stopped, "run() went on after being cancelled"


@pytest.mark.skipif(
    shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin") is None,
    reason="nats-server is not installed (make test installs Debian's nats-server)",
)
def test_mqtt5_on_a_real_nats_server_falls_back_to_311(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # NATS's MQTT gateway speaks 3.1.1 only; it answers an MQTT 5 CONNECT with reason 132.
    mqtt_port = free_port()
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f"server_name: t1\nlisten: 127.0.0.1:{free_port()}\nhttp: 0\n"
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n"
    )
    nats = shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin")
    assert nats is not None
    log = (tmp_path / "nats.log").open("wb")
    proc = subprocess.Popen([nats, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        transport = _transport([f"mqtt://127.0.0.1:{mqtt_port}"], protocol="5")
        with caplog.at_level(logging.WARNING, "agent.link"):
            assert asyncio.run(_up_on(transport, timeout=30)) is not None
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    said = [r.getMessage() for r in caplog.records if "refused MQTT 5" in r.getMessage()]
    assert len(said) == 1 and "132" in said[0], said
