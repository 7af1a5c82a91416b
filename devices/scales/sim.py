"""Byte-exact simulators of MT-SICS, Mettler-Toledo 8217 and NCI scales on a pseudo-terminal.

The driver opens ``link`` with its real serial code; the simulator answers as the scale
would. A pty does not emulate baud rate or parity, so the simulator speaks plain bytes
(7-bit characters for the 8217, without the parity bit).

Modes: ``stable``, ``moving``, ``overload``, ``underload``, ``garbage`` (answers every
chunk it receives with random bytes that are no protocol's), ``silent`` (answers nothing).

Control actions (``Simulator.control``; each returns ``state()``):

* ``set`` ``{grams?: float, mode?: str, unit?: str, split_s?: float, settle_after?: int}``:
  load on the platform (gross, grams), mode, unit printed, a gap that splits every reply in
  two writes, and a count of weight replies after which ``moving`` turns ``stable``;
* ``tare`` ``{grams?: float}``: press the scale's tare key (default: the current load);
* ``inject`` ``{data: str, keep_reply?: bool}``: the next reply is replaced by ``data``
  (latin-1), or preceded by it with ``keep_reply``;
* ``unplug`` / ``replug``: the pty disappears / comes back behind the same link.

``state()`` is ``{"protocol", "grams", "mode", "tare_g", "plugged"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from devices.config import DeviceConfig
from devices.context import DeviceContext
from devices.ptysim import PtyEndpoint
from devices.scales.base import GRAMS_PER_UNIT
from devices.sim import Simulator

MODES = ("stable", "moving", "overload", "underload", "garbage", "silent")

STX, ETX, CR, LF = b"\x02", b"\x03", b"\r", b"\n"


class ScaleControls(Simulator):
    """What every scale simulator shares: the load, mode, unit, tare and the control actions.

    ``set``, ``tare`` and ``inject`` are handled here (see the module docstring); a
    subclass handles its other actions (``unplug``, ``replug``...) in ``_control`` and
    says whether the device is plugged in ``plugged``.
    """

    protocol: ClassVar[str] = ""
    modes: ClassVar[tuple[str, ...]] = MODES
    units: ClassVar[tuple[str, ...]] = ("g", "kg", "lb", "oz")
    default_unit: ClassVar[str] = "g"

    def __init__(self, config: DeviceConfig, context: DeviceContext) -> None:
        super().__init__(config, context)
        self.grams = 0.0
        self.mode = "stable"
        self.tare_g = 0.0
        self.unit = self.default_unit
        self.split_s = 0.0
        self.settle_after: int | None = None
        self._inject: list[tuple[bytes, bool]] = []

    async def control(self, action: str, args: dict[str, Any]) -> dict[str, Any]:
        """Act on the simulated scale (see the module docstring); returns ``state()``."""
        match action:
            case "set":
                self._set(args)
            case "tare":
                self._only(args, {"grams"})
                self.tare_g = float(args.get("grams", self.grams))
            case "inject":
                self._only(args, {"data", "keep_reply"})
                data = args.get("data")
                if not isinstance(data, str):
                    raise ValueError("inject needs 'data' (a string, latin-1)")
                self._inject.append((data.encode("latin-1"), bool(args.get("keep_reply"))))
            case _:
                self._control(action, args)
        return self.state()

    def _control(self, action: str, args: dict[str, Any]) -> None:
        """The subclass's own actions; ``ValueError`` for an unknown one."""
        raise ValueError(f"unknown action {action!r}")

    @staticmethod
    def _only(args: dict[str, Any], allowed: set[str]) -> None:
        unknown = set(args) - allowed
        if unknown:
            raise ValueError(f"unknown argument(s) {sorted(unknown)}; allowed: {sorted(allowed)}")

    def _set(self, args: dict[str, Any]) -> None:
        self._only(args, {"grams", "mode", "unit", "split_s", "settle_after"})
        mode = args.get("mode", self.mode)
        if mode not in self.modes:
            raise ValueError(f"mode must be one of {', '.join(self.modes)}, not {mode!r}")
        unit = args.get("unit", self.unit)
        if unit not in self.units:
            raise ValueError(f"unit must be one of {', '.join(self.units)}, not {unit!r}")
        split_s = float(args.get("split_s", self.split_s))
        if split_s < 0:
            raise ValueError("split_s must be >= 0")
        settle = args.get("settle_after", self.settle_after)
        if settle is not None and (not isinstance(settle, int) or settle < 0):
            raise ValueError("settle_after must be a non-negative integer")
        self.grams = float(args.get("grams", self.grams))
        self.mode, self.unit, self.split_s, self.settle_after = mode, unit, split_s, settle

    @property
    def plugged(self) -> bool:
        """Whether the simulated cable is plugged in."""
        return False

    def state(self) -> dict[str, Any]:
        """``{"protocol", "grams", "mode", "tare_g", "plugged"}``."""
        return {
            "protocol": self.protocol,
            "grams": self.grams,
            "mode": self.mode,
            "tare_g": self.tare_g,
            "plugged": self.plugged,
        }

    @property
    def shown_g(self) -> float:
        """What the display shows: the load minus the tare."""
        return self.grams - self.tare_g

    def _weigh_mode(self) -> str:
        """The mode for one weight reply or report, counting down ``settle_after``."""
        if self.mode == "moving" and self.settle_after is not None:
            if self.settle_after <= 0:
                self.mode, self.settle_after = "stable", None
            else:
                self.settle_after -= 1
        return self.mode


