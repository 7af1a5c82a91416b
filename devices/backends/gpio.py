"""GPIO through gpiozero: the only module that imports it.

Drivers never touch gpiozero: they ask this module for a ``Lamp`` (a single-colour LED or
an RGB LED), a ``PressButton`` or a ``TwoWireOutputs`` pair (bit-banged buses such as the
TM1637 display), each built on the pin factory the node injected. gpiozero exceptions end
here as ``DeviceUnavailable`` with the pin and a reason an installer can act on.

Pin factory choice: an injected factory (``DeviceContext.pin_factory``, e.g. the
``MockFactory`` from ``mock_factory()``) always wins; otherwise ``GPIOZERO_PIN_FACTORY`` if
set, else lgpio, the only factory that works on a Pi 5. gpiozero >= 2.0.1.post1 is needed
on a Pi 5 with kernel >= 6.6.20 (gpiozero issue 1131), and lgpio writes a ``.lgd-nfy*`` pipe
into the working directory, so the unit sets ``LG_WD`` to the state directory (gpiozero
issue 1106).

The fake is gpiozero's own ``MockFactory``; the helpers at the end (``tap_pins``,
``press``, ``pin_level``, ``lamp_on``) let simulators read and drive mock pins.
"""

from __future__ import annotations

import collections
import grp
import os
import pwd
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gpiozero
from gpiozero.pins.mock import MockFactory, MockPWMPin

from devices.errors import DeviceUnavailable

RGB = tuple[float, float, float]


def _lgpio_errors() -> tuple[type[BaseException], ...]:
    """Lgpio's own exception class, once gpiozero's lgpio factory has imported lgpio.

    ``lgpio.error`` derives from ``Exception`` only (not ``OSError``), and carries lgpio's
    text without the chip or the pin: "can not open gpiochip", "GPIO busy".
    """
    error = getattr(sys.modules.get("lgpio"), "error", None)
    return (error,) if isinstance(error, type) and issubclass(error, BaseException) else ()


def _owner_group(path: str) -> str:
    gid = os.stat(path).st_gid
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def chip_diagnosis(chip: int) -> str:
    """Why ``/dev/gpiochip{chip}`` could not be opened, and what to do about it."""
    path = f"/dev/gpiochip{chip}"
    if not os.path.exists(path):
        return (
            f"{path} does not exist (not a Raspberry Pi, or the kernel has no GPIO driver; "
            "on a Pi the service user also needs the 'gpio' group)"
        )
    group = _owner_group(path)
    if not os.access(path, os.R_OK | os.W_OK):
        user = _user()
        return (
            f"{path} is not readable and writable by user {user}: add it to the "
            f"{group!r} group (usermod -aG {group} {user}; the unit's SupplementaryGroups=)"
        )
    # Permission bits allow it, so the open failed on the cgroup device filter (EPERM).
    return (
        f"{path} is blocked by the service's device policy (the unit needs "
        f"DeviceAllow=char-gpiochip rw; group {group!r} is right)"
    )


def default_chip() -> int:
    """The gpiochip gpiozero's lgpio factory opens: 4 on a Pi 5 with an old kernel, else 0."""
    from gpiozero.pins.local import get_pi_revision

    try:
        revision = get_pi_revision()
    except (gpiozero.GPIOZeroError, OSError):
        return 0
    pi5 = (revision & 0xFF0) >> 4 == 0x17
    return 4 if pi5 and os.path.exists("/dev/gpiochip4") else 0


