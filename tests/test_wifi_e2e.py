"""A pick node behind a bad Wi-Fi link made by the kernel (issue 18; bench/wifi.py's lab).

The node (``zone-agent run --simulate``) runs in a network namespace of its own and reaches
a private Mosquitto over a veth pair; nftables in the namespace drops the MQTT port's
packets for an outage, tbf makes the link 64 kbit/s. The reference OMS runs on loopback.
Needs root, iproute2 and nftables (skipped without).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.wifi import NODE, SLOTS, Lab, Site, available, oms_client

pytestmark = [
    pytest.mark.slow,
    pytest.mark.broker,
    pytest.mark.skipif(available() is not None, reason=f"bench.wifi {available()}"),
]

TREE = Path(__file__).resolve().parent.parent


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    lab = Lab()
    lab.up()
    site = Site(lab, tmp_path, TREE)
    try:
        site.start()
        yield site
    finally:
        site.stop()
        lab.down()


def _tasks(prefix: str, count: int) -> dict[str, Any]:
    return {
        "tasks": [
            {
                "task": f"{prefix}{i:04d}",
                "order": f"ORD-{prefix}-{i // 8:03d}",
                "location": SLOTS[i % len(SLOTS)],
                "sku": f"SKU-{i:06d}",
                "qty": 1,
                "description": f"Stainless steel insulated bottle 750 ml, matte black {i:07d}",
            }
            for i in range(count)
        ]
    }


async def _until(check: Any, timeout: float, what: str) -> float:
    """Poll ``check()`` (async) until true; the seconds it took."""
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout} s") from None
    return time.monotonic() - t0


def test_a_dead_link_shows_offline_within_seconds_and_is_back_within_seconds_of_the_network(
    site: Site,
) -> None:
    # Today's main: the press's publish gets no PUBACK, yet the node says online until
    # paho's keepalive gives up (15-30 s with keepalive 15 s), and after the outage it
    # sleeps out a backoff grown to several seconds. DESIGN §6: noticed within 5 s of
    # evidence, back within 2 s of the network (bounds here leave room for a loaded box).
    async def scenario() -> None:
        async with oms_client(site.broker_url, resend_s=600) as oms:
            await oms.wait_connected(30)
            await site.wait_api(60)

            async def online() -> bool:
                return bool((await site.state())["online"])

            async def offline() -> bool:
                return not await online()

            await _until(online, 60, "the node online")
            reply = await oms.call(NODE, "pick", _tasks("t", 8), timeout=30)
            assert reply.status == "accepted"

            site.lab.blackout()
            await site.press(SLOTS[0])  # its confirmation is the evidence
            noticed = await _until(offline, 12, "the state API saying offline")
            await asyncio.sleep(20 - noticed)  # an outage long enough to grow the backoff
            site.lab.clear()
            back = await _until(online, 6, "the node online again after the outage")
            print(f"offline after {noticed:.2f} s, back {back:.2f} s after the network")

            async def confirmed() -> bool:
                return (await site.state())["outbox"] == 0

            await _until(confirmed, 15, "the confirmation acknowledged by the OMS")

    asyncio.run(scenario())


def test_a_session_is_set_up_on_a_64_kbit_link_while_the_broker_holds_a_backlog(
    site: Site,
) -> None:
    # Today's main waits for each SUBACK 10 s, and on a 64 kbit/s link the SUBACK queues
    # behind the commands the broker kept for the session (20 in flight of 7 KB each): every
    # set-up fails, for minutes. The node must come up while the backlog drains.
    async def scenario() -> None:
        async with oms_client(site.broker_url, resend_s=600) as oms:
            await oms.wait_connected(30)
            await site.wait_api(60)
            async with asyncio.timeout(60):
                while not (oms.nodes.get(NODE) and oms.nodes[NODE].online):
                    await asyncio.sleep(0.05)
            assert site.proc is not None
            site.proc.terminate()  # a clean stop: the broker keeps the persistent session
            await asyncio.to_thread(site.proc.wait, 20)
            async with asyncio.timeout(10):
                while oms.nodes[NODE].online:
                    await asyncio.sleep(0.05)
            replies = [oms.send(NODE, "pick", _tasks(f"b{n:02d}-", 50)) for n in range(60)]
            await asyncio.sleep(1)  # the OMS's copies at the broker, queued for the node
            site.lab.rate(64)
            site.start_node()
            started = time.monotonic()
            await site.wait_api(60)

            async def online() -> bool:
                view = oms.nodes.get(NODE)
                return bool((await site.state())["online"] and view and view.online)

            await _until(online, 25, "the node's session set up on the slow link")
            print(f"session up {time.monotonic() - started:.2f} s after the node started")
            pending = [r for r in replies if not r.done()]
            assert pending, "the backlog drained before the session was up: not slow enough"

    asyncio.run(scenario())
