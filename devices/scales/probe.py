"""Which scale protocol, if any, answers on a serial port.

A protocol counts as found only when a reply unique to it arrives (Odoo's Adam driver
"found" a scale on any serial device because a write succeeded; this does not):

* MT-SICS: ``I4`` -> ``I4 A "<serial number>"``;
* NCI: ``S<CR>`` -> ``<LF>hh<CR><ETX>`` (valid status characters);
* Mettler-Toledo 8217: echo test ``Ehello`` -> ``<STX>E<CR>hello``, then ``F`` ends it;
  a scale without the echo test (many POS scales leave it out) is asked for a weight,
  ``W`` -> ``<STX>01.250<CR>`` or ``<STX>?<status><CR>``.

USB HID point-of-sale scales need no request: every hidraw device whose report descriptor
declares the scale usage page (8Dh), or whose vendor:product id is a known scale's, is
opened and counts as ``hid_pos`` once a valid scale report arrives (``probe_hid_scales``).

The serial probe is as tolerant as ``scale read``: line noise glued before a reply is stripped
with the drivers' own rule (``reply_behind_noise``), a reply split over several reads is
put together, and an echo of the request by the line is skipped. Each protocol is tried
with its own line settings on a freshly opened port, input discarded first. When nothing
answers, the result says what was sent on each port at which settings and what came back;
a refusal of the line settings is named only when a real adapter refused them (a
pseudo-terminal has no line: ``devices.backends.serial``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from devices.backends.hidraw import HidrawDevice, HidrawInfo, list_hidraw
from devices.backends.serial import LineSettingsRefused, SerialPort, SerialSettings
from devices.errors import DeviceProtocolError
from devices.scales.base import describe_settings, reply_behind_noise
from devices.scales.hid_pos import KNOWN_IDS, decode_report, known_scale
from devices.scales.mt_sics import MtSicsScale, split_reply
from devices.scales.nci import FRAME, NciScale, parse_status
from devices.scales.toledo_8217 import (
    ECHO_PROBE,
    ECHO_REPLY,
    Toledo8217Scale,
    is_weight_reply,
)

log = logging.getLogger("devices.scales")

_UPPER = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True, slots=True)
class Tried:
    """What one protocol's attempt on a port sent and got back.

    Attributes:
        protocol: the protocol tried.
        settings: its line settings, as installers write them (``9600 7E1``).
        sent: the requests sent, in order.
        heard: what came back (first 64 bytes), matching nothing.
        error: why the attempt could not run (the adapter refused the line settings).
    """

    protocol: str
    settings: str
    sent: tuple[bytes, ...]
    heard: bytes = b""
    error: str | None = None

    def describe(self) -> str:
        """One clause: ``toledo_8217 at 9600 7E1: sent b'Ehello', b'W': heard nothing``."""
        if self.error is not None:
            return f"{self.protocol} at {self.settings}: not tried: {self.error}"
        sent = ", ".join(repr(request) for request in self.sent)
        heard = repr(self.heard) if self.heard else "nothing"
        return f"{self.protocol} at {self.settings}: sent {sent}: heard {heard}"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What probing one port found.

    Attributes:
        port: the port probed.
        protocol: the protocol that answered uniquely, else ``None``.
        hint: when nothing answered: "no protocol answered", what was tried and the likely
            cause; else ``None``.
        heard: the bytes that arrived and matched nothing (first 64), for diagnostics.
        tried: every attempt made, in order (the last one is the match when found).
    """

    port: str
    protocol: str | None
    hint: str | None = None
    heard: bytes = b""
    tried: tuple[Tried, ...] = ()


def _mt_sics_i4(line: bytes) -> bool | None:
    fields = split_reply(line)
    if len(fields) >= 3 and fields[0] == "I4" and fields[1] == "A":
        return True
    return None


def _mt_sics_match(buffer: bytes) -> bool:
    for line in buffer.split(b"\r\n")[:-1]:  # complete lines only
        frame = line + b"\r\n"
        if _mt_sics_i4(frame) or reply_behind_noise(frame, _mt_sics_i4, _UPPER, 2):
            return True
    return False


def _nci_match(buffer: bytes) -> bool:
    for chunk in buffer.split(b"\x03")[:-1]:
        match = FRAME.search(chunk + b"\x03")
        if match is not None and match[2] is None and parse_status(match[1].strip()) is not None:
            return True
    return False


def _toledo_echo_match(buffer: bytes) -> bool:
    return ECHO_REPLY in buffer


def _toledo_weight(frame: bytes) -> bool | None:
    return True if is_weight_reply(frame) else None


def _toledo_weight_match(buffer: bytes) -> bool:
    for piece in buffer.split(b"\r")[:-1]:
        frame = piece + b"\r"
        if _toledo_weight(frame) or reply_behind_noise(frame, _toledo_weight, b"\x02", 1):
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Exchange:
    request: bytes
    matches: Callable[[bytes], bool]
    #: Sent after the exchange when ``leave_if`` is in what came back (leaves a test mode).
    after: bytes = b""
    leave_if: bytes = b""


@dataclass(frozen=True, slots=True)
class _Attempt:
    protocol: str
    settings: SerialSettings
    exchanges: tuple[_Exchange, ...]