@contextmanager
def translate_errors(what: str, factory: Any = None) -> Iterator[None]:
    """Turn gpiozero and lgpio errors raised inside the block into ``DeviceUnavailable``.

    ``factory`` is the pin factory in use, when there is one: its chip is named in the
    diagnosis.
    """
    try:
        yield
    except gpiozero.GPIOPinInUse as exc:
        raise DeviceUnavailable(f"{what}: pin already in use ({exc})") from exc
    except gpiozero.BadPinFactory as exc:
        raise DeviceUnavailable(
            f"{what}: no GPIO library works here (install lgpio, or run with --simulate)"
        ) from exc
    except (gpiozero.GPIOZeroError, OSError, RuntimeError, *_lgpio_errors()) as exc:
        value = getattr(exc, "value", None)  # lgpio.error's str() is repr() of its text
        text = value if isinstance(value, str) else (str(exc) or type(exc).__name__)
        chip = getattr(factory, "chip", None)
        filename = getattr(exc, "filename", None)
        if isinstance(filename, str) and filename.startswith("/proc/"):
            # gpiozero identifies the board from /proc/device-tree, then /proc/cpuinfo.
            text = (
                f"cannot identify the board: {filename} cannot be read ({exc}); a "
                "systemd unit with ProcSubset=pid hides it"
            )
        elif "can not open gpiochip" in text:
            number = chip if isinstance(chip, int) else default_chip()
            text = f"lgpio can not open the GPIO chip: {chip_diagnosis(number)}"
        elif "busy" in text.lower():
            on = f" on /dev/gpiochip{chip}" if isinstance(chip, int) else ""
            text += (
                f"{on} (another process, an SPI/1-wire/UART overlay in config.txt or a "
                "second zone-agent holds the line: gpioinfo shows its consumer)"
            )
        raise DeviceUnavailable(f"{what}: {text}") from exc


def resolve_pin_factory(given: Any) -> Any:
    """The pin factory drivers build on: ``given`` when injected, else the Pi's own.

    gpiozero identifies the board from ``/proc/device-tree`` or ``/proc/cpuinfo`` first:
    the service must not hide them (no ``ProcSubset=pid``; tests/test_systemd.py).

    Raises:
        DeviceUnavailable: when no factory can be built (not a Pi, lgpio missing, the chip
            cannot be opened: the reason names the chip and the group).
    """
    if given is not None:
        return given
    if os.environ.get("GPIOZERO_PIN_FACTORY"):
        return None  # gpiozero honours the variable itself
    with translate_errors("GPIO"):
        try:
            from gpiozero.pins.lgpio import LGPIOFactory
        except ImportError as exc:
            raise DeviceUnavailable(
                "GPIO: lgpio is not installed (pip install 'zone-agent[pi]')"
            ) from exc
        return LGPIOFactory()


#: Level changes each simulated pin keeps in ``states`` (gpiozero keeps every one).
MOCK_PIN_HISTORY = 256


class _BoundedMockPWMPin(MockPWMPin):  # type: ignore[misc]
    """gpiozero's PWM mock pin, keeping only the last ``MOCK_PIN_HISTORY`` level changes.

    gpiozero appends every change to ``states`` for good: a simulated node that lights
    thousands of lines (a demo left running, a benchmark) grew by ~0.25 KB per line per pin
    for as long as it ran. Tests read only the latest changes.
    """

    def clear_states(self) -> None:
        super().clear_states()
        history: list[Any] = getattr(self, "states")  # noqa: B009 (set by gpiozero, untyped)
        self.states = collections.deque(history, maxlen=MOCK_PIN_HISTORY)


def mock_factory() -> Any:
    """A fresh gpiozero ``MockFactory`` whose pins support PWM (needed by RGB LEDs)."""
    return MockFactory(pin_class=_BoundedMockPWMPin)


def is_mock(factory: Any) -> bool:
    """Whether ``factory`` is gpiozero's mock factory (simulation)."""
    return isinstance(factory, MockFactory)


_LAMPS: weakref.WeakKeyDictionary[Any, dict[int, Lamp]] = weakref.WeakKeyDictionary()


