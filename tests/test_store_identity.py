"""Store identity on the wire: every node message names its store, so (node, store, seq)
names one event for good; a wiped state directory says so in the birth and the log; an OMS
learns every node's birth without relying on retained delivery to a wildcard."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import pytest

from agent.link.memory import MemoryBroker
from agent.link.settings import BrokerConfig
from agent.oms import NodeEvent, OmsClient
from agent.wire import codec
from agent.wire.messages import Empty, Reply, State
from agent.wire.topics import NodeTopics
from tests.harness import SITE, Broker, node_file, node_in_process, oms_for


@pytest.fixture
def broker(memory_broker: MemoryBroker) -> MemoryBroker:
    """This module's nodes and OMS run on the in-process broker (the fast tier)."""
    return memory_broker


NODE = "zone-a1"


async def _birth(oms: OmsClient, node: str = NODE, *, not_store: str | None = None) -> State:
    """The node's birth once the OMS has one (of another store than ``not_store``)."""
    async with asyncio.timeout(10):
        while True:
            view = oms.nodes.get(node)
            state = view.state if view is not None and view.online else None
            if state is not None and (not_store is None or state.store != not_store):
                return state
            await asyncio.sleep(0.02)


async def _reply_events(oms: OmsClient, n: int) -> list[NodeEvent]:
    out = []
    while len(out) < n:
        event = await oms.next_event()
        if event.name == "reply":
            out.append(event)
    return out


def _replayed(event: NodeEvent) -> bytes:
    """The event's payload as the node published it (a broker session replaying it)."""
    env = event.envelope
    body = event.body if isinstance(event.body, Reply) else Reply.model_validate(event.body)
    return codec.encode(
        body, msg_id=env.id, ts=env.ts, boot=env.boot, store=env.store, seq=env.seq, corr=env.corr
    )


def test_a_wiped_state_directory_is_a_new_store_told_apart_on_the_wire(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    path = node_file(tmp_path, broker)
    topics = NodeTopics(SITE, NODE)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            # First start: a new store, and the birth says so.
            async with node_in_process(path) as running:
                first = await _birth(oms)
                assert first.new_store is True and first.store is not None
                for _ in range(3):
                    await oms.call(NODE, "ping", {})
                old = await _reply_events(oms, 3)
                assert {e.envelope.store for e in old} == {first.store}
                assert [e.envelope.seq for e in old] == [1, 2, 3]
                assert running.node.boot == 1
            # Restarted on the same directory: the same store, not new.
            caplog.clear()
            async with node_in_process(path) as running:
                again = await _birth(oms)
                assert again.store == first.store and again.new_store is False
                assert running.node.boot == 2
            assert not [r for r in caplog.records if "new store" in r.getMessage()]
            # Wiped: a new store, said loudly; its seq starts at 1 and is delivered.
            shutil.rmtree(tmp_path / NODE)
            async with node_in_process(path):
                fresh = await _birth(oms, not_store=first.store)
                assert fresh.new_store is True
                await oms.call(NODE, "ping", {})
                (new,) = await _reply_events(oms, 1)
                assert (new.envelope.store, new.envelope.seq) == (fresh.store, 1)
                # The old store's seq 3, replayed by a broker session: seq 3 is still to
                # come in the new store, but this one is the old store's and is dropped.
                duplicates = oms.duplicates
                await oms.transport.publish(topics.evt("reply"), _replayed(old[2]))
                async with asyncio.timeout(10):
                    while oms.duplicates == duplicates:
                        await asyncio.sleep(0.02)
                await oms.call(NODE, "ping", {})
                await oms.call(NODE, "ping", {})
                later = await _reply_events(oms, 2)
                assert [(e.envelope.store, e.envelope.seq) for e in later] == [
                    (fresh.store, 2),
                    (fresh.store, 3),
                ]

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("new store")]
    assert len(said) == 1 and "dispatch its open work again" in said[0]


