"""End to end through a real Mosquitto: births, commands, replies, acks, outages, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.oms import OmsClient
from agent.wire.messages import PROTOCOL, PickTask, Reply
from tests.harness import Broker, node_file, node_in_process, oms_for


@pytest.fixture
def broker(any_broker: Broker) -> Broker:
    """Each test runs on the in-process broker and on a real Mosquitto (the contract subset)."""
    return any_broker


async def _wait_online(oms: OmsClient, node: str, timeout: float = 10) -> int:
    async with asyncio.timeout(timeout):
        while True:
            view = oms.nodes.get(node)
            if view is not None and view.online and view.boot is not None:
                return view.boot
            await asyncio.sleep(0.02)


def test_birth_ping_pick_and_reply(tmp_path: Path, broker: Broker) -> None:
    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(node_file(tmp_path, broker)):
            await oms.wait_connected()
            await _wait_online(oms, "zone-a1")
            state = oms.nodes["zone-a1"].state
            assert state is not None and state.role == "pick" and state.proto == PROTOCOL == "1.3"
            assert state.locations == ["A1", "A2", "A3", "A4"]
            assert state.devices["shelf"].status == "ok"
            pong = await oms.call("zone-a1", "ping", {})
            assert pong == Reply(cmd="ping", status="accepted")
            tasks = [
                PickTask(task="t1", order="o1", location="A1", sku="S1", qty=3),
                PickTask(task="t2", order="o1", location="Z9", sku="S2", qty=1),
            ]
            reply = await oms.call("zone-a1", "pick", {"tasks": [t.model_dump() for t in tasks]})
            assert reply.status == "accepted"
            assert [(i.id, i.status, i.reason) for i in reply.items] == [
                ("t2", "rejected", "unknown_location")
            ]
            # Every event reached the OMS in order and the outbox drained.
            names = [(await oms.next_event()).name for _ in range(2)]
            assert names == ["reply", "reply"]

    asyncio.run(scenario())


def _tasks(n: int, slots: int = 4, prefix: str = "t") -> list[PickTask]:
    return [
        PickTask(
            task=f"{prefix}{i}",
            order=f"o{i // 3}",
            location=f"A{i % slots + 1}",
            sku=f"S{i}",
            qty=1,
        )
        for i in range(n)
    ]


async def _collect(oms: OmsClient, until: int, timeout: float = 60) -> list:
    """Delivered events until the node's seq ``until`` arrived."""
    got = []
    async with asyncio.timeout(timeout):
        while not got or got[-1].envelope.seq < until:
            got.append(await oms.events.get())
    return got


def test_events_made_while_the_broker_is_down_arrive_in_order_once(
    tmp_path: Path, broker: Broker
) -> None:
    """1,000 confirmations while the broker is down all reach the OMS after it is back."""
    from devices.events import Button, ButtonPress

    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(node_file(tmp_path, broker)) as running:
            node = running.node
            await _wait_online(oms, "zone-a1")
            for f in oms.send_tasks("zone-a1", _tasks(1000)):
                assert (await asyncio.wait_for(f, 20)).status == "accepted"
            start_seq = node.store.store.last_seq
            await _collect(oms, start_seq)
            broker.stop()
            await asyncio.sleep(0.3)
            for i in range(1000):
                node.submit_input(ButtonPress("shelf", f"A{i % 4 + 1}", Button.CONFIRM))
            async with asyncio.timeout(20):
                while node.store.store.last_seq < start_seq + 1000:
                    await asyncio.sleep(0.05)
            assert not node.online.is_set()
            broker.start()
            got = await _collect(oms, start_seq + 1000)
            assert [e.envelope.seq for e in got] == list(range(start_seq + 1, start_seq + 1001))
            assert {e.name for e in got} == {"picked"}
            assert len({e.body.task for e in got}) == 1000  # type: ignore[union-attr]
            async with asyncio.timeout(10):
                while node.store.store.acked_seq < start_seq + 1000:
                    await asyncio.sleep(0.05)
            assert await node.store.call(node.store.store.outbox_after, 0, 10) == []

    asyncio.run(scenario())


