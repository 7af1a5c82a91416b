"""``python -m bench.failover``: a clustered broker loses the member the node is on.

For NATS and RabbitMQ, a 3-member cluster on loopback (``testing.localcluster``, with the
failover settings of docs/brokers/); a simulated pick node (in this process) has every
member in ``broker.urls``, the reference OMS starts on another member. Each round: tasks
arrive, half are confirmed, the node's member is SIGKILLed while a wave of
``--wave`` tasks is being sent and the rest are confirmed, then the member is started
again. Figures per round: seconds from the kill to the node's next session, confirmations
lost and doubled at the OMS, whether the OMS kept receiving and saw the node online with
its boot.

Then the cost of many small commands: ``--commands`` one-task commands against the same
tasks in waves of 500 (``OmsClient.send_tasks``), on each cluster and on Mosquitto.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.link.transport import MqttTransport
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.wire.messages import MAX_TASKS_PER_COMMAND, PickTask
from bench.common import machine
from devices.events import Button, ButtonPress
from testing.localcluster import BrokerCluster, NatsCluster, RabbitCluster, missing_broker
from tests.harness import SITE, node_file, node_in_process

NODE = "zone-a1"


def _tasks(n: int, prefix: str) -> list[PickTask]:
    return [
        PickTask(
            task=f"{prefix}{i}", order=f"{prefix}o{i}", location=f"A{i % 4 + 1}", sku="S", qty=1
        )
        for i in range(n)
    ]


def _node_file(workdir: Path, urls: list[str], name: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)

    class _Url:
        url = urls[0]

    path = node_file(workdir, _Url(), node=name)  # type: ignore[arg-type]
    joined = ", ".join(f'"{u}"' for u in urls)
    path.write_text(path.read_text().replace(f'urls = ["{urls[0]}"]', f"urls = [{joined}]"))
    return path


async def _wait_until(cond: Callable[[], bool], timeout: float, every: float = 0.02) -> None:
    """Poll ``cond``: the node and the OMS set no event for "on another member"."""
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - a condition over several objects' state
            await asyncio.sleep(every)


def _is_online(oms: OmsClient, node: str) -> bool:
    view = oms.nodes.get(node)
    return view is not None and view.online


def _moved(transport: MqttTransport, gone: str) -> bool:
    return transport.connected.is_set() and transport.url != gone


def _oms(urls: list[str], client_id: str) -> OmsClient:
    config = BrokerConfig(urls=urls, backoff_initial_s=0.05, backoff_max_s=0.5)
    return OmsClient(config, SITE, client_id=client_id, resend_s=1.0)


async def _until_seq(oms: OmsClient, node: str, seq: int, got: list[Any], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while True:
            view = oms.nodes.get(node)
            if oms.events.empty() and view is not None and view.delivered >= seq:
                return
            got.append(await oms.events.get())


async def failover_rounds(cluster: BrokerCluster, rounds: int, wave: int) -> list[dict[str, Any]]:
    """The rounds on a started cluster; one dict of figures per round."""
    path = _node_file(cluster.workdir, cluster.urls, NODE)
    out: list[dict[str, Any]] = []
    oms = _oms(cluster.urls[1:] + cluster.urls[:1], "bench-failover-oms")
    async with oms, node_in_process(path) as running:
        node = running.node
        await oms.wait_connected(60)
        await _wait_until(partial(_is_online, oms, NODE), 60)
        seen: set[str] = set()  # tasks confirmed in earlier rounds
        presses = 100
        for r in range(rounds):
            first = _tasks(100, f"r{r}t")
            for f in oms.send_tasks(NODE, first, batch=25):
                await asyncio.wait_for(f, 60)
            got: list[Any] = []
            start = node.store.store.last_seq
            await _until_seq(oms, NODE, start, got, 60)
            got.clear()
            for i in range(50):
                node.submit_input(ButtonPress("shelf", f"A{i % 4 + 1}", Button.CONFIRM))
            await asyncio.sleep(0.2)
            on = cluster.member_of(node.transport.url)
            oms_on = cluster.member_of(oms.transport.url)
            futures = oms.send_tasks(NODE, _tasks(wave, f"r{r}w"), batch=50)
            killed = time.monotonic()
            cluster.kill(on)
            for i in range(50, 100):
                node.submit_input(ButtonPress("shelf", f"A{i % 4 + 1}", Button.CONFIRM))
            gone = cluster.urls[on]
            await _wait_until(partial(_moved, node.transport, gone), 120, 0.01)
            reconnect_s = time.monotonic() - killed
            replies = await asyncio.wait_for(asyncio.gather(*futures), 120)
            wave_s = time.monotonic() - killed
            last = node.store.store.last_seq
            await _until_seq(oms, NODE, last, got, 120)
            # The presses confirm the oldest open task at each location: earlier rounds'
            # waves come first, so count presses, not this round's task names.
            picked = [e.body.task for e in got if e.name == "picked"]
            out.append(
                {
                    "round": r + 1,
                    "killed_member": cluster.members[on].name,
                    "oms_member_before": cluster.members[oms_on].name,
                    "reconnect_s": round(reconnect_s, 2),
                    "wave_answered_s": round(wave_s, 2),
                    "wave_accepted": sum(1 for x in replies if x.status == "accepted"),
                    "confirmations": len(picked),
                    "lost": presses - len(set(picked)),
                    "doubled": len(picked) - len(set(picked)) + len(set(picked) & seen),
                    "oms_sees_online_same_boot": bool(
                        oms.nodes[NODE].online and oms.nodes[NODE].boot == node.boot
                    ),
                    "member_restart_s": round(await asyncio.to_thread(cluster.start_member, on), 2),
                }
            )
            seen.update(picked)
            print(json.dumps(out[-1]), flush=True)
    return out


async def command_cost(urls: list[str], workdir: Path, commands: int) -> dict[str, float]:
    """Seconds for ``commands`` one-task commands, then for the same in waves of 500."""
    out: dict[str, float] = {}
    for label, batch in (("one_task_commands_s", 1), ("waves_of_500_s", MAX_TASKS_PER_COMMAND)):
        name = f"cost-{batch}"
        path = _node_file(workdir, urls, name)
        oms = _oms(urls[1:] + urls[:1], f"bench-cost-{batch}")
        async with oms, node_in_process(path):
            await oms.wait_connected(60)
            await _wait_until(partial(_is_online, oms, name), 60)
            began = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*oms.send_tasks(name, _tasks(commands, "c"), batch=batch)), 600
            )
            out[label] = round(time.monotonic() - began, 2)
    return out


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every section; the figures."""
    results: dict[str, Any] = {"machine": machine(), "failover": {}, "command_cost": {}}
    with LocalBroker(workdir / "mosquitto") as mosquitto:
        results["command_cost"]["mosquitto"] = await command_cost(
            [mosquitto.url], workdir / "mosq", args.commands
        )
    for kind, cls in (("nats", NatsCluster), ("rabbitmq", RabbitCluster)):
        if kind not in args.brokers:
            continue
        why = missing_broker(kind)
        if why is not None:
            results["failover"][kind] = {"skipped": why}
            continue
        with cls(workdir / kind, 3) as cluster:
            started = cluster.started_in
            rounds = await failover_rounds(cluster, args.rounds, args.wave)
            cost = await command_cost(cluster.urls, workdir / f"{kind}-cost", args.commands)
        results["failover"][kind] = {"cluster_start_s": round(started or 0, 2), "rounds": rounds}
        results["command_cost"][f"{kind}_3_members"] = cost
    return results


def main() -> None:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wave", type=int, default=500)
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--brokers", nargs="*", default=["nats", "rabbitmq"])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="zone-bench-failover-") as tmp:
        print(json.dumps(asyncio.run(run(args, Path(tmp))), indent=2))


if __name__ == "__main__":
    main()
