"""``zone-agent scanner ...``: commissioning of barcode scanners.

``zone-agent scanner listen --port PORT`` opens a serial scanner and prints every read as
the agent understands it (text, symbology, GTIN, SSCC, GS1 fields, or why it is not to be
trusted), so an installer can check the scanner's mode, suffix and AIM setting by scanning
a few labels. ``--json`` prints one JSON object per line for scripts.

``zone-agent sim scanner --link PATH`` plays a serial scanner on a pseudo-terminal: each
line typed on stdin is sent as one scan (``<GS>`` in a line is sent as the GS separator).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import EXIT_DEVICE, EXIT_OK, EXIT_USAGE
from devices.base import Health, HealthStatus
from devices.context import DeviceContext
from devices.events import Scan
from devices.scanners.framing import TERMINATORS
from devices.scanners.serial_scanner import (
    SerialScanner,
    SerialScannerConfig,
    SerialScannerSimulator,
)

TERMINATOR_NAMES = {name: value for value, name in TERMINATORS.items()}
"""CLI name (``cr``, ``crlf``, ``lf``, ``tab``) to terminator."""

GS_MARK = "<GS>"
"""How GS is shown in plain output and typed on the simulator's stdin."""


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def scan_as_dict(scan: Scan) -> dict[str, Any]:
    """The fields of a scan that ``scanner listen --json`` prints."""
    return {
        "text": scan.text,
        "symbology": scan.symbology,
        "gtin": scan.gtin,
        "sscc": scan.sscc,
        "fields": dict(scan.fields),
        "error": scan.error,
    }


def scan_as_line(scan: Scan) -> str:
    """One human-readable line for a scan (GS shown as ``<GS>``)."""
    parts = [scan.text.replace("\x1d", GS_MARK)]
    if scan.symbology:
        parts.append(f"symbology={scan.symbology}")
    if scan.gtin:
        parts.append(f"gtin={scan.gtin}")
    if scan.sscc:
        parts.append(f"sscc={scan.sscc}")
    if scan.fields:
        parts.append("fields=" + "".join(f"({ai}){value}" for ai, value in scan.fields.items()))
    if scan.error:
        parts.append(f"ERROR: {scan.error}")
    return "  ".join(parts)


def _usage_error(command: str, exc: ValidationError) -> int:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    _err(f"zone-agent {command}: {where}: {first['msg']}")
    return EXIT_USAGE


async def run_listen(args: argparse.Namespace) -> int:
    """``scanner listen``: print interpreted scans until Ctrl-C or ``--count`` scans."""
    try:
        config = SerialScannerConfig(
            name="listen",
            kind="serial_scanner",
            port=args.port,
            baudrate=args.baud,
            terminator=TERMINATOR_NAMES[args.terminator],
        )
    except ValidationError as exc:
        return _usage_error("scanner listen", exc)
    scanner = SerialScanner.from_config(config, DeviceContext())
    await scanner.open()
    try:
        if scanner.health.status is not HealthStatus.OK:
            _err(f"zone-agent scanner listen: {scanner.health.detail}")
            return EXIT_DEVICE

        def tell(_name: str, health: Health) -> None:
            detail = f": {health.detail}" if health.detail else ""
            _err(f"scanner {health.status.value}{detail}")

        scanner.add_health_listener(tell)
        _err(f"listening: {scanner.describe()}")
        events = scanner.events()
        received = 0
        while args.count is None or received < args.count:
            scan = await anext(events)
            line = json.dumps(scan_as_dict(scan)) if args.json else scan_as_line(scan)
            _out(line)
            received += 1
    finally:
        await scanner.close()
    return EXIT_OK


async def run_sim(args: argparse.Namespace) -> int:
    """``sim scanner``: send each stdin line as a scan from a simulated serial scanner."""
    link = Path(args.link)
    try:
        config = SerialScannerConfig(
            name="sim",
            kind="serial_scanner",
            port=str(link),
            terminator=TERMINATOR_NAMES[args.terminator],
        )
    except ValidationError as exc:
        return _usage_error("sim scanner", exc)
    simulator = SerialScannerSimulator(config, DeviceContext(), link=link)
    try:
        await simulator.start()
    except OSError as exc:
        _err(f"zone-agent sim scanner: {link}: {exc.strerror or exc}")
        return EXIT_USAGE
    _out(str(simulator.link))
    _err(f"type a code and Enter to scan it ({GS_MARK} sends GS); Ctrl-D ends")
    try:
        async for line in _stdin_lines():
            code = line.replace(GS_MARK, "\x1d")
            if code:
                simulator.send_scan(code, args.symbology)
    finally:
        await simulator.stop()
    return EXIT_OK


async def _stdin_lines() -> AsyncIterator[str]:
    """Lines from stdin, read through the loop (a blocked thread would stall Ctrl-C)."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    if stat.S_ISREG(os.fstat(fd).st_mode):
        # A redirected regular file never blocks, and epoll refuses to watch one.
        for line in sys.stdin.read().splitlines():
            yield line
        return
    lines: asyncio.Queue[str | None] = asyncio.Queue()
    pending = b""

    def readable() -> None:
        nonlocal pending
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if not data:
            if pending:
                lines.put_nowait(pending.decode(errors="replace"))
            lines.put_nowait(None)
            loop.remove_reader(fd)
            return
        pending += data
        *complete, pending = pending.split(b"\n")
        for raw in complete:
            lines.put_nowait(raw.decode(errors="replace").rstrip("\r"))

    loop.add_reader(fd, readable)
    try:
        while (line := await lines.get()) is not None:
            yield line
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(fd)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def register(commands: Any, sim: Any) -> None:
    """Add ``scanner listen`` and ``sim scanner``."""
    scanner = commands.add_parser("scanner", help="commission barcode scanners")
    actions = scanner.add_subparsers(dest="scanner_command", required=True, metavar="ACTION")
    listen = actions.add_parser("listen", help="print every read of a serial scanner")
    listen.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyACM0")
    listen.add_argument("--baud", type=int, default=9600, help="baud rate (default 9600)")
    listen.add_argument(
        "--terminator",
        choices=sorted(TERMINATOR_NAMES),
        default="cr",
        help="what ends each read (default cr)",
    )
    listen.add_argument("--json", action="store_true", help="one JSON object per scan")
    listen.add_argument("--count", type=_positive, help="stop after N scans")
    listen.set_defaults(func=run_listen)

    simulate = sim.add_parser("scanner", help="a serial scanner on a pty, fed from stdin")
    simulate.add_argument("--link", required=True, help="path of the pty link to create")
    simulate.add_argument(
        "--terminator", choices=sorted(TERMINATOR_NAMES), default="cr", help="default cr"
    )
    simulate.add_argument("--symbology", help="AIM identifier sent before every code, e.g. ]C1")
    simulate.set_defaults(func=run_sim)
