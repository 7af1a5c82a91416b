"""``python -m bench.atop``: ATOP pick-to-light at zone scale, against its baselines, in one run.

Issue 21's budgets, measured on one private Mosquitto (``set_tcp_nodelay true``), each node
in its own process (``bench.nodehost``, simulated devices, the OMS in this process):

* wave to lit: a 10,000-task wave to a node with 1,000 ATOP tags on five simulated
  controllers, from the first ``pick`` command to every tag *showing* its quantity (the
  simulated controllers took the CCBs), beside the same wave to a node with a 2,000-slot
  LED strip (every slot in a written SPI frame). Budget: ATOP within 2x the strip.
* press to ``picked`` at the OMS: a press through each device's simulator (an ATOP tag's
  confirm key: a CCB over TCP; a GPIO slot's mock pin: gpiozero's callback), to the OMS
  receiving the ``picked`` event, p50 and p99, presses alternating between the two nodes
  so both see the same machine. Budget: ATOP p99 within 1 ms of gpio_slots'.
* node RSS with 1,000 tags and the wave's 10,000 open tasks; CCBs per second per
  controller while the wave lights (frames the driver wrote / seconds to lit).

Results are printed and written to bench/results-atop.json; bench/README.md keeps the
figures of a run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import NodeEvent, OmsClient
from agent.oms.demo.broker import LocalBroker
from bench.common import SITE, NodeHost, machine, node_toml, summary_ms, task

HERE = Path(__file__).resolve().parent
CONTROLLERS = 5
TAGS = 200
STRIP_SLOTS = 2000
GPIO_SLOTS = 8
WAVE_TASKS = 10_000


def atop_toml(state_dir: Path, port: int, node: str) -> str:
    """A pick node of 1,000 ATOP tags on five controllers, slots T0001..T1000."""
    lines = [
        f'site = "{SITE}"',
        f'node = "{node}"',
        'role = "pick"',
        f'state_dir = "{state_dir}"',
        "[broker]",
        f'urls = ["mqtt://127.0.0.1:{port}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.25",
    ]
    for c in range(CONTROLLERS):
        lines += [
            "[[devices]]",
            f'name = "atop-{c + 1}"',
            'kind = "atop"',
            f'host = "10.0.50.{101 + c}"',
            "double_press_s = 0",
            "[[devices.slots]]",
            f'tags = "1-{TAGS}"',
            f'first_id = "T{c * TAGS + 1:04}"',
        ]
    return "\n".join(lines) + "\n"


class Bench:
    """One run: the broker, the nodes, the OMS, the results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-atop-"))
        self.broker = LocalBroker(self.work / "broker")
        self.results: dict[str, Any] = {"machine": machine()}
        self.hosts: list[NodeHost] = []

    def log(self, text: str) -> None:
        """A progress line on stderr."""
        print(f"[bench.atop] {text}", file=sys.stderr, flush=True)

    async def host(self, name: str, text: str) -> NodeHost:
        """Start a nodehost on the node file ``text``."""
        path = self.work / f"{name}.toml"
        path.write_text(text)
        with (self.work / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once, the child runs on
                [sys.executable, "-m", "bench.nodehost", str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        host = NodeHost(proc)
        self.hosts.append(host)
        ready = await host.read(60)
        assert ready.get("ready"), ready
        return host

    def oms(self) -> OmsClient:
        """The reference OMS."""
        broker = BrokerConfig(urls=[self.broker.url], backoff_initial_s=0.02, backoff_max_s=0.1)
        return OmsClient(broker, SITE, client_id=f"bench-atop-{os.getpid()}")

    async def wave(
        self, oms: OmsClient, host: NodeHost, node: str, slots: list[str], op: str
    ) -> Any:
        """10,000 tasks over ``slots``; seconds from the first command to all lit."""
        tasks = [task(i, slots[i % len(slots)], tote=False) for i in range(WAVE_TASKS)]
        armed = await host.call({"op": op, "count": len(slots), "timeout": 150})
        assert armed.get("armed"), armed
        t0 = time.monotonic_ns()
        replies = await asyncio.wait_for(asyncio.gather(*oms.send_tasks(node, tasks)), 150)
        t_replies = time.monotonic_ns()
        lit = await host.read(160)
        assert all(r.status == "accepted" for r in replies)
        return {
            "tasks": WAVE_TASKS,
            "slots": len(slots),
            "slots_lit": lit["lit"],
            "seconds_to_all_lit": round((lit["t"] - t0) / 1e9, 3),
            "seconds_to_all_replies": round((t_replies - t0) / 1e9, 3),
        }

    async def run(self) -> None:
        """Every section, in order."""
        port = int(self.broker.url.rsplit(":", 1)[1])
        async with self.oms() as oms:
            await oms.wait_connected()
            # (1) the baseline: the strip's wave to lit
            strip = await self.host(
                "zone-strip",
                node_toml(
                    self.work / "zone-strip", port, node="zone-strip", strip_slots=STRIP_SLOTS
                ),
            )
            slots = [f"S{i:04d}" for i in range(STRIP_SLOTS)]
            self.results["strip_wave_to_lit"] = await self.wave(
                oms, strip, "zone-strip", slots, "wait_lit"
            )
            self.results["strip_wave_to_lit"]["node_rss_mb"] = (await strip.call({"op": "status"}))[
                "rss_mb"
            ]
            self.log(f"strip: {self.results['strip_wave_to_lit']}")
            await strip.close()

            # (2) 1,000 ATOP tags: the wave to every tag showing it
            atop = await self.host(
                "zone-atop", atop_toml(self.work / "zone-atop", port, "zone-atop")
            )
            tags = [f"T{n:04}" for n in range(1, CONTROLLERS * TAGS + 1)]
            before = await atop.call({"op": "status"})
            wave = await self.wave(oms, atop, "zone-atop", tags, "wait_shown")
            after = await atop.call({"op": "status"})
            seconds = wave["seconds_to_all_lit"]
            frames = {
                name: counts.get("frames_out", 0)
                - before["counters"].get(name, {}).get("frames_out", 0)
                for name, counts in after["counters"].items()
            }
            wave["frames_per_controller"] = frames
            wave["frames_per_s_per_controller"] = {
                name: round(n / seconds) for name, n in frames.items()
            }
            wave["node_rss_mb"] = after["rss_mb"]
            wave["open_tasks"] = after["open"]
            self.results["atop_wave_to_lit"] = wave
            self.log(f"atop: {wave}")
            strip_s = self.results["strip_wave_to_lit"]["seconds_to_all_lit"]
            self.results["wave_ratio_atop_to_strip"] = round(seconds / strip_s, 2)

            # (3) press to picked, alternating between a gpio_slots node and the ATOP node
            gpio_file = node_toml(
                self.work / "zone-gpio", port, node="zone-gpio", gpio_slots=GPIO_SLOTS
            ).replace('kind = "gpio_slots"', 'kind = "gpio_slots"\ndouble_press_s = 0')
            gpio = await self.host("zone-gpio", gpio_file)
            n, warm = self.args.presses, 50
            gslots = [f"A{i + 1}" for i in range(GPIO_SLOTS)]
            gtasks = [
                task(200_000 + i, gslots[i % GPIO_SLOTS], tote=False) for i in range(n + warm + 100)
            ]
            await asyncio.wait_for(asyncio.gather(*oms.send_tasks("zone-gpio", gtasks)), 60)
            await asyncio.sleep(1.0)
            while not oms.events.empty():
                oms.events.get_nowait()
            samples: dict[str, list[int]] = {"gpio_slots": [], "atop": []}
            for i in range(n + warm):
                for kind, host, node, device, slot in (
                    ("gpio_slots", gpio, "zone-gpio", "shelf", gslots[i % GPIO_SLOTS]),
                    ("atop", atop, "zone-atop", f"atop-{(i % 1000) // TAGS + 1}", tags[i % 1000]),
                ):
                    t0 = (await host.call({"op": "sim_press", "device": device, "slot": slot}))["t"]
                    async with asyncio.timeout(10):
                        while True:
                            event: NodeEvent = await oms.events.get()
                            if event.node == node and event.name == "picked":
                                t1 = time.monotonic_ns()
                                break
                    if i >= warm:
                        samples[kind].append(t1 - t0)
            press = {kind: summary_ms(values) for kind, values in samples.items()}
            press["p99_difference_ms"] = round(
                press["atop"]["p99_ms"] - press["gpio_slots"]["p99_ms"], 3
            )
            self.results["press_to_picked"] = press
            self.log(f"press: {press}")
            # (4) a controller power-cycled: its 200 tags shown again, CCBs per second
            before = await atop.call({"op": "status"})
            await atop.call({"op": "sim_control", "device": "atop-3", "action": "kill"})
            t0 = (await atop.call({"op": "sim_control", "device": "atop-3", "action": "restart"}))[
                "t"
            ]
            armed = await atop.call({"op": "wait_shown", "count": 1000, "timeout": 60})
            assert armed.get("armed"), armed
            shown = await atop.read(70)
            after = await atop.call({"op": "status"})
            seconds = (shown["t"] - t0) / 1e9
            frames = after["counters"]["atop-3"]["frames_out"]
            frames -= before["counters"]["atop-3"]["frames_out"]
            self.results["controller_restore"] = {
                "tags": TAGS,
                "tags_shown": shown["lit"],
                "seconds_to_all_shown": round(seconds, 3),
                "frames": frames,
                "frames_per_s": round(frames / seconds),
            }
            self.log(f"restore: {self.results['controller_restore']}")
            final = await atop.call({"op": "status"})
            self.results["atop_node_rss_mb_at_end"] = final["rss_mb"]
            await gpio.close()
            await atop.close()

    def report(self) -> None:
        """Print the budget lines and write the results file."""
        r = self.results
        wave = r["atop_wave_to_lit"]
        press = r["press_to_picked"]
        atop, gpio = press["atop"], press["gpio_slots"]
        ratio = r["wave_ratio_atop_to_strip"]
        rates = sorted(wave["frames_per_s_per_controller"].items())
        lines = [
            f"wave to lit: 1,000 ATOP tags {wave['seconds_to_all_lit']:.3f} s, 2,000-slot strip "
            f"{r['strip_wave_to_lit']['seconds_to_all_lit']:.3f} s: ratio {ratio:.2f} "
            f"(budget <= 2) {'ok' if ratio <= 2 else 'MISS'}",
            f"press to picked p50/p99: atop {atop['p50_ms']:.3f}/{atop['p99_ms']:.3f} ms, "
            f"gpio_slots {gpio['p50_ms']:.3f}/{gpio['p99_ms']:.3f} ms: p99 difference "
            f"{press['p99_difference_ms']:+.3f} ms (budget <= 1 ms) "
            f"{'ok' if press['p99_difference_ms'] <= 1 else 'MISS'}",
            f"node RSS with 1,000 tags and {wave['open_tasks']} open tasks: "
            f"{wave['node_rss_mb']} MB (the strip node with 2,000 slots and 10,000: "
            f"{r['strip_wave_to_lit']['node_rss_mb']} MB)",
            "CCBs/s per controller while the wave lit: " + ", ".join(f"{k} {v}" for k, v in rates),
            f"a controller restarted: {r['controller_restore']['tags']} tags shown again in "
            f"{r['controller_restore']['seconds_to_all_shown']:.3f} s from the restart, "
            f"{r['controller_restore']['frames']} CCBs, "
            f"{r['controller_restore']['frames_per_s']} CCBs/s (reconnect wait included)",
        ]
        for line in lines:
            print(line)
        out = HERE / "results-atop.json"
        out.write_text(json.dumps(r, indent=1) + "\n")
        print(f"written {out}")

    def cleanup(self) -> None:
        """Stop children and the broker."""
        for host in self.hosts:
            if host.proc.poll() is None:
                host.proc.kill()
        self.broker.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


async def main(args: argparse.Namespace) -> None:
    """Run the bench."""
    bench = Bench(args)
    bench.broker.start()
    try:
        await bench.run()
        bench.report()
    finally:
        bench.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--presses", type=int, default=500, help="presses per node (default 500)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    asyncio.run(main(parser.parse_args()))
