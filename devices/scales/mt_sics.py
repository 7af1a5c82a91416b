"""Mettler-Toledo MT-SICS balances and indicators (levels 0/1), over RS-232 or USB-CDC.

Commands end with ``<CR><LF>``, and so do replies (``S S     12.345 g``). The driver uses
``SI`` (immediate weight, stable or dynamic), ``T`` (tare), ``TAC`` (clear tare), ``Z``
(zero); the probe uses ``I4`` (serial number), a reply no other protocol sends.
"""

from __future__ import annotations

from typing import Literal

from devices.backends.serial import SerialPort, SerialSettings
from devices.scales.base import (
    Condition,
    Reading,
    Scale,
    ScaleCommandRefused,
    ScaleConfig,
    ScaleErrorReply,
    ScaleNotStable,
    to_grams,
)
from devices.scales.sim import MtSicsSimulator

#: What the general error lines mean (they answer any command).
ERROR_LINES: dict[str, str] = {
    "ES": "syntax error: the scale did not recognise the command",
    "ET": "transmission error: check baud rate and parity",
    "EL": "logical error: the command cannot be carried out now",
}


class MtSicsConfig(ScaleConfig):
    """An MT-SICS scale (``kind = "mt_sics"``); line settings default to 9600 8N1."""

    kind: Literal["mt_sics"]


def split_reply(frame: bytes) -> list[str]:
    """A reply line as whitespace-separated fields, quotes stripped (tolerant of variants)."""
    text = frame.decode("ascii", errors="replace")
    return [field.strip('"') for field in text.split()]


def check_error_line(fields: list[str]) -> None:
    """Raise ``ScaleErrorReply`` when the line is ``ES``, ``ET`` or ``EL``."""
    if len(fields) == 1 and fields[0] in ERROR_LINES:
        raise ScaleErrorReply(fields[0], f"MT-SICS {fields[0]}: {ERROR_LINES[fields[0]]}")


def parse_weight_fields(fields: list[str]) -> float | None:
    """Grams from ``[..., value, unit]`` (a ``-`` may stand apart from the digits)."""
    if len(fields) < 4:
        return None
    number = "".join(fields[2:-1])
    try:
        value = float(number)
    except ValueError:
        return None
    return to_grams(value, fields[-1])


class MtSicsScale(Scale):
    """A Mettler-Toledo MT-SICS scale (balances, ICS/IND indicators, OHAUS in MT-SICS mode).

    Wiring: RS-232 null-modem or the scale's USB-CDC port; set the scale's interface to
    MT-SICS ("SICS" / "Dialog"), 9600 8N1, no handshake, ``<CR><LF>`` (the config must match
    whatever the menu says). Tested against the byte-exact simulator in
    ``devices.scales.sim``.

    Example::

        config = MtSicsConfig(name="pack1-scale", kind="mt_sics", port="/dev/ttyUSB0")
        async with MtSicsScale.from_config(config, DeviceContext()) as scale:
            weight = await scale.read_stable(timeout=5.0)
            print(weight.grams, weight.stable)
    """

    protocol = "mt_sics"
    frame_end = b"\r\n"
    # Every MT-SICS reply begins with its command's upper-case letters (S, T, Z, I4, ES...).
    frame_starts = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    default_settings = SerialSettings(9600, 8, "N", 1)

    def __init__(self, config: ScaleConfig, port: SerialPort) -> None:
        super().__init__(config, port)
        # MT-SICS weight lines do not say "net": remember what this driver did.
        self._tare_active = False

    def _weight_request(self) -> bytes:
        return b"SI\r\n"

    def _parse_weight(self, frame: bytes) -> Reading | None:
        fields = split_reply(frame)
        check_error_line(fields)
        if len(fields) < 2 or fields[0] not in ("S", "SI"):
            return None
        status = fields[1]
        if status in ("S", "D"):
            grams = parse_weight_fields(fields)
            if grams is None:
                return None
            return Reading(Condition.WEIGHT, grams, stable=status == "S", net=self._tare_active)
        conditions = {"I": Condition.BUSY, "+": Condition.OVERLOAD, "-": Condition.UNDERLOAD}
        if status in conditions and len(fields) == 2:
            return Reading(conditions[status])
        return None

    async def _tare(self) -> None:
        await self._exchange(b"T\r\n", self._parse_tare, self.config.command_timeout, "tare")
        self._tare_active = True

    def _parse_tare(self, frame: bytes) -> bool | None:
        fields = split_reply(frame)
        check_error_line(fields)
        if len(fields) < 2 or fields[0] != "T":
            return None
        match fields[1]:
            case "S":
                return True
            case "I":
                raise ScaleNotStable(f"{self.name}: tare not executed: not stable or busy (T I)")
            case "+":
                raise ScaleCommandRefused(f"{self.name}: tare refused: above the tare range (T +)")
            case "-":
                raise ScaleCommandRefused(f"{self.name}: tare refused: below the tare range (T -)")
        return None

    async def _clear_tare(self) -> None:
        await self._exchange(b"TAC\r\n", self._parse_clear, self.config.command_timeout, "TAC")
        self._tare_active = False

    def _parse_clear(self, frame: bytes) -> bool | None:
        fields = split_reply(frame)
        check_error_line(fields)
        if len(fields) != 2 or fields[0] != "TAC":
            return None
        if fields[1] == "A":
            return True
        if fields[1] == "I":
            raise ScaleCommandRefused(f"{self.name}: clear tare not executed (TAC I)")
        return None

    async def _zero(self) -> None:
        await self._exchange(b"Z\r\n", self._parse_zero, self.config.command_timeout, "zero")
        # Zeroing an MT-SICS balance also clears its tare.
        self._tare_active = False

    def _parse_zero(self, frame: bytes) -> bool | None:
        fields = split_reply(frame)
        check_error_line(fields)
        if len(fields) != 2 or fields[0] != "Z":
            return None
        match fields[1]:
            case "A":
                return True
            case "I":
                raise ScaleNotStable(f"{self.name}: zero not executed: not stable or busy (Z I)")
            case "+":
                raise ScaleCommandRefused(f"{self.name}: zero refused: above the zero range (Z +)")
            case "-":
                raise ScaleCommandRefused(f"{self.name}: zero refused: below the zero range (Z -)")
        return None


CONFIG = MtSicsConfig
DRIVER = MtSicsScale
SIMULATOR = MtSicsSimulator
