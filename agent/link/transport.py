"""The MQTT connection: the only module that imports aiomqtt (2.x, over paho).

What it adds to aiomqtt (see docs/protocol.md and reference/mqtt.md §5 and §9):

* rotation through the configured broker URLs with capped exponential backoff and jitter;
* a retained Will on the node's ``state`` topic and a retained birth after every CONNACK;
* a persistent session (clean session off on 3.1.1; clean start off and a session expiry
  on MQTT 5), so commands sent while the node was away wait at the broker;
* TCP_NODELAY on the socket: paho leaves Nagle's algorithm on, which turns a 1 ms round
  trip into ~44 ms against the peer's delayed ACK;
* at most ``max_inflight`` QoS 1 publishes awaiting PUBACK, counted here (see below);
* a short hot path: messages go from paho's ``on_message`` straight to ``on_message``,
  publishes straight to paho, and a packet paho queues on the loop's thread is written at
  once instead of through ``call_soon_threadsafe(add_writer)`` (a self-pipe wake-up and two
  more loop iterations per packet).

The hot path uses three private parts of aiomqtt 2.x (pinned ``<3``), all in ``_Link``:
``Client._client`` (the paho client), ``Client._disconnected`` (the future the message
iterator waits on) and aiomqtt's paho callbacks, which it wraps rather than replaces.
aiomqtt's own ``publish`` awaits each PUBACK in a task of its own and scans every pending
publish per call; ``MqttTransport.publish`` never waits for PUBACK, so it hands the packet
to paho and counts it until paho reports the PUBACK.

Liveness (issue 18): a link that owes an answer (a PUBACK, a SUBACK, a PINGRESP) and has
heard nothing for ``dead_after_s`` (no byte from the broker, and no TCP acknowledgement of
what was sent) is torn down at once, instead of after paho's keepalive (up to twice
``keepalive_s``); an idle link is probed with a PINGREQ after half that, so silence is
evidence within seconds. A link that is receiving counts as alive however slow it is.
When the broker kept the session (CONNACK's session present) the set-up does not wait for
its SUBACKs (on a slow link they queue behind the commands the broker kept for it): any
byte after CONNACK shows the broker serves the session. A new session's SUBACKs, which
nothing queues before, are waited for ``connect_timeout_s``. After a failure of the network (no
answer, time-out, unreachable) the transport waits for a cheap TCP probe to get through
before it connects again, and connects as soon as one does, instead of sleeping out its
backoff; after a refusal it backs off as before, so a broker that is down is not hammered.

Delivery is not trusted to the broker: the outbox resends until the OMS acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import math
import random
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import aiomqtt
import paho.mqtt.client as paho
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import LinkUnavailable
from agent.link.base import MessageHandler, Presence, Subscription
from agent.link.settings import BrokerConfig

log = logging.getLogger("agent.link")


class _SocketErrorsAreOurs(logging.Filter):
    """paho logs a lost socket at ERROR; the transport reports it (WARNING, what next)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and str(record.msg).startswith(
            ("failed to receive on socket", "failed to send on socket")
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


_PAHO_LOG = logging.getLogger("agent.link.mqtt")
_PAHO_LOG.addFilter(_SocketErrorsAreOurs())

T = TypeVar("T")

CONGESTED_AFTER_S = 2.0
"""A publish without PUBACK this long means the link is congested (or dying)."""
PROBE_EVERY_S = 0.25
"""Pause between reachability probes while the network is down."""
PROBE_TIMEOUT_S = 1.0
"""One probe's TCP connect time-out (one SYN: Linux resends it after 1 s)."""


def backoff_delays(
    initial: float, cap: float, rng: random.Random | None = None
) -> Callable[[int], float]:
    """Delay before attempt ``n`` (from 0): exponential, capped, with jitter in [50 %, 100 %]."""
    rng = rng or random.Random()

    def delay(attempt: int) -> float:
        base: float = min(cap, initial * (2.0 ** min(attempt, 30)))
        return base * (0.5 + rng.random() / 2)

    return delay


class MqttTransport:
    """One MQTT connection that keeps itself up.

    Args:
        broker: broker URLs, credentials, TLS files, protocol and limits.
        client_id: the MQTT client id (stable, for the persistent session).
        subscriptions: filters subscribed to after every connect.
        on_message: called on the loop for each message (topic, payload).
        presence: retained state topic, birth and Will; ``None`` for a client without one.
        on_connected / on_disconnected: awaited / called when the link goes up / down.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        client_id: str,
        subscriptions: list[Subscription],
        on_message: MessageHandler,
        presence: Presence | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.on_message = on_message
        self.presence = presence
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self._client: aiomqtt.Client | None = None
        self._link: _Link | None = None
        self._slots = _Slots(broker.max_inflight)
        self.connected = asyncio.Event()
        self.url: str | None = None
        self.login_refused: str | None = None
        self._delay = backoff_delays(broker.backoff_initial_s, broker.backoff_max_s)
        self._v311_only: set[str] = set()
        self._congested_since: float | None = None
        self.link = 0
        """The number of the current (or last) connection attempt of this process."""

    def _client_for(self, url: str, *, v5: bool) -> aiomqtt.Client:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        b = self.broker
        tls_context = None
        if tls:
            tls_context = ssl.create_default_context(cafile=str(b.ca_file) if b.ca_file else None)
            if b.cert_file:
                tls_context.load_cert_chain(
                    str(b.cert_file), str(b.key_file) if b.key_file else None
                )
            if b.tls_insecure:
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        session: dict[str, Any] = {"clean_session": False}
        if v5:
            # paho rejects clean_session on MQTT 5; its default clean start (first connect
            # only) would drop the commands queued while the process was down.
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = b.session_expiry_s
            session = {"clean_start": False, "properties": properties}
        will = None
        self.link += 1
        if self.presence is not None:
            will = aiomqtt.Will(
                self.presence.topic, self.presence.will(self.link), qos=1, retain=True
            )
        client = aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if tls else 1883),
            identifier=self.client_id,
            username=b.username,
            password=b.password.get_secret_value() if b.password else None,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=will,
            **session,
            keepalive=b.keepalive_s,
            tls_context=tls_context,
            timeout=b.connect_timeout_s,
            max_inflight_messages=b.max_inflight,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=_PAHO_LOG,
        )
        _end_handshake_on_close(client)
        return client

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (cancel to stop).

        Each failure moves on to the next URL, so a dead cluster member costs one attempt,
        not a loop on it. The backoff grows with consecutive failures and starts again only
        once a session is fully set up (CONNACK, every SUBACK, the birth handed over): a
        member that accepts the connection but cannot serve the session counts as failing.
        """
        failures = 0
        member = 0
        urls = self.broker.urls
        network_down = False
        delay = 0.0
        while True:
            url = urls[member % len(urls)]
            if network_down and not await self._wait_reachable(url, delay):
                # Connect only once a probe gets through: an attempt started into a dead
                # network waits out its own time-outs after the network is back. No probe
                # got through in the whole backoff: that is this URL's failed attempt.
                member += 1
                delay = self._delay(failures)
                failures += 1
                log.warning(
                    "%s is not reachable (no TCP connection); next try %s as soon as it is "
                    "reachable, at most in %.2f s",
                    _safe(url),
                    _safe(urls[member % len(urls)]),
                    delay,
                )
                continue
            v5 = self.broker.protocol == "5" and url not in self._v311_only
            client = self._client_for(url, v5=v5)
            # Hooked before CONNECT: a persistent session's queued commands arrive right
            # after CONNACK, and aiomqtt's own handler would PUBACK them into a queue
            # nobody reads.
            link = _Link(client, self.on_message, self._slots)
            stage = _Stage()
            try:
                async with client:
                    if _stop_requested():  # the same, with an accepting CONNACK
                        raise asyncio.CancelledError
                    stage.name = "session"
                    await self._serve(client, link, url, stage)
            except aiomqtt.MqttError as exc:
                if _stop_requested():
                    # Cancelled, but aiomqtt's wait_for (Python 3.11) answered the cancel
                    # with the CONNACK that came in the same loop iteration: stop anyway,
                    # or the owner's shutdown waits for this task for ever.
                    raise asyncio.CancelledError from exc
                if v5 and stage.name == "connect" and _refuses_v5(exc):
                    # Seen on NATS and RabbitMQ: MQTT 3.1.1 only. Say so once and go on
                    # with 3.1.1 at this URL at once (docs/operating.md).
                    self._v311_only.add(url)
                    log.warning(
                        "%s refused MQTT 5 (%s): using MQTT 3.1.1 with this broker",
                        _safe(url),
                        _describe(exc),
                    )
                    continue
                if stage.name == "connect" and _refuses_login(exc):
                    self.login_refused = f"{_safe(url)} refused the login: {_describe(exc)}"
                if stage.name == "up":
                    failures = 0  # a session was up: this is a new outage
                member += 1
                delay = self._delay(failures)
                failures += 1
                network_down = _network_failure(exc)
                log.warning(
                    "%s; next try %s %s%s",
                    stage.failure(_safe(url), exc),
                    _safe(urls[member % len(urls)]),
                    f"as soon as it is reachable, at most in {delay:.2f} s"
                    if network_down
                    else f"in {delay:.2f} s",
                    "; events wait in the outbox" if self.presence is not None else "",
                )
            finally:
                self._down()
            if not network_down:
                await asyncio.sleep(delay)

    async def _wait_reachable(self, url: str, longest: float) -> bool:
        """True once a TCP connect to ``url`` succeeds; False if none does in ``longest`` s.

        The probe is a bare TCP handshake, closed at once: nothing a broker does work for.
        A refused probe (the host is up, the broker is not) ends the wait too, and the
        attempt that follows fails the ordinary way, with the ordinary backoff after it.
        """
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + longest
        while loop.time() < deadline:
            try:
                async with asyncio.timeout(min(PROBE_TIMEOUT_S, deadline - loop.time())):
                    _, writer = await asyncio.open_connection(host, port)
                writer.close()
                return True
            except ConnectionRefusedError:
                return True
            except (OSError, TimeoutError):
                pass
            await asyncio.sleep(min(PROBE_EVERY_S, max(0.0, deadline - loop.time())))
        return False

    async def _serve(
        self, client: aiomqtt.Client, link: _Link, url: str, stage: _Stage
    ) -> NoReturn:
        link.connected(self.broker.dead_after_s)
        subscribed = [
            (sub.topic, asyncio.ensure_future(client.subscribe(sub.topic, qos=1, timeout=math.inf)))
            for sub in self.subscriptions
        ]
        link.owed_since = time.monotonic()
        link.tasks.update(task for _, task in subscribed)
        if link.session_present:
            # The broker kept the session and its subscriptions; the SUBACKs would queue
            # behind whatever the session has waiting (minutes on a slow link). Resubscribe
            # (in case the filters changed) without waiting; a refusal ends the link.
            link.owed_since = None
            for topic, task in subscribed:
                task.add_done_callback(functools.partial(link.check_suback, topic))
        else:
            for topic, task in subscribed:
                stage.detail = f"subscribe to {topic}"
                # A new session: nothing the broker kept queues before the SUBACK, so it
                # comes in a round trip; a member that answers pings but cannot serve the
                # session must not hold the node. (Silence ends it sooner: the watchdog.)
                try:
                    async with asyncio.timeout(self.broker.connect_timeout_s):
                        codes = await link.until_closed(task)
                except TimeoutError:
                    raise aiomqtt.MqttError(
                        f"no SUBACK within {self.broker.connect_timeout_s:g} s"
                    ) from None
                refused = [c for c in codes if _is_failure(c)]
                if refused:
                    raise aiomqtt.MqttError(f"the broker refused the subscription ({refused[0]})")
            link.owed_since = None
        if self.presence is not None:
            stage.detail = "publish the birth"
            birth = self.presence.birth(self.link)
            # Handed over, not awaited: its PUBACK may queue behind the session's backlog.
            await link.until_closed(self._slots.take())
            link.publish(self.presence.topic, birth, True)
        if link.session_present:
            # Without the SUBACKs, the sign that this broker serves the session is that it
            # sends anything at all after CONNACK (a command the session kept, the birth's
            # PUBACK); a member that cannot goes silent and the watchdog ends it.
            stage.detail = "wait for the broker to serve the kept session"
            link.owed_since = time.monotonic()
            await link.until_closed(link.heard_since(link.owed_since))
            link.owed_since = None
        stage.name = "up"
        self.login_refused = None
        self._client = client
        self._link = link
        self.url = url
        self.connected.set()
        log.info("link up: %s as %s", _safe(url), self.client_id)
        if self.on_connected is not None:
            await self.on_connected()
        await link.closed()

    def _down(self) -> None:
        was_up = self.connected.is_set()
        self._client = None
        if self._link is not None:
            self._link.forget()
            self._link = None
        self.connected.clear()
        if was_up and self.on_disconnected is not None:
            self.on_disconnected()

    @property
    def link_state(self) -> str:
        """``offline``, ``online``, or ``congested``: a publish waits for PUBACK over 2 s."""
        link = self._link
        if link is None or not self.connected.is_set():
            return "offline"
        age = link.oldest_unacked_age()
        return "congested" if age is not None and age > CONGESTED_AFTER_S else "online"

    def in_flight_age(self) -> float | None:
        """Seconds the oldest publish of this connection has waited for PUBACK (None: none)."""
        link = self._link
        return None if link is None else link.oldest_unacked_age()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Start a QoS 1 publish; waits only for a free in-flight slot, not for PUBACK.

        Raises ``LinkUnavailable`` when not connected. Publishes started in order reach
        paho in order.
        """
        if self._link is None:
            raise LinkUnavailable("not connected")
        await self._slots.take()
        link = self._link
        if link is None:
            self._slots.give()
            raise LinkUnavailable("not connected")
        link.publish(topic, payload, retain)

    def can_publish_now(self) -> bool:
        """Whether ``publish_nowait`` would publish (connected, a slot free, nobody waiting)."""
        return self._link is not None and self._slots.free > 0 and not self._slots.waiting

    def publish_nowait(self, topic: str, payload: bytes, *, retain: bool = False) -> bool:
        """Start a QoS 1 publish if that needs no waiting; False (nothing sent) if it would.

        It would when not connected, or when every in-flight slot is taken or awaited.
        """
        link = self._link
        if link is None or not self._slots.take_nowait():
            return False
        link.publish(topic, payload, retain)
        return True

    async def publish_and_wait(
        self, topic: str, payload: bytes, *, retain: bool = False, timeout: float = 2.0
    ) -> bool:
        """Publish and wait for PUBACK (used for the offline state at a clean stop)."""
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=1, retain=retain, timeout=timeout)
        except aiomqtt.MqttError:
            return False
        return True

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait (bounded) for publishes in flight to be confirmed."""
        link = self._link
        if link is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await link.idle.wait()


class _Slots:
    """In-flight publish slots: a FIFO semaphore that can also be taken without awaiting."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> bool:
        """Whether someone waits for a slot."""
        return bool(self._waiters)

    def take_nowait(self) -> bool:
        """Take a slot if one is free and nobody waits for one."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a slot, waiting in turn for one."""
        if self.take_nowait():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # ``give`` hands its slot straight to the first waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed over just as we were cancelled: pass it on
            raise

    def give(self) -> None:
        """Return a slot (to the first waiter, if any)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class _Link:
    """One connection's hot path, on top of aiomqtt's paho client (see the module doc).

    Args:
        client: the aiomqtt client, hooked before it connects (see ``MqttTransport.run``).
        on_message: called for each message (topic, payload), inside paho's read.
        slots: the transport's in-flight slots; each publish took one, PUBACK returns it.
    """

    def __init__(self, client: aiomqtt.Client, on_message: MessageHandler, slots: _Slots) -> None:
        self.client = client
        self.paho: paho.Client = client._client
        self.on_message = on_message
        self.slots = slots
        self.loop_thread = threading.get_ident()
        self.unacked: dict[int, float] = {}  # mid -> when handed to paho (monotonic)
        self.idle = asyncio.Event()
        self.idle.set()
        self.session_present = False
        self.owed_since: float | None = None  # an answer owed besides PUBACK/PINGRESP
        self.tasks: set[asyncio.Future[Any]] = set()
        self.congested = False
        self._writing = False
        on_connect = self.paho.on_connect
        assert on_connect is not None  # set by aiomqtt
        self._aiomqtt_on_connect: Callable[..., None] = on_connect
        self.paho.on_connect = self._connack
        on_publish = self.paho.on_publish
        register_write = self.paho.on_socket_register_write
        assert on_publish is not None and register_write is not None  # set by aiomqtt
        self._aiomqtt_on_publish: Callable[..., None] = on_publish
        self._aiomqtt_register_write: Callable[..., None] = register_write
        self.paho.on_message = self._message
        self.paho.on_publish = self._published
        self.paho.on_socket_register_write = self._register_write

    def connected(self, dead_after: float) -> None:
        """CONNACK is in: watch the connection's end (aiomqtt made its future anew)."""
        # aiomqtt's message iterator used to read this future's exception; we bypass it, so
        # read it here, or a link lost while nobody waits in closed() logs "Future exception
        # was never retrieved" when the future is collected.
        self.client._disconnected.add_done_callback(_retrieve)
        self.tasks.add(asyncio.ensure_future(self._watch(dead_after)))

    def _connack(self, client: paho.Client, userdata: Any, flags: Any, *rest: Any) -> None:
        self.session_present = bool(getattr(flags, "session_present", False))
        self._aiomqtt_on_connect(client, userdata, flags, *rest)

    async def until_closed(self, aw: Awaitable[T]) -> T:
        """Await ``aw``, unless the connection ends first (then raise its error)."""
        task = asyncio.ensure_future(aw)
        disconnected = self.client._disconnected
        waits: set[asyncio.Future[Any]] = {task, disconnected}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        error = disconnected.exception()
        if isinstance(error, aiomqtt.MqttError):
            raise error
        raise aiomqtt.MqttError("disconnected") from error

    def check_suback(self, topic: str, task: asyncio.Future[Any]) -> None:
        """A SUBACK not awaited (the session was kept): a refusal ends the link."""
        if task.cancelled() or task.exception() is not None:
            return
        refused = [c for c in task.result() if _is_failure(c)]
        if refused:
            # The broker answered: a refusal, not a dead network, so the ordinary backoff
            # follows (as a dead link it was retried at once, hundreds of times a second).
            self.abort(f"the broker refused the subscription to {topic} ({refused[0]})", dead=False)

    async def heard_since(self, since: float) -> None:
        """Return once a byte arrives after ``since`` (monotonic; polled, 20 ms)."""
        while self.paho._last_bytes_received <= since:  # noqa: ASYNC110 - paho has no event
            await asyncio.sleep(0.02)

    def oldest_unacked_age(self) -> float | None:
        """Seconds the oldest publish has waited for its PUBACK (None: nothing waits)."""
        if not self.unacked:
            return None
        return time.monotonic() - next(iter(self.unacked.values()))

    def heard_age(self) -> float:
        """Seconds since the broker was last heard: a byte, or a TCP acknowledgement."""
        now = time.monotonic()
        heard = now - self.paho._last_bytes_received
        sock = self.paho.socket()
        if sock is not None:
            acked = _tcp_ack_age(sock)
            if acked is not None:
                heard = min(heard, acked)
        return heard

    async def _watch(self, dead_after: float) -> None:
        """Tear the link down when it owes an answer and has heard nothing for too long."""
        while True:
            await asyncio.sleep(min(0.25, dead_after / 4))
            now = time.monotonic()
            owed = [t for t in (self.owed_since, self.paho._ping_t or None) if t]
            if self.unacked:
                owed.append(next(iter(self.unacked.values())))
            heard = self.heard_age()
            if owed and heard >= dead_after and now - min(owed) >= dead_after:
                what = (
                    f"{len(self.unacked)} publishes without PUBACK"
                    if self.unacked
                    else ("a SUBACK" if self.owed_since else "a PINGRESP")
                )
                self.abort(f"nothing heard from the broker for {heard:.1f} s while owed {what}")
                return
            if not owed and heard >= dead_after / 2:
                # Idle: ask, so that a dead link is evidence within seconds, not keepalives.
                self.paho._send_pingreq()
            age = self.oldest_unacked_age()
            congested = age is not None and age > CONGESTED_AFTER_S
            if congested != self.congested:
                self.congested = congested
                if congested:
                    log.warning(
                        "link congested: %d publishes waiting for PUBACK, the oldest for "
                        "%.1f s (heard from the broker %.1f s ago)",
                        len(self.unacked),
                        age,
                        heard,
                    )
                else:
                    log.info("link no longer congested")

    def abort(self, reason: str, *, dead: bool = True) -> None:
        """End the connection now (no DISCONNECT: the broker publishes the Will).

        ``dead``: the link went silent (the network is the trouble: reconnect as soon as a
        probe gets through); otherwise the broker refused something (ordinary backoff).
        """
        disconnected = self.client._disconnected
        if not disconnected.done():
            disconnected.set_exception(_DeadLink(reason) if dead else aiomqtt.MqttError(reason))
        with contextlib.suppress(Exception):
            self.paho._sock_close()

    async def closed(self) -> NoReturn:
        """Wait until the connection ends; raises ``aiomqtt.MqttError`` then."""
        disconnected = self.client._disconnected
        # asyncio.wait, not await: cancelling us must not cancel aiomqtt's own future.
        await asyncio.wait({disconnected})
        error = disconnected.exception()
        if isinstance(error, aiomqtt.MqttError):
            raise error
        raise aiomqtt.MqttError("disconnected") from error

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Hand a QoS 1 publish to paho (the caller holds a slot for it)."""
        info = self.paho.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            # Connection lost under us: the outbox resends whatever the OMS did not ack.
            log.debug("publish to %s not sent: %s", topic, paho.error_string(info.rc))
            self.slots.give()
            return
        self.unacked[info.mid] = time.monotonic()
        self.idle.clear()

    def forget(self) -> None:
        """The connection is gone: its PUBACKs never come, so give their slots back."""
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()
        for _ in self.unacked:
            self.slots.give()
        self.unacked.clear()
        self.idle.set()
        if self.congested:
            self.congested = False
            log.info("link no longer congested (connection closed)")

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload
        try:
            self.on_message(message.topic, payload if type(payload) is bytes else bytes(payload))
        except Exception:
            # Raised into paho it would drop the link, and the broker would deliver the
            # same message again after the reconnect: log it and take the next one.
            log.exception("message on %s not handled", message.topic[:200])

    def _published(self, client: paho.Client, userdata: Any, mid: int, *rest: Any) -> None:
        if self.unacked.pop(mid, None) is not None:
            self.slots.give()
            if not self.unacked:
                self.idle.set()
        self._aiomqtt_on_publish(client, userdata, mid, *rest)

    def _register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho queued a packet. On the loop's thread, outside paho's callbacks (where paho
        # itself would not write either), write it now. paho marked the socket as waiting
        # for writability before calling us; unmark it, so that a complete write ends
        # without unregistering a writer that was never added, and a partial one comes back
        # here (``_writing``) to wait for writability through aiomqtt's own registration.
        if (
            not self._writing
            and threading.get_ident() == self.loop_thread
            and client._in_callback_mutex.acquire(blocking=False)
        ):
            client._in_callback_mutex.release()
            client._registered_write = False
            self._writing = True
            try:
                client.loop_write()
            except Exception as exc:  # noqa: BLE001
                # What aiomqtt's writer callback does: the connection is broken.
                disconnected = self.client._disconnected
                if not disconnected.done():
                    disconnected.set_exception(exc)
            finally:
                self._writing = False
            return
        self._aiomqtt_register_write(client, userdata, sock)


class _Stage:
    """How far one connection attempt got: what its failure is called in the log."""

    __slots__ = ("detail", "name")

    def __init__(self) -> None:
        self.name = "connect"  # then "session" (CONNACK in), then "up" (session set up)
        self.detail = ""

    def failure(self, url: str, exc: BaseException) -> str:
        """The log line's first half: where it failed and why."""
        if self.name == "up":
            return f"link to {url} lost: {_describe(exc)}"
        if self.name == "session":
            return (
                f"{url} accepted the connection but the session set-up failed "
                f"({self.detail}): {_describe(exc)}"
            )
        return f"cannot connect to {url}: {_describe(exc)}"


def _stop_requested() -> bool:
    """Whether the current task was cancelled, even if a wait inside it ate the cancel.

    On Python 3.11, ``asyncio.wait_for`` (aiomqtt waits for CONNACK, SUBACK and PUBACK with
    it) returns or raises its future's outcome when the cancel arrives after that future is
    done: the ``CancelledError`` is gone, but the task's cancel count still says so.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _is_failure(code: Any) -> bool:
    """Whether a SUBACK return code (an int or paho's ReasonCode) refuses the filter."""
    return int(getattr(code, "value", code)) >= 0x80


_V5_REFUSED = (1, 0x84)  # 3.1.1 "unacceptable protocol version"; MQTT 5 "unsupported"


def _refuses_v5(exc: aiomqtt.MqttError) -> bool:
    """Whether a failed MQTT 5 CONNECT looks like a broker that only speaks 3.1.1."""
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        return (rc.value if isinstance(rc, ReasonCode) else rc or 0) in _V5_REFUSED
    return isinstance(exc, _ClosedInHandshake)


_LOGIN_REFUSED = (4, 5, 0x86, 0x87)
"""CONNACK: 3.1.1 "bad user name or password", "not authorized"; MQTT 5 the same two."""


def _refuses_login(exc: aiomqtt.MqttError) -> bool:
    """Whether a failed CONNECT is the broker refusing this client's credentials."""
    if isinstance(exc, MqttConnectError):
        rc = exc.rc
        return (rc.value if isinstance(rc, ReasonCode) else rc or 0) in _LOGIN_REFUSED
    return False


class _ClosedInHandshake(aiomqtt.MqttError):
    """The broker closed the connection before its CONNACK."""


class _DeadLink(aiomqtt.MqttError):
    """The link owed an answer and heard nothing for ``dead_after_s``."""


_NETWORK_ERRNOS = (errno.ETIMEDOUT, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)


def _network_failure(exc: BaseException) -> bool:
    """Whether a failure says the network, not the broker, is the trouble.

    No answer (a dead link, a time-out) or no route; not a refusal, a close or a CONNACK
    code, which come from a broker (or a proxy) that is there.
    """
    if isinstance(exc, _DeadLink):
        return True
    text = str(exc).lower()
    if "timed out" in text:
        return True
    return any(f"[errno {code}]" in text for code in _NETWORK_ERRNOS)


_TCP_INFO = struct.Struct("8x12I")  # struct tcp_info up to tcpi_last_ack_recv (ms)


def _tcp_ack_age(sock: Any) -> float | None:
    """Seconds since the peer's TCP last acknowledged anything (Linux; None elsewhere)."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    except (OSError, AttributeError):
        return None
    if len(raw) < _TCP_INFO.size:
        return None
    last_ack_recv_ms: int = _TCP_INFO.unpack(raw)[11]
    return last_ack_recv_ms / 1000


def _end_handshake_on_close(client: aiomqtt.Client) -> None:
    """Fail the CONNECT at once when the socket closes before CONNACK.

    aiomqtt ignores a disconnect before CONNACK and waits for its timeout (10 s), so a
    proxy or load balancer that accepts and closes while its broker is down made every
    outage cost that long. Wraps aiomqtt's own ``on_disconnect`` (private, pinned ``<3``).
    """
    paho_client: paho.Client = client._client
    aiomqtt_on_disconnect = paho_client.on_disconnect
    assert aiomqtt_on_disconnect is not None  # set by aiomqtt
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()

    def fail(reason: str) -> None:
        connected = client._connected
        if not connected.done():
            connected.set_exception(
                _ClosedInHandshake(f"the broker closed the connection before CONNACK ({reason})")
            )

    def on_disconnect(pc: paho.Client, userdata: Any, *rest: Any) -> None:
        aiomqtt_on_disconnect(pc, userdata, *rest)
        reason = str(rest[1]) if len(rest) > 1 else "closed"
        if threading.get_ident() == loop_thread:
            fail(reason)
        else:
            loop.call_soon_threadsafe(fail, reason)

    paho_client.on_disconnect = on_disconnect


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (``closed`` reports it when awaited)."""
    if not future.cancelled():
        future.exception()


def _safe(url: str) -> str:
    """A URL without any user:password part, fit for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"
