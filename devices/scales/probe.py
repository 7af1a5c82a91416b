"""Which scale protocol, if any, answers on a serial port.

A protocol counts as found only when a reply unique to it arrives (Odoo's Adam driver
"found" a scale on any serial device because a write succeeded; this does not):

* MT-SICS: ``I4`` -> ``I4 A "<serial number>"``;
* Mettler-Toledo 8217: echo test ``Ehello`` -> ``<STX>E<CR>hello``, then ``F`` ends it;
* NCI: ``S<CR>`` -> ``<LF>hh<CR><ETX>`` (valid status characters).

Each protocol is tried with its own line settings on a freshly opened port, input
discarded first. Bytes that arrive without matching usually mean a wrong baud rate or
parity; the result carries a hint saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from devices.backends.serial import SerialPort, SerialSettings
from devices.scales.base import describe_settings
from devices.scales.mt_sics import MtSicsScale, split_reply
from devices.scales.nci import FRAME, NciScale, parse_status
from devices.scales.toledo_8217 import ECHO_PROBE, ECHO_REPLY, Toledo8217Scale

log = logging.getLogger("devices.scales")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What probing one port found.

    Attributes:
        port: the port probed.
        protocol: the protocol that answered uniquely, else ``None``.
        hint: why nothing matched although bytes arrived (baud rate, parity), else ``None``.
        heard: the bytes that arrived and matched nothing (first 64), for diagnostics.
    """

    port: str
    protocol: str | None
    hint: str | None = None
    heard: bytes = b""


def _mt_sics_match(buffer: bytes) -> bool:
    for line in buffer.split(b"\r\n"):
        fields = split_reply(line)
        if len(fields) >= 3 and fields[0] == "I4" and fields[1] == "A":
            return True
    return False


def _nci_match(buffer: bytes) -> bool:
    for chunk in buffer.split(b"\x03"):
        match = FRAME.search(chunk + b"\x03")
        if match is not None and match[2] is None and parse_status(match[1].strip()) is not None:
            return True
    return False


def _toledo_match(buffer: bytes) -> bool:
    return ECHO_REPLY in buffer


@dataclass(frozen=True, slots=True)
class _Attempt:
    protocol: str
    settings: SerialSettings
    request: bytes
    matches: Callable[[bytes], bool]
    after: bytes = b""  # sent after a match, to leave a test mode


# A leading line end flushes whatever a previous attempt left in the scale's command buffer.
ATTEMPTS: tuple[_Attempt, ...] = (
    _Attempt(MtSicsScale.protocol, MtSicsScale.default_settings, b"\r\nI4\r\n", _mt_sics_match),
    _Attempt(NciScale.protocol, NciScale.default_settings, b"\rS\r", _nci_match),
    _Attempt(
        Toledo8217Scale.protocol,
        Toledo8217Scale.default_settings,
        ECHO_PROBE,
        _toledo_match,
        after=b"F",
    ),
)


async def _try(port: str, attempt: _Attempt, wait_s: float) -> tuple[bool, bytes]:
    serial_port = SerialPort(port, attempt.settings)
    await serial_port.open()
    try:
        serial_port.reset_input()
        await serial_port.write(attempt.request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        heard = b""
        while (remaining := deadline - loop.time()) > 0:
            heard += await serial_port.read_available(remaining)
            if attempt.matches(heard):
                if attempt.after:
                    await serial_port.write(attempt.after)
                return True, heard
        if attempt.after and heard.startswith(ECHO_REPLY[:3]):
            await serial_port.write(attempt.after)  # half an echo: leave echo mode anyway
        return False, heard
    finally:
        await serial_port.close()


async def probe_port(port: str, timeout: float = 0.5) -> ProbeResult:
    """Try every protocol on ``port``, each with its own settings.

    Args:
        port: the serial device path.
        timeout: seconds to wait for each protocol's reply.

    Raises:
        DeviceUnavailable: the port cannot be opened (missing, busy, permission).
    """
    heard = b""
    for attempt in ATTEMPTS:
        found, data = await _try(port, attempt, timeout)
        if found:
            return ProbeResult(port, attempt.protocol)
        heard += data
    if not heard:
        return ProbeResult(port, None)
    tried = ", ".join(f"{a.protocol} {describe_settings(a.settings)}" for a in ATTEMPTS)
    hint = (
        f"{port}: bytes arrived but no scale protocol answered as expected; likely a wrong "
        f"baud rate or parity (tried {tried}): check the scale's interface menu"
    )
    return ProbeResult(port, None, hint=hint, heard=heard[:64])


async def identify(port: str, timeout: float = 0.5) -> str | None:
    """The protocol of the scale on ``port`` (``mt_sics``, ``toledo_8217``, ``nci``) or ``None``.

    Logs a warning with a wrong-baud/parity hint when bytes arrive but none match.

    Raises:
        DeviceUnavailable: the port cannot be opened (missing, busy, permission).
    """
    result = await probe_port(port, timeout)
    if result.hint:
        log.warning("%s (heard %r)", result.hint, result.heard)
    return result.protocol
