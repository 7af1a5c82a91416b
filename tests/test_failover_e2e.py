"""Failover on a 3-member cluster (NATS, RabbitMQ): the member the node is on dies.

The node has every member in ``broker.urls``; the OMS starts on another member. The member
is SIGKILLed while the picker confirms and while a wave arrives; every confirmation must
reach the OMS exactly once, the OMS keeps receiving, and the node's online state stays
right. The long version with figures is ``python -m bench failover``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from devices.events import Button, ButtonPress
from testing.localcluster import BrokerCluster
from tests.conftest import cluster_or_skip
from tests.harness import SITE, node_file, node_in_process
from tests.test_link_e2e import _collect, _tasks, _wait_online

pytestmark = [pytest.mark.broker, pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(params=["nats", "rabbitmq"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerCluster]:
    """A 3-member cluster with the failover settings (docs/brokers/)."""
    with cluster_or_skip(request.param, tmp_path / request.param, 3) as c:
        yield c


def cluster_node_file(tmp_path: Path, cluster: BrokerCluster, name: str = "zone-a1") -> Path:
    """A pick node with every member in ``broker.urls``, the first member first."""
    path = node_file(tmp_path, cluster, node=name)  # type: ignore[arg-type]
    urls = ", ".join(f'"{u}"' for u in cluster.urls)
    path.write_text(path.read_text().replace(f'urls = ["{cluster.url}"]', f"urls = [{urls}]"))
    return path


def oms_on(cluster: BrokerCluster, first: int) -> OmsClient:
    """An OMS given every member, member ``first`` first."""
    urls = cluster.urls[first:] + cluster.urls[:first]
    return OmsClient(
        BrokerConfig(urls=urls, backoff_initial_s=0.05, backoff_max_s=0.5),
        SITE,
        client_id="oms-failover",
        resend_s=1.0,
    )


def test_the_member_dies_while_picking_and_while_a_wave_arrives(
    tmp_path: Path, cluster: BrokerCluster
) -> None:
    n_first, n_wave = 60, 60
    path = cluster_node_file(tmp_path, cluster)

    async def scenario() -> None:
        async with oms_on(cluster, 1) as oms, node_in_process(path) as running:
            node = running.node
            await oms.wait_connected(30)
            await _wait_online(oms, "zone-a1", timeout=30)
            # The OMS may hear the birth before the node's transport records its URL
            # (the birth is handed over first), and either link may have moved since.
            async with asyncio.timeout(30):
                while not (node.transport.url and oms.transport.url):
                    await asyncio.sleep(0.02)
            on = cluster.member_of(node.transport.url)
            assert cluster.member_of(oms.transport.url) != on
            for f in oms.send_tasks("zone-a1", _tasks(n_first), batch=20):
                assert (await asyncio.wait_for(f, 30)).status == "accepted"
            start = node.store.store.last_seq
            await _collect(oms, start, timeout=30)
            for i in range(n_first // 2):
                node.submit_input(ButtonPress("shelf", f"A{i % 4 + 1}", Button.CONFIRM))
            wave = oms.send_tasks("zone-a1", _tasks(n_wave, prefix="w"), batch=10)
            killed = time.monotonic()
            await asyncio.to_thread(cluster.kill, on)
            for i in range(n_first // 2, n_first):
                node.submit_input(ButtonPress("shelf", f"A{i % 4 + 1}", Button.CONFIRM))
            async with asyncio.timeout(60):
                while not (
                    node.transport.connected.is_set() and node.transport.url != cluster.urls[on]
                ):
                    await asyncio.sleep(0.02)
            reconnect_s = time.monotonic() - killed
            for f in wave:
                assert (await asyncio.wait_for(f, 60)).status == "accepted"
            last = node.store.store.last_seq
            got = await _collect(oms, last, timeout=60)
            picked = [e.body.task for e in got if e.name == "picked"]  # type: ignore[union-attr]
            assert sorted(picked) == sorted(f"t{i}" for i in range(n_first)), "lost or doubled"
            assert [e.envelope.seq for e in got] == list(range(start + 1, last + 1))
            assert oms.nodes["zone-a1"].online and oms.nodes["zone-a1"].boot == node.boot
            async with asyncio.timeout(20):
                while node.store.store.acked_seq < last:
                    await asyncio.sleep(0.05)
            print(f"{cluster.kind}: reconnected {reconnect_s:.2f} s after the kill")

    asyncio.run(scenario())