def test_an_oms_with_no_retained_birth_learns_every_node_by_the_site_rebirth(
    tmp_path: Path, broker: Broker
) -> None:
    # As on RabbitMQ, where a wildcard subscription gets no retained message: the retained
    # births are cleared, and an OMS connecting afterwards must still learn both nodes.
    paths = [node_file(tmp_path, broker, node=n) for n in ("zone-a1", "zone-b1")]

    async def scenario() -> None:
        async with node_in_process(paths[0]), node_in_process(paths[1]):
            async with oms_for(broker, client_id="oms-first") as first:
                await first.wait_connected()
                for node in ("zone-a1", "zone-b1"):
                    await _birth(first, node)
                    await first.transport.publish_and_wait(
                        NodeTopics(SITE, node).state, b"", retain=True
                    )
            async with oms_for(broker, client_id="oms-late") as late:
                await late.wait_connected()
                for node in ("zone-a1", "zone-b1"):
                    state = await _birth(late, node)
                    assert state.role == "pick"

    asyncio.run(scenario())


def test_events_before_any_birth_are_taken_and_the_birth_is_asked_for() -> None:
    async def scenario() -> None:
        oms = OmsClient(BrokerConfig(), SITE)  # never connected: only its message handling
        payload = codec.encode(
            Empty(), msg_id="e1", ts=1, boot=1, store="s1", seq=1
        )  # an event body the OMS does not model is still delivered as a map
        oms._on_message(NodeTopics(SITE, "zone-x").evt("hello"), payload)
        event = oms.events.get_nowait()
        assert (event.node, event.name, event.envelope.store) == ("zone-x", "hello", "s1")
        asked = [c for c in oms.pending.values() if c.node == "zone-x"]
        assert [c.name for c in asked] == ["rebirth"]
        oms._on_message(NodeTopics(SITE, "zone-x").evt("hello"), payload)  # asked once only
        assert len([c for c in oms.pending.values() if c.node == "zone-x"]) == 1
        for command in oms.pending.values():
            command.reply.cancel()
        await asyncio.sleep(0)

    asyncio.run(scenario())


def test_a_late_will_of_an_earlier_connection_does_not_take_a_node_offline() -> None:
    # A cluster failover: the node is on member B with connection 2 when member A publishes
    # the Will of connection 1 (same boot). The OMS keeps the node online; the Will of the
    # current connection does take it offline.
    oms = OmsClient(BrokerConfig(), SITE)
    topic = NodeTopics(SITE, NODE).state

    def state(online: bool, link: int) -> bytes:
        body = (
            State(online=online, store="s1", link=link)
            if online
            else State(online=False, link=link)
        )
        return codec.encode(body, msg_id=codec.new_id(), ts=1, boot=4, store="s1")

    oms._on_message(topic, state(True, 1))
    oms._on_message(topic, state(True, 2))
    oms._on_message(topic, state(False, 1))
    assert oms.nodes[NODE].online
    oms._on_message(topic, state(False, 2))
    assert not oms.nodes[NODE].online


def test_birth_and_will_name_the_connection_they_belong_to(tmp_path: Path, broker: Broker) -> None:
    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            async with node_in_process(node_file(tmp_path, broker)) as running:
                first = await _birth(oms)
                assert first.link == running.node.transport.link == 1
                will = codec.decode(running.node._will(1), "state", {"state": State})[1]
                assert will == State(online=False, link=1)
                broker.restart()
                async with asyncio.timeout(15):
                    while not (oms.nodes[NODE].state and oms.nodes[NODE].state.link == 2):
                        await asyncio.sleep(0.05)
                assert oms.nodes[NODE].online and running.node.transport.link == 2

    asyncio.run(scenario())


def test_seen_ids_forget_the_oldest_beyond_the_limit() -> None:
    from agent.node import SeenIds

    seen = SeenIds(3)
    for cid in ("a", "b", "c", "b", "d"):
        seen.add(cid)
    assert len(seen) == 3
    assert "a" not in seen and all(c in seen for c in ("b", "c", "d"))
    seen.add("e")
    assert "b" not in seen and "e" in seen
