import asyncio

import pytest
from light_helpers import eventually, level, mock_context, shelf_config
from pydantic import ValidationError

from agent.errors import DeviceError, DeviceUnavailable
from devices.backends.gpio import lamp_on
from devices.events import Button, ButtonPress
from devices.lights.base import UnknownSlot
from devices.lights.gpio_slots import GpioSlots, GpioSlotsSimulator
from devices.lights.palette import ERROR, Colour, Indication, Pattern

RGB_PINS = (17, 27, 22)


def rig(**changes):
    config = shelf_config(**changes)
    context = mock_context()
    return config, context, GpioSlotsSimulator(config, context)


def test_config_claims_locations_and_validation():
    config = shelf_config()
    assert config.locations() == ["A1", "A2"]
    assert config.claims() == [
        f"gpio:{n}" for n in (5, 6, 12, 13, 16, 17, 20, 21, 22, 23, 24, 26, 27)
    ]
    with pytest.raises(ValidationError, match="GPIO 5 is used twice"):
        shelf_config(zone_lamp={"led": 5})
    with pytest.raises(ValidationError, match="exactly one of"):
        shelf_config(slots=[{"id": "X", "led": 4, "rgb": [1, 2, 3], "confirm": 7}])
    with pytest.raises(ValidationError):
        shelf_config(slots=[{"id": "X", "led": 28, "confirm": 7}])
    with pytest.raises(ValidationError, match="used twice"):
        shelf_config(
            slots=[{"id": "X", "led": 4, "confirm": 7}, {"id": "X", "led": 8, "confirm": 9}]
        )


def test_show_off_clear_drive_the_pins():
    config, context, sim = rig()

    async def scenario():
        await sim.start()
        async with GpioSlots.from_config(config, context) as bar:
            await bar.show("A1", Indication(Colour.ORANGE, qty=3))
            await bar.show("A2", Indication(Colour.BLUE))
            assert [level(context, p) for p in RGB_PINS] == pytest.approx(
                [230 / 255, 159 / 255, 0.0]
            )
            assert level(context, 16) == 1.0  # single-colour LED: any colour is "on"
            assert set(bar.lit()) == {"A1", "A2"}
            await bar.off("A2")
            assert level(context, 16) == 0.0
            assert level(context, 17) > 0
            await bar.clear()
            assert [level(context, p) for p in (*RGB_PINS, 16, 12)] == [0.0] * 5
            assert bar.lit() == {}

    asyncio.run(scenario())


def test_active_low_wiring_inverts_the_pins():
    config, context, sim = rig(active_high=False)

    async def scenario():
        async with GpioSlots.from_config(config, context) as bar:
            assert level(context, 16) == 1.0  # off = high when the pin sinks the LED
            await bar.show("A2", Indication(Colour.WHITE))
            assert level(context, 16) == 0.0
            await bar.show("A1", Indication(Colour.SKY_BLUE))
            assert [level(context, p) for p in RGB_PINS] == pytest.approx(
                [1 - 86 / 255, 1 - 180 / 255, 1 - 233 / 255]
            )
            assert sim.state()["slots"]["A1"]["colour"] == "sky_blue"

    asyncio.run(scenario())


def test_blink_uses_gpiozero_blink_with_the_configured_times():
    config, context, sim = rig()

    async def scenario():
        async with GpioSlots.from_config(config, context) as bar:
            await bar.show("A2", Indication(Colour.ORANGE, Pattern.FAST_BLINK))
            await bar.show("A1", Indication(Colour.ORANGE, Pattern.SLOW_BLINK))
            assert lamp_on(context.pin_factory, 16).blinking == (0.2, 0.2)
            assert lamp_on(context.pin_factory, 17).blinking == (0.5, 0.5)
            pin = context.pin_factory.pin(16)
            # gpiozero's blink thread toggles the pin by itself: wait for on, off, on.
            await eventually(lambda: [s.state for s in pin.states][-3:] == [True, False, True])
            state = sim.state()["slots"]
            assert state["A2"]["pattern"] == "fast_blink" and state["A2"]["on"] is True
            assert state["A1"]["pattern"] == "slow_blink" and state["A1"]["colour"] == "orange"
            await bar.show("A2", Indication(Colour.ORANGE))
            assert lamp_on(context.pin_factory, 16).blinking is None
            assert level(context, 16) == 1.0

    asyncio.run(scenario())


