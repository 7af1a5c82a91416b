"""``zone-agent scanner listen`` and ``zone-agent sim scanner`` end to end."""

from __future__ import annotations

import asyncio
import json
import sys

from scanner_helpers import SAFETY_S, next_scan, run

from agent.cli import main
from agent.errors import EXIT_DEVICE, EXIT_USAGE
from devices.backends.serial import SerialPort
from devices.context import DeviceContext
from devices.scanners.serial_scanner import (
    SerialScanner,
    SerialScannerConfig,
    SerialScannerSimulator,
)

CLI = [sys.executable, "-m", "agent.cli"]


def test_listen_json_count_2_against_the_simulator(tmp_path):
    async def body():
        config = SerialScannerConfig(name="scan1", kind="serial_scanner", port="unused")
        sim = SerialScannerSimulator(config, DeviceContext(), link_dir=tmp_path)
        await sim.start()
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "scanner",
            "listen",
            "--port",
            str(sim.link),
            "--json",
            "--count",
            "2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stderr is not None
            # The port is flushed when opened: scan only once the listener says it listens.
            while True:
                line = await asyncio.wait_for(proc.stderr.readline(), 10)
                assert line, "listener exited before listening"
                if line.startswith(b"listening:"):
                    break
            await sim.control("scan", {"code": "010950110153100010LOT42", "symbology": "]C1"})
            await sim.control("scan", {"code": "9501101531001"})
            stdout, _ = await asyncio.wait_for(proc.communicate(), 10)
            return proc.returncode, stdout, line
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await sim.stop()

    returncode, stdout, listening = run(body())
    assert returncode == 0
    assert listening.decode().startswith("listening: serial scanner listen on ")
    assert [json.loads(line) for line in stdout.decode().splitlines()] == [
        {
            "text": "010950110153100010LOT42",
            "symbology": "]C1",
            "gtin": "09501101531000",
            "sscc": None,
            "fields": {"01": "09501101531000", "10": "LOT42"},
            "error": None,
        },
        {
            "text": "9501101531001",
            "symbology": None,
            "gtin": None,
            "sscc": None,
            "fields": {},
            "error": "bad GTIN check digit in 9501101531001: expected 0, got 1",
        },
    ]


def test_listen_on_a_missing_port_exits_3(tmp_path, capsys):
    code = main(["scanner", "listen", "--port", str(tmp_path / "nothing"), "--count", "1"])
    assert code == EXIT_DEVICE
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        f"zone-agent scanner listen: {tmp_path / 'nothing'}: no such port "
        "(unplugged, or a wrong path: see `zone-agent scale probe`)"
    )


def test_listen_with_a_bad_baud_rate_is_a_usage_error(capsys):
    assert main(["scanner", "listen", "--port", "/dev/x", "--baud", "0"]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == (
        "zone-agent scanner listen: baudrate: Input should be greater than 0"
    )


def test_sim_scanner_sends_each_stdin_line_as_a_scan(tmp_path):
    link = tmp_path / "sim" / "scanner.tty"

    async def body():
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "sim",
            "scanner",
            "--link",
            str(link),
            "--terminator",
            "crlf",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None and proc.stdin is not None
        try:
            printed = await asyncio.wait_for(proc.stdout.readline(), 10)
            config = SerialScannerConfig(
                name="scan1", kind="serial_scanner", port=str(link), terminator="\r\n"
            )
            scanner = SerialScanner(config, SerialPort(str(link)))
            async with scanner:
                events = scanner.events()
                proc.stdin.write(b"A-01-03\n]C10109501101531000<GS>10LOT42\n")
                await proc.stdin.drain()
                scans = [await next_scan(events) for _ in range(2)]
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), SAFETY_S)
            return printed, scans, proc.returncode
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    printed, scans, returncode = run(body())
    assert printed.decode().strip() == str(link)
    assert scans[0].text == "A-01-03"
    assert (scans[1].symbology, scans[1].text) == ("]C1", "0109501101531000\x1d10LOT42")
    assert scans[1].fields == {"01": "09501101531000", "10": "LOT42"}
    assert returncode == 0
    assert not link.exists()  # the link is removed when the simulator ends
