"""End to end through a real Mosquitto: births, commands, replies, acks, outages, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.link.messages import PickTask, Reply
from agent.localbroker import LocalBroker
from agent.oms import OmsClient
from tests.harness import node_in_process, node_file, oms_for

pytestmark = pytest.mark.broker


async def _wait_online(oms: OmsClient, node: str, timeout: float = 10) -> int:
    async with asyncio.timeout(timeout):
        while True:
            view = oms.nodes.get(node)
            if view is not None and view.online and view.boot is not None:
                return view.boot
            await asyncio.sleep(0.02)


def test_birth_ping_pick_and_reply(tmp_path: Path, broker: LocalBroker) -> None:
    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(node_file(tmp_path, broker)):
            await oms.wait_connected()
            await _wait_online(oms, "zone-a1")
            state = oms.nodes["zone-a1"].state
            assert state is not None and state.role == "pick" and state.proto == "1.0"
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
            assert [(i.id, i.status, i.reason) for i in reply.items] == [("t2", "rejected", "unknown_location")]
            # Every event reached the OMS in order and the outbox drained.
            names = [(await oms.next_event()).name for _ in range(2)]
            assert names == ["reply", "reply"]

    asyncio.run(scenario())
