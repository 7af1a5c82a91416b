"""Pack station end to end with an IPP label printer: the node as a child process, a real
broker, its simulated scanner and scale (a USB HID shipping scale in the first test, the
e-commerce bench of issue 22; MT-SICS in the others), a simulated Zebra, and a real IPP
printer (CUPS's ippeveprinter, testing/ippserver.py). The OMS sends carrier labels as PDF, PNG and
ZPL and the station's own label; each prints once on the printer that prints its format."""

from __future__ import annotations

import asyncio
import io
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.oms.demo.broker import LocalBroker
from testing.ippserver import IppEvePrinter, missing_ippeveprinter
from tests.harness import SITE, NodeProcess, oms_for
from tests.test_packing_e2e import (
    GTIN_A,
    SSCC,
    empty_scale,
    named,
    order,
    scale,
    scans,
    started,
)
from tests.test_picking_e2e import Control, next_events, run

pytestmark = pytest.mark.broker

NODE = "pack-e1"  # test_packing_e2e's helpers wait for this node
SKIP = ("reply", "pack_counters")


def carrier_pdf(seed: int) -> bytes:
    """A carrier's 4x6 label as a PDF of about 100 KB, as carriers' are: a band of 1-bit
    noise (it compresses like barcodes and a 2D code) on a white page."""
    page = Image.new("1", (812, 1218), 1)
    band = random.Random(seed).randbytes((812 + 7) // 8 * 480)
    page.paste(Image.frombytes("1", (812, 480), band), (0, 600))
    out = io.BytesIO()
    page.save(out, "PDF", resolution=203.0)
    return out.getvalue()


def carrier_png() -> bytes:
    out = io.BytesIO()
    Image.new("1", (812, 1218), 1).save(out, "PNG", dpi=(203, 203))
    return out.getvalue()


@pytest.fixture
def eve(tmp_path: Path) -> Iterator[IppEvePrinter]:
    why = missing_ippeveprinter()
    if why is not None:
        pytest.fail(f"{why}: make test installs it (packaging/apt-install.sh)")
    with IppEvePrinter(tmp_path / "ipp") as printer:
        yield printer


SCALES = {
    "mt_sics": 'kind = "mt_sics"\nport = "/dev/zone-agent-sim-scale"\npoll_interval = 0.05\n',
    # The e-commerce bench of issue 22: a USB HID shipping scale beside the IPP printer.
    "hid_pos": 'kind = "hid_pos"\ndevice = "auto"\nreconnect_min_s = 0.1\nreconnect_max_s = 0.5\n',
}


def node_file(
    tmp_path: Path,
    broker: LocalBroker,
    url: str,
    *,
    real: bool = True,
    formats: str = '["pdf"]',
    scale: str = "mt_sics",
) -> Path:
    """Scanner, scale and a Zebra simulated; the IPP printer real (or simulated)."""
    text = f"""site = "{SITE}"
node = "{NODE}"
role = "pack"
state_dir = "{tmp_path / NODE}"
[broker]
urls = ["{broker.url}"]
keepalive_s = 5
backoff_initial_s = 0.05
backoff_max_s = 0.5
[settings]
label_printer = "label"
label_timeout_s = 20
counters_every_s = 0
[[devices]]
name = "scanner"
kind = "serial_scanner"
port = "/dev/zone-agent-sim"
dedupe_window_s = 0
[[devices]]
name = "scale"
{SCALES[scale]}[[devices]]
name = "zebra"
kind = "zpl_printer"
host = "127.0.0.1"
status_timeout_s = 0.5
[[devices]]
name = "label"
kind = "ipp_printer"
simulate = {str(not real).lower()}
url = "{url}"
formats = {formats}
retry_initial_s = 0.1
retry_max_s = 0.5
idle_poll_s = 0.5
"""
    path = tmp_path / f"{NODE}.toml"
    path.write_text(text)
    return path


def test_carrier_pdf_labels_print_by_ipp_through_the_broker(
    tmp_path: Path, broker: LocalBroker, eve: IppEvePrinter
) -> None:
    # The e-commerce pack bench end to end: a USB HID scale, a carrier PDF printed by IPP.
    node = NodeProcess(node_file(tmp_path, broker, eve.url, scale="hid_pos"))
    control = Control(tmp_path / NODE)
    pdf = carrier_pdf(1)
    zpl = b"^XA\n^FO50,50^A0N,40,40^FDDPD label for o2^FS\n^XZ"

    async def scenario() -> None:
        async with oms_for(broker) as oms:

            async def pack(order_id: str) -> dict[str, dict[str, Any]]:
                """Scan, box and weigh; verified, weighed, label_printed and packed."""
                await empty_scale(control)
                await scans(control, f"T-{order_id}", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
                await scale(control, 850.0)
                return named(await next_events(oms, 4, SKIP, timeout=30))

            await started(node, control, oms)
            assert (await control.get("/api/state"))["devices"]["scale"]["kind"] == "hid_pos"
            # --- a carrier PDF, byte for byte, by IPP, 4x6 and fit ------------------
            carrier = {"format": "pdf", "data": pdf}
            reply = await oms.call(NODE, "pack", order("o1", label=None, carrier_label=carrier))
            assert reply.status == "accepted"
            events = await pack("o1")
            printed = events["label_printed"]
            assert (printed["printer"], printed["source"], printed["job_id"]) == (
                "label",
                "carrier",
                "o1-label",
            )
            assert events["packed"]["order"] == "o1"
            [job] = [j for j in eve.printed() if j.name == "o1-label"]
            assert (job.document_format, job.media, job.scaling) == (
                "application/pdf",
                "na_index-4x6_4x6in",
                "fit",
            )
            assert job.path.read_bytes() == pdf

            # --- a carrier ZPL goes to the Zebra; a PNG no printer here takes: refused -
            reply = await oms.call(
                NODE, "pack", order("o2", label=None, carrier_label={"format": "zpl", "data": zpl})
            )
            assert reply.status == "accepted"
            events = await pack("o2")
            assert events["label_printed"]["printer"] == "zebra"
            assert (await control.get("/sim/zebra"))["jobs"] == [zpl.decode()]
            png = {"format": "png", "data": carrier_png()}
            reply = await oms.call(NODE, "pack", order("o3", label=None, carrier_label=png))
            assert (reply.status, reply.reason) == ("rejected", "no_printer_for_format")
            assert "label (ipp_printer) prints pdf" in (reply.detail or "")

            # --- the station's own label, drawn as a PDF, while the roll runs out -----
            eve.hold("media-empty-error")
            assert (await oms.call(NODE, "pack", order("o4"))).status == "accepted"
            await empty_scale(control)
            await scans(control, "T-o4", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            await scale(control, 850.0)
            events = named(await next_events(oms, 3, SKIP, timeout=30))
            assert events["print_delayed"]["reason"] == "printer fault: paper out"
            assert events["print_delayed"]["printer"] == "label"
            state = await control.get("/api/state")
            assert state["devices"]["label"]["status"] == "fault"
            eve.release()  # a new roll
            events = named(await next_events(oms, 2, SKIP, timeout=30))
            assert (events["label_printed"]["sscc"], events["packed"]["order"]) == (SSCC, "o4")
            await asyncio.sleep(1.0)  # a second copy would have arrived by now
            names = [j.name for j in eve.printed()]
            assert names == ["o1-label", "o4-label"]
            own = eve.printed()[1].path.read_bytes()
            assert own.startswith(b"%PDF-")
            assert re.search(rb"/MediaBox \[ ?0 0 288(\.0)? 432(\.0)? ?\]", own)
            assert node.terminate() == 0

    run(node, scenario)


def test_a_simulated_ipp_printer_under_simulate(tmp_path: Path, broker: LocalBroker) -> None:
    # No CUPS, avahi or D-Bus: --simulate replaces the printer with devices/printers/ipp_sim.py.
    only_png = '["png"]\nown_label = "png"'
    path = node_file(tmp_path, broker, "ipp://10.0.0.7/ipp/print", real=False, formats=only_png)
    node = NodeProcess(path)
    control = Control(tmp_path / NODE)
    png = carrier_png()

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            label = {"format": "png", "data": png}
            reply = await oms.call(NODE, "pack", order("o1", label=None, carrier_label=label))
            assert reply.status == "accepted"
            await control.post("/sim/label/set", {"state": "media_empty", "after_jobs": 1})
            await empty_scale(control)
            await scans(control, "T-o1", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            await scale(control, 850.0)
            events = named(await next_events(oms, 3, SKIP, timeout=30))
            assert events["print_delayed"]["reason"] == "printer fault: paper out"
            await control.post("/sim/label/set", {"state": "ready"})
            events = named(await next_events(oms, 2, SKIP, timeout=30))
            assert events["label_printed"]["printer"] == "label"
            jobs = (await control.get("/sim/label"))["jobs"]
            assert [(j["name"], j["format"], j["size"]) for j in jobs] == [
                ("o1-label", "image/png", len(png))
            ]
            assert node.terminate() == 0

    run(node, scenario)


def test_a_node_killed_while_the_printer_holds_its_label_never_prints_it_twice(
    tmp_path: Path, broker: LocalBroker, eve: IppEvePrinter
) -> None:
    node = NodeProcess(node_file(tmp_path, broker, eve.url))
    control = Control(tmp_path / NODE)
    pdf = carrier_pdf(2)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await started(node, control, oms)
            carrier = {"format": "pdf", "data": pdf}
            reply = await oms.call(NODE, "pack", order("o1", label=None, carrier_label=carrier))
            assert reply.status == "accepted"
            eve.hold("media-empty-error")
            await empty_scale(control)
            await scans(control, "T-o1", GTIN_A, GTIN_A, "S2-CODE", "CONFIRM")
            await scale(control, 850.0)
            events = named(await next_events(oms, 3, SKIP, timeout=30))
            assert events["print_delayed"]["job_id"] == "o1-label"
            node.kill()  # power cut: the printer holds the job, the node forgets it was sent
            eve.release()  # the roll is replaced: the held label prints
            await started(node, control, oms)
            shown = (await control.get("/api/state"))["workflow"]
            assert shown["phase"] == "label_unknown"  # the node asks; it does not resend
            await control.scan("CONFIRM")  # the packer: it did print
            events = named(await next_events(oms, 2, SKIP, timeout=30))
            assert events["label_printed"]["confirmed_by"] == "packer"
            assert events["packed"]["order"] == "o1"
            await asyncio.sleep(1.0)  # a second copy would have arrived by now
            assert [j.name for j in eve.printed()] == ["o1-label"]
            assert node.terminate() == 0

    run(node, scenario)
