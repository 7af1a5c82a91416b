"""``make demo``: a simulated pick zone driven by the reference OMS, end to end.

It starts a private Mosquitto on a free loopback port, one simulated node (``zone-agent
run --simulate`` as its own process) and the reference OMS; the OMS sends a wave of pick
tasks, the simulated picker presses the lit buttons through the node's control API, and
the confirmations come back to the OMS. Then everything stops cleanly.

Run ``python -m agent.demo --help`` for options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.config import BrokerConfig
from agent.link.messages import PickTask, State
from agent.localbroker import LocalBroker
from agent.oms import OmsClient

console = Console()
SITE = "demo"
NODE = "zone-a1"
SLOTS = ["A1", "A2", "A3", "A4", "A5", "A6"]


def node_file(workdir: Path, broker: LocalBroker) -> Path:
    """A pick zone with six GPIO slots (LED, confirm button, quantity display)."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{NODE}"',
        'role = "pick"',
        f'state_dir = "{workdir / NODE}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "[[devices]]",
        'name = "shelf"',
        'kind = "gpio_slots"',
    ]
    pin = 2
    for slot in SLOTS:
        lines += [
            "[[devices.slots]]",
            f'id = "{slot}"',
            f"led = {pin}",
            f"confirm = {pin + 1}",
            f"display = {{ clk = {pin + 2}, dio = {pin + 3} }}",
        ]
        pin += 4
    path = workdir / f"{NODE}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def http(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET (or POST ``body``) JSON on the node's control API."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


async def control_url(state_dir: Path, timeout: float = 10.0) -> str:
    """The node's control API URL, once it has written it."""
    path = state_dir / "control.json"
    async with asyncio.timeout(timeout):
        while not path.exists():  # noqa: ASYNC110 - another process writes it; nothing to await
            await asyncio.sleep(0.05)
    url: str = json.loads(path.read_text())["url"]
    return url


def lights_table(sim: dict[str, Any]) -> Table:
    """The shelf as the simulated hardware shows it."""
    table = Table(title="shelf (what the LEDs and displays show)")
    for column in ("slot", "light", "display"):
        table.add_column(column)
    for slot, shown in sim["slots"].items():
        table.add_row(slot, "ON" if shown["on"] else "-", (shown.get("display") or "").strip())
    return table


async def run(orders: int, seed: int, keep_running: bool) -> int:
    """The demo scenario; returns the exit code."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="zone-agent-demo-") as tmp:
        workdir = Path(tmp)
        with LocalBroker(workdir / "broker") as broker:
            console.print(f"[bold]broker[/] mosquitto on {broker.url}")
            path = node_file(workdir, broker)
            with (workdir / "node.log").open("wb") as log:
                node = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "agent.cli",
                    "run",
                    str(path),
                    "--simulate",
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            code = 1
            try:
                code = await _scenario(workdir, broker, node, rng, orders, keep_running)
            finally:
                if node.returncode is None:
                    node.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(node.wait(), 10)
                if code != 0:
                    console.print(
                        f"[red]node log:[/]\n{(workdir / 'node.log').read_text()[-3000:]}"
                    )
            return code


async def _scenario(
    workdir: Path,
    broker: LocalBroker,
    node: asyncio.subprocess.Process,
    rng: random.Random,
    orders: int,
    keep_running: bool,
) -> int:
    oms = OmsClient(BrokerConfig(urls=[broker.url]), SITE)
    async with oms:
        started = time.monotonic()
        name, state, boot = await asyncio.wait_for(oms.state_changes.get(), 15)
        assert isinstance(state, State)
        console.print(
            f"[bold green]online[/] {name} boot {boot} role {state.role} "
            f"slots {', '.join(state.locations)} in {time.monotonic() - started:.2f} s"
        )
        tasks = [
            PickTask(
                task=f"T{n:03d}",
                order=f"ORD-{n // 2 + 1:04d}",
                location=rng.choice(SLOTS),
                sku=f"SKU-{rng.randint(100, 999)}",
                qty=rng.randint(1, 5),
                wave="W1",
                express=rng.random() < 0.2,
            )
            for n in range(orders * 2)
        ]
        begin = await oms.call(NODE, "wave_begin", {"wave": "W1"})
        console.print(f"wave_begin W1: {begin.status}")
        for reply in await asyncio.gather(*oms.send_tasks(NODE, tasks)):
            console.print(f"pick x{len(tasks)}: {reply.status} {reply.reason or ''}")
        release = await oms.call(NODE, "wave_release", {"wave": "W1"})
        console.print(f"wave_release W1: {release.status}")
        url = await control_url(workdir / NODE)
        await asyncio.sleep(0.3)
        console.print(lights_table(await asyncio.to_thread(http, f"{url}/sim/shelf")))
        picked = 0
        while picked < len(tasks):
            sim = await asyncio.to_thread(http, f"{url}/sim/shelf")
            lit = [slot for slot, shown in sim["slots"].items() if shown["on"]]
            if not lit:
                await asyncio.sleep(0.1)
                continue
            slot = rng.choice(lit)
            await asyncio.to_thread(
                http, f"{url}/sim/shelf/press", {"slot": slot, "button": "confirm"}
            )
            event = await oms.next_event(10)
            while event.name != "picked":
                event = await oms.next_event(10)
            picked += 1
            body: Any = event.body
            console.print(
                f"[cyan]picked[/] {body.task} {body.qty} x {body.sku} from {body.location} "
                f"(order {body.order}, seq {event.envelope.seq}, "
                f"{(body.confirmed_at - body.lit_at) / 1000:.2f} s lit)"
            )
            await asyncio.sleep(0.35)  # the shelf's double-press guard, and a human pace
        console.print(f"[bold]all {picked} lines picked and confirmed, each once[/]")
        if keep_running:
            console.print(f"node screen and API: {url}  (Ctrl-C to stop)")
            await asyncio.Event().wait()
        node.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(node.wait(), 10)
        name, state, end_boot = await asyncio.wait_for(oms.state_changes.get(), 10)
        console.print(
            f"node stopped (exit {code}); OMS sees {name} online={state.online} boot {end_boot}"
        )
        return 0 if code == 0 and not state.online else 1


def main(argv: list[str] | None = None) -> int:
    """Parse options and run the demo."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--orders", type=int, default=4, help="orders to pick (two lines each)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("DEMO_SEED", "7")))
    parser.add_argument("--keep-running", action="store_true", help="leave it up to look around")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.orders, args.seed, args.keep_running))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
