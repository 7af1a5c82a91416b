"""Mettler-Toledo 8217 ("weight only", Ariva-S protocol option 3) scales, 9600 7E1.

Single-letter commands without terminator (``T`` takes a ``<CR>``); replies are
``<STX>...<CR>``: a weight (``01.250``, ``N`` suffix when net) or ``?`` plus a status
character whose bits say why there is no weight:

====  ==========================  ====  ===================
bit   meaning                     bit   meaning
====  ==========================  ====  ===================
0     in motion                   4     centre of zero
1     over capacity               5     net weight (tare on)
2     under zero                  6     always 1
3     outside zero capture range  7     parity (masked off)
====  ==========================  ====  ===================
"""

from __future__ import annotations

import re
from typing import Literal

from devices.backends.serial import Parity, SerialPort, SerialSettings
from devices.scales.base import (
    Condition,
    Reading,
    Scale,
    ScaleCommandRefused,
    ScaleConfig,
    ScaleNotStable,
    ScaleOverload,
    ScaleUnderload,
    to_grams,
)
from devices.scales.sim import Toledo8217Simulator

MOTION, OVER_CAPACITY, UNDER_ZERO, OUTSIDE_ZERO_RANGE, CENTRE_OF_ZERO, NET, ALWAYS_ONE = (
    1 << bit for bit in range(7)
)

_WEIGHT = re.compile(rb"\s*(-?[0-9]+(?:\.[0-9]*)?)(N?)")

#: The reply to the echo test ``b"Ehello"``: unique to the 8217, used by the probe.
ECHO_PROBE = b"Ehello"
ECHO_REPLY = b"\x02E\rhello"


class Toledo8217Config(ScaleConfig):
    """A Mettler-Toledo 8217 scale (``kind = "toledo_8217"``).

    Attributes:
        unit: what the scale is calibrated in; the 8217 frame does not say (``kg`` prints
            ``WW.WWW``, ``lb`` prints ``WW.WW``).
    """

    kind: Literal["toledo_8217"]
    bytesize: Literal[7, 8] = 7
    parity: Parity = "E"
    unit: Literal["kg", "lb"] = "kg"


def frame_body(frame: bytes) -> bytes | None:
    """What lies between the ``<STX>`` that starts the frame and its ``<CR>``; else ``None``.

    Bytes before the STX are line noise: the driver finds the reply behind them (and counts
    them) rather than this function silently skipping them.
    """
    if frame[:1] != b"\x02":
        return None
    return frame[1:].rstrip(b"\r")


def parse_status(frame: bytes) -> int | None:
    """The status bits of a ``<STX>?<status><CR>`` frame, parity bit masked; else ``None``."""
    body = frame_body(frame)
    if body is None or len(body) != 2 or body[:1] != b"?":
        return None
    status = body[1] & 0x7F
    if not status & ALWAYS_ONE:
        return None
    return status


def is_weight_reply(frame: bytes) -> bool:
    """Whether ``frame`` is a reply to ``W``: ``<STX>`` weight or ``?`` status, ``<CR>``.

    The probe's fallback for scales without the echo test: STX-framed digits or a status
    character with bit 6 set is a reply no other protocol here sends.
    """
    if parse_status(frame) is not None:
        return True
    body = frame_body(frame)
    return body is not None and _WEIGHT.fullmatch(body) is not None


class Toledo8217Scale(Scale):
    """A Mettler-Toledo 8217-protocol scale (Ariva-S, Viva, PS60 and many POS scales).

    Wiring: RS-232 to the scale's host port (null-modem as the manual says); set the scale
    to the 8217 protocol, 9600 baud, 7 data bits, even parity, 1 stop bit. Set ``unit`` to
    what the scale is calibrated in. The scale sends no weight while in motion, so
    ``read()`` raises ``ScaleNotStable`` then and ``events()`` yields only settled weights.

    Example::

        config = Toledo8217Config(name="pack2-scale", kind="toledo_8217", port="/dev/ttyUSB1")
        async with Toledo8217Scale.from_config(config, DeviceContext()) as scale:
            await scale.zero()
            weight = await scale.read_stable()
    """

    protocol = "toledo_8217"
    frame_end = b"\r"
    frame_starts = b"\x02"
    default_settings = SerialSettings(9600, 7, "E", 1)

    def __init__(self, config: Toledo8217Config, port: SerialPort) -> None:
        super().__init__(config, port)
        self.unit = config.unit

    def _weight_request(self) -> bytes:
        return b"W"

    def _parse_weight(self, frame: bytes) -> Reading | None:
        status = parse_status(frame)
        if status is not None:
            net = bool(status & NET)
            if status & OVER_CAPACITY:
                return Reading(Condition.OVERLOAD, net=net)
            if status & UNDER_ZERO:
                return Reading(Condition.UNDERLOAD, net=net)
            if status & MOTION:
                return Reading(Condition.MOTION, net=net)
            return Reading(Condition.BUSY, net=net)
        body = frame_body(frame)
        if body is None:
            return None
        match = _WEIGHT.fullmatch(body)
        if match is None:
            return None
        grams = to_grams(float(match[1]), self.unit)
        # The 8217 sends a number only when the weight is settled.
        return Reading(Condition.WEIGHT, grams, stable=True, net=bool(match[2]))

    def _check(self, status: int, action: str) -> None:
        if status & MOTION:
            raise ScaleNotStable(f"{self.name}: {action} not taken: scale in motion")
        if status & OVER_CAPACITY:
            raise ScaleOverload(f"{self.name}: {action} not taken: over capacity")
        if status & UNDER_ZERO:
            raise ScaleUnderload(f"{self.name}: {action} not taken: under zero")

    async def _status_command(self, command: bytes, action: str) -> int:
        return await self._exchange(command, parse_status, self.config.command_timeout, action)

    async def _zero(self) -> None:
        status = await self._status_command(b"Z", "zero")
        self._check(status, "zero")
        if status & NET:
            raise ScaleCommandRefused(
                f"{self.name}: zero works in gross mode only: clear the tare first"
            )
        if status & OUTSIDE_ZERO_RANGE:
            raise ScaleCommandRefused(
                f"{self.name}: zero refused: the load is outside the zero capture range"
            )

    async def _tare(self) -> None:
        status = await self._status_command(b"T\r", "tare")
        self._check(status, "tare")
        if not status & NET:
            raise ScaleCommandRefused(
                f"{self.name}: tare not taken (no load on the platform, or tare disabled in "
                "the scale's calibration menu)"
            )

    async def _clear_tare(self) -> None:
        status = await self._status_command(b"C", "clear tare")
        self._check(status, "clear tare")
        if status & NET:
            raise ScaleCommandRefused(f"{self.name}: clear tare ignored by the scale")


CONFIG = Toledo8217Config
DRIVER = Toledo8217Scale
SIMULATOR = Toledo8217Simulator
