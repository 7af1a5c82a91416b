"""Simulated GPIO pins keep a bounded history (a simulated node runs for days)."""

from __future__ import annotations

from devices.backends.gpio import MOCK_PIN_HISTORY, is_mock, mock_factory


def test_a_simulated_pin_keeps_only_its_latest_changes():
    factory = mock_factory()
    assert is_mock(factory)
    pin = factory.pin(5)
    pin.function = "output"
    for i in range(3 * MOCK_PIN_HISTORY):
        pin.state = i % 2 == 0
    assert len(pin.states) == MOCK_PIN_HISTORY
    assert [s.state for s in pin.states][-3:] == [False, True, False]
    pin.clear_states()
    assert len(pin.states) == 1
    factory.close()


def test_a_tapped_display_is_decoded_as_it_changes_and_nothing_is_kept():
    """A simulated TM1637 makes ~100 pin changes per update: none may pile up (issue 18)."""
    import asyncio

    from devices.context import DeviceContext
    from devices.lights.gpio_slots import GpioSlots, GpioSlotsConfig, GpioSlotsSimulator
    from devices.lights.palette import Colour, Indication, Pattern

    async def scenario() -> None:
        context = DeviceContext(pin_factory=mock_factory(), simulate=True)
        config = GpioSlotsConfig.model_validate(
            {
                "name": "shelf",
                "kind": "gpio_slots",
                "slots": [{"id": "A1", "led": 2, "confirm": 3, "display": {"clk": 4, "dio": 5}}],
            }
        )
        sim = GpioSlotsSimulator(config, context)
        await sim.start()
        driver = GpioSlots.from_config(sim.patched_config(), context)
        await driver.open()
        try:
            for qty in range(1, 201):
                shown = Indication(Colour.BLUE, Pattern.STEADY, qty)
                await driver.apply([("A1", shown)])
            assert sim.state()["slots"]["A1"]["display"].strip() == "200"
            assert sim._taps["A1"].changes == []  # decoded as they came, not kept
            await driver.apply([("A1", None)])
            assert sim.state()["slots"]["A1"]["display"] is None
        finally:
            await driver.close()
            await sim.stop()
            context.pin_factory.close()

    asyncio.run(scenario())