class Lamp:
    """A slot light: one LED, or an RGB LED when three pins are given.

    Blinking uses gpiozero's own ``blink()`` thread so timing does not depend on the
    event loop. All methods block briefly (pin writes); call them through
    ``asyncio.to_thread``.

    Args:
        pins: one BCM pin (single-colour) or three (red, green, blue).
        factory: the gpiozero pin factory.
        active_high: ``False`` when the pin sinks the LED current (common-anode RGB).
        pwm: mix RGB colours with PWM; without it each channel is only on or off.
    """

    def __init__(
        self, pins: tuple[int, ...], factory: Any, *, active_high: bool = True, pwm: bool = True
    ) -> None:
        self.pins = pins
        self.is_rgb = len(pins) == 3
        self._pwm = pwm
        self._lock = threading.Lock()
        self.blinking: tuple[float, float] | None = None
        self.target: RGB | None = None
        with translate_errors(f"LED on GPIO {', '.join(map(str, pins))}", factory):
            if self.is_rgb:
                self._device: Any = gpiozero.RGBLED(
                    *pins, active_high=active_high, pwm=pwm, pin_factory=factory
                )
            else:
                self._device = gpiozero.LED(pins[0], active_high=active_high, pin_factory=factory)
        _LAMPS.setdefault(factory, {})[pins[0]] = self

    def _colour(self, rgb: RGB) -> RGB:
        if self._pwm:
            return rgb
        # Without PWM a channel is on or off: keep the channels that dominate the colour.
        peak = max(rgb) or 1.0
        r, g, b = (1.0 if c / peak >= 0.5 else 0.0 for c in rgb)
        return (r, g, b)

    def steady(self, rgb: RGB) -> None:
        """Light steadily in ``rgb`` (0..1 per channel; single LEDs just turn on)."""
        with self._lock:
            self.blinking, self.target = None, rgb
            if self.is_rgb:
                self._device.color = self._colour(rgb)
            else:
                self._device.on()

    def blink(self, on_s: float, off_s: float, rgb: RGB) -> None:
        """Blink forever: ``on_s`` seconds lit in ``rgb``, ``off_s`` seconds dark."""
        with self._lock:
            self.blinking, self.target = (on_s, off_s), rgb
            if self.is_rgb:
                self._device.blink(on_time=on_s, off_time=off_s, on_color=self._colour(rgb))
            else:
                self._device.blink(on_time=on_s, off_time=off_s)

    def off(self) -> None:
        """Turn dark (stops a blink)."""
        with self._lock:
            self.blinking, self.target = None, None
            self._device.off()

    def close(self) -> None:
        """Turn off and release the pins; safe to call twice."""
        with self._lock:
            self.blinking, self.target = None, None
            self._device.close()


class PressButton:
    """A push button to ground (or to 3V3 with ``pull_up=False``) with hardware debounce.

    ``on_press`` runs on gpiozero's callback thread; it must only hand the press to the
    event loop (``EventQueue.put_threadsafe``).
    """

    def __init__(
        self,
        pin: int,
        factory: Any,
        on_press: Callable[[], None],
        *,
        pull_up: bool = True,
        bounce_s: float | None = None,
    ) -> None:
        self.pin = pin
        with translate_errors(f"button on GPIO {pin}", factory):
            self._button: Any = gpiozero.Button(
                pin, pull_up=pull_up, bounce_time=bounce_s or None, pin_factory=factory
            )
        self._button.when_pressed = lambda: on_press()

    def close(self) -> None:
        """Release the pin; safe to call twice."""
        self._button.when_pressed = None
        self._button.close()


class TwoWireOutputs:
    """Two push-pull outputs (clock, data) for bit-banged buses, idle high."""

    def __init__(self, clk: int, dio: int, factory: Any) -> None:
        with translate_errors(f"display on GPIO {clk}/{dio}", factory):
            self._clk: Any = gpiozero.DigitalOutputDevice(
                clk, initial_value=True, pin_factory=factory
            )
            try:
                self._dio: Any = gpiozero.DigitalOutputDevice(
                    dio, initial_value=True, pin_factory=factory
                )
            except BaseException:
                self._clk.close()
                raise

    def clk(self, level: bool) -> None:
        """Set the clock line."""
        self._clk.value = level

    def dio(self, level: bool) -> None:
        """Set the data line."""
        self._dio.value = level

    def close(self) -> None:
        """Release both pins; safe to call twice."""
        self._clk.close()
        self._dio.close()


