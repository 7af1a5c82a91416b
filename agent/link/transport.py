"""The MQTT connection: the only module that imports aiomqtt (2.x, over paho).

What it adds to aiomqtt (see docs/protocol.md and reference/mqtt.md §5 and §9):

* rotation through the configured broker URLs with capped exponential backoff and jitter;
* a retained Will on the node's ``state`` topic and a retained birth after every CONNACK;
* a persistent session (clean session off on 3.1.1; clean start off and a session expiry
  on MQTT 5), so commands sent while the node was away wait at the broker;
* TCP_NODELAY on the socket: paho leaves Nagle's algorithm on, which turns a 1 ms round
  trip into ~44 ms against the peer's delayed ACK;
* at most ``max_inflight`` QoS 1 publishes awaiting PUBACK: aiomqtt scans every pending
  publish on each call, so an unbounded burst slows down quadratically and times out.

Delivery is not trusted to the broker: the outbox resends until the OMS acknowledges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import BrokerConfig
from agent.errors import LinkUnavailable

log = logging.getLogger("agent.link")

MessageHandler = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter to subscribe to at QoS 1 on every connect."""

    topic: str


@dataclass(frozen=True, slots=True)
class Presence:
    """The retained state topic with the birth and Will payloads.

    ``birth`` is called on every connect, so the birth carries fresh health and seq.
    """

    topic: str
    birth: Callable[[], bytes]
    will: bytes


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
        self._slots = asyncio.Semaphore(broker.max_inflight)
        self._inflight: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()
        self.url: str | None = None
        self._delay = backoff_delays(broker.backoff_initial_s, broker.backoff_max_s)

    def _client_for(self, url: str) -> aiomqtt.Client:
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
        v5 = b.protocol == "5"
        session: dict[str, Any] = {"clean_session": False}
        if v5:
            # paho rejects clean_session on MQTT 5; its default clean start (first connect
            # only) would drop the commands queued while the process was down.
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = b.session_expiry_s
            session = {"clean_start": False, "properties": properties}
        will = None
        if self.presence is not None:
            will = aiomqtt.Will(self.presence.topic, self.presence.will, qos=1, retain=True)
        return aiomqtt.Client(
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
            timeout=10,
            max_inflight_messages=b.max_inflight,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    async def run(self) -> None:
        """Connect, serve, and reconnect forever (cancel to stop)."""
        attempt = 0
        urls = self.broker.urls
        while True:
            url = urls[attempt % len(urls)]
            client = self._client_for(url)
            try:
                async with client:
                    attempt = 0
                    await self._serve(client, url)
            except aiomqtt.MqttError as exc:
                if self.connected.is_set():
                    log.warning("link down: %s: %s", _safe(url), exc)
                else:
                    log.warning("cannot connect to %s: %s", _safe(url), exc)
            finally:
                self._down()
            delay = self._delay(attempt)
            attempt += 1
            await asyncio.sleep(delay)

    async def _serve(self, client: aiomqtt.Client, url: str) -> None:
        for sub in self.subscriptions:
            await client.subscribe(sub.topic, qos=1)
        if self.presence is not None:
            await client.publish(self.presence.topic, self.presence.birth(), qos=1, retain=True)
        self._client = client
        self.url = url
        self.connected.set()
        log.info("link up: %s as %s", _safe(url), self.client_id)
        if self.on_connected is not None:
            await self.on_connected()
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode() if payload is not None else b""
            self.on_message(message.topic.value, bytes(payload))

    def _down(self) -> None:
        was_up = self.connected.is_set()
        self._client = None
        self.connected.clear()
        if was_up and self.on_disconnected is not None:
            self.on_disconnected()

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Start a QoS 1 publish; waits only for a free in-flight slot, not for PUBACK.

        Raises ``LinkUnavailable`` when not connected. Publishes started in order reach
        paho in order.
        """
        client = self._client
        if client is None:
            raise LinkUnavailable("not connected")
        await self._slots.acquire()
        client = self._client
        if client is None:
            self._slots.release()
            raise LinkUnavailable("not connected")
        task = asyncio.create_task(self._publish(client, topic, payload, retain))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, retain: bool
    ) -> None:
        try:
            await client.publish(topic, payload, qos=1, retain=retain)
        except aiomqtt.MqttError as exc:
            # The outbox resends whatever the OMS did not acknowledge; nothing to do here.
            log.debug("publish to %s not confirmed: %s", topic, exc)
        finally:
            self._slots.release()

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
        if self._inflight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*list(self._inflight), return_exceptions=True)


def _safe(url: str) -> str:
    """A URL without any user:password part, fit for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"