class ScaleSimulator(ScaleControls):
    """Common part of the pty scale simulators: the pty, the reply queue, line echo.

    Args:
        config: the scale's config (``port`` is replaced by the link in ``patched_config``).
        context: the node's device context.
        link: the path the driver opens; default ``<link_dir>/<name>.tty``.
        link_dir: directory for the default link (tests pass ``tmp_path``).
        seed: seed of the garbage generator, so a test sees the same bytes every run.
        line_echo: the line sends every byte the host writes back to it before the
            answer (a half-duplex RS-485 converter, a terminal adapter in local echo).

    Attributes:
        received: every byte the driver sent, for byte-exact assertions.
    """

    frame_end: ClassVar[bytes] = b"\r\n"
    #: Directory of links when neither ``link`` nor ``link_dir`` is given.
    default_link_dir: ClassVar[Path] = Path(tempfile.gettempdir()) / "zone-agent-sim"
    #: Zero is accepted within this many grams of the current zero.
    zero_range_g: ClassVar[float] = 100.0

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext,
        *,
        link: str | Path | None = None,
        link_dir: str | Path | None = None,
        seed: int = 0,
        line_echo: bool = False,
    ) -> None:
        super().__init__(config, context)
        self.line_echo = line_echo
        # The node sets ``link_dir`` after construction (its --simulate directory), so the
        # default link is resolved when the simulator starts.
        self.link_dir = Path(link_dir) if link_dir is not None else self.default_link_dir
        self._link = Path(link) if link is not None else None
        self.received = bytearray()
        self._inbox = bytearray()
        self._random = random.Random(seed)
        self._pty: PtyEndpoint | None = None
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def link(self) -> Path:
        """The path the driver opens: ``link``, else ``<link_dir>/<name>.tty``."""
        return self._link if self._link is not None else self.link_dir / f"{self.config.name}.tty"

    async def start(self) -> None:
        """Create the pty behind ``link`` and start answering."""
        self._link = self.link  # fixed from now on, whatever happens to link_dir
        self._pty = PtyEndpoint(self._link, self._on_data)
        self._plug(self._pty.open)
        self._writer = asyncio.create_task(self._write_loop(), name=f"sim-{self.config.name}")

    async def stop(self) -> None:
        """Remove the pty and the link; safe to call twice."""
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._pty is not None:
            self._pty.close()

    def patched_config(self) -> DeviceConfig:
        """The config with ``port`` set to the link."""
        return self.config.model_copy(update={"port": str(self.link)})

    # -- control ----------------------------------------------------------------------------

    def _control(self, action: str, args: dict[str, Any]) -> None:
        match action:
            case "unplug":
                self._only(args, set())
                self._drop_output()
                self._started().unplug()
            case "replug":
                self._only(args, set())
                self._drop_output()
                self._plug(self._started().replug)
            case _:
                super()._control(action, args)

    @property
    def plugged(self) -> bool:
        """Whether the pty exists."""
        return self._pty is not None and self._pty.plugged

    # -- bytes in and out -------------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        self.received += data
        if self.line_echo:
            self._out.put_nowait(data)
        if self.mode == "silent":
            return
        if self.mode == "garbage":
            self._inbox.clear()
            self._send(self._garbage())
            return
        self._inbox += data
        self._handle_input()

    def _started(self) -> PtyEndpoint:
        if self._pty is None:
            raise ValueError("the simulator is not started")
        return self._pty

    def _plug(self, connect: Callable[[], str]) -> None:
        connect()

    def _garbage(self) -> bytes:
        # High bytes are what a wrong baud rate produces; no protocol frame uses them.
        length = self._random.randint(6, 20)
        return bytes(self._random.randint(0x80, 0xFE) for _ in range(length)) + self.frame_end

    def _send(self, data: bytes, injectable: bool = True) -> None:
        if injectable and self._inject:
            injected, keep_reply = self._inject.pop(0)
            data = injected + data if keep_reply else injected
        self._out.put_nowait(data)

    async def _write_loop(self) -> None:
        while True:
            data = await self._out.get()
            if self.split_s > 0 and len(data) > 1:
                half = len(data) // 2
                self._started().write(data[:half])
                await asyncio.sleep(self.split_s)
                self._started().write(data[half:])
            else:
                self._started().write(data)

    def _drop_output(self) -> None:
        self._inbox.clear()
        while not self._out.empty():
            self._out.get_nowait()

    # -- scale physics ----------------------------------------------------------------------

    def _in_unit(self, grams: float) -> float:
        return grams / GRAMS_PER_UNIT[self.unit]

    def _zero_in_range(self) -> bool:
        return abs(self.grams) <= self.zero_range_g

    def _handle_input(self) -> None:
        """Consume complete commands from ``_inbox`` and answer them (protocols)."""
        raise NotImplementedError


