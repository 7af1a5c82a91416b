"""Linux input devices (HID keyboard-wedge scanners) through python-evdev, without blocking.

python-evdev is an optional extra (``pip install zone-agent[hid]``): it is imported only when
a real device is opened, so nodes without HID scanners never need it. The device's file
descriptor is watched with ``loop.add_reader`` and its key events are buffered until
``read`` collects them; an unplugged device ends here as ``DeviceUnavailable``.

``FakeKeyboard`` is the fake: a device path of the form ``fake:<name>`` opens the fake
registered under that path, which tests and simulators feed with key events.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from devices.errors import DeviceUnavailable

EV_KEY = 1  # linux/input-event-codes.h: the event type of key presses
FAKE_SCHEME = "fake:"


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """One key transition.

    Attributes:
        code: the Linux key code (``KEY_A`` is 30, ``KEY_ENTER`` 28).
        value: 1 pressed, 0 released, 2 auto-repeat.
    """

    code: int
    value: int


class KeyboardBackend(Protocol):
    """What the HID scanner driver needs from an input device."""

    device: str

    @property
    def is_open(self) -> bool:
        """Whether the device is open and has not failed."""
        ...

    async def open(self) -> None:
        """Open (and grab) the device; raises ``DeviceUnavailable`` with the reason."""
        ...

    async def read(self) -> list[KeyEvent]:
        """Wait for key events; raises ``DeviceUnavailable`` when the device vanishes."""
        ...

    async def close(self) -> None:
        """Release the device; safe to call twice."""
        ...


def _import_evdev() -> Any:
    try:
        import evdev
    except ImportError as exc:
        raise DeviceUnavailable(
            "python-evdev is not installed: pip install 'zone-agent[hid]'"
        ) from exc
    return evdev


def _translate(device: str, exc: BaseException) -> DeviceUnavailable:
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        why = f"{device}: no such input device (unplugged, or a wrong path)"
    elif code == errno.EACCES:
        why = f"{device}: permission denied (add the service user to the 'input' group)"
    elif code == errno.EBUSY:
        why = f"{device}: grabbed by another process (stop it, or set grab = false)"
    elif code == errno.ENODEV:
        why = f"{device}: device removed (unplugged)"
    else:
        why = f"{device}: {exc or type(exc).__name__}"
    return DeviceUnavailable(why)


class EvdevKeyboard:
    """A keyboard-like input device read through the event loop.

    Args:
        device: an event device path (``/dev/input/by-id/usb-...-event-kbd``) or a part of
            the device's name (``"Honeywell"``), matched case-insensitively.
        grab: take the device exclusively, so scans do not also type into a console.
    """

    def __init__(self, device: str, grab: bool = True) -> None:
        self.device = device
        self.grab = grab
        self._input: Any = None
        self._events: list[KeyEvent] = []
        self._arrived = asyncio.Event()
        self._error: DeviceUnavailable | None = None

    @property
    def is_open(self) -> bool:
        """Whether the device is open and has not failed."""
        return self._input is not None and self._error is None

    def _find(self, evdev: Any) -> Any:
        if self.device.startswith("/"):
            return evdev.InputDevice(self.device)
        wanted = self.device.lower()
        for path in evdev.list_devices():
            candidate = evdev.InputDevice(path)
            if wanted in (candidate.name or "").lower():
                return candidate
            candidate.close()
        raise DeviceUnavailable(
            f"no input device named like {self.device!r} (see /proc/bus/input/devices)"
        )

    def _open_blocking(self) -> Any:
        evdev = _import_evdev()
        try:
            found = self._find(evdev)
            if self.grab:
                try:
                    found.grab()
                except OSError:
                    found.close()
                    raise
        except OSError as exc:
            raise _translate(self.device, exc) from exc
        return found

    async def open(self) -> None:
        """Find, open and grab the device; raises ``DeviceUnavailable`` with the reason."""
        self._input = await asyncio.to_thread(self._open_blocking)
        self._events.clear()
        self._error = None
        asyncio.get_running_loop().add_reader(self._input.fd, self._readable)

    def _readable(self) -> None:
        try:
            for event in self._input.read():
                if event.type == EV_KEY:
                    self._events.append(KeyEvent(event.code, event.value))
        except BlockingIOError:
            return
        except OSError as exc:
            self._error = _translate(self.device, exc)
            asyncio.get_running_loop().remove_reader(self._input.fd)
        self._arrived.set()

    async def read(self) -> list[KeyEvent]:
        """Wait for key events; raises ``DeviceUnavailable`` when the device vanishes."""
        while not self._events:
            if self._error is not None:
                raise self._error
            if self._input is None:
                raise DeviceUnavailable(f"{self.device}: not open")
            self._arrived.clear()
            await self._arrived.wait()
        events, self._events = self._events, []
        return events

    async def close(self) -> None:
        """Ungrab and close the device; safe to call twice."""
        device, self._input = self._input, None
        if device is None:
            return
        if self._error is None:
            asyncio.get_running_loop().remove_reader(device.fd)
        with contextlib.suppress(OSError):  # already gone with the cable: best effort
            await asyncio.to_thread(device.close)


_FAKES: dict[str, FakeKeyboard] = {}


class FakeKeyboard:
    """An in-memory input device, registered under ``fake:<name>`` so configs can name it.

    Tests and simulators call ``feed``, ``unplug`` and ``replug``; the driver sees the same
    ``KeyboardBackend`` behaviour as with a real device.

    Args:
        device: the path it answers to; must start with ``fake:``.
    """

    def __init__(self, device: str) -> None:
        if not device.startswith(FAKE_SCHEME):
            raise ValueError(f"a fake keyboard path starts with {FAKE_SCHEME!r}: {device!r}")
        self.device = device
        self.plugged = True
        self.grabbed = False
        self._open = False
        self._events: list[KeyEvent] = []
        self._arrived = asyncio.Event()

    @classmethod
    def register(cls, device: str) -> FakeKeyboard:
        """Create the fake answering to ``device`` (replacing an older one)."""
        fake = cls(device)
        _FAKES[device] = fake
        return fake

    @classmethod
    def unregister(cls, device: str) -> None:
        """Forget the fake at ``device``."""
        _FAKES.pop(device, None)

    @property
    def is_open(self) -> bool:
        """Whether a driver has it open and it is still plugged in."""
        return self._open and self.plugged

    async def open(self) -> None:
        """Open it; ``DeviceUnavailable`` while unplugged, as a real device would."""
        if not self.plugged:
            raise DeviceUnavailable(f"{self.device}: no such input device (unplugged)")
        self._open = True
        self.grabbed = True
        self._events.clear()

    def feed(self, events: Iterable[KeyEvent]) -> None:
        """Deliver key events to the driver (dropped while unplugged or closed)."""
        if not self.is_open:
            return
        self._events.extend(events)
        self._arrived.set()

    async def read(self) -> list[KeyEvent]:
        """Wait for key events; ``DeviceUnavailable`` once unplugged."""
        while not self._events:
            if not self.is_open:
                raise DeviceUnavailable(f"{self.device}: device removed (unplugged)")
            self._arrived.clear()
            await self._arrived.wait()
        events, self._events = self._events, []
        return events

    def unplug(self) -> None:
        """Pull the cable: pending events are lost and ``read`` fails."""
        self.plugged = False
        self._events.clear()
        self._arrived.set()

    def replug(self) -> None:
        """Plug the cable back in; the driver must open it again."""
        self.plugged = True
        self._open = False

    async def close(self) -> None:
        """Release it; safe to call twice."""
        self._open = False
        self.grabbed = False
        self._arrived.set()


class _RegisteredFake:
    """The fake registered at ``device``, looked up on each open.

    Looking it up late lets a simulator start after the driver is built, or be replaced.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._fake: FakeKeyboard | None = None

    @property
    def is_open(self) -> bool:
        return self._fake is not None and self._fake.is_open

    async def open(self) -> None:
        self._fake = _FAKES.get(self.device)
        if self._fake is None:
            raise DeviceUnavailable(f"{self.device}: no fake keyboard registered there")
        await self._fake.open()

    async def read(self) -> list[KeyEvent]:
        if self._fake is None:
            raise DeviceUnavailable(f"{self.device}: not open")
        return await self._fake.read()

    async def close(self) -> None:
        if self._fake is not None:
            await self._fake.close()


def open_keyboard(device: str, grab: bool = True) -> KeyboardBackend:
    """The backend for ``device`` (not opened): the registered fake for ``fake:...``, else evdev."""
    if device.startswith(FAKE_SCHEME):
        return _RegisteredFake(device)
    return EvdevKeyboard(device, grab)
