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
