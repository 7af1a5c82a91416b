"""Dispatch and returns stations: scan (or press) to event at the OMS, and their memory.

``python -m bench.stations [--scans N] [--station dispatch|returns|both]`` starts a private
Mosquitto and each station as its own process (``zone-agent run --simulate``: a serial
scanner on a pty, lane or bin lights and buttons on MockFactory pins), with the same method
as ``bench.pack``:

* **dispatch**: N parcels announced with ``load``; for each, the parcel label is scanned
  (its lane lights) and then the lane's barcode: the time from the lane scan to the
  ``loaded`` event at the OMS is the station's scan-to-confirmation path. Then N scans of a
  parcel nobody announced, each answered by ``load_refused``.
* **returns**: one RMA of N units; for each unit, the unit, reason and grade are scanned
  (its bin lights) and the bin's button pressed: the time from the press to
  ``return_received`` at the OMS. Then N scans of an unknown code while the return is open,
  each answered by ``return_refused``.

A scan or press goes through the node's control API, which writes the bytes into the
scanner's pty (or drives the button's mock pin) before it answers; so each path is given
from just before the HTTP request (upper bound) and from just after its answer (lower
bound). Prints one JSON object; nothing is asserted; the figures go to bench/README.md by
hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.oms.demo.site import Control, NodeProcess
from bench.common import machine, proc_status, summary_ms

SITE = "bench"
GTIN = "4006381333931"
WARM_UP = 20

_COMMON = """site = "{site}"
node = "{node}"
role = "{role}"
state_dir = "{state}"
[broker]
urls = ["{broker}"]
"""
_SCANNER = """[[devices]]
name = "scanner"
kind = "serial_scanner"
port = "/dev/zone-scanner"
dedupe_window_s = 0
"""


def _slots(name: str, ids: list[str]) -> str:
    lines = ["[[devices]]", f'name = "{name}"', 'kind = "gpio_slots"', "double_press_s = 0"]
    for n, slot in enumerate(ids):
        lines += ["[[devices.slots]]", f'id = "{slot}"', f"led = {2 + 2 * n}"]
        lines.append(f"confirm = {3 + 2 * n}")
    return "\n".join(lines) + "\n"


def node_toml(workdir: Path, broker_url: str, role: str) -> tuple[str, Path]:
    """The node file of a dispatch or returns station on simulated devices."""
    node = f"{role}-b1"
    text = _COMMON.format(site=SITE, node=node, role=role, state=workdir / node, broker=broker_url)
    if role == "dispatch":
        text += '[settings]\n[[settings.lanes]]\nid = "L1"\ncarrier = "DPD"\n'
        text += '[[settings.lanes]]\nid = "L2"\ncarrier = "UPS"\n'
        text += _SCANNER + _slots("lanes", ["L1", "L2"])
    else:
        bins = ["restock", "refurbish", "quarantine", "return_to_vendor", "dispose"]
        text += "[settings.bins]\n" + "".join(f'{b} = "B{n}"\n' for n, b in enumerate(bins, 1))
        text += _SCANNER + _slots("bins", [f"B{n}" for n in range(1, 6)])
    path = workdir / f"{node}.toml"
    path.write_text(text)
    return node, path


def sscc(n: int) -> str:
    """The n-th SSCC of the bench (GS1 check digit included)."""
    digits = f"37610425{n:09d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return digits + str((10 - total % 10) % 10)


async def _next(oms: OmsClient, name: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while (await oms.events.get()).name != name:
            pass


async def _timed(
    act: Callable[[], Awaitable[None]], oms: OmsClient, event: str, out: tuple[list[int], ...]
) -> None:
    t0 = time.monotonic_ns()
    await act()
    t1 = time.monotonic_ns()
    await _next(oms, event)
    t2 = time.monotonic_ns()
    out[0].append(t2 - t0)
    out[1].append(t2 - t1)


async def _dispatch(oms: OmsClient, node: str, control: Control, n: int) -> dict[str, Any]:
    total = n + WARM_UP
    for start in range(0, total, 500):
        batch = [
            {"sscc": sscc(i), "carrier": "DPD", "order": f"O-{i}"}
            for i in range(start, min(total, start + 500))
        ]
        assert (await oms.call(node, "load", {"parcels": batch})).status == "accepted"
    loads: tuple[list[int], list[int]] = ([], [])
    refusals: tuple[list[int], list[int]] = ([], [])
    for i in range(total):
        await control.scan(sscc(i))
        sink = loads if i >= WARM_UP else ([], [])
        await _timed(lambda: control.scan("LANE-L1"), oms, "loaded", sink)
    for i in range(total):
        sink = refusals if i >= WARM_UP else ([], [])
        await _timed(lambda: control.scan(sscc(900_000)), oms, "load_refused", sink)
    return {
        "lane_scan_to_loaded_upper_ms": summary_ms(loads[0]),
        "lane_scan_to_loaded_lower_ms": summary_ms(loads[1]),
        "scan_to_load_refused_upper_ms": summary_ms(refusals[0]),
        "scan_to_load_refused_lower_ms": summary_ms(refusals[1]),
    }


async def _bin_lit(control: Control) -> None:
    """Wait until the unit's three scans are in (its bin is lit, waiting for the press)."""
    async with asyncio.timeout(10):
        while True:
            if (await control.workflow()).get("phase") == "put":
                return
            await asyncio.sleep(0.001)