class MtSicsSimulator(ScaleSimulator):
    """An MT-SICS level 0/1 balance: ``S SI T TAC Z @ I4``; anything else gets ``ES``."""

    protocol = "mt_sics"
    default_unit = "g"
    frame_end = b"\r\n"
    serial_number = "B123456789"
    _decimals: ClassVar[dict[str, int]] = {"g": 2, "kg": 5, "lb": 5, "oz": 4}

    def _weight_field(self, grams: float) -> str:
        text = f"{self._in_unit(grams):.{self._decimals[self.unit]}f}"
        return f"{text:>10} {self.unit}"

    def _handle_input(self) -> None:
        while (end := self._inbox.find(b"\r\n")) >= 0:
            command = bytes(self._inbox[:end]).strip().decode("latin-1")
            del self._inbox[: end + 2]
            self._send(self._answer(command).encode("latin-1") + b"\r\n")

    def _answer(self, command: str) -> str:
        fault = {"overload": "+", "underload": "-"}.get(self.mode)
        match command:
            case "S" | "SI":
                mode = self._weigh_mode()
                if fault:
                    return f"S {fault}"
                if mode == "moving":
                    return "S I" if command == "S" else f"S D {self._weight_field(self.shown_g)}"
                return f"S S {self._weight_field(self.shown_g)}"
            case "T":
                if fault:
                    return f"T {fault}"
                if self.mode == "moving":
                    return "T I"
                self.tare_g = self.grams
                return f"T S {self._weight_field(self.tare_g)}"
            case "TAC":
                self.tare_g = 0.0
                return "TAC A"
            case "Z":
                if fault:
                    return f"Z {fault}"
                if self.mode == "moving":
                    return "Z I"
                if not self._zero_in_range():
                    return "Z +" if self.grams > 0 else "Z -"
                self.grams = self.tare_g = 0.0
                return "Z A"
            case "@":
                self.tare_g = 0.0
                return f'I4 A "{self.serial_number}"'
            case "I4":
                return f'I4 A "{self.serial_number}"'
        return "ES"


