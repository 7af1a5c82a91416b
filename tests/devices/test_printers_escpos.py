"""ESC/POS printers: slip bytes, status decoding, and the driver against the TCP simulator."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from printer_helpers import escpos_config, next_result, run, wait_until

from agent.errors import DeviceProtocolError
from devices.base import Health, HealthStatus
from devices.context import DeviceContext
from devices.printers.base import NO_REPLY, PrinterStatus
from devices.printers.escpos import (
    EscposPrinter,
    EscposPrinterConfig,
    PackingSlip,
    decode_status,
    render_slip,
)
from devices.printers.sim import EscposSimulator

SLIP = PackingSlip(
    title="ACME Shop",
    order_id="4711",
    lines=((2, "SKU-1", "Widget"), (1, "SKU-22", "Gadget blue")),
    barcode="ORD4711",
    qr="https://acme.example/r/4711",
    footer="Thank you",
)


def _printer(sim: EscposSimulator, **overrides: object) -> EscposPrinter:
    return EscposPrinter.from_config(escpos_config(port=sim.port, **overrides), DeviceContext())


# ----- rendering -----


def test_slip_bytes_hold_text_barcode_and_qr() -> None:
    data = render_slip(SLIP)
    assert data.startswith(b"\x1b@")  # ESC @: reset the printer first
    # Double size, bold, centred title.
    assert b"\x1b!0\x1bE\x01\x1ba\x01\x1bt\x00ACME Shop\n" in data
    for text in (b"ACME Shop", b"Order 4711", b"  2 x SKU-1  Widget\n", b"  1 x SKU-22  Gadget"):
        assert text in data
    assert b"Thank you\n" in data
    # Code 128, function type B: GS k 73 n, then code set B and the data.
    assert b"\x1dkI\x09{BORD4711" in data
    qr = b"https://acme.example/r/4711"
    # QR: model 2, module size 4, store the data (pL pH = len + 3), print.
    assert b"\x1d(k\x04\x001A2\x00" in data
    assert b"\x1d(k\x03\x001C\x04" in data
    assert b"\x1d(k" + bytes([len(qr) + 3, 0]) + b"1P0" + qr in data
    assert b"\x1d(k\x03\x001Q0" in data
    assert data.index(b"ORD4711") < data.index(qr) < data.index(b"Thank you")
    assert b"\x1dV\x00" in data  # cut


def test_render_prints_nothing_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    render_slip(SLIP)
    assert capfd.readouterr().out == ""


# ----- status decoding -----


@pytest.mark.parametrize(
    ("printer", "paper", "cause", "expected"),
    [
        (0x12, 0x12, None, PrinterStatus(ready=True, detail="ready")),
        (
            0x12,
            0x1E,
            None,
            PrinterStatus(ready=True, paper_near_end=True, detail="ready, paper near end"),
        ),
        (
            0x1A,
            0x72,
            0x32,
            PrinterStatus(ready=False, paper_out=True, offline=True, detail="paper out, offline"),
        ),
        (
            0x1A,
            0x12,
            0x16,
            PrinterStatus(ready=False, head_open=True, offline=True, detail="head open, offline"),
        ),
        (0x1A, 0x12, None, PrinterStatus(ready=False, offline=True, detail="offline")),
    ],
)
def test_decode_status(printer: int, paper: int, cause: int | None, expected: object) -> None:
    cause_bytes = None if cause is None else bytes([cause])
    assert decode_status(bytes([printer]), bytes([paper]), cause_bytes) == expected


def test_decode_rejects_non_status_bytes() -> None:
    with pytest.raises(DeviceProtocolError, match="not a status byte"):
        decode_status(b"A", b"\x12")
    with pytest.raises(DeviceProtocolError, match="2 bytes"):
        decode_status(b"\x12", b"\x12\x12")


def test_simulator_status_bytes() -> None:
    sim = EscposSimulator(escpos_config())
    expected = {
        "ready": (0x12, 0x12),
        "paper_near_end": (0x12, 0x1E),
        "paper_out": (0x1A, 0x72),
        "offline": (0x1A, 0x12),
    }
    for mode, (online, paper) in expected.items():
        sim._set_state(mode)
        assert (sim.status_byte(1), sim.status_byte(4)) == (online, paper), mode


# ----- the driver against the simulator -----


def test_slip_arrives_byte_exact_and_status_is_read() -> None:
    async def scenario() -> None:
        sim = EscposSimulator(escpos_config())
        await sim.start()
        try:
            async with _printer(sim) as printer:
                assert printer.health.status is HealthStatus.OK
                await printer.print_slip("slip-1", SLIP)
                result = await next_result(printer)
                assert (result.job_id, result.ok, result.reason) == ("slip-1", True, None)
                await sim.control("set", {"state": "paper_near_end"})
                assert (await printer.status()).paper_near_end
                assert printer.health == Health(HealthStatus.OK, "ready, paper near end")
            assert bytes(sim.received) == render_slip(SLIP)
            assert sim.state()["received_bytes"] == len(render_slip(SLIP))
        finally:
            await sim.stop()

    run(scenario())


def test_paper_out_holds_jobs_until_paper_is_loaded() -> None:
    async def scenario() -> None:
        sim = EscposSimulator(escpos_config())
        await sim.start()
        await sim.control("set", {"state": "paper_out"})
        try:
            async with _printer(sim) as printer:
                status = await printer.status()
                assert (status.paper_out, status.offline, status.ready) == (True, True, False)
                assert printer.health.status is HealthStatus.FAULT
                assert printer.health.detail == "paper out, offline"
                await printer.submit("a", b"first\n")
                await printer.submit("b", b"second\n")
                polls = sim.status_requests
                await wait_until(lambda: sim.status_requests >= polls + 4)
                assert sim.state()["received_bytes"] == 0 and sim.state()["pending"] == 0
                await sim.control("set", {"state": "ready"})
                first, second = await next_result(printer), await next_result(printer)
                assert [(first.job_id, first.ok), (second.job_id, second.ok)] == [
                    ("a", True),
                    ("b", True),
                ]
            assert bytes(sim.received) == b"first\nsecond\n"
        finally:
            await sim.stop()

    run(scenario())


def test_unplug_then_replug() -> None:
    async def scenario() -> None:
        sim = EscposSimulator(escpos_config())
        await sim.start()
        try:
            async with _printer(sim) as printer:
                await printer.submit("a", b"one\n")
                assert (await next_result(printer)).ok
                await sim.control("unplug", {})
                await printer.submit("b", b"two\n")
                await wait_until(lambda: printer.health.status is HealthStatus.UNAVAILABLE)
                await sim.control("replug", {})
                result = await next_result(printer)
                assert (result.job_id, result.ok) == ("b", True)
            assert bytes(sim.received) == b"one\ntwo\n"
        finally:
            await sim.stop()

    run(scenario())


def test_silent_printer_is_a_fault() -> None:
    async def scenario() -> None:
        # A TCP listener that accepts and never answers, like a printer whose status
        # channel is dead.
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            config = escpos_config(port=port, status_timeout_s=0.1)
            async with EscposPrinter.from_config(config, DeviceContext()) as printer:
                assert printer.health.status is HealthStatus.FAULT
                assert printer.health.detail == NO_REPLY
        finally:
            server.close()

    run(scenario())


def test_file_target_prints_blind(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = tmp_path / "lp0"
        spool.write_bytes(b"")
        config = escpos_config(host=None, device=str(spool))
        assert config.is_serial() is False
        async with EscposPrinter.from_config(config, DeviceContext()) as printer:
            assert (await printer.status()).detail == "ready (no status read-back)"
            await printer.submit("a", b"hello\n")
            assert (await next_result(printer)).ok
        assert spool.read_bytes() == b"hello\n"

    run(scenario())


def test_config_connections() -> None:
    with pytest.raises(ValueError, match="exactly one way"):
        EscposPrinterConfig(name="p", host="h", usb_vendor_id=0x04B8, usb_product_id=0x0202)
    with pytest.raises(ValueError, match="both usb_vendor_id"):
        EscposPrinterConfig(name="p", usb_vendor_id=0x04B8)
    usb = EscposPrinterConfig(name="p", usb_vendor_id=0x04B8, usb_product_id=0x0202)
    assert usb.claims() == ["usb:04b8:0202"]
    assert EscposPrinterConfig(name="p", device="/dev/ttyUSB0").is_serial()
    assert not EscposPrinterConfig(name="p", device="/dev/usb/lp0").is_serial()


# ----- python-escpos is loaded only when needed -----

LAZY_CHECK = """
import sys
import devices.printers.escpos
import devices.printers.zpl
from devices.context import DeviceContext
config = devices.printers.zpl.ZplPrinterConfig(name="p", host="127.0.0.1")
devices.printers.zpl.ZplPrinter.from_config(config, DeviceContext())
assert not [m for m in sys.modules if m == "escpos" or m.startswith("escpos.")], "early"
config = devices.printers.escpos.EscposPrinterConfig(name="q", host="127.0.0.1")
devices.printers.escpos.EscposPrinter.from_config(config, DeviceContext())
assert "escpos.printer" in sys.modules, "not loaded"
print("ok")
"""


def test_escpos_is_imported_only_when_an_escpos_printer_is_built() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LAZY_CHECK], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")
