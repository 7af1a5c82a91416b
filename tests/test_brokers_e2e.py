"""The node and the reference OMS on NATS (MQTT gateway) and on RabbitMQ (MQTT plugin).

Each test runs against one real broker of each kind (``single_broker``, shared by the
module): the retained birth, the Will, the persistent session, QoS 1 and wildcards,
packet sizes, client ids, and exactly-once confirmations. What a broker cannot do is in
docs/operating.md ("Clustered brokers").
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.wire import codec
from agent.wire.messages import MAX_TASKS_PER_COMMAND, PickTask
from devices.events import Button, ButtonPress
from testing.localcluster import BrokerCluster
from tests.harness import SITE, NodeProcess, node_file, node_in_process
from tests.test_link_e2e import _collect, _tasks, _wait_online

pytestmark = pytest.mark.broker

_names = itertools.count(1)


def _unique(prefix: str) -> str:
    """A node name / client id no other test on the shared broker uses."""
    return f"{prefix}{next(_names)}"


def _oms(broker: BrokerCluster | LocalBroker, **kw: object) -> OmsClient:
    urls = broker.urls if isinstance(broker, BrokerCluster) else [broker.url]
    return OmsClient(
        BrokerConfig(urls=urls, backoff_initial_s=0.05, backoff_max_s=0.5),
        SITE,
        client_id=_unique("oms-"),
        **kw,  # type: ignore[arg-type]
    )


def test_birth_ping_pick_reply_and_ack(tmp_path: Path, single_broker: BrokerCluster) -> None:
    name = _unique("zone-b")
    path = node_file(tmp_path, single_broker, node=name)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with _oms(single_broker) as oms:
            await oms.wait_connected()
            async with node_in_process(path) as running:
                await _wait_online(oms, name)
                state = oms.nodes[name].state
                assert state is not None and state.locations == ["A1", "A2", "A3", "A4"]
                assert (await oms.call(name, "ping", {})).status == "accepted"
                reply = await oms.call(name, "pick", {"tasks": [_tasks(1)[0].model_dump()]})
                assert reply.status == "accepted"
                store = running.node.store.store
                async with asyncio.timeout(10):
                    while store.acked_seq < store.last_seq:  # the OMS's ack got through
                        await asyncio.sleep(0.02)

    asyncio.run(scenario())


def test_an_oms_started_after_the_node_learns_its_state(
    tmp_path: Path, single_broker: BrokerCluster
) -> None:
    """On RabbitMQ a wildcard subscription gets no retained message: the OMS's site-wide
    rebirth request is what tells it (on NATS the retained birth does it too)."""
    name = _unique("zone-b")
    path = node_file(tmp_path, single_broker, node=name)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with node_in_process(path) as running:
            async with asyncio.timeout(10):
                await running.node.online.wait()
            async with _oms(single_broker) as oms:
                await _wait_online(oms, name, timeout=5)

    asyncio.run(scenario())


def test_the_will_says_offline_with_the_boot_of_the_birth(
    tmp_path: Path, single_broker: BrokerCluster
) -> None:
    name = _unique("zone-b")
    node = NodeProcess(node_file(tmp_path, single_broker, node=name))  # type: ignore[arg-type]

    async def scenario() -> None:
        async with _oms(single_broker) as oms:
            await oms.wait_connected()
            node.start()
            boot = await _wait_online(oms, name, timeout=20)
            node.kill()
            async with asyncio.timeout(15):  # keepalive 5 s: within 1.5 x keepalive
                while oms.nodes[name].online:
                    await asyncio.sleep(0.05)
            assert oms.nodes[name].boot == boot

    try:
        asyncio.run(scenario())
    finally:
        node.stop()


def test_a_command_sent_while_the_node_is_away_waits_in_its_session(
    tmp_path: Path, single_broker: BrokerCluster
) -> None:
    """Persistent session: the broker keeps QoS 1 commands for the stopped node, and the
    node takes those the broker delivers right after CONNACK (the transport hooks paho
    before it connects; they used to be PUBACKed into aiomqtt's unread queue)."""
    _commands_wait_while_away(tmp_path, single_broker)


def test_a_command_sent_while_the_node_is_away_waits_on_mosquitto(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """The same on Mosquitto."""
    _commands_wait_while_away(tmp_path, broker)


def _commands_wait_while_away(tmp_path: Path, broker: BrokerCluster | LocalBroker) -> None:
    single_broker = broker
    name = _unique("zone-b")
    path = node_file(tmp_path, single_broker, node=name)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with _oms(single_broker) as oms:
            await oms.wait_connected()
            async with node_in_process(path):
                await _wait_online(oms, name)
            # Not through oms.send: that would resend at the birth and hide a lost message.
            # Several, so that some arrive in the same read as the CONNACK.
            waiting = {f"while-away-{i}" for i in range(20)}
            for i, msg_id in enumerate(sorted(waiting)):
                task = _tasks(1, prefix=f"away{i}-")[0].model_dump()
                payload = codec.encode({"tasks": [task]}, msg_id=msg_id, ts=1)
                await oms.transport.publish(f"wh/v1/{SITE}/{name}/cmd/pick", payload)
            await asyncio.sleep(0.5)
            async with node_in_process(path):
                async with asyncio.timeout(8):
                    while waiting:
                        event = await oms.events.get()
                        if event.name == "reply":
                            assert event.body.status == "accepted"  # type: ignore[union-attr]
                            waiting.discard(event.envelope.corr or "")

    asyncio.run(scenario())


def test_a_full_command_and_exactly_once_confirmations(
    tmp_path: Path, single_broker: BrokerCluster
) -> None:
    """QoS 1 both ways, wildcards at the OMS, a command of 500 tasks (the largest the
    protocol allows), 600 confirmations arriving in seq order, once each."""
    name = _unique("zone-b")
    path = node_file(tmp_path, single_broker, node=name)  # type: ignore[arg-type]
    n = 600

    async def scenario() -> None:
        async with _oms(single_broker) as oms:
            await oms.wait_connected()
            async with node_in_process(path) as running:
                await _wait_online(oms, name)
                tasks = [
                    PickTask(
                        task=f"t{i}",
                        order=f"o{i}",
                        location=f"A{i % 4 + 1}",
                        sku="S" * 60,
                        qty=1,
                    )
                    for i in range(n)
                ]
                futures = oms.send_tasks(name, tasks, batch=MAX_TASKS_PER_COMMAND)
                for f in futures:
                    assert (await asyncio.wait_for(f, 20)).status == "accepted"
                node = running.node
                start = node.store.store.last_seq
                await _collect(oms, start, timeout=20)
                for i in range(n):
                    node.submit_input(ButtonPress("shelf", f"A{i % 4 + 1}", Button.CONFIRM))
                got = await _collect(oms, start + n, timeout=60)
                picked = [e for e in got if e.name == "picked"]
                assert [e.envelope.seq for e in got] == list(range(start + 1, start + n + 1))
                assert len({e.body.task for e in picked}) == n  # type: ignore[union-attr]
                assert oms.duplicates == 0 or oms.nodes[name].delivered == start + n

    asyncio.run(scenario())


def test_a_long_client_id_and_node_name(tmp_path: Path, single_broker: BrokerCluster) -> None:
    """MQTT 3.1.1 lets a broker refuse client ids over 23 characters; these two take 64."""
    name = _unique("zone-") + "x" * 50
    name = name[:64]
    path = node_file(tmp_path, single_broker, node=name)  # type: ignore[arg-type]

    async def scenario() -> None:
        async with _oms(single_broker) as oms:
            await oms.wait_connected()
            async with node_in_process(path):
                await _wait_online(oms, name)
                assert (await oms.call(name, "ping", {})).status == "accepted"

    asyncio.run(scenario())


def test_mqtt_5_falls_back_to_3_1_1(tmp_path: Path, single_broker: BrokerCluster) -> None:
    """Both brokers refuse MQTT 5 (NATS 2.9, RabbitMQ 3.10); the node goes on with 3.1.1."""
    name = _unique("zone-b")
    path = node_file(tmp_path, single_broker, node=name, extra='protocol = "5"\n')  # type: ignore[arg-type]

    async def scenario() -> None:
        async with _oms(single_broker) as oms:
            await oms.wait_connected()
            async with node_in_process(path):
                await _wait_online(oms, name, timeout=15)

    asyncio.run(scenario())