def _replies_by_command(events: list) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for e in events:
        if e.name == "reply":
            out.setdefault(e.envelope.corr, set()).add(e.envelope.seq)
    return out


def test_broker_restarted_five_times_during_2000_commands(tmp_path: Path, broker: Broker) -> None:
    """Each command is applied exactly once and answered."""

    async def scenario() -> None:
        async with (
            oms_for(broker, resend_s=1.0) as oms,
            node_in_process(node_file(tmp_path, broker)) as running,
        ):
            await _wait_online(oms, "zone-a1")
            futures = {}
            for i, task in enumerate(_tasks(2000)):
                future = oms.send("zone-a1", "pick", {"tasks": [task.model_dump()]})
                futures[next(reversed(oms.pending))] = future
                if i % 400 == 200:
                    await asyncio.to_thread(broker.restart)
                await asyncio.sleep(0)
            replies = await asyncio.wait_for(asyncio.gather(*futures.values()), 60)
            assert {r.status for r in replies} == {"accepted"}
            last = running.node.store.store.last_seq
            events = await _collect(oms, last)
            by_command = _replies_by_command(events)
            assert set(by_command) == set(futures)
            assert all(len(seqs) == 1 for seqs in by_command.values())  # applied once
            tasks = await running.node.store.call(running.node.store.store.tasks)
            assert len({t.id for t in tasks if t.kind == "pick"}) == 2000

    asyncio.run(scenario())