# A leading line end flushes whatever a previous attempt left in the scale's command buffer.
ATTEMPTS: tuple[_Attempt, ...] = (
    _Attempt(
        MtSicsScale.protocol,
        MtSicsScale.default_settings,
        (_Exchange(b"\r\nI4\r\n", _mt_sics_match),),
    ),
    _Attempt(NciScale.protocol, NciScale.default_settings, (_Exchange(b"\rS\r", _nci_match),)),
    _Attempt(
        Toledo8217Scale.protocol,
        Toledo8217Scale.default_settings,
        (
            # Echo mode is left with F whenever the scale said it entered it (<STX>E<CR>).
            _Exchange(ECHO_PROBE, _toledo_echo_match, after=b"F", leave_if=ECHO_REPLY[:3]),
            # Many 8217 scales have no echo test: a plain weight request is the fallback.
            _Exchange(b"W", _toledo_weight_match),
        ),
    ),
)


async def _exchange(port: SerialPort, exchange: _Exchange, wait_s: float) -> tuple[bool, bytes]:
    port.reset_input()
    await port.write(exchange.request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    heard = b""
    found = False
    while (remaining := deadline - loop.time()) > 0:
        heard += await port.read_available(remaining)
        if exchange.matches(heard):
            found = True
            break
    if exchange.after and exchange.leave_if in heard:
        await port.write(exchange.after)
    return found, heard


async def _try(port: str, attempt: _Attempt, wait_s: float) -> tuple[bool, Tried]:
    settings = describe_settings(attempt.settings)
    serial_port = SerialPort(port, attempt.settings)
    try:
        await serial_port.open()
    except LineSettingsRefused as exc:
        return False, Tried(attempt.protocol, settings, (), error=str(exc))
    sent: list[bytes] = []
    heard = b""
    try:
        for exchange in attempt.exchanges:
            sent.append(exchange.request)
            found, data = await _exchange(serial_port, exchange, wait_s)
            if found:
                return True, Tried(attempt.protocol, settings, tuple(sent), data[:64])
            heard += data
    finally:
        await serial_port.close()
    return False, Tried(attempt.protocol, settings, tuple(sent), heard[:64])


def no_protocol_hint(port: str, tried: tuple[Tried, ...]) -> str:
    """The "no protocol answered" hint for ``port``: what was tried, and what to check first."""
    heard = any(t.heard for t in tried)
    refused = any(t.error for t in tried)
    if heard:
        cause = "bytes arrived but none was a reply: likely a wrong baud rate or parity"
    elif refused:
        cause = "nothing came back where the line settings were accepted"
    else:
        cause = "nothing came back: scale off, wrong cable (null-modem?), or not a scale"
    steps = "; ".join(t.describe() for t in tried)
    return (
        f"{port}: no protocol answered ({cause}; check the scale's interface menu). Tried {steps}"
    )


async def probe_port(port: str, timeout: float = 0.5) -> ProbeResult:
    """Try every protocol on ``port``, each with its own settings.

    Args:
        port: the serial device path.
        timeout: seconds to wait for each request's reply.

    Raises:
        DeviceUnavailable: the port cannot be opened (missing, busy, permission).
    """
    tried: list[Tried] = []
    for attempt in ATTEMPTS:
        found, outcome = await _try(port, attempt, timeout)
        tried.append(outcome)
        if found:
            return ProbeResult(port, attempt.protocol, tried=tuple(tried))
    heard = b"".join(t.heard for t in tried)
    hint = no_protocol_hint(port, tuple(tried))
    return ProbeResult(port, None, hint=hint, heard=heard[:64], tried=tuple(tried))


async def identify(port: str, timeout: float = 0.5) -> str | None:
    """The protocol of the scale on ``port`` (``mt_sics``, ``toledo_8217``, ``nci``) or ``None``.

    Logs a warning saying what was tried when nothing answers.

    Raises:
        DeviceUnavailable: the port cannot be opened (missing, busy, permission).
    """
    result = await probe_port(port, timeout)
    if result.hint:
        log.warning("%s", result.hint)
    return result.protocol


def hid_description(info: HidrawInfo) -> str:
    """What a HID scale is: its name (ours when the ids are known, else its own) and ids."""
    known = known_scale(info.vid, info.pid)
    name = known.name if known is not None else (info.name or "HID scale")
    return f"{name} {info.vid_pid}"


async def probe_hid(info: HidrawInfo, timeout: float = 0.5) -> ProbeResult:
    """Wait up to ``timeout`` for a valid scale report from the HID device ``info``.

    Raises:
        DeviceUnavailable: the node cannot be opened (gone, no permission: the udev rule).
    """
    node = str(info.node)
    device = HidrawDevice(node)
    await device.open()
    heard = b""
    why = "no scale report"
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(remaining):
                    data = await device.read()
            except TimeoutError:
                break
            heard += data
            try:
                if decode_report(data) is not None:
                    return ProbeResult(node, "hid_pos")
            except DeviceProtocolError as exc:
                why = str(exc)
    finally:
        await device.close()
    what = "nothing" if not heard else f"{heard[:64]!r} ({why})"
    hint = (
        f"{node}: no protocol answered: {hid_description(info)} sent no valid scale report "
        f"within {timeout:.3g} s (heard {what}; is the scale switched on?)"
    )
    return ProbeResult(node, None, hint=hint, heard=heard[:64])


def hid_scales() -> list[HidrawInfo]:
    """The hidraw devices that are scales: the scale usage page, or a known id."""
    return [i for i in list_hidraw() if i.scale_page or (i.vid, i.pid) in KNOWN_IDS]