# ---------------------------------------------------------------------------------------
# Simulation helpers: these only work on a MockFactory.


@dataclass(frozen=True, slots=True)
class PinChange:
    """One level change seen on a tapped mock pin."""

    pin: int
    level: bool


class PinTap:
    """An ordered log of level changes on some mock pins, across all of them.

    gpiozero's ``MockPin.states`` keeps one history per pin; decoding a bus needs the order
    of changes across pins, which this log keeps.
    """

    def __init__(self, initial: dict[int, bool]) -> None:
        self.initial = dict(initial)
        self.changes: list[PinChange] = []
        self.lock = threading.Lock()
        """Held while a change is recorded or handed to the listener."""
        self._listener: Callable[[int, bool], None] | None = None

    def listen(self, listener: Callable[[int, bool], None]) -> None:
        """Hand every later change to ``listener(pin, level)`` (under ``lock``), not the log.

        A simulator that decodes as the changes come keeps no log: a simulated TM1637
        display makes ~100 changes per update, ~7 KB, kept for as long as the node ran
        (issue 18 measured 6-7 KB per pick on a simulated node with displays).
        """
        with self.lock:
            for change in self.changes:
                listener(change.pin, change.level)
            self.changes.clear()
            self._listener = listener

    def record(self, pin: int, level: bool) -> None:
        """Log a change, or hand it to the listener (called from the mock pin, any thread)."""
        with self.lock:
            if self._listener is not None:
                self._listener(pin, level)
            else:
                self.changes.append(PinChange(pin, level))

    def snapshot(self) -> tuple[dict[int, bool], list[PinChange]]:
        """The initial levels and a copy of the changes logged so far."""
        with self.lock:
            return dict(self.initial), list(self.changes)


_TAP_CLASSES: dict[type, type] = {}


def _tap_class(base: type) -> type:
    cls = _TAP_CLASSES.get(base)
    if cls is None:

        def _change_state(self: Any, value: Any) -> bool:
            changed = bool(base._change_state(self, value))  # type: ignore[attr-defined]
            tap: PinTap | None = getattr(self, "_zone_tap", None)
            if changed and tap is not None:
                tap.record(self._zone_pin, bool(value))
            return changed

        cls = type(f"Tapped{base.__name__}", (base,), {"_change_state": _change_state})
        _TAP_CLASSES[base] = cls
    return cls


def tap_pins(factory: Any, pins: list[int]) -> PinTap:
    """Record, in order, every level change of ``pins`` on a ``MockFactory``.

    Call before the driver opens, so the pins gpiozero hands out are the tapped ones.
    """
    if not is_mock(factory):
        raise ValueError("tap_pins needs a gpiozero MockFactory")
    tapped = []
    for number in pins:
        pin = factory.pin(number)
        pin.__class__ = _tap_class(type(pin)) if not hasattr(pin, "_zone_tap") else type(pin)
        pin._zone_pin = number
        tapped.append(pin)
    tap = PinTap({number: bool(pin.state) for number, pin in zip(pins, tapped, strict=True)})
    for pin in tapped:
        pin._zone_tap = tap
    return tap


def press(factory: Any, pin: int, *, pull_up: bool = True) -> None:
    """Press and release a button on a mock pin, as the contact would (blocks briefly)."""
    mock = factory.pin(pin)
    if mock.function != "input":
        raise ValueError(f"GPIO {pin} is not an input (is the driver open?)")
    if pull_up:
        mock.drive_low()
        mock.drive_high()
    else:
        mock.drive_high()
        mock.drive_low()


def pin_level(factory: Any, pin: int) -> float:
    """The level a mock pin shows now (0..1; PWM pins give the duty cycle)."""
    return float(factory.pin(pin).state)


def lamp_on(factory: Any, pin: int) -> Lamp | None:
    """The ``Lamp`` built on ``pin`` (its first pin) of ``factory``, if any."""
    return _LAMPS.get(factory, {}).get(pin)
