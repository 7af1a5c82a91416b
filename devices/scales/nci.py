"""NCI / Avery Weigh-Tronix "standard" protocol (SCP-01, "NCI 3825"), also Brecknell/Salter.

Commands end with ``<CR>``; replies end with ``<ETX>``::

    W<CR>  ->  <LF>0001.25kg<CR><LF>00<CR><ETX>     weight, unit, status
           ->  <LF>10<CR><ETX>                      status only: motion, under/over capacity
    S<CR>  ->  <LF>00<CR><ETX>                      status
    Z<CR>  ->  <LF>00<CR><ETX>                      zero (ignored when moving / out of range)
    ?      ->  <LF>?<CR><ETX>                       command not understood

Status characters keep bits 4 and 5 set (``0x30``); byte 1: bit 0 motion, 1 at zero,
2 RAM error, 3 EEPROM error; byte 2: bit 0 under capacity, 1 over capacity, 2 ROM error,
3 faulty calibration, 6 another byte follows; byte 3: bit 2 net, bit 3 initial zero error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from devices.backends.serial import SerialPort, SerialSettings
from devices.scales.base import (
    Condition,
    Reading,
    Scale,
    ScaleCommandRefused,
    ScaleCommandUnsupported,
    ScaleConfig,
    ScaleErrorReply,
    ScaleFault,
    ScaleNotStable,
    ScaleOverload,
    ScaleUnderload,
    to_grams,
)
from devices.scales.sim import NciSimulator

FRAME = re.compile(rb"\n([^\r\n\x03]*)\r(?:\n([^\r\n\x03]*)\r)?\x03\Z")
_WEIGHT = re.compile(rb"\s*(-?\s*[0-9]*\.?[0-9]+)\s*([A-Za-z]{1,3})\s*")
_LB_OZ = re.compile(rb"\s*([0-9]+)\s*lb\s+([0-9]*\.?[0-9]+)\s*oz\s*", re.IGNORECASE)


class NciConfig(ScaleConfig):
    """An NCI-protocol scale (``kind = "nci"``); 9600 8N1 unless the scale's menu differs.

    Attributes:
        supports_tare: the indicator accepts ``T<CR>`` (some do; the standard has no tare).
    """

    kind: Literal["nci"]
    supports_tare: bool = False


@dataclass(frozen=True, slots=True)
class NciStatus:
    """The status bytes of an NCI reply, decoded."""

    motion: bool
    at_zero: bool
    under: bool
    over: bool
    net: bool
    errors: tuple[str, ...]


def parse_status(raw: bytes) -> NciStatus | None:
    """Decode status characters (``b"00"``, SCP-02's ``b"S00"``); ``None`` if they are not."""
    if raw[:1] == b"S":
        raw = raw[1:]
    data = [byte & 0x7F for byte in raw]  # bit 7 is parity on 7-bit lines
    if len(data) < 2 or any(byte & 0x30 != 0x30 for byte in data) or data[0] & 0x40:
        return None
    byte1, byte2 = data[0], data[1]
    if byte2 & 0x40 and len(data) < 3:
        return None
    byte3 = data[2] if byte2 & 0x40 else 0x30
    flags = (
        (byte1 & 0x04, "RAM error"),
        (byte1 & 0x08, "EEPROM error"),
        (byte2 & 0x04, "ROM error"),
        (byte2 & 0x08, "faulty calibration"),
        (byte3 & 0x08, "initial zero error (platform loaded at power-up)"),
    )
    return NciStatus(
        motion=bool(byte1 & 0x01),
        at_zero=bool(byte1 & 0x02),
        under=bool(byte2 & 0x01),
        over=bool(byte2 & 0x02),
        net=bool(byte3 & 0x04),
        errors=tuple(text for bit, text in flags if bit),
    )


def parse_weight_text(text: bytes) -> float | None:
    """Grams from ``0001.25kg``, ``1250 g`` or ``02lb 04.0oz``; ``None`` if it is neither."""
    lb_oz = _LB_OZ.fullmatch(text)
    if lb_oz is not None:
        return round(to_grams(float(lb_oz[1]), "lb") + to_grams(float(lb_oz[2]), "oz"), 3)
    match = _WEIGHT.fullmatch(text)
    if match is None:
        return None
    return to_grams(float(match[1].replace(b" ", b"")), match[2].decode())


class NciScale(Scale):
    """An NCI / Avery Weigh-Tronix scale (3825, 7820 series, Brecknell, Salter, B-TEK).

    Wiring: RS-232 to the indicator's host port; select the "NCI standard" / SCP-01
    protocol, 9600 8N1 (match whatever the indicator's menu says). The scale answers
    ``W`` with a status only while in motion, so ``read()`` raises ``ScaleNotStable``
    then. Tare needs ``supports_tare = true`` and an indicator that accepts ``T<CR>``.

    Example::

        config = NciConfig(name="pack3-scale", kind="nci", port="/dev/ttyUSB2")
        async with NciScale.from_config(config, DeviceContext()) as scale:
            weight = await scale.read_stable()
    """

    protocol = "nci"
    frame_end = b"\x03"
    default_settings = SerialSettings(9600, 8, "N", 1)

    def __init__(self, config: NciConfig, port: SerialPort) -> None:
        super().__init__(config, port)
        self.supports_tare = config.supports_tare

    def _split(self, frame: bytes) -> tuple[bytes | None, NciStatus] | None:
        match = FRAME.search(frame)
        if match is None:
            return None
        if match.start() > 0:
            self._bad_frame(frame[: match.start()], "bytes before an NCI frame")
        first, second = match[1], match[2]
        if second is None and first.strip() == b"?":
            raise ScaleErrorReply("?", f"{self.name}: the scale did not understand the command")
        status = parse_status(first.strip() if second is None else second.strip())
        if status is None:
            return None
        if status.errors:
            raise ScaleFault(f"{self.name}: the scale reports {', '.join(status.errors)}")
        return (first if second is not None else None), status

    def _weight_request(self) -> bytes:
        return b"W\r"

    def _parse_weight(self, frame: bytes) -> Reading | None:
        parts = self._split(frame)
        if parts is None:
            return None
        text, status = parts
        if status.over:
            return Reading(Condition.OVERLOAD, net=status.net)
        if status.under:
            return Reading(Condition.UNDERLOAD, net=status.net)
        if text is None:
            return Reading(Condition.MOTION if status.motion else Condition.BUSY, net=status.net)
        grams = parse_weight_text(text)
        if grams is None:
            return None
        return Reading(Condition.WEIGHT, grams, stable=not status.motion, net=status.net)

    def _parse_status_frame(self, frame: bytes) -> NciStatus | None:
        parts = self._split(frame)
        if parts is None or parts[0] is not None:
            return None
        return parts[1]

    async def status(self) -> NciStatus:
        """Ask for the status bytes (``S<CR>``)."""
        return await self._exchange(
            b"S\r", self._parse_status_frame, self.config.reply_timeout, "status"
        )

    def _check(self, status: NciStatus, action: str) -> None:
        if status.motion:
            raise ScaleNotStable(f"{self.name}: {action} ignored: scale in motion")
        if status.over:
            raise ScaleOverload(f"{self.name}: {action} ignored: over capacity")
        if status.under:
            raise ScaleUnderload(f"{self.name}: {action} ignored: under capacity")

    async def _zero(self) -> None:
        status = await self._exchange(
            b"Z\r", self._parse_status_frame, self.config.command_timeout, "zero"
        )
        self._check(status, "zero")
        if not status.at_zero:
            # Some indicators answer before they capture zero: ask once more.
            status = await self.status()
            self._check(status, "zero")
        if not status.at_zero:
            raise ScaleCommandRefused(
                f"{self.name}: zero ignored: the load is outside the zero range"
            )

    async def _tare(self) -> None:
        if not self.supports_tare:
            raise ScaleCommandUnsupported(
                f"{self.name}: the NCI standard protocol has no tare (set supports_tare = true "
                "if this indicator accepts T<CR>)"
            )
        status = await self._exchange(
            b"T\r", self._parse_status_frame, self.config.command_timeout, "tare"
        )
        self._check(status, "tare")
        if not status.net:
            raise ScaleCommandRefused(f"{self.name}: tare not taken (no load on the platform?)")


CONFIG = NciConfig
DRIVER = NciScale
SIMULATOR = NciSimulator