async def _returns(oms: OmsClient, node: str, control: Control, n: int) -> dict[str, Any]:
    total = n + WARM_UP
    rma = {
        "rma": "R-1",
        "order": "O-1",
        "lines": [{"sku": "MUG", "qty": min(9999, total), "barcodes": [GTIN]}],
    }
    assert (await oms.call(node, "rma", {"rmas": [rma]})).status == "accepted"
    await control.scan("R-1")
    await _next(oms, "return_opened")
    puts: tuple[list[int], list[int]] = ([], [])
    refusals: tuple[list[int], list[int]] = ([], [])
    for i in range(total):
        await control.scan(GTIN)
        await control.scan("REASON-no_longer_needed")
        await control.scan("GRADE-A")  # -> restock, bin B1
        await _bin_lit(control)
        sink = puts if i >= WARM_UP else ([], [])
        await _timed(lambda: control.press("bins", "B1"), oms, "return_received", sink)
    for i in range(total):
        sink = refusals if i >= WARM_UP else ([], [])
        await _timed(lambda: control.scan("PALLET-7"), oms, "return_refused", sink)
    return {
        "press_to_return_received_upper_ms": summary_ms(puts[0]),
        "press_to_return_received_lower_ms": summary_ms(puts[1]),
        "scan_to_return_refused_upper_ms": summary_ms(refusals[0]),
        "scan_to_return_refused_lower_ms": summary_ms(refusals[1]),
    }


async def run(role: str, scans: int, workdir: Path) -> dict[str, Any]:
    """One station's scenario; its figures."""
    with LocalBroker(workdir / "broker") as broker:
        node, path = node_toml(workdir, broker.url, role)
        process = NodeProcess(node, path, workdir / f"{node}.log")
        await process.start()
        try:
            oms = OmsClient(BrokerConfig(urls=[broker.url]), SITE, client_id=f"bench-{role}")
            async with oms:
                async with asyncio.timeout(20):
                    while not (oms.nodes.get(node) and oms.nodes[node].online):
                        await oms.state_changes.get()
                control = await Control.find(workdir / node)
                scenario = _dispatch if role == "dispatch" else _returns
                figures = await scenario(oms, node, control, scans)
                assert process.pid is not None
                status = proc_status(process.pid)
        finally:
            await process.stop()
    return {"station": role, "scans": scans, **figures, "node": status}


def main() -> None:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.stations", description=__doc__)
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--station", choices=["dispatch", "returns", "both"], default="both")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    roles = ["dispatch", "returns"] if args.station == "both" else [args.station]
    out: dict[str, Any] = {}
    for role in roles:
        with tempfile.TemporaryDirectory(dir=args.workdir, prefix=f"zone-bench-{role}-") as tmp:
            out[role] = asyncio.run(run(role, args.scans, Path(tmp)))
    out["machine"] = machine()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
