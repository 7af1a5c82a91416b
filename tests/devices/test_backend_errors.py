"""Vendor exceptions at the backends end in our error tree with a reason an installer can act on.

The libraries raise what they raise on a Pi (spidev: OSError with the errno of the refused
open; lgpio: its own ``lgpio.error`` with a bare text; python-escpos: a RuntimeError when
pyusb is missing): each is produced by the real library where this machine allows it, by a
fake of the same shape where it needs hardware.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import types
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory
from printer_helpers import FAST, run

from devices.backends.escpos import EscposConnection, UsbTarget
from devices.backends.gpio import Lamp, PressButton
from devices.backends.spi import SpidevBus
from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.errors import DeviceUnavailable
from devices.printers.escpos import EscposPrinter, EscposPrinterConfig

# ----- SPI (LED strips) -----


def _spidev_refusing(code: int) -> types.ModuleType:
    """A spidev module whose open fails as the C extension does: OSError from errno."""

    class SpiDev:
        def open(self, bus: int, device: int) -> None:
            raise OSError(code, os.strerror(code))

        def close(self) -> None:
            pass

    module = types.ModuleType("spidev")
    module.SpiDev = SpiDev  # type: ignore[attr-defined]
    return module


def test_spi_refused_by_the_device_policy_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spidev", _spidev_refusing(errno.EPERM))
    with pytest.raises(DeviceUnavailable) as caught:
        SpidevBus(0, 0, 2_400_000).open()
    message = str(caught.value)
    assert message.startswith("/dev/spidev0.0: blocked by the service's device policy")
    assert "DeviceAllow=char-spi" in message and "group'" not in message


def test_spi_refused_by_file_permissions_names_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spidev", _spidev_refusing(errno.EACCES))
    with pytest.raises(DeviceUnavailable, match=r"/dev/spidev0\.1: .*'spi' group"):
        SpidevBus(0, 1, 2_400_000).open()


# ----- GPIO through lgpio -----


class BusyFactory(MockFactory):  # type: ignore[misc]
    """gpiozero's mock factory on chip 0 whose line claims fail as lgpio's do when taken."""

    chip = 0

    def __init__(self, error: type[BaseException]) -> None:
        super().__init__()
        self._error = error

    def pin(self, name: Any) -> Any:
        raise self._error("GPIO busy")


def test_lgpio_gpio_busy_names_the_pin_and_the_chip() -> None:
    lgpio = pytest.importorskip("lgpio")
    with pytest.raises(DeviceUnavailable) as caught:
        Lamp((17,), BusyFactory(lgpio.error))
    message = str(caught.value)
    assert message.startswith("LED on GPIO 17: GPIO busy on /dev/gpiochip0 (")
    assert "gpioinfo" in message


def test_lgpio_error_is_translated_without_lgpio_on_the_import_path() -> None:
    """The class is found through sys.modules: any module named lgpio with an ``error``."""
    fake = types.ModuleType("lgpio")

    class error(Exception):
        pass

    fake.error = error  # type: ignore[attr-defined]
    saved = sys.modules.get("lgpio")
    sys.modules["lgpio"] = fake
    try:
        with pytest.raises(DeviceUnavailable, match=r"button on GPIO 23: GPIO busy"):
            PressButton(23, BusyFactory(error), lambda: None)
    finally:
        if saved is None:
            del sys.modules["lgpio"]
        else:
            sys.modules["lgpio"] = saved


def test_lgpio_cannot_open_gpiochip_names_the_chip() -> None:
    """lgpio's real ``gpiochip_open`` on a machine without the chip: what it raises, ours."""
    lgpio = pytest.importorskip("lgpio")
    from devices.backends.gpio import translate_errors

    chip = 0
    while os.path.exists(f"/dev/gpiochip{chip}"):
        chip += 1
    factory = types.SimpleNamespace(chip=chip)
    with pytest.raises(DeviceUnavailable) as caught, translate_errors("GPIO", factory):
        lgpio.gpiochip_open(chip)
    assert isinstance(caught.value.__cause__, lgpio.error)
    assert str(caught.value) == (
        f"GPIO: lgpio can not open the GPIO chip: /dev/gpiochip{chip} does not exist (not a "
        "Raspberry Pi, or the kernel has no GPIO driver; on a Pi the service user also needs "
        "the 'gpio' group)"
    )


# ----- USB receipt printers (python-escpos, pyusb, libusb) -----

USB = UsbTarget(vendor_id=0x04B8, product_id=0x0E28)  # an Epson TM-T20III


def test_usb_printer_without_pyusb_is_unavailable_with_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import escpos.printer.usb

    # python-escpos's own record of whether `import usb.core` worked.
    monkeypatch.setattr(escpos.printer.usb, "_DEP_USB", False)
    with pytest.raises(DeviceUnavailable) as caught:
        run(EscposConnection(USB).open())
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert str(caught.value) == (
        "usb 04b8:0e28: USB printing needs pyusb, which is not installed "
        "(pip install 'python-escpos[usb]'; zone-agent's own install has it)"
    )


def test_usb_printer_pyusb_is_installed() -> None:
    import escpos.printer.usb

    assert escpos.printer.usb.is_usable()


def test_usb_printer_not_plugged_in_is_unavailable_with_its_ids() -> None:
    with pytest.raises(DeviceUnavailable, match=r"^usb 04b8:0e28: .*not plugged in"):
        run(EscposConnection(USB).open())


def test_usb_printer_missing_leaves_the_node_running_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The driver: health unavailable with the reason, logged at WARNING; no exception."""
    import escpos.printer.usb

    monkeypatch.setattr(escpos.printer.usb, "_DEP_USB", False)
    fields: dict[str, Any] = {**FAST, "name": "slip1", "usb_vendor_id": 0x04B8}
    config = EscposPrinterConfig(**fields, usb_product_id=0x0E28)
    printer = EscposPrinter.from_config(config, DeviceContext())

    async def scenario() -> None:
        await printer.open()
        try:
            assert printer.health.status is HealthStatus.UNAVAILABLE
            assert "needs pyusb" in printer.health.detail
        finally:
            await printer.close()

    with caplog.at_level(logging.INFO, logger="devices"):
        run(scenario())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("slip1: unavailable" in r.getMessage() for r in warnings), caplog.text
