"""Shipping labels by IPP beside ZPL: scan to label submitted, and the pack node's memory.

``python -m bench.labels [--orders N]`` starts, in one run, a private Mosquitto, a real IPP
printer (CUPS's ippeveprinter, ``testing.ippserver``) and a simulated Zebra in this process
(``ZplSimulator`` on a loopback port, timing each label it receives), then two pack nodes
one after the other, each its own process (``zone-agent run --simulate``: scanner and
MT-SICS scale on ptys) with the same devices but the label printer:

* ``pack-zpl``: a ``zpl_printer`` (the Zebra); the OMS sends carrier labels as ZPL;
* ``pack-ipp``: an ``ipp_printer`` (ippeveprinter); the OMS sends carrier labels as PDF
  (about 100 KB each, as carriers' are), then a few orders with the station's own label
  (drawn as a PDF by Pillow).

Each order is scanned through, the parcel is put on the scale, and the box's confirm scan
is what prints the label (check-weigh passes on the reading already there). Measured from
just before that scan's HTTP request to the node's control API:

* ``scan_to_label_submitted``: until the label reached the printer: the Zebra got its last
  byte (``time.monotonic_ns`` in this process), or ippeveprinter's print engine started on
  the job (``date +%s%N``, wall clock, so the IPP figures use ``time.time_ns``);
* ``scan_to_label_printed``: until ``label_printed`` reached the OMS (for IPP the job was
  followed to ``completed``).

RSS: each node's ``VmRSS`` once online (the IPP client loaded and its first status request
made) and after its orders; ``pack-ipp`` after the carrier PDFs (the IPP client in use,
Pillow not loaded) and again after its own labels (Pillow loaded). The ratio and the
difference to ``pack-zpl`` are the IPP client's cost; the budget is +5 MB.

Prints one JSON object; nothing is asserted. The figures go to bench/README.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.oms.demo.site import Control, NodeProcess
from bench.common import machine, proc_status, summary_ms
from devices.printers.sim import ZplSimulator
from devices.printers.zpl import ZplPrinterConfig
from testing.ippserver import IppEvePrinter

SITE = "bench"
GTIN = "4006381333931"
OWN_LABELS = 5


class TimedZebra(ZplSimulator):
    """The ZPL simulator, noting when each label arrived (``time.monotonic_ns``)."""

    def __init__(self) -> None:
        super().__init__(ZplPrinterConfig(name="zebra", host="127.0.0.1"))
        self.arrivals: list[int] = []

    def feed(self, buffer: bytearray) -> bytes:
        """As the simulator, timing the formats taken."""
        before = len(self.jobs) + len(self.pending)
        reply = super().feed(buffer)
        now = time.monotonic_ns()
        self.arrivals += [now] * (len(self.jobs) + len(self.pending) - before)
        return reply


def carrier_pdf(seed: int) -> bytes:
    """A carrier's 4x6 label as a PDF of about 100 KB (a band of 1-bit noise)."""
    page = Image.new("1", (812, 1218), 1)
    band = random.Random(seed).randbytes((812 + 7) // 8 * 480)
    page.paste(Image.frombytes("1", (812, 480), band), (0, 600))
    out = io.BytesIO()
    page.save(out, "PDF", resolution=203.0)
    return out.getvalue()


def carrier_zpl(order: str, size: int = 0) -> bytes:
    """A carrier's ZPL label (about 1 KB; ``size``: padded with a ^FX comment to that)."""
    label = (
        f"^XA^CI28^PW812^LL1218^FO40,40^A0N,60,60^FDDPD CLASSIC^FS"
        f"^FO40,140^A0N,40,40^FDOrder {order}^FS^FO40,600^BY3^BCN,200,Y,N,N^FD{order}^FS"
        + "^FO40,900^GB700,3,3^FS"
        * 20
    )
    label += "^FX" + "x" * max(size - len(label) - 6, 0)
    return (label + "^XZ").encode()


def node_toml(workdir: Path, name: str, broker_url: str, label: str) -> Path:
    """A pack node with a simulated scanner and scale and the given label printer table."""
    path = workdir / f"{name}.toml"
    path.write_text(
        f"""site = "{SITE}"
node = "{name}"
role = "pack"
state_dir = "{workdir / name}"
[broker]
urls = ["{broker_url}"]
[settings]
counters_every_s = 0
label_printer = "label"
[[devices]]
name = "scanner"
kind = "serial_scanner"
port = "/dev/zone-scanner"
dedupe_window_s = 0
[[devices]]
name = "scale"
kind = "mt_sics"
port = "/dev/zone-scale"
poll_interval = 0.05
[[devices]]
name = "label"
simulate = false
{label}
"""
    )
    return path


def order(order_id: str, label: dict[str, Any]) -> dict[str, Any]:
    """A one-line order of two units with the given label source."""
    return {
        "order": order_id,
        "tote": f"T-{order_id}",
        "lines": [
            {
                "sku": "S1",
                "qty": 2,
                "barcodes": [GTIN],
                "unit_weight_g": 200,
                "dims_mm": [100, 80, 50],
                "description": "Enamel mug, 350 ml, speckled blue with a black rim, boxed",
            }
        ],
        **label,
    }


async def _event(oms: OmsClient, node: str, name: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while True:
            event = await oms.events.get()
            if event.node == node and event.name == name:
                return


async def _weight(control: Control, grams: float) -> None:
    await control.post("/sim/scale/set", {"grams": grams, "mode": "stable"})
    async with asyncio.timeout(10):
        while True:
            weight = (await control.workflow())["weight"]
            if weight is not None and weight["grams"] == grams and weight["stable"]:
                return
            await asyncio.sleep(0.01)


class Station:
    """One pack node process, its control API and the OMS's view of it."""

    def __init__(self, name: str, path: Path, workdir: Path) -> None:
        self.name = name
        self.process = NodeProcess(name, path, workdir / f"{name}.log")
        self.workdir = workdir
        self.control: Control | None = None
        self.orders = 0
        self.rss_trace: list[tuple[int, float]] = []  # (orders packed, RSS MB) every 10

    async def start(self, oms: OmsClient) -> Control:
        await self.process.start()
        async with asyncio.timeout(20):
            while not (oms.nodes.get(self.name) and oms.nodes[self.name].online):
                await oms.state_changes.get()
        self.control = await Control.find(self.workdir / self.name)
        return self.control

    def rss_mb(self) -> float:
        assert self.process.pid is not None
        return proc_status(self.process.pid)["rss_mb"]


async def pack_orders(
    oms: OmsClient,
    station: Station,
    labels: list[dict[str, Any]],
    arrived: Any,
    clock: Any,
) -> tuple[list[int], list[int]]:
    """Pack one order per label source; scan-to-submitted and scan-to-printed samples."""
    control = station.control
    assert control is not None
    submitted: list[int] = []
    printed: list[int] = []
    for label in labels:
        station.orders += 1
        order_id = f"{station.name}-o{station.orders}"
        reply = await oms.call(station.name, "pack", order(order_id, label))
        assert reply.status == "accepted", reply
        await _weight(control, 0)  # the previous parcel has left the scale
        for code in (f"T-{order_id}", GTIN, GTIN):
            await control.scan(code)
        await _weight(control, 580)  # box S: 579.6 g expected (2 x 200 g, box, paper)
        seen = arrived()
        t0 = clock()
        await control.scan("BOX-S")  # takes box S: the check-weigh passes, the label prints
        async with asyncio.timeout(30):
            while True:  # the printer has no event to wait on: look every millisecond
                if arrived() != seen:
                    break
                await asyncio.sleep(0.001)
        submitted.append(arrived()[-1] - t0)
        await _event(oms, station.name, "label_printed")
        printed.append(clock() - t0)
        if station.orders % 10 == 0:
            station.rss_trace.append((station.orders, station.rss_mb()))
    return submitted, printed


async def run(orders: int, workdir: Path, zpl_bytes: int = 0) -> dict[str, Any]:
    """The scenario; the figures."""
    results: dict[str, Any] = {"orders": orders}
    zebra = TimedZebra()
    await zebra.start()
    eve = IppEvePrinter(workdir / "ipp")
    eve.start()  # in the main thread: its processes end with the thread that started them
    try:
        with LocalBroker(workdir / "broker") as broker:
            oms = OmsClient(BrokerConfig(urls=[broker.url]), SITE, client_id="bench-labels")
            async with oms:
                zpl = Station(
                    "pack-zpl",
                    node_toml(
                        workdir,
                        "pack-zpl",
                        broker.url,
                        f'kind = "zpl_printer"\nhost = "127.0.0.1"\nport = {zebra.port}',
                    ),
                    workdir,
                )
                await zpl.start(oms)
                try:
                    results["zpl_rss_at_start_mb"] = zpl.rss_mb()
                    warm = [{"carrier_label": {"format": "zpl", "data": carrier_zpl("w")}}] * 3
                    await pack_orders(
                        oms, zpl, warm, lambda: list(zebra.arrivals), time.monotonic_ns
                    )
                    labels = [
                        {
                            "carrier_label": {
                                "format": "zpl",
                                "data": carrier_zpl(f"z{i}", zpl_bytes),
                            }
                        }
                        for i in range(orders)
                    ]
                    sub, done = await pack_orders(
                        oms, zpl, labels, lambda: list(zebra.arrivals), time.monotonic_ns
                    )
                    results["zpl"] = {
                        "carrier_zpl_bytes": len(carrier_zpl("z0", zpl_bytes)),
                        "scan_to_label_submitted": summary_ms(sub),
                        "scan_to_label_printed": summary_ms(done),
                        "rss_mb": zpl.rss_mb(),
                        "rss_trace_mb": zpl.rss_trace,
                    }
                finally:
                    await zpl.process.stop()

                ipp = Station(
                    "pack-ipp",
                    node_toml(
                        workdir, "pack-ipp", broker.url, f'kind = "ipp_printer"\nurl = "{eve.url}"'
                    ),
                    workdir,
                )
                await ipp.start(oms)

                def eve_arrivals() -> list[int]:
                    return [ns for ns, _, _ in eve.received()]

                try:
                    results["ipp_rss_at_start_mb"] = ipp.rss_mb()
                    pdfs = [carrier_pdf(i) for i in range(orders + 3)]
                    warm = [
                        {"carrier_label": {"format": "pdf", "data": pdfs[-j]}} for j in (1, 2, 3)
                    ]
                    await pack_orders(oms, ipp, warm, eve_arrivals, time.time_ns)
                    labels = [
                        {"carrier_label": {"format": "pdf", "data": p}} for p in pdfs[:orders]
                    ]
                    sub, done = await pack_orders(oms, ipp, labels, eve_arrivals, time.time_ns)
                    rss_carrier = ipp.rss_mb()
                    own = [
                        {
                            "label": {
                                "ship_to": {"name": "Ann Example", "address": ["1 High St"]},
                                "carrier": "DPD",
                                "sscc": "376104250021234569",
                            }
                        }
                    ] * OWN_LABELS
                    own_sub, own_done = await pack_orders(oms, ipp, own, eve_arrivals, time.time_ns)
                    results["ipp"] = {
                        "carrier_pdf_bytes": round(sum(map(len, pdfs)) / len(pdfs)),
                        "scan_to_label_submitted": summary_ms(sub),
                        "scan_to_label_printed": summary_ms(done),
                        "own_label_scan_to_submitted": summary_ms(own_sub),
                        "own_label_scan_to_printed": summary_ms(own_done),
                        "rss_mb_after_carrier_pdfs": rss_carrier,
                        "rss_mb_after_own_labels": ipp.rss_mb(),
                        "rss_trace_mb": ipp.rss_trace,
                    }
                finally:
                    await ipp.process.stop()
    finally:
        eve.stop()
        await zebra.stop()
    base = results["zpl"]["rss_mb"]
    with_ipp = results["ipp"]["rss_mb_after_carrier_pdfs"]
    results["rss_ipp_client_vs_without"] = {
        "ratio": round(with_ipp / base, 3),
        "delta_mb": round(with_ipp - base, 1),
        "at_start_ratio": round(results["ipp_rss_at_start_mb"] / results["zpl_rss_at_start_mb"], 3),
        "at_start_delta_mb": round(
            results["ipp_rss_at_start_mb"] - results["zpl_rss_at_start_mb"], 1
        ),
        "budget_delta_mb": 5,
    }
    zpl_p50 = results["zpl"]["scan_to_label_submitted"]["p50_ms"]
    ipp_p50 = results["ipp"]["scan_to_label_submitted"]["p50_ms"]
    results["scan_to_submitted_p50_ipp_vs_zpl"] = round(ipp_p50 / zpl_p50, 2)
    results["machine"] = machine()
    return results


def main() -> None:
    """Run and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.labels", description=__doc__)
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument(
        "--zpl-bytes",
        type=int,
        default=0,
        help="pad the carrier ZPL labels to this size (a control: is it the documents' size?)",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="zone-bench-labels-") as tmp:
        print(json.dumps(asyncio.run(run(args.orders, Path(tmp), args.zpl_bytes)), indent=1))


if __name__ == "__main__":
    main()