def test_display_shows_quantity_and_text_decoded_from_the_bus():
    config, context, sim = rig()

    async def scenario():
        await sim.start()
        async with GpioSlots.from_config(config, context) as bar:
            await bar.show("A1", Indication(Colour.ORANGE, qty=12))
            await bar.show("A2", ERROR)
            state = sim.state()["slots"]
            assert (state["A1"]["display"], state["A1"]["qty"]) == ("  12", 12)
            assert (state["A2"]["display"], state["A2"]["qty"]) == ("Err ", None)
            await bar.off("A1")
            assert sim.state()["slots"]["A1"]["display"] is None

    asyncio.run(scenario())


def test_everything_off_at_open_and_close():
    config, context, sim = rig()
    factory = context.pin_factory

    async def scenario():
        await sim.start()
        for pin in (16, 12):  # pins left high by a previous run
            factory.pin(pin).function = "output"
            factory.pin(pin).state = 1
        async with GpioSlots.from_config(config, context) as bar:
            assert level(context, 16) == 0.0 and level(context, 12) == 0.0
            await bar.show("A1", Indication(Colour.ORANGE, Pattern.FAST_BLINK, qty=7))
            await bar.show("A2", Indication(Colour.ORANGE, qty=8))
            await bar.show_zone(Indication(Colour.BLUISH_GREEN))
            assert level(context, 12) == 1.0
            assert sim.state()["zone_lamp"] == {"on": True, "colour": None, "pattern": "steady"}
        state = sim.state()
        assert all(not s["on"] and s["display"] is None for s in state["slots"].values())
        assert state["zone_lamp"]["on"] is False
        with pytest.raises(DeviceUnavailable):
            await bar.show("A1", Indication(Colour.ORANGE))

    asyncio.run(scenario())


def test_unknown_slot_is_a_clear_device_error():
    config, context, _ = rig()

    async def scenario():
        async with GpioSlots.from_config(config, context) as bar:
            with pytest.raises(UnknownSlot, match="no slot 'Z9'") as info:
                await bar.show("Z9", Indication(Colour.ORANGE))
            assert isinstance(info.value, DeviceError)
            with pytest.raises(UnknownSlot):
                await bar.off("Z9")

    asyncio.run(scenario())


def test_press_becomes_a_button_press_event():
    config, context, sim = rig()

    async def scenario():
        await sim.start()
        async with GpioSlots.from_config(config, context) as bar:
            events = bar.events()
            await sim.control("press", {"slot": "A1", "button": "plus"})
            await sim.control("press", {"slot": "A2", "button": "confirm"})
            first = await asyncio.wait_for(anext(events), 2)
            second = await asyncio.wait_for(anext(events), 2)
            assert (first.device, first.slot, first.button) == ("shelf-a", "A1", Button.PLUS)
            assert (second.slot, second.button) == ("A2", Button.CONFIRM)
            assert isinstance(first, ButtonPress)
            with pytest.raises(ValueError, match="no minus button"):
                await sim.control("press", {"slot": "A2", "button": "minus"})
            with pytest.raises(ValueError, match="unknown slot"):
                await sim.control("press", {"slot": "Q", "button": "confirm"})
            with pytest.raises(ValueError, match="unknown action"):
                await sim.control("shake", {})

    asyncio.run(scenario())


def test_double_press_within_window_is_dropped():
    config, context, sim = rig(double_press_s=0.3)
    now = [100.0]

    async def scenario():
        async with GpioSlots(config, context.pin_factory, clock=lambda: now[0]) as bar:
            events = bar.events()
            await sim.control("press", {"slot": "A1", "button": "confirm"})
            now[0] += 0.25
            await sim.control("press", {"slot": "A1", "button": "confirm"})  # bounce/double
            await sim.control("press", {"slot": "A1", "button": "minus"})  # other button counts
            now[0] += 0.25
            await sim.control("press", {"slot": "A1", "button": "confirm"})
            got = [await asyncio.wait_for(anext(events), 2) for _ in range(3)]
            assert [(p.button, p.at) for p in got] == [
                (Button.CONFIRM, 100.0),
                (Button.MINUS, 100.25),
                (Button.CONFIRM, 100.5),
            ]
            assert bar.presses_dropped == 1

    asyncio.run(scenario())


def test_pin_in_use_is_device_unavailable():
    config, context, _ = rig()

    async def scenario():
        async with GpioSlots.from_config(config, context):
            second = GpioSlots.from_config(config, context)
            with pytest.raises(DeviceUnavailable, match="GPIO"):
                await second.open()
            assert second.health.status.value == "unavailable"

    asyncio.run(scenario())
