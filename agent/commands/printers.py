"""``zone-agent printer ...``: commissioning of label (ZPL, IPP) and receipt (ESC/POS) printers.

``zone-agent printer status --lang zpl --host 10.0.0.5`` asks the printer for its status;
``zone-agent printer test ...`` prints a small test label or slip and reports the status
afterwards. An IPP printer or CUPS queue is ``--lang ipp --url ipp://HOST/ipp/print`` (or
``ipp://localhost:631/printers/QUEUE``): its status comes from ``printer-state`` and
``printer-state-reasons``, and its test label is the station's own 4x6 label as a PDF,
followed until the printer calls the job completed.

Exit codes: 0 when the printer answered ready (``status``) or printed (``test``); 3 when it
answered with a fault (paper out, head open, paused, ...), could not be reached, stayed
silent (a Zebra does with media out or head open), answered nonsense, or did not print; 2
for bad usage.

``--json`` of a printer that did not answer gives ``null`` for every flag it could not
tell (``paper_out``, ``paused``, ``offline``, ...): a silent Zebra may be out of media, open
or offline, and ``answered``/``reachable`` say what is known.

``zone-agent sim printer --lang zpl [--port 9100]`` runs a simulated printer on
127.0.0.1 until Ctrl-C; the first output line is ``host:port`` (for ``--lang ipp``, the
printer's ``ipp://`` URL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agent.errors import EXIT_DEVICE, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, DeviceError
from devices.context import DeviceContext
from devices.printers.base import Printer, PrinterConfig, PrinterQueueConfig
from devices.printers.escpos import EscposPrinter, EscposPrinterConfig, sample_slip
from devices.printers.sim import EscposSimulator, ZplSimulator, _TcpPrinterSim
from devices.printers.zpl import ZplPrinter, ZplPrinterConfig, sample_label

if TYPE_CHECKING:
    from devices.printers.ipp_sim import IppSimulator


def _say(line: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(line + "\n")
    stream.flush()


def _config(args: argparse.Namespace, **extra: Any) -> PrinterQueueConfig:
    fields: dict[str, Any] = {"name": "cli", "status_timeout_s": args.timeout, **extra}
    if (args.lang == "ipp") != (args.url is not None):
        raise ValueError("--lang ipp takes --url (and --url only --lang ipp)")
    if args.lang == "ipp":
        from devices.printers.ipp import IppPrinterConfig

        return IppPrinterConfig(**fields, url=args.url)
    if args.host is not None:
        fields.update(host=args.host, port=args.port)
    else:
        fields.update(device=args.device, baudrate=args.baud)
    if args.lang == "zpl":
        return ZplPrinterConfig(**fields)
    return EscposPrinterConfig(**fields)


def _build(config: PrinterQueueConfig) -> Printer:
    if not isinstance(config, PrinterConfig):
        from devices.printers.ipp import IppPrinter, IppPrinterConfig

        assert isinstance(config, IppPrinterConfig)
        return IppPrinter.from_config(config, DeviceContext())
    if isinstance(config, ZplPrinterConfig):
        return ZplPrinter.from_config(config, DeviceContext())
    assert isinstance(config, EscposPrinterConfig)
    return EscposPrinter.from_config(config, DeviceContext())


_FLAGS = (
    "paper_out",
    "head_open",
    "paused",
    "ribbon_out",
    "offline",
    "media_jam",
    "paper_near_end",
)


def _status_record(printer: Printer) -> dict[str, Any]:
    status = printer.last_status.as_dict()
    if not printer.last_answered:
        # Without a readable reply no flag is known: say so rather than guess "offline".
        status.update(dict.fromkeys(_FLAGS))
    return {
        "printer": printer.describe(),
        "health": printer.health.status.value,
        "reachable": printer.last_reachable,
        "answered": printer.last_answered,
        **status,
    }


async def run_status(args: argparse.Namespace) -> int:
    """``printer status``: one status request, printed."""
    try:
        config = _config(args)
    except ValidationError as exc:
        _say(f"zone-agent: {exc.errors()[0]['msg']}", err=True)
        return EXIT_USAGE
    except ValueError as exc:
        _say(f"zone-agent: {exc}", err=True)
        return EXIT_USAGE
    try:
        async with _build(config) as printer:
            record = _status_record(printer)
    except DeviceError as exc:
        _say(f"zone-agent: {exc}", err=True)
        return EXIT_DEVICE
    if args.json:
        _say(json.dumps(record))
    else:
        _say(f"{record['printer']}: {record['detail']}")
    if not record["answered"]:
        if not args.json:
            _say(f"zone-agent: no usable answer: {record['detail']}", err=True)
        return EXIT_DEVICE
    if not record["ready"]:
        # It answered, and the answer is that it cannot print now (as ``printer test`` finds).
        if not args.json:
            _say(f"zone-agent: not ready: {record['detail']}", err=True)
        return EXIT_DEVICE
    return EXIT_OK


async def run_test(args: argparse.Namespace) -> int:
    """``printer test``: print a test label or slip, then report the status."""
    try:
        # Re-poll often enough that the job fails near --wait rather than a backoff later.
        config = _config(
            args,
            max_wait_s=args.wait,
            retry_initial_s=min(args.wait / 4, 1.0),
            retry_max_s=min(args.wait / 2, 5.0),
        )
    except ValidationError as exc:
        _say(f"zone-agent: {exc.errors()[0]['msg']}", err=True)
        return EXIT_USAGE
    except ValueError as exc:
        _say(f"zone-agent: {exc}", err=True)
        return EXIT_USAGE
    if args.lang == "ipp":
        from devices.printers.render import SAMPLE, render_pdf

        data = render_pdf(SAMPLE)
    else:
        data = sample_label() if args.lang == "zpl" else sample_slip()
    job_id = f"test-{uuid.uuid4().hex[:8]}"
    try:
        async with _build(config) as printer:
            await printer.submit(job_id, data)
            # The queue reports failure after max_wait_s; this is only a safety net.
            async with asyncio.timeout(args.wait + 4 * config.status_timeout_s + 5):
                result = await printer.next_result()
            await printer.status()
            status = _status_record(printer)
    except (DeviceError, TimeoutError) as exc:
        _say(f"zone-agent: test print failed: {str(exc) or 'no result in time'}", err=True)
        return EXIT_DEVICE
    if args.json:
        record = {"job_id": job_id, "printed": result.ok, "reason": result.reason}
        _say(json.dumps(record | {"status": status}))
    elif result.ok:
        _say(f"printed test {'slip' if args.lang == 'escpos' else 'label'} {job_id}")
        _say(f"{status['printer']}: {status['detail']}")
    if not result.ok:
        _say(f"zone-agent: test print failed: {result.reason}", err=True)
        return EXIT_DEVICE
    return EXIT_OK


async def run_sim(args: argparse.Namespace) -> int:
    """``sim printer``: a simulated printer on TCP until Ctrl-C."""
    sim: _TcpPrinterSim | IppSimulator
    if args.lang == "ipp":
        from devices.printers.ipp import IppPrinterConfig
        from devices.printers.ipp_sim import IppSimulator

        url = f"ipp://{args.host}:{args.port}/ipp/print"
        sim = IppSimulator(IppPrinterConfig(name="sim", url=url), host=args.host, port=args.port)
    elif args.lang == "zpl":
        sim = ZplSimulator(
            ZplPrinterConfig(name="sim", host=args.host), host=args.host, port=args.port
        )
    else:
        config = EscposPrinterConfig(name="sim", host=args.host)
        sim = EscposSimulator(config, host=args.host, port=args.port)
    try:
        await sim.start()
    except OSError as exc:
        _say(
            f"zone-agent: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", err=True
        )
        return EXIT_FAILURE
    _say(sim.address if isinstance(sim, _TcpPrinterSim) else sim.url)
    try:
        seen = 0
        while True:
            await asyncio.sleep(0.2)
            state = sim.state()
            count = len(state["jobs"]) if "jobs" in state else state["received_bytes"]
            if count != seen:
                what = "jobs printed" if "jobs" in state else "bytes received"
                _say(f"{what}: {count}")
                seen = count
    finally:
        await sim.stop()


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lang",
        choices=("zpl", "escpos", "ipp"),
        required=True,
        help="printer language (ipp: PDF/PNG labels to an IPP printer or CUPS queue)",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="printer address (raw TCP printing)")
    where.add_argument("--device", help="device file: /dev/usb/lp0 or a serial port")
    where.add_argument(
        "--url",
        help="IPP printer or CUPS queue: ipp://HOST/ipp/print, ipp://localhost:631/printers/Q",
    )
    parser.add_argument("--port", type=int, default=9100, help="TCP port (default 9100)")
    parser.add_argument("--baud", type=int, default=9600, help="serial baud rate (default 9600)")
    parser.add_argument(
        "--timeout", type=_positive, default=2.0, help="status reply timeout in s (default 2)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def register(commands: Any, sim: Any) -> None:
    """Add ``printer status``, ``printer test`` and ``sim printer``."""
    printer = commands.add_parser("printer", help="commission label and receipt printers")
    actions = printer.add_subparsers(dest="printer_command", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="ask a printer for its status")
    _connection_args(status)
    status.set_defaults(func=run_status)
    test = actions.add_parser("test", help="print a test label or slip, then show the status")
    _connection_args(test)
    test.add_argument(
        "--wait", type=_positive, default=10.0, help="give up after this many s (default 10)"
    )
    test.set_defaults(func=run_test)

    simulate = sim.add_parser("printer", help="a ZPL, ESC/POS or IPP printer on TCP")
    simulate.add_argument("--lang", choices=("zpl", "escpos", "ipp"), required=True)
    simulate.add_argument("--host", default="127.0.0.1", help="address to listen on")
    simulate.add_argument("--port", type=int, default=9100, help="TCP port (0: any free one)")
    simulate.set_defaults(func=run_sim)
