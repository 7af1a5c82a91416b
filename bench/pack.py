"""Pack station: scan to event at the OMS, and the node's memory.

``python -m bench.pack [--scans N]`` starts a private Mosquitto and a pack node as its own
process (``zone-agent run --simulate``: serial scanner and MT-SICS scale on ptys, a ZPL
printer on a local TCP port), queues one order with the reference OMS, starts it with a
tote scan, then scans a code of no line N times, one after the other. Each scan is refused
with a ``pack_refused`` event, the pack station's answer to a scan: the time from the scan
to that event reaching the OMS is the DESIGN §6 "scan to confirmation published" path
for a pack station (scanner pty, framing, workflow, one fsync'd commit, publish, broker).

A scan is injected through the node's control API (``POST /sim/scanner/scan``), which
writes the bytes into the scanner's pty before it answers. So two times are reported:

* from just before the HTTP request (an upper bound: it includes the HTTP round trip);
* from just after its answer (a lower bound: the bytes were in the pty already).

Then ``GET /metrics`` is scraped 100 times: how long a scrape takes (HTTP round trip
included) and the node's RSS after them (the first scrape imports ``prometheus_client``).

Prints one JSON object: latencies in ms (p50, p99, max), the node's RSS and the machine.
Nothing is asserted; the figures go to bench/README.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.oms.demo.site import Control, NodeProcess
from bench.common import machine, proc_status, summary_ms

SITE = "bench"
NODE = "pack-b1"
WRONG = "5901234123457"


def pack_toml(workdir: Path, broker_url: str) -> Path:
    """A pack node on simulated devices."""
    path = workdir / f"{NODE}.toml"
    path.write_text(
        f"""site = "{SITE}"
node = "{NODE}"
role = "pack"
state_dir = "{workdir / NODE}"
[broker]
urls = ["{broker_url}"]
[settings]
counters_every_s = 0
[[devices]]
name = "scanner"
kind = "serial_scanner"
port = "/dev/zone-scanner"
dedupe_window_s = 0
[[devices]]
name = "scale"
kind = "mt_sics"
port = "/dev/zone-scale"
[[devices]]
name = "label"
kind = "zpl_printer"
host = "127.0.0.1"
"""
    )
    return path


ORDER: dict[str, Any] = {
    "order": "o1",
    "tote": "T-o1",
    "lines": [
        {
            "sku": "S1",
            "qty": 2,
            "barcodes": ["4006381333931"],
            "unit_weight_g": 200,
            "dims_mm": [100, 80, 50],
        }
    ],
    "label": {"ship_to": {"name": "Ann"}, "carrier": "DPD", "sscc": "376104250021234569"},
}


METRICS_SCRAPES = 100


def _scrape(url: str) -> bytes:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        data: bytes = response.read()
        return data


async def _next(oms: OmsClient, name: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while (await oms.events.get()).name != name:
            pass


async def run(scans: int, workdir: Path) -> dict[str, Any]:
    """The scenario; the figures."""
    with LocalBroker(workdir / "broker") as broker:
        node = NodeProcess(NODE, pack_toml(workdir, broker.url), workdir / f"{NODE}.log")
        await node.start()
        try:
            oms = OmsClient(BrokerConfig(urls=[broker.url]), SITE, client_id="bench-pack")
            async with oms:
                async with asyncio.timeout(20):
                    while not (oms.nodes.get(NODE) and oms.nodes[NODE].online):
                        await oms.state_changes.get()
                control = await Control.find(workdir / NODE)
                assert (await oms.call(NODE, "pack", ORDER)).status == "accepted"
                await control.scan("T-o1")
                for _ in range(20):  # warm-up
                    await control.scan(WRONG)
                    await _next(oms, "pack_refused")
                before: list[int] = []
                after: list[int] = []
                for _ in range(scans):
                    t0 = time.monotonic_ns()
                    await control.scan(WRONG)
                    t1 = time.monotonic_ns()
                    await _next(oms, "pack_refused")
                    t2 = time.monotonic_ns()
                    before.append(t2 - t0)
                    after.append(t2 - t1)
                assert node.pid is not None
                status = proc_status(node.pid)
                # What Prometheus costs the node: the first scrape imports prometheus_client.
                scrapes: list[int] = []
                for _ in range(METRICS_SCRAPES):
                    t0 = time.monotonic_ns()
                    await asyncio.to_thread(_scrape, control.url)
                    scrapes.append(time.monotonic_ns() - t0)
                scraped = proc_status(node.pid)
        finally:
            await node.stop()
    return {
        "scans": scans,
        "scan_to_event_upper_ms": summary_ms(before),
        "scan_to_event_lower_ms": summary_ms(after),
        "node": status,
        "node_after_metrics_scrapes": scraped,
        "metrics_scrape_ms": summary_ms(scrapes),
        "machine": machine(),
    }


def main() -> None:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.pack", description=__doc__)
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="zone-bench-pack-") as tmp:
        print(json.dumps(asyncio.run(run(args.scans, Path(tmp))), indent=1))


if __name__ == "__main__":
    main()