def test_invalid_commands_get_a_reason_and_the_node_keeps_running(
    tmp_path: Path, broker: Broker
) -> None:
    import msgpack
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(node_file(tmp_path, broker)) as running:
            await _wait_online(oms, "zone-a1")
            topic = "wh/v1/dc1/zone-a1/cmd/"
            junk: list[tuple[str, bytes]] = [
                (topic + "pick", b"\xc1\xff"),
                (
                    topic + "pick",
                    msgpack.packb({"v": 1, "id": "bad-1", "ts": 1, "body": {"tasks": "all"}}),
                ),
                (topic + "launch", msgpack.packb({"v": 1, "id": "bad-2", "ts": 1, "body": {}})),
                (topic + "ping", msgpack.packb({"v": 9, "id": "bad-3", "ts": 1, "body": {}})),
                (topic + "pick", b"\x00" * 600_000),
                (topic + "bad name é", msgpack.packb({"v": 1, "id": "bad-4", "ts": 1, "body": {}})),
            ]

            @settings(
                max_examples=150,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            @given(
                st.sampled_from(["pick", "cancel", "ping", "wave_begin", "x" * 70]),
                st.binary(max_size=300),
            )
            def fuzz(name: str, payload: bytes) -> None:
                junk.append((topic + name, payload))

            fuzz()
            for t, p in junk:
                await oms.transport.publish(t, p)
            got = {}
            async with asyncio.timeout(10):
                while len(got) < 4:
                    ev = await oms.events.get()
                    if ev.envelope.corr and ev.envelope.corr.startswith("bad-"):
                        got[ev.envelope.corr] = ev.body
            assert got["bad-1"].reason == "invalid_body" and got["bad-1"].detail.startswith("tasks")
            assert got["bad-2"].reason == "unknown_type"
            assert got["bad-3"].reason == "unsupported_version"
            assert (got["bad-4"].cmd, got["bad-4"].reason) == ("?", "unknown_type")
            assert (await oms.call("zone-a1", "ping", {})).status == "accepted"
            assert running.node.stats["rejected"] >= 5

    asyncio.run(scenario())


def test_outbox_limit_rejects_new_work_until_acknowledged(tmp_path: Path, broker: Broker) -> None:
    path = node_file(tmp_path, broker, extra="[outbox]\nlimit = 10\nreserve = 5\n")

    async def scenario() -> None:
        async with oms_for(broker, auto_ack=False) as oms, node_in_process(path):
            await _wait_online(oms, "zone-a1")
            statuses = []
            for task in _tasks(14):
                reply = await oms.call("zone-a1", "pick", {"tasks": [task.model_dump()]})
                statuses.append((reply.status, reply.reason))
            assert statuses[:10] == [("accepted", None)] * 10
            assert statuses[10:] == [("rejected", "outbox_full")] * 4
            oms.ack_now()
            await asyncio.sleep(0.3)
            reply = await oms.call(
                "zone-a1", "pick", {"tasks": [_tasks(1, prefix="late")[0].model_dump()]}
            )
            assert reply.status == "accepted"

    asyncio.run(scenario())


def test_an_ack_for_another_store_deletes_nothing(tmp_path: Path, broker: Broker) -> None:
    """An ack meant for a replaced store (queued at the broker, or from a stale OMS) is ignored."""
    from agent.wire import codec
    from agent.wire.messages import Ack

    async def scenario() -> None:
        async with (
            oms_for(broker, auto_ack=False) as oms,
            node_in_process(node_file(tmp_path, broker)) as running,
        ):
            await _wait_online(oms, "zone-a1")
            await oms.call("zone-a1", "ping", {})
            store = running.node.store.store
            stale = codec.encode(Ack(seq=1, store="0123456789abcdef"), msg_id="a1", ts=1)
            await oms.transport.publish("wh/v1/dc1/zone-a1/ack", stale)
            await asyncio.sleep(0.3)
            assert store.acked_seq == 0
            good = codec.encode(Ack(seq=1, store=store.store_id), msg_id="a2", ts=2)
            await oms.transport.publish("wh/v1/dc1/zone-a1/ack", good)
            async with asyncio.timeout(5):
                while store.acked_seq != 1:
                    await asyncio.sleep(0.02)

    asyncio.run(scenario())


def test_a_full_outbox_refuses_presses_but_not_device_health(
    tmp_path: Path, broker: Broker
) -> None:
    """Presses are taken up to exactly ``limit + reserve`` unacknowledged events, however
    many arrive at once; past that a press waits (the line stays lit); a printer's health
    change still reaches the workflow, which must know the printer is out of paper."""
    from devices.events import Button, ButtonPress, DeviceHealthChanged

    path = node_file(tmp_path, broker, extra="[outbox]\nlimit = 10\nreserve = 5\n")

    async def scenario() -> None:
        async with (
            oms_for(broker, auto_ack=False) as oms,
            node_in_process(path) as running,
        ):
            await _wait_online(oms, "zone-a1")
            for task in _tasks(10):
                await oms.call("zone-a1", "pick", {"tasks": [task.model_dump()]})
            node = running.node
            assert node.sender.pending == 10  # the replies: at the limit, in the reserve
            # Seven presses at once (one batch): five fit in the reserve of 5.
            before = node.stats["inputs"]
            for i in range(7):
                node.submit_input(ButtonPress("shelf", f"A{i % 4 + 1}", Button.CONFIRM))
            node.submit_input(DeviceHealthChanged("label", "fault", "paper out"))
            async with asyncio.timeout(5):
                while node.stats["inputs"] < before + 8:
                    await asyncio.sleep(0.01)
            assert node.stats["inputs_refused"] == 2
            async with asyncio.timeout(5):
                while node.sender.pending < 15:
                    await asyncio.sleep(0.01)
            assert node.sender.pending == 15 == node.store.store.last_seq
            # The OMS acknowledges: presses are taken again.
            oms.ack_now()
            async with asyncio.timeout(5):
                while node.sender.pending:
                    await asyncio.sleep(0.01)
            node.submit_input(ButtonPress("shelf", "A4", Button.CONFIRM))
            async with asyncio.timeout(5):
                while node.store.store.last_seq < 16:
                    await asyncio.sleep(0.01)
            assert node.stats["inputs_refused"] == 2

    asyncio.run(scenario())
