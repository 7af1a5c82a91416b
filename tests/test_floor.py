"""``agent.floor.DeviceFloor``: which devices ``--simulate`` replaces, and idle printer polls.

The floor runs in the test's process against the real drivers; the "real" printer beside
simulated devices is a ZPL printer simulator the test starts itself on a TCP port, which
is all a Zebra on the LAN is to the driver.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.app import device_context
from agent.config import NodeConfig, parse_config
from agent.floor import PACK_IDLE_POLL_S, DeviceFloor
from agent.workflows.base import Light, Print
from devices.events import ButtonPress, DeviceHealthChanged
from devices.printers.base import Printer, PrintResult
from devices.printers.sim import ZplSimulator
from devices.printers.zpl import ZplPrinterConfig


def _pack_config(tmp_path: Path, label: dict[str, object], role: str = "pack") -> NodeConfig:
    return parse_config(
        {
            "site": "dc1",
            "node": "pack-9",
            "role": role,
            "state_dir": str(tmp_path / "state"),
            "devices": [
                {"name": "scanner", "kind": "serial_scanner", "port": "/dev/zone-scanner"},
                {"name": "label", "kind": "zpl_printer", "status_timeout_s": 0.3, **label},
                {
                    "name": "slip",
                    "kind": "escpos_printer",
                    "host": "127.0.0.1",
                    "port": 9101,
                    "idle_poll_s": 45,
                },
            ],
        },
        "pack-9.toml",
        env={},
    )


def test_simulate_false_keeps_the_real_printer_beside_simulated_devices(tmp_path: Path) -> None:
    async def scenario() -> tuple[set[str], list[str], PrintResult]:
        real = ZplSimulator(ZplPrinterConfig(name="zebra", host="127.0.0.1"))
        await real.start()
        try:
            label = {"host": "127.0.0.1", "port": real.port, "simulate": False}
            config = _pack_config(tmp_path, label)
            async with DeviceFloor(config, device_context(True), simulate=True) as floor:
                printer = floor.devices["label"]
                assert isinstance(printer, Printer) and printer.config.port == real.port
                await floor.perform([Print("label", "o1-label", b"^XA^FDreal^FS^XZ")])
                async with asyncio.timeout(10):
                    async for event in floor.inputs():
                        if isinstance(event, PrintResult):
                            return set(floor.simulators), list(real.jobs), event
            raise AssertionError("no print result")
        finally:
            await real.stop()

    simulated, jobs, result = asyncio.run(scenario())
    assert simulated == {"scanner", "slip"}  # the label printer has no simulator
    assert (result.job_id, result.ok) == ("o1-label", True)
    assert jobs == ["^XA^FDreal^FS^XZ"]  # printed on the printer the file names


def test_simulate_false_is_a_device_field_of_every_kind() -> None:
    config = parse_config(
        {
            "site": "dc1",
            "node": "z",
            "role": "pick",
            "devices": [{"name": "sc", "kind": "serial_scanner", "port": "/dev/x", "simulate": 0}],
        },
        "z.toml",
        env={},
    )
    assert config.devices[0].simulate is False


def test_a_pack_station_notices_an_idle_printer_fault_within_seconds(tmp_path: Path) -> None:
    """The label printer runs out of paper between parcels: its health turns at the next
    idle poll, every PACK_IDLE_POLL_S on a pack station rather than the printer's 30 s."""

    async def scenario() -> tuple[float, float, float, DeviceHealthChanged]:
        config = _pack_config(tmp_path, {"host": "127.0.0.1"})
        async with DeviceFloor(config, device_context(True), simulate=True) as floor:
            label, slip = floor.devices["label"], floor.devices["slip"]
            assert isinstance(label, Printer) and isinstance(slip, Printer)
            polls = (label.config.idle_poll_s, slip.config.idle_poll_s)
            await asyncio.sleep(0.2)  # both printers polled once and idle
            await floor.simulators["label"].control("set", {"state": "paper_out"})
            # A safety bound, not a measurement: three times the idle poll plus the status
            # timeout, well under the 30 s it took before.
            async with asyncio.timeout(3 * PACK_IDLE_POLL_S + 1):
                async for event in floor.inputs():
                    if (
                        isinstance(event, DeviceHealthChanged)
                        and event.device == "label"
                        and event.status == "fault"
                    ):
                        return (*polls, PACK_IDLE_POLL_S, event)
        raise AssertionError("no fault")

    label_poll, slip_poll, pack_poll, fault = asyncio.run(scenario())
    assert label_poll == pack_poll == 2.0
    assert slip_poll == 45  # the device table's own setting wins
    assert fault.detail == "no status reply: media out, head open or offline"


def test_other_roles_keep_the_printers_idle_poll(tmp_path: Path) -> None:
    async def scenario() -> float:
        config = _pack_config(tmp_path, {"host": "127.0.0.1"}, role="put_wall")
        async with DeviceFloor(config, device_context(True), simulate=True) as floor:
            label = floor.devices["label"]
            assert isinstance(label, Printer)
            return label.config.idle_poll_s

    assert asyncio.run(scenario()) == 30.0


def _shelf_config(tmp_path: Path) -> NodeConfig:
    return parse_config(
        {
            "site": "dc1",
            "node": "zone-9",
            "role": "pick",
            "state_dir": str(tmp_path / "state"),
            "devices": [
                {
                    "name": "shelf",
                    "kind": "gpio_slots",
                    "double_press_s": 0,  # the test presses twice in quick succession
                    "slots": [{"id": "A1", "led": 17, "confirm": 27}],
                }
            ],
        },
        "zone-9.toml",
        env={},
    )


def test_a_press_as_a_dark_slot_lights_is_for_what_it_lights_a_press_as_it_changes_is_not(
    tmp_path: Path,
) -> None:
    # The driver sets its pins in a worker thread: the LED is on (the picker sees it and
    # presses) before ``apply`` returns. The light's ``apply`` is held open after the pins
    # changed, the button pressed through its mock pin (the driver's real callback path).
    async def run() -> list[object]:
        config = _shelf_config(tmp_path)
        async with DeviceFloor(config, device_context(True), simulate=True) as floor:
            await floor.perform([Light("A1", None)])  # dark, as a node's lights are at start
            bar = floor.devices["shelf"]
            held, release = asyncio.Event(), asyncio.Event()
            apply = bar.apply  # type: ignore[attr-defined]

            async def slow_apply(changes: object) -> None:
                await apply(changes)
                held.set()
                await release.wait()

            bar.apply = slow_apply  # type: ignore[attr-defined]
            inputs = floor.inputs()
            got: list[object] = []
            for shows in ("t1", "t2"):  # dark -> t1, then t1 -> t2
                held.clear()
                release.clear()
                light = Light("A1", "bluish_green", qty=1, shows=shows)
                performing = asyncio.create_task(floor.perform([light]))
                holding = asyncio.create_task(held.wait())
                await asyncio.wait([performing, holding], return_when=asyncio.FIRST_COMPLETED)
                if performing.done():
                    performing.result()  # raises what went wrong
                await floor.simulators["shelf"].control("press", {"slot": "A1"})
                while not isinstance(
                    event := await asyncio.wait_for(anext(inputs), 5), ButtonPress
                ):
                    pass  # the device's health, from when it opened
                got.append(event)
                release.set()
                await performing
            return got

    first, second = asyncio.run(run())
    assert isinstance(first, ButtonPress) and first.shown == "t1"
    assert isinstance(second, ButtonPress) and second.shown == "t1"  # not t2: never seen
