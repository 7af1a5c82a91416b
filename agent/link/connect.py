"""Which transport a ``[broker]`` table asks for: a real broker, or one in this process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agent.link.base import MessageHandler, Presence, Subscription, Transport
from agent.link.settings import BrokerConfig


def open_transport(
    broker: BrokerConfig,
    *,
    client_id: str,
    subscriptions: list[Subscription],
    on_message: MessageHandler,
    presence: Presence | None = None,
    on_connected: Callable[[], Awaitable[None]] | None = None,
    on_disconnected: Callable[[], None] | None = None,
) -> Transport:
    """The transport for ``broker``: in-process for ``memory://NAME`` URLs, else MQTT.

    aiomqtt is imported only when a real broker is asked for.
    """
    if broker.in_process:
        from agent.link.memory import MemoryTransport

        return MemoryTransport(
            broker.urls[0],
            client_id=client_id,
            subscriptions=subscriptions,
            on_message=on_message,
            presence=presence,
            on_connected=on_connected,
            on_disconnected=on_disconnected,
            retry_s=broker.backoff_initial_s,
        )
    from agent.link.transport import MqttTransport

    return MqttTransport(
        broker,
        client_id=client_id,
        subscriptions=subscriptions,
        on_message=on_message,
        presence=presence,
        on_connected=on_connected,
        on_disconnected=on_disconnected,
    )
