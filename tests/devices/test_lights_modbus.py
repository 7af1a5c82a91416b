"""Modbus I/O pick-to-light (kind ``modbus_io``) against pymodbus's own server.

Real Modbus frames: Modbus TCP on a loopback port, and RTU over a pseudo-terminal pair. The
far end is pymodbus's server (not our driver's idea of a module), holding each unit's coils,
discrete inputs and registers, which the tests read and flip.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from devices.base import HealthStatus
from devices.config import FieldValueError
from devices.context import DeviceContext
from devices.events import Button, ButtonPress
from devices.lights.modbus.config import PRESETS, ModbusIoConfig
from devices.lights.modbus.driver import ModbusIo
from devices.lights.modbus.sim import ModbusIoSimulator
from devices.lights.palette import Colour, Indication, Pattern

LIT = Indication(Colour.BLUE, Pattern.STEADY, qty=2)


def bus(transport: str = "tcp", **kw: Any) -> ModbusIoConfig:
    units = kw.pop(
        "units",
        [
            {"unit": 1, "preset": "waveshare_io8", "first_id": "B-01"},
            {"unit": 2, "preset": "adam6060", "first_id": "C-1"},
        ],
    )
    extra = {"serial_port": "/dev/ttyUSB0"} if transport == "rtu" else {}
    return ModbusIoConfig.model_validate(
        {
            "name": "shelf-b",
            "kind": "modbus_io",
            "transport": transport,
            "units": units,
            "timeout_ms": 150,
            "poll_ms": 10,
            "double_press_s": 0,
            **extra,
            **kw,
        }
    )


@asynccontextmanager
async def on_sim(config: ModbusIoConfig, tmp_path: Path) -> AsyncIterator[tuple[ModbusIo, Any]]:
    sim = ModbusIoSimulator(config, DeviceContext(simulate=True), link_dir=tmp_path)
    await sim.start()
    driver = ModbusIo.from_config(sim.patched_config(), DeviceContext(simulate=True))
    await driver.open()
    try:
        yield driver, sim
    finally:
        await driver.close()
        await sim.stop()


async def until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def next_press(driver: ModbusIo, timeout: float = 5.0) -> ButtonPress:
    events = driver.events()
    async with asyncio.timeout(timeout):
        return await anext(events)


# --- the node-file table --------------------------------------------------------------


def test_presets_and_compact_slot_lists() -> None:
    config = bus()
    assert config.locations() == [f"B-0{i}" for i in range(1, 9)] + [f"C-{i}" for i in range(1, 7)]
    assert PRESETS["adam6060"].output_base == 16 and PRESETS["adam6060"].inputs == "coil"
    named = bus(units=[{"unit": 3, "preset": "waveshare_io8", "slots": ["X1", "", "X3"]}])
    assert named.units[0].slot_channels() == [("X1", 0), ("X3", 2)]
    assert named.claims() == ["tcp:127.0.0.1:502"]
    assert bus("rtu").claims() == ["serial:/dev/ttyUSB0"]


@pytest.mark.parametrize(
    ("units", "extra", "says"),
    [
        ([{"unit": 1, "preset": "nope", "first_id": "A1"}], {}, "unknown preset 'nope'"),
        ([{"unit": 1, "first_id": "A1"}], {}, "give either preset"),
        (
            [{"unit": 1, "preset": "waveshare_io8", "first_id": "A1", "slots": ["B"]}],
            {},
            "not both",
        ),
        ([{"unit": 1, "preset": "waveshare_io8", "first_id": "A1", "count": 9}], {}, "9 slots"),
        (
            [
                {"unit": 1, "preset": "waveshare_io8", "first_id": "A1"},
                {"unit": 1, "preset": "waveshare_io8", "first_id": "B1"},
            ],
            {},
            "unit 1 is listed twice",
        ),
        (
            [
                {"unit": 1, "preset": "waveshare_io8", "first_id": "A1"},
                {"unit": 2, "preset": "waveshare_io8", "first_id": "A5"},
            ],
            {},
            "slot 'A5' is on units[0] already",
        ),
        (
            [{"unit": 1, "preset": "waveshare_io8", "first_id": "A1", "count": 6}],
            {"zone_lamp": {"unit": 1, "green": 5}},
            "channel 5 of unit 1 is a slot's lamp",
        ),
    ],
)
def test_mistakes_name_what_is_wrong(units: list[dict[str, Any]], extra: dict, says: str) -> None:
    with pytest.raises((ValidationError, FieldValueError), match=re.escape(says)):
        bus(units=units, **extra)


def test_rtu_needs_its_serial_port() -> None:
    with pytest.raises(ValidationError, match="an rtu bus needs serial_port"):
        ModbusIoConfig.model_validate(
            {
                "name": "b",
                "kind": "modbus_io",
                "transport": "rtu",
                "units": [{"unit": 1, "preset": "waveshare_io8", "first_id": "A1"}],
            }
        )


def test_check_config_advice_for_a_bus_too_big_to_answer_in_time() -> None:
    def units(n: int) -> list[dict[str, Any]]:
        return [
            {"unit": i + 1, "preset": "waveshare_io8", "first_id": f"U{i + 1:02d}-1"}
            for i in range(n)
        ]

    assert bus("rtu", units=units(8), baudrate=19_200).advice() == []
    (warning,) = bus("rtu", units=units(12), baudrate=19_200).advice()
    assert warning[0] == "units" and "12 polled modules" in warning[1]
    assert "19200 baud" in warning[1] and "200 ms" in warning[1]
    assert bus("rtu", units=units(12), baudrate=115_200).advice() == []
    assert bus("tcp", units=units(40)).advice() == []


# --- the driver against pymodbus's server ------------------------------------------------


def test_lamps_on_the_right_outputs_and_presses_from_the_right_inputs(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with on_sim(bus(), tmp_path) as (driver, sim):
            assert driver.health.status is HealthStatus.OK
            await driver.apply([("B-03", LIT), ("C-2", LIT)])
            await until(lambda: sim.state()["lit"] == ["B-03", "C-2"])
            assert sim.server.get_bits("coil", 2, 17, 1) == [True]  # ADAM: DO1 is coil 17
            await driver.off("B-03")
            await until(lambda: sim.state()["lit"] == ["C-2"])

            await sim.control("press", {"slot": "B-05"})
            press = await next_press(driver)
            assert (press.slot, press.button) == ("B-05", Button.CONFIRM)
            await sim.control("press", {"slot": "C-6"})  # ADAM reads its inputs as coils
            assert (await next_press(driver)).slot == "C-6"
            assert driver.counts["presses"] == 2 and driver.counts["polls"] > 2

    asyncio.run(scenario())


def test_a_button_held_at_start_is_no_press_and_holding_is_one_press(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = bus()
        sim = ModbusIoSimulator(config, DeviceContext(simulate=True), link_dir=tmp_path)
        await sim.start()
        await sim.control("down", {"slot": "B-01"})
        driver = ModbusIo.from_config(sim.patched_config(), DeviceContext(simulate=True))
        await driver.open()
        try:
            await until(lambda: driver.counts["polls"] > 6)
            assert driver.counts["presses"] == 0
            await sim.control("up", {"slot": "B-01"})
            polls = driver.counts["polls"]
            await until(lambda: driver.counts["polls"] > polls + 2)  # the release is seen
            await sim.control("down", {"slot": "B-01"})
            assert (await next_press(driver)).slot == "B-01"
            polls = driver.counts["polls"]
            await until(lambda: driver.counts["polls"] > polls + 6)
            assert driver.counts["presses"] == 1  # still held: no second press
        finally:
            await driver.close()
            await sim.stop()

    asyncio.run(scenario())


def test_a_silent_unit_is_a_part_down_and_its_lamps_come_back_with_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with on_sim(bus(), tmp_path) as (driver, sim):
            await driver.show("C-1", LIT)
            await until(lambda: "C-1" in sim.state()["lit"])
            await sim.control("silent", {"unit": 2})
            await until(lambda: "C-1" in driver.parts())
            assert set(driver.parts()) == {f"C-{i}" for i in range(1, 7)}
            assert "1 of 2 units silent: 2" in driver.health.detail
            await driver.show("C-4", LIT)  # wanted while the unit is away
            sim.server.set_bits("coil", 2, 16, [False])  # the module lost power meanwhile
            await sim.control("silent", {"unit": 2, "silent": False})
            await until(lambda: not driver.parts())
            await until(lambda: sim.state()["lit"] == ["C-1", "C-4"])
            assert driver.health.status is HealthStatus.OK and driver.health.detail == ""

    asyncio.run(scenario())


def test_a_lost_bus_is_unavailable_and_everything_lit_comes_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with on_sim(bus(reconnect_max_s=0.3), tmp_path) as (driver, sim):
            await driver.apply([("B-01", LIT), ("B-08", LIT)])
            await until(lambda: sim.state()["lit"] == ["B-01", "B-08"])
            await sim.control("kill", {})
            await until(lambda: driver.health.status is HealthStatus.UNAVAILABLE)
            await driver.off("B-08")  # still taken while the bus is away
            await driver.show("B-02", LIT)
            sim.server.set_bits("coil", 1, 0, [False] * 8)  # modules powered down too
            await sim.control("restart", {})
            await until(lambda: driver.health.status is HealthStatus.OK, timeout=10)
            await until(lambda: sim.state()["lit"] == ["B-01", "B-02"])
            assert driver.counts["connects"] == 2

    asyncio.run(scenario())


def test_blinking_lamps_toggle_within_the_flash_cap(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with on_sim(bus(fast_blink_hz=2.5), tmp_path) as (driver, sim):
            await driver.show("B-04", Indication(Colour.VERMILLION, Pattern.FAST_BLINK))
            seen: list[bool] = []
            loop = asyncio.get_running_loop()
            start = loop.time()
            while loop.time() - start < 1.2:
                level = sim.lamp("B-04")
                if not seen or seen[-1] != level:
                    seen.append(level)
                await asyncio.sleep(0.01)
            changes = len(seen) - 1
            assert 3 <= changes <= 7  # 2.5 flashes/s: about 6 edges in 1.2 s, never more

    asyncio.run(scenario())


def test_stack_light_tiers_and_buzzer(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = bus(
            units=[{"unit": 1, "preset": "waveshare_io8", "first_id": "B-01", "count": 4}],
            zone_lamp={"unit": 1, "green": 5, "amber": 6, "red": 7, "buzzer": 4},
        )
        async with on_sim(config, tmp_path) as (driver, sim):
            assert driver.has_zone_lamp()
            await driver.show_zone(Indication(Colour.BLUISH_GREEN, Pattern.STEADY, text="DONE"))
            await until(lambda: sim.state()["zone_lamp"]["green"])
            await driver.show_zone(Indication(Colour.VERMILLION, Pattern.FAST_BLINK))
            await until(lambda: sim.state()["zone_lamp"]["buzzer"])
            assert not sim.state()["zone_lamp"]["green"]
            await driver.show_zone(None)
            await until(lambda: not any(sim.state()["zone_lamp"].values()))

    asyncio.run(scenario())


def test_register_maps_and_a_map_that_does_not_fit_the_module(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = bus(
            units=[
                {
                    "unit": 5,
                    "map": {
                        "outputs": "holding",
                        "output_base": 100,
                        "channels": 4,
                        "inputs": "input_register",
                        "input_base": 20,
                    },
                    "first_id": "R1",
                },
                {
                    "unit": 6,
                    "map": {"outputs": "coil", "output_base": 250, "channels": 16},
                    "first_id": "Z01",
                },
            ]
        )
        async with on_sim(config, tmp_path) as (driver, sim):
            await driver.show("R3", LIT)
            await until(lambda: sim.server.get_registers("holding", 5, 100, 4) == [0, 0, 1, 0])
            await sim.control("press", {"slot": "R2"})  # bit 1 of input register 20
            assert (await next_press(driver)).slot == "R2"
            # Unit 6's outputs run past the module's 256 coils: refused, counted, no crash.
            await driver.show("Z16", LIT)
            await until(lambda: driver.counts["refused"] > 0)
            assert driver.health.status is HealthStatus.OK

    asyncio.run(scenario())


def test_rtu_over_a_pseudo_terminal(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = bus("rtu", timeout_ms=200)
        async with on_sim(config, tmp_path) as (driver, sim):
            assert driver.health.status is HealthStatus.OK
            await driver.show("B-02", LIT)
            await until(lambda: sim.state()["lit"] == ["B-02"])
            await sim.control("press", {"slot": "C-3"})
            assert (await next_press(driver)).slot == "C-3"
            await sim.control("silent", {"unit": 1})
            await until(lambda: "B-01" in driver.parts())
            assert "C-1" not in driver.parts()

    asyncio.run(scenario())
