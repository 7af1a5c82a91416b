"""Outage to first confirmation: how soon after the broker is back a confirmation flows.

``python -m bench.reconnect [--outages 1 5 15] [--repeat 3]`` starts a private Mosquitto
and, in front of it, a TCP front on loopback: what a load balancer or proxy is. While the
broker is "down" the front accepts every connection and closes it at once; while "up" it
pipes bytes both ways. A pick node (its own process, ``zone-agent run --simulate``) with
the node file's default backoff (0.5 s doubling to 30 s) connects through the front; the
reference OMS connects to the broker directly and stays up.

Each trial lights a task, takes the front down (cutting the node's connection), presses
the slot's confirm button (the ``picked`` event waits in the outbox), keeps the front down
for the outage, brings it up at ``t_back``, and times from ``t_back``:

* ``to_attempt``: the node's first connection at the front: what is left of the backoff
  step in force when the broker came back (up to that step, by design);
* ``to_picked``: the ``picked`` event at the OMS;
* ``attempt_to_picked``: the difference, the cost of the reconnect itself (DESIGN and
  issue 15: under 1 s).

Prints one JSON object; nothing is asserted; the figures go to bench/README.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker, free_port
from agent.oms.demo.site import Control, NodeProcess
from agent.wire.messages import PickTask
from bench.common import machine, percentile

SITE = "bench"
NODE = "zone-r1"


class Front:
    """A TCP front for the broker: pipes while up; accepts and closes at once while down."""

    def __init__(self, broker_port: int) -> None:
        self.port = free_port()
        self.broker_port = broker_port
        self.up = True
        self.accepts: list[int] = []  # monotonic ns of every connection taken
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on 127.0.0.1."""
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def close(self) -> None:
        """Stop listening and cut every connection."""
        self.down()
        if self._server is not None:
            self._server.close()

    def down(self) -> None:
        """The broker is gone: cut what is open; new connections are closed at once."""
        self.up = False
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(time.monotonic_ns())
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            writer.transport.abort()
            return
        self._open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()
            self._open.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def pick_toml(workdir: Path, url: str) -> Path:
    """A pick node with one GPIO slot, the default backoff and connect timeout."""
    path = workdir / f"{NODE}.toml"
    path.write_text(
        f"""site = "{SITE}"
node = "{NODE}"
role = "pick"
state_dir = "{workdir / NODE}"
[broker]
urls = ["{url}"]
[settings]
counters_every_s = 0
[[devices]]
name = "shelf"
kind = "gpio_slots"
[[devices.slots]]
id = "A1"
led = 2
confirm = 3
"""
    )
    return path


async def _picked(oms: OmsClient, task: str, timeout: float) -> int:
    async with asyncio.timeout(timeout):
        while True:
            event = await oms.events.get()
            body = event.body if isinstance(event.body, dict) else event.body.model_dump()
            if event.name == "picked" and body.get("task") == task:
                return time.monotonic_ns()


async def run(outages: list[float], repeat: int, workdir: Path) -> dict[str, Any]:
    """The scenario; the figures."""
    trials: list[dict[str, Any]] = []
    with LocalBroker(workdir / "broker") as broker:
        front = Front(broker.port)
        await front.start()
        node = NodeProcess(
            NODE, pick_toml(workdir, f"mqtt://127.0.0.1:{front.port}"), workdir / "node.log"
        )
        await node.start()
        try:
            oms = OmsClient(BrokerConfig(urls=[broker.url]), SITE, client_id="bench-reconnect")
            async with oms:
                async with asyncio.timeout(20):
                    while not (oms.nodes.get(NODE) and oms.nodes[NODE].online):
                        await oms.state_changes.get()
                control = await Control.find(workdir / NODE)
                n = 0
                for outage in outages:
                    for _ in range(repeat):
                        n += 1
                        task = PickTask(task=f"t{n}", order=f"o{n}", location="A1", sku="S", qty=1)
                        reply = await oms.call(
                            NODE, "pick", {"tasks": [task.model_dump(exclude_defaults=True)]}
                        )
                        assert reply.status == "accepted", reply
                        await asyncio.sleep(0.3)  # let the light come on
                        front.down()
                        await control.press("shelf", "A1")
                        await asyncio.sleep(outage)
                        t_back = time.monotonic_ns()
                        front.up = True
                        t_picked = await _picked(oms, task.task, timeout=outage + 120)
                        attempt = next(t for t in front.accepts if t >= t_back)
                        trials.append(
                            {
                                "outage_s": outage,
                                "to_attempt_ms": (attempt - t_back) / 1e6,
                                "to_picked_ms": (t_picked - t_back) / 1e6,
                                "attempt_to_picked_ms": (t_picked - attempt) / 1e6,
                                "attempts_while_down": sum(1 for t in front.accepts if t < t_back),
                            }
                        )
                        front.accepts.clear()
                        await asyncio.sleep(1.0)  # the link settles; backoff starts over
        finally:
            await node.stop()
            await front.close()
    by_outage: dict[str, Any] = {}
    for outage in outages:
        rows = [t for t in trials if t["outage_s"] == outage]
        by_outage[str(outage)] = {
            key: {
                "p50": round(percentile([r[key] for r in rows], 50), 1),
                "max": round(max(r[key] for r in rows), 1),
            }
            for key in ("to_attempt_ms", "to_picked_ms", "attempt_to_picked_ms")
        }
    return {"trials": trials, "by_outage": by_outage, "machine": machine()}


def main() -> None:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.reconnect", description=__doc__)
    parser.add_argument("--outages", type=float, nargs="+", default=[1.0, 5.0, 15.0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="zone-bench-reconnect-") as tmp:
        print(json.dumps(asyncio.run(run(args.outages, args.repeat, Path(tmp))), indent=2))


if __name__ == "__main__":
    main()