class Toledo8217Simulator(ScaleSimulator):
    """A Mettler-Toledo 8217 ("weight only") scale: ``W Z T<CR> C E...F A B``.

    The unit printed is the driver config's ``unit`` (the 8217 frame carries none).
    ``echo_test = False`` plays a scale without the echo test (``E`` ignored like any
    unknown command), as many POS scales speaking 8217 are.
    """

    protocol = "toledo_8217"
    units = ("kg", "lb")
    default_unit = "kg"
    frame_end = b"\r"

    def __init__(
        self,
        config: DeviceConfig,
        context: DeviceContext,
        *,
        link: str | Path | None = None,
        link_dir: str | Path | None = None,
        seed: int = 0,
        line_echo: bool = False,
        echo_test: bool = True,
    ) -> None:
        super().__init__(
            config, context, link=link, link_dir=link_dir, seed=seed, line_echo=line_echo
        )
        self.unit = str(getattr(config, "unit", self.default_unit))
        self.echo_test = echo_test
        self.echo = False

    def _status(self, *, outside_zero: bool = False) -> bytes:
        bits = 0x40
        shown = self.shown_g
        if self.mode == "moving":
            bits |= 0x01
        if self.mode == "overload":
            bits |= 0x02
        if self.mode == "underload" or (self.mode != "overload" and shown < 0):
            bits |= 0x04
        if outside_zero:
            bits |= 0x08
        if shown == 0 and self.mode in ("stable", "moving"):
            bits |= 0x10
        if self.tare_g:
            bits |= 0x20
        return STX + b"?" + bytes([bits]) + CR

    def _weight(self) -> bytes:
        mode = self._weigh_mode()
        if mode != "stable" or self.shown_g < 0:
            return self._status()
        value = self._in_unit(self.shown_g)
        text = f"{value:06.3f}" if self.unit == "kg" else f"{value:05.2f}"
        return STX + text.encode() + (b"N" if self.tare_g else b"") + CR

    def _handle_input(self) -> None:
        while self._inbox:
            byte = self._inbox[:1]
            if self.echo:
                del self._inbox[:1]
                if byte == b"F":
                    self.echo = False
                else:
                    self._send(bytes(byte), injectable=False)
                continue
            if byte == b"T":
                end = self._inbox.find(CR)
                if end < 0:
                    return  # "T<CR>" or "TWWWWW<CR>": wait for the rest
                digits = bytes(self._inbox[1:end])
                del self._inbox[: end + 1]
                self._send(self._tare(digits))
                continue
            del self._inbox[:1]
            match byte:
                case b"W":
                    self._send(self._weight())
                case b"Z":
                    self._send(self._zero())
                case b"C":
                    if self.mode == "stable":
                        self.tare_g = 0.0
                    self._send(self._status())
                case b"E" if self.echo_test:
                    self.echo = True
                    self._send(STX + b"E" + CR)
                case b"A":
                    self._send(STX + CR)
                case b"B":
                    self._send(STX + b"?@" + CR)
                # Anything else (line ends, other commands) is ignored, as the scale does.

    def _tare(self, digits: bytes) -> bytes:
        if self.mode != "stable":
            return self._status()
        if digits:
            if not digits.isdigit() or len(digits) != 5:
                return self._status()
            # Digital tare: 5 digits, WW.WWW kg or WWW.WW lb implied.
            scale = 1000 if self.unit == "kg" else 100
            self.tare_g = int(digits) / scale * GRAMS_PER_UNIT[self.unit]
        elif self.grams > 0:
            self.tare_g = self.grams
        return self._status()

    def _zero(self) -> bytes:
        if self.mode != "stable" or self.tare_g:
            return self._status()
        if not self._zero_in_range():
            return self._status(outside_zero=True)
        self.grams = 0.0
        return self._status()


class NciSimulator(ScaleSimulator):
    """An NCI / Avery Weigh-Tronix 3825 ("NCI standard", SCP-01) scale: ``W S Z T``."""

    protocol = "nci"
    default_unit = "kg"
    frame_end = ETX
    _width: ClassVar[dict[str, str]] = {"kg": "07.2f", "lb": "07.2f", "oz": "07.1f", "g": "07.0f"}

    def _status(self) -> bytes:
        shown = self.shown_g
        byte1 = 0x30
        if self.mode == "moving":
            byte1 |= 0x01
        if shown == 0 and self.mode in ("stable", "moving"):
            byte1 |= 0x02
        byte2 = 0x30
        if self.mode == "underload" or (self.mode != "overload" and shown < 0):
            byte2 |= 0x01
        if self.mode == "overload":
            byte2 |= 0x02
        status = bytes([byte1])
        if self.tare_g:
            # Byte 2 bit 6 announces byte 3, whose bit 2 says "net".
            status += bytes([byte2 | 0x40, 0x30 | 0x04])
        else:
            status += bytes([byte2])
        return status

    def _status_frame(self) -> bytes:
        return LF + self._status() + CR + ETX

    def _weight(self) -> bytes:
        mode = self._weigh_mode()
        if mode != "stable" or self.shown_g < 0:
            return self._status_frame()
        value = f"{self._in_unit(self.shown_g):{self._width[self.unit]}}"
        return (
            LF + value.encode() + self.unit.ljust(2).encode() + CR + LF + self._status() + CR + ETX
        )

    def _handle_input(self) -> None:
        while (end := self._inbox.find(CR)) >= 0:
            command = bytes(self._inbox[:end]).strip(b"\n ")
            del self._inbox[: end + 1]
            if not command:
                continue  # an empty line: the indicator waits for a command
            match command:
                case b"W":
                    self._send(self._weight())
                case b"S":
                    self._send(self._status_frame())
                case b"Z":
                    if self.mode == "stable" and self._zero_in_range():
                        self.grams = self.tare_g = 0.0
                    self._send(self._status_frame())
                case b"T":
                    if self.mode == "stable" and self.grams > 0:
                        self.tare_g = self.grams
                    self._send(self._status_frame())
                case _:
                    self._send(LF + b"?" + CR + ETX)


#: Simulators by protocol name, for the CLI.
SIMULATORS: dict[str, type[ScaleSimulator]] = {
    cls.protocol: cls for cls in (MtSicsSimulator, Toledo8217Simulator, NciSimulator)
}
