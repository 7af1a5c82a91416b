"""The in-process broker keeps the MQTT semantics the protocol relies on (agent/link/memory.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from agent.errors import LinkUnavailable
from agent.link.base import Presence, Subscription
from agent.link.connect import open_transport
from agent.link.memory import MemoryBroker, MemoryTransport, topic_matches
from agent.link.settings import BrokerConfig


@pytest.fixture
def mem() -> Iterator[MemoryBroker]:
    yield MemoryBroker.named("unit")
    MemoryBroker.forget("unit")


class Client:
    """A transport and what it received."""

    def __init__(self, client_id: str, filters: list[str], presence: Presence | None = None):
        self.got: list[tuple[str, bytes]] = []
        self.transport = MemoryTransport(
            "memory://unit",
            client_id=client_id,
            subscriptions=[Subscription(f) for f in filters],
            on_message=lambda t, p: self.got.append((t, p)),
            presence=presence,
            retry_s=0.01,
        )

    async def until(self, count: int) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(5):
            while len(self.got) < count:
                await asyncio.sleep(0.005)
        return self.got


@asynccontextmanager
async def running(client: Client) -> AsyncIterator[Client]:
    task = asyncio.create_task(client.transport.run())
    try:
        async with asyncio.timeout(5):
            await client.transport.connected.wait()
        yield client
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("wh/v1/dc1/+/evt/#", "wh/v1/dc1/zone-a/evt/picked", True),
        ("wh/v1/dc1/+/evt/#", "wh/v1/dc1/zone-a/cmd/pick", False),
        ("wh/v1/dc1/zone-a/ack", "wh/v1/dc1/zone-a/ack", True),
        ("wh/v1/dc1/zone-a/ack", "wh/v1/dc1/zone-a/ack/x", False),
        ("wh/+/dc1", "wh/v1/dc1/x", False),
        ("#", "anything/at/all", True),
        ("a/#", "a", True),
    ],
)
def test_topic_filters(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


def test_order_retained_and_no_delivery_inside_the_publish(mem: MemoryBroker) -> None:
    async def scenario() -> None:
        mem.publish("s/node/state", b"birth", retain=True)
        async with running(Client("oms", ["s/+/state", "s/+/evt/#"])) as oms:
            assert await oms.until(1) == [("s/node/state", b"birth")]
            async with running(Client("node", [])) as node:
                await node.transport.publish("s/node/evt/a", b"1")
                node.transport.publish_nowait("s/node/evt/b", b"2")
                assert len(oms.got) == 1  # delivered from the loop, not inside publish
                assert await oms.until(3) == [
                    ("s/node/state", b"birth"),
                    ("s/node/evt/a", b"1"),
                    ("s/node/evt/b", b"2"),
                ]
            mem.publish("s/node/state", b"", retain=True)
            assert "s/node/state" not in mem.retained

    asyncio.run(scenario())


def test_a_persistent_session_keeps_what_arrives_while_away(mem: MemoryBroker) -> None:
    async def scenario() -> None:
        node = Client("node", ["s/node/cmd/#"])
        async with running(node):
            pass  # subscribed once, then gone cleanly
        async with running(Client("oms", [])) as oms:
            for i in range(3):
                await oms.transport.publish(f"s/node/cmd/{i}", b"x")
        async with running(node):
            got = await node.until(3)
        assert [t for t, _ in got] == ["s/node/cmd/0", "s/node/cmd/1", "s/node/cmd/2"]

    asyncio.run(scenario())


def test_will_on_a_lost_link_not_on_a_clean_stop_and_the_link_comes_back(
    mem: MemoryBroker,
) -> None:
    async def scenario() -> None:
        presence = Presence("s/node/state", lambda n: b"on%d" % n, lambda n: b"off%d" % n)
        async with running(Client("oms", ["s/+/state"])) as oms:
            node = Client("node", [], presence)
            async with running(node):
                await oms.until(1)
                assert mem.drop("node")
                await oms.until(3)  # the Will of link 1, then the birth of link 2
                async with asyncio.timeout(5):
                    while not node.transport.connected.is_set() or node.transport.link < 2:
                        await asyncio.sleep(0.01)
                assert [p for _, p in oms.got] == [b"on1", b"off1", b"on2"]
            await asyncio.sleep(0.05)
            assert [p for _, p in oms.got] == [b"on1", b"off1", b"on2"]  # clean: no Will
            assert mem.retained["s/node/state"] == b"on2"

    asyncio.run(scenario())


def test_a_stopped_broker_refuses_until_started(mem: MemoryBroker) -> None:
    async def scenario() -> None:
        async with running(Client("node", ["s/#"])) as node:
            mem.stop()
            async with asyncio.timeout(5):
                while node.transport.connected.is_set():
                    await asyncio.sleep(0.01)
            with pytest.raises(LinkUnavailable):
                await node.transport.publish("s/x", b"1")
            assert not node.transport.publish_nowait("s/x", b"1")
            await asyncio.sleep(0.05)
            assert not node.transport.connected.is_set()
            mem.start()
            async with asyncio.timeout(5):
                await node.transport.connected.wait()

    asyncio.run(scenario())


def test_a_second_connection_with_the_same_client_id_takes_the_session_over(
    mem: MemoryBroker,
) -> None:
    async def scenario() -> None:
        first, second = Client("same", ["s/#"]), Client("same", ["s/#"])
        async with running(first), running(second):
            assert mem.connected_clients() == ["same"]
            await asyncio.sleep(0.05)
            # The first reconnects and takes it back, and so on: both see churn.
            assert first.transport.link + second.transport.link > 2

    asyncio.run(scenario())


def test_the_broker_url_picks_the_transport() -> None:
    memory = open_transport(
        BrokerConfig(urls=["memory://x"]), client_id="c", subscriptions=[], on_message=print
    )
    assert isinstance(memory, MemoryTransport)
    real = open_transport(
        BrokerConfig(urls=["mqtt://127.0.0.1:1"]), client_id="c", subscriptions=[], on_message=print
    )
    assert type(real).__name__ == "MqttTransport"
    with pytest.raises(ValueError, match="one memory://NAME URL alone"):
        BrokerConfig(urls=["memory://x", "mqtt://127.0.0.1:1"])
