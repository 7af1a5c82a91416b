"""The node as its own process: SIGKILL, restart, the Will and the boot counter, SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from tests.harness import NodeProcess, node_file, oms_for
from tests.test_link_e2e import _replies_by_command, _tasks

pytestmark = pytest.mark.broker


async def _next_state(oms: OmsClient, node: str, timeout: float = 20) -> tuple[bool, int | None]:
    async with asyncio.timeout(timeout):
        while True:
            name, state, boot = await oms.state_changes.get()
            if name == node:
                return state.online, boot


def test_online_offline_with_the_same_boot_then_online_with_a_higher_one(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(node_file(tmp_path, broker))

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            node.start()
            online, boot = await _next_state(oms, "zone-a1")
            assert online and boot is not None
            node.kill()
            # keepalive 5 s: the broker sends the Will within 1.5 x keepalive.
            online_after, will_boot = await _next_state(oms, "zone-a1", timeout=15)
            assert not online_after and will_boot == boot
            assert not oms.nodes["zone-a1"].online
            node.start()
            online_again, new_boot = await _next_state(oms, "zone-a1")
            assert online_again and new_boot is not None and new_boot > boot
            assert node.terminate() == 0
            online_end, end_boot = await _next_state(oms, "zone-a1")
            assert not online_end and end_boot == new_boot

    try:
        asyncio.run(scenario())
    finally:
        node.stop()


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(node_file(tmp_path, broker))

    async def scenario() -> None:
        async with oms_for(broker, resend_s=1.0) as oms:
            await oms.wait_connected()
            node.start()
            await _next_state(oms, "zone-a1")
            first_boot = oms.nodes["zone-a1"].boot
            futures = {}
            for i, task in enumerate(_tasks(600)):
                futures[i] = oms.send("zone-a1", "pick", {"tasks": [task.model_dump()]})
                if i == 300:
                    node.kill()  # the stream goes on while the node is dead, then restarts
                if i == 400:
                    node.start()
                await asyncio.sleep(0)
            replies = await asyncio.wait_for(asyncio.gather(*futures.values()), 90)
            assert {r.status for r in replies} == {"accepted"}
            assert first_boot is not None and oms.nodes["zone-a1"].boot == first_boot + 1
            # Everything the node ever numbered reaches us once, in order, with no gap.
            await oms.call("zone-a1", "ping", {})
            last = oms.nodes["zone-a1"].delivered
            assert last >= 601
            by_command = _replies_by_command(_drain(oms))
            assert all(len(seqs) == 1 for seqs in by_command.values())
            assert len(by_command) == 601  # 600 picks and the ping
            assert oms.nodes["zone-a1"].delivered == last

    try:
        asyncio.run(scenario())
    finally:
        node.stop()


def _drain(oms: OmsClient) -> list:
    out = []
    while not oms.events.empty():
        out.append(oms.events.get_nowait())
    seqs = [e.envelope.seq for e in out]
    assert seqs == list(range(1, len(seqs) + 1))
    return out


def test_systemd_notify_ready_watchdog_and_stopping(tmp_path: Path, broker: LocalBroker) -> None:
    import os
    import socket
    import subprocess
    import sys

    path = node_file(tmp_path, broker)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(15)
        env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", str(path), "--simulate"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen = [sock.recv(256).decode() for _ in range(3)]
            assert seen[0] == "READY=1"
            assert seen[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
            proc.terminate()
            rest = []
            while "STOPPING=1" not in rest:
                rest.append(sock.recv(256).decode())
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
