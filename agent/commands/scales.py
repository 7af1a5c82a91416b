"""``zone-agent scale ...``: commissioning of scales.

``zone-agent scale read --port PORT --protocol P`` opens the scale with the given line
settings and prints one stable weight in grams (``--json`` for scripts), or one line saying
why it could not: wrong port, busy port, no permission, no reply (with the settings the
protocol expects), overload, never settled.

``zone-agent scale read --protocol hid_pos [--port DEVICE]`` reads a USB HID scale (device
``auto`` by default, or ``/dev/hidrawN``, or ``VID:PID``).

``zone-agent scale probe`` (also spelt ``zone-agent probe``) lists the serial ports and the
USB HID scales and says which scale protocol answers on each (``--port`` probes one serial
port). A protocol counts only
when a reply unique to it arrives; when none does, the line says "no protocol answered" and
what was sent at which settings and what came back.

``zone-agent sim scale --protocol P --link PATH`` plays a scale on a pseudo-terminal until
Ctrl-C; the link path is printed on stdout first.

Exit codes: 0 done, 2 bad usage, 3 the scale cannot be reached, answers nonsense or gives
no stable weight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.errors import EXIT_DEVICE, EXIT_OK, EXIT_USAGE, DeviceError, DeviceUnavailable
from devices.backends.serial import list_ports
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.events import Weight
from devices.registry import module_for
from devices.scales.hid_pos import HidPosScale
from devices.scales.probe import (
    ProbeResult,
    hid_description,
    hid_scales,
    probe_hid,
    probe_port,
)
from devices.scales.sim import MODES

SERIAL_PROTOCOLS = ("mt_sics", "toledo_8217", "nci")
PROTOCOLS = (*SERIAL_PROTOCOLS, "hid_pos")


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _usage_error(command: str, exc: ValidationError) -> int:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    _err(f"zone-agent {command}: {where}: {first['msg']}")
    return EXIT_USAGE


def weight_as_dict(weight: Weight, port: str, protocol: str) -> dict[str, Any]:
    """The fields ``scale read --json`` prints."""
    return {
        "port": port,
        "protocol": protocol,
        "grams": weight.grams,
        "stable": weight.stable,
        "net": weight.net,
    }


def weight_as_line(weight: Weight) -> str:
    """One human-readable line: ``1250 g stable gross``."""
    return (
        f"{weight.grams:g} g {'stable' if weight.stable else 'unstable'} "
        f"{'net' if weight.net else 'gross'}"
    )


async def run_read(args: argparse.Namespace) -> int:
    """``scale read``: print one stable weight, or why there is none."""
    command = "scale read"
    fields: dict[str, Any] = {"name": "cli", "kind": args.protocol}
    line_options = (("baud", "baudrate"), ("parity", "parity"), ("bytesize", "bytesize"))
    if args.protocol == "hid_pos":
        # A USB HID scale has no line settings; --port names the device (default: auto).
        given = [f"--{option}" for option, _ in line_options if getattr(args, option)]
        if given:
            _err(f"zone-agent {command}: {', '.join(given)}: a USB HID scale has no line")
            return EXIT_USAGE
        fields["device"] = args.port or "auto"
    elif args.port is None:
        _err(f"zone-agent {command}: --port is required for {args.protocol}")
        return EXIT_USAGE
    else:
        fields["port"] = args.port
    for option, field in line_options:
        if getattr(args, option) is not None:
            fields[field] = getattr(args, option)
    if args.unit is not None:
        if args.protocol != "toledo_8217":
            _err(f"zone-agent {command}: --unit applies to toledo_8217 only (others print it)")
            return EXIT_USAGE
        fields["unit"] = args.unit
    module = module_for(args.protocol)
    try:
        config = module.CONFIG(**fields)
    except ValidationError as exc:
        return _usage_error(command, exc)
    scale = module.DRIVER.from_config(config, DeviceContext())
    await scale.open()
    try:
        if scale.health.status is not HealthStatus.OK:
            _err(f"zone-agent {command}: {scale.health.detail}")
            return EXIT_DEVICE
        try:
            weight: Weight = await scale.read_stable(args.stable_timeout)
        except DeviceError as exc:
            _err(f"zone-agent {command}: {exc}")
            return EXIT_DEVICE
    finally:
        await scale.close()
    if args.json:
        where = scale.backend.node if isinstance(scale, HidPosScale) else args.port
        _out(json.dumps(weight_as_dict(weight, where, args.protocol)))
    else:
        _out(weight_as_line(weight))
    return EXIT_OK


def _probe_line(result: ProbeResult, description: str) -> str:
    what = result.protocol or f"- ({result.hint})"
    shown = f"  [{description}]" if description else ""
    return f"{result.port}  {what}{shown}"


def _tried_as_dict(result: ProbeResult) -> list[dict[str, Any]]:
    return [
        {
            "protocol": t.protocol,
            "settings": t.settings,
            "sent": [request.decode("latin-1") for request in t.sent],
            "heard": t.heard.decode("latin-1"),
            "error": t.error,
        }
        for t in result.tried
    ]


@dataclass(frozen=True, slots=True)
class _Probed:
    """One port or HID device probed: what answered, or why it could not be opened."""

    port: str
    description: str
    result: ProbeResult | None
    error: str | None = None

    def entry(self) -> dict[str, Any]:
        """The JSON object ``--json`` prints for it."""
        if self.result is None:
            return {"port": self.port, "protocol": None, "error": self.error}
        entry: dict[str, Any] = {
            "port": self.port,
            "protocol": self.result.protocol,
            "hint": self.result.hint,
            "error": None,
            "device": self.description,
        }
        if self.result.tried:
            entry["tried"] = _tried_as_dict(self.result)
        return entry

    def line(self) -> str:
        """The line printed for it."""
        if self.result is None:
            return f"{self.port}  - ({self.error})"
        return _probe_line(self.result, self.description)


async def _probed(
    ports: list[tuple[str, str]], timeout: float, hid: bool
) -> AsyncIterator[_Probed]:
    """Probe each serial port, then (``hid``) each USB HID scale, one at a time."""
    for path, description in ports:
        try:
            yield _Probed(path, description, await probe_port(path, timeout))
        except DeviceUnavailable as exc:
            yield _Probed(path, description, None, str(exc))
    for info in await asyncio.to_thread(hid_scales) if hid else []:
        try:
            yield _Probed(str(info.node), hid_description(info), await probe_hid(info, timeout))
        except DeviceUnavailable as exc:
            yield _Probed(str(info.node), hid_description(info), None, str(exc))


async def run_probe(args: argparse.Namespace) -> int:
    """``scale probe`` (alias ``probe``): which scale answers on each serial port and USB HID."""
    command = "scale probe"
    ports = [(args.port, "")] if args.port else await asyncio.to_thread(list_ports)
    found = 0
    report: list[dict[str, Any]] = []
    async for probed in _probed(ports, args.timeout, hid=not args.port):
        found += probed.result is not None and probed.result.protocol is not None
        report.append(probed.entry())
        if not args.json:
            _out(probed.line())
    if not report:
        _err(
            f"zone-agent {command}: no serial ports and no USB HID scales found "
            "(is the adapter or the scale plugged in and switched on?)"
        )
        return EXIT_DEVICE
    if args.json:
        _out(json.dumps(report))
    return EXIT_OK if found else EXIT_DEVICE


async def run_sim(args: argparse.Namespace) -> int:
    """``sim scale``: play a scale on a pty until Ctrl-C (or SIGTERM)."""
    command = "sim scale"
    link = Path(args.link)
    module = module_for(args.protocol)
    try:
        config = module.CONFIG(name="sim", kind=args.protocol, port=str(link))
    except ValidationError as exc:
        return _usage_error(command, exc)
    simulator = module.SIMULATOR(config, DeviceContext(simulate=True), link=link)
    settings: dict[str, Any] = {"mode": args.mode}
    if args.grams is not None:
        settings["grams"] = args.grams
    if args.unit is not None:
        settings["unit"] = args.unit
    try:
        await simulator.control("set", settings)
    except ValueError as exc:
        _err(f"zone-agent {command}: {exc}")
        return EXIT_USAGE
    try:
        await simulator.start()
    except OSError as exc:
        _err(f"zone-agent {command}: {link}: {exc.strerror or exc}")
        return EXIT_USAGE
    _out(str(simulator.link))
    _err(f"simulating a {args.protocol} scale: {simulator.state()}; Ctrl-C ends")
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handle SIGINT here too: a shell starting us in the background ignores it otherwise.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    try:
        await stopped.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await simulator.stop()
    return EXIT_OK


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def register(commands: Any, sim: Any) -> None:
    """Add ``scale read``, ``scale probe`` (alias ``probe``) and ``sim scale``."""
    scale = commands.add_parser("scale", help="commission scales (serial and USB HID)")
    actions = scale.add_subparsers(dest="scale_command", required=True, metavar="ACTION")
    read = actions.add_parser("read", help="print one stable weight from a scale")
    read.add_argument(
        "--port",
        help="serial port (/dev/ttyUSB0); for hid_pos the device: /dev/hidraw0, VID:PID "
        "or auto (the default)",
    )
    read.add_argument("--protocol", required=True, choices=PROTOCOLS, help="scale protocol")
    read.add_argument("--baud", type=int, help="baud rate (default: the protocol's, 9600)")
    read.add_argument("--parity", choices=("N", "E", "O"), help="default: the protocol's")
    read.add_argument("--bytesize", type=int, choices=(7, 8), help="default: the protocol's")
    read.add_argument("--unit", choices=("kg", "lb"), help="toledo_8217 only: its unit")
    read.add_argument(
        "--stable-timeout",
        type=_positive_float,
        default=5.0,
        help="seconds to wait for a stable weight (default 5)",
    )
    read.add_argument("--json", action="store_true", help="print one JSON object")
    read.set_defaults(func=run_read)

    probe_help = "find which scale answers on each port"
    for probe in (
        actions.add_parser("probe", help=probe_help),
        # The older spelling, kept so installers' notes and scripts keep working.
        commands.add_parser("probe", help=f"{probe_help} (alias of `scale probe`)"),
    ):
        probe.add_argument("--port", help="probe only this port")
        probe.add_argument(
            "--timeout",
            type=_positive_float,
            default=0.5,
            help="seconds to wait for each request's reply (default 0.5)",
        )
        probe.add_argument("--json", action="store_true", help="print one JSON list")
        probe.set_defaults(func=run_probe)

    simulate = sim.add_parser("scale", help="a scale on a pty, until Ctrl-C")
    # A USB HID scale is simulated inside the node (--simulate), not on a pty.
    simulate.add_argument(
        "--protocol", required=True, choices=SERIAL_PROTOCOLS, help="scale protocol"
    )
    simulate.add_argument("--link", required=True, help="path of the pty link to create")
    simulate.add_argument("--grams", type=float, help="load on the platform (default 0)")
    simulate.add_argument("--mode", choices=MODES, default="stable", help="default stable")
    simulate.add_argument("--unit", help="unit the scale prints (g, kg, lb, oz)")
    simulate.set_defaults(func=run_sim)
