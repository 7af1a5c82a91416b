import asyncio

import pytest
from light_helpers import eventually, mock_context, strip_config
from pydantic import ValidationError

from agent.errors import DeviceUnavailable
from devices.backends.spi import FakeSpiBus
from devices.events import Button
from devices.lights.base import UnknownSlot
from devices.lights.led_strip import (
    RESET_BYTES,
    LedStrip,
    LedStripSimulator,
    decode_frame,
    encode_frame,
)
from devices.lights.palette import DONE, Colour, Indication, Pattern

OFF = (0, 0, 0)


def test_ws2812_encoding_of_known_colours():
    # Pure red is G=0x00, R=0xFF, B=0x00; 0 -> 100, 1 -> 110, MSB first.
    zero = bytes([0x92, 0x49, 0x24])
    one = bytes([0xDB, 0x6D, 0xB6])
    assert encode_frame([(255, 0, 0)]) == zero + one + zero + bytes(RESET_BYTES)
    # 0x0F: 100 100 100 100 110 110 110 110
    assert encode_frame([(0, 0x0F, 0)])[:3] == bytes([0x92, 0x4D, 0xB6])
    assert RESET_BYTES == 90  # 300 us of low at 2.4 MHz


def test_decode_round_trip_and_garbage():
    pixels = [(230, 159, 0), (1, 2, 3), OFF]
    assert decode_frame(encode_frame(pixels), 3) == pixels
    assert decode_frame(b"\xff" * 40, 3) is None
    assert decode_frame(b"", 1) is None


def test_config_ranges_claims_and_pins():
    config = strip_config()
    assert config.locations() == ["B1", "B2"]
    assert config.claims() == [
        "spi:0.0",
        "gpio:5",
        "gpio:6",
        "gpio:8",
        "gpio:10",
        "gpio:11",
        "gpio:13",
    ]
    with pytest.raises(ValidationError, match="LED 2 is in both"):
        strip_config(slots=[{"id": "X", "first": 0, "count": 3}, {"id": "Y", "first": 2}])
    with pytest.raises(ValidationError, match="ends past"):
        strip_config(slots=[{"id": "X", "first": 8, "count": 3}])
    with pytest.raises(ValidationError, match="GPIO 10 is used twice: SPI"):
        strip_config(slots=[{"id": "X", "first": 0, "confirm": 10}])


def run_strip(scenario, **changes):
    config = strip_config(**changes)
    context = mock_context()
    sim = LedStripSimulator(config, context)

    async def main():
        await sim.start()
        strip = LedStrip.from_config(config, context)
        assert strip._spi is sim.bus  # the simulated node writes to the simulator's bus
        async with strip:
            await scenario(strip, sim)
        return sim

    return asyncio.run(main())


def last_pixels(sim):
    return decode_frame(sim.bus.frames[-1][1], sim.config.led_count)


def test_slots_light_their_led_ranges():
    async def scenario(strip, sim):
        assert last_pixels(sim) == [OFF] * 10  # all off at open
        await strip.show("B2", Indication(Colour.ORANGE))
        await strip.show_zone(DONE)
        assert last_pixels(sim) == [OFF] * 3 + [(230, 159, 0)] * 4 + [OFF] * 2 + [(0, 158, 115)]
        state = sim.state()
        assert state["slots"]["B2"] == {
            "on": True,
            "colour": "orange",
            "pattern": "steady",
            "qty": None,
            "display": None,
        }
        assert state["slots"]["B1"]["on"] is False
        await strip.off("B2")
        assert last_pixels(sim) == [OFF] * 9 + [(0, 158, 115)]
        with pytest.raises(UnknownSlot):
            await strip.show("A1", Indication(Colour.ORANGE))

    sim = run_strip(scenario)
    assert last_pixels(sim) == [OFF] * 10  # all off at close
    assert sim.bus.is_open is False


def test_brightness_scales_colours():
    async def scenario(strip, sim):
        await strip.show("B1", Indication(Colour.SKY_BLUE))
        assert last_pixels(sim)[0] == (22, 45, 58)
        assert sim.state()["slots"]["B1"]["colour"] == "sky_blue"

    run_strip(scenario, brightness=0.25)


def test_blink_is_rendered_by_the_frame_task():
    async def scenario(strip, sim):
        await strip.show("B1", Indication(Colour.BLUE, Pattern.FAST_BLINK))
        lit = [(0, 114, 178)] * 3 + [OFF] * 7

        def seen():
            frames = [decode_frame(data, 10) for _, data in sim.bus.history()]
            return frames[-3:] == [lit, [OFF] * 10, lit]

        await eventually(seen)
        state = sim.state()["slots"]["B1"]
        assert (state["on"], state["pattern"], state["colour"]) == (True, "fast_blink", "blue")

    run_strip(scenario)


def test_strip_buttons_and_simulator_press():
    async def scenario(strip, sim):
        events = strip.events()
        await sim.control("press", {"slot": "B2", "button": "plus"})
        press = await asyncio.wait_for(anext(events), 2)
        assert (press.device, press.slot, press.button) == ("strip-b", "B2", Button.PLUS)
        with pytest.raises(ValueError, match="no minus button"):
            await sim.control("press", {"slot": "B1", "button": "minus"})

    run_strip(scenario)


def test_spi_failure_at_open_is_unavailable():
    bus = FakeSpiBus()
    bus.fail_with = "no such device"
    strip = LedStrip(strip_config(slots=[{"id": "X", "first": 0}]), bus)

    async def main():
        with pytest.raises(DeviceUnavailable, match="no such device"):
            await strip.open()

    asyncio.run(main())
    assert strip.health.status.value == "unavailable"


def test_apply_writes_one_frame_for_many_slots():
    """A wave lighting several slots at once costs one SPI frame, not one per slot."""

    async def scenario(strip, sim):
        before = len(sim.bus.frames)
        await strip.apply([("B1", Indication(Colour.BLUE)), ("B2", Indication(Colour.ORANGE))])
        assert len(sim.bus.frames) == before + 1
        assert last_pixels(sim) == [(0, 114, 178)] * 3 + [(230, 159, 0)] * 4 + [OFF] * 3
        assert sorted(strip.lit()) == ["B1", "B2"]
        await strip.apply([("B1", None)])
        assert sorted(strip.lit()) == ["B2"]
        with pytest.raises(UnknownSlot):
            await strip.apply([("B2", None), ("nope", None)])
        assert sorted(strip.lit()) == ["B2"]  # nothing changed

    run_strip(scenario)
