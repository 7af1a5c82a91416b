"""A pack node with a USB HID scale against one with an MT-SICS scale: memory and CPU.

``python -m bench.pack_scales [--rounds R] [--weighs N] [--idle-s S]`` starts a private
Mosquitto and, in turn (alternating, R rounds each), a pack node as its own process
(``zone-agent run --simulate``, the node file of ``bench.pack`` with only the scale's
table changed): ``mt_sics`` (the serial driver polling a pty simulator every 0.25 s) and
``hid_pos`` (the HID driver reading the reports a simulated scale streams every 0.2 s into
the fake hidraw backend). For each node:

* RSS once it is online (the scale open and reporting);
* CPU seconds over ``--idle-s`` seconds of nothing but live weight (the scale's own cost:
  the driver and, in the same process under ``--simulate``, its simulator);
* N weight changes through the control API (``POST /sim/scale/set``), each until the
  node's state shows the new weight: the time from the request to the weight on the
  screen's state (HTTP polling every 5 ms included), and RSS after them.

Prints one JSON object; nothing is asserted (figures go to bench/README.md by hand).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.oms.demo.site import Control, NodeProcess
from bench.common import machine, proc_status, summary_ms
from bench.pack import NODE, SITE, pack_toml

MT_SICS = 'name = "scale"\nkind = "mt_sics"\nport = "/dev/zone-scale"\n'
SCALES = {
    "mt_sics": MT_SICS,
    "hid_pos": 'name = "scale"\nkind = "hid_pos"\ndevice = "auto"\n',
}


def node_file(workdir: Path, broker_url: str, kind: str) -> Path:
    """``bench.pack``'s pack node with the scale of ``kind``."""
    path = pack_toml(workdir, broker_url)
    text = path.read_text()
    if MT_SICS not in text:
        raise SystemExit("bench.pack's node file changed: update bench/pack_scales.py")
    path.write_text(text.replace(MT_SICS, SCALES[kind]))
    return path


async def _shown(control: Control, grams: float, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while True:
            weight = (await control.get("/api/state"))["workflow"].get("weight") or {}
            if weight.get("grams") == grams and weight.get("stable"):
                return
            await asyncio.sleep(0.005)


async def one(
    kind: str, workdir: Path, broker_url: str, weighs: int, idle_s: float
) -> dict[str, Any]:
    """One node with a scale of ``kind``: its figures."""
    run_dir = workdir / f"{kind}-{time.monotonic_ns()}"
    run_dir.mkdir()
    node = NodeProcess(NODE, node_file(run_dir, broker_url, kind), run_dir / f"{NODE}.log")
    await node.start()
    try:
        oms = OmsClient(BrokerConfig(urls=[broker_url]), SITE, client_id=f"bench-{kind}")
        async with oms:
            async with asyncio.timeout(20):
                while not (oms.nodes.get(NODE) and oms.nodes[NODE].online):
                    await oms.state_changes.get()
            control = await Control.find(run_dir / NODE)
            await control.post("/sim/scale/set", {"grams": 500.0})
            await _shown(control, 500.0)
            assert node.pid is not None
            online = proc_status(node.pid)
            await asyncio.sleep(idle_s)
            idle = proc_status(node.pid)
            samples: list[int] = []
            for i in range(weighs):
                grams = 600.0 + i % 400
                t0 = time.monotonic_ns()
                await control.post("/sim/scale/set", {"grams": grams})
                await _shown(control, grams)
                samples.append(time.monotonic_ns() - t0)
            after = proc_status(node.pid)
    finally:
        await node.stop()
    return {
        "kind": kind,
        "rss_online_mb": online["rss_mb"],
        "idle_cpu_s_per_min": round((idle["cpu_s"] - online["cpu_s"]) * 60 / idle_s, 3),
        "set_to_shown_ms": summary_ms(samples),
        "rss_after_weighs_mb": after["rss_mb"],
    }


async def run(rounds: int, weighs: int, idle_s: float, workdir: Path) -> dict[str, Any]:
    """Alternate the two kinds ``rounds`` times each under one broker."""
    results: list[dict[str, Any]] = []
    with LocalBroker(workdir / "broker") as broker:
        for _ in range(rounds):
            for kind in SCALES:
                results.append(await one(kind, workdir, broker.url, weighs, idle_s))
    return {"weighs": weighs, "idle_s": idle_s, "runs": results, "machine": machine()}


def main() -> None:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.pack_scales", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--weighs", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="zone-bench-scales-") as tmp:
        result = asyncio.run(run(args.rounds, args.weighs, args.idle_s, Path(tmp)))
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
