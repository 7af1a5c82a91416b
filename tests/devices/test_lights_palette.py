import pytest
from light_helpers import shelf_config, strip_config
from pydantic import ValidationError

from devices.lights.palette import (
    DONE,
    ERROR,
    EXPRESS,
    MAX_FLASH_HZ,
    BlinkTiming,
    Colour,
    Indication,
    Pattern,
    express,
    nearest_colour,
    pattern_timing,
    picker_colour,
)


def test_palette_is_okabe_ito():
    assert Colour.ORANGE.rgb == (230, 159, 0)
    assert Colour.SKY_BLUE.rgb == (86, 180, 233)
    assert Colour.BLUISH_GREEN.rgb == (0, 158, 115)
    assert Colour.YELLOW.rgb == (240, 228, 66)
    assert Colour.BLUE.rgb == (0, 114, 178)
    assert Colour.VERMILLION.rgb == (213, 94, 0)
    assert Colour.REDDISH_PURPLE.rgb == (204, 121, 167)
    assert Colour.WHITE.unit_rgb == (1.0, 1.0, 1.0)


def test_picker_colour_cycles_through_seven_colours():
    first = [picker_colour(n) for n in range(7)]
    assert len(set(first)) == 7
    assert first[0] is Colour.ORANGE
    assert picker_colour(7) is Colour.ORANGE
    assert Colour.WHITE not in first
    with pytest.raises(ValueError):
        picker_colour(-1)


def test_nearest_colour_ignores_brightness():
    for colour in Colour:
        r, g, b = colour.rgb
        assert nearest_colour((r / 4, g / 4, b / 4)) is colour
    assert nearest_colour((0, 0, 0)) is None


def test_blink_rate_cap_rejects_faster_than_three_per_second():
    assert BlinkTiming.at(MAX_FLASH_HZ).hz == pytest.approx(3.0)
    with pytest.raises(ValueError, match="safety cap"):
        BlinkTiming.at(3.5)
    with pytest.raises(ValueError, match="safety cap"):
        BlinkTiming(on_s=0.1, off_s=0.1)
    with pytest.raises(ValueError):
        BlinkTiming(on_s=0, off_s=1)


def test_pattern_timing():
    assert pattern_timing(Pattern.STEADY, 1.0, 2.5) is None
    assert pattern_timing(Pattern.SLOW_BLINK, 1.0, 2.5) == BlinkTiming(0.5, 0.5)
    assert pattern_timing(Pattern.FAST_BLINK, 1.0, 2.5) == BlinkTiming(0.2, 0.2)


def test_config_rejects_blink_rates_above_cap():
    with pytest.raises(ValidationError, match="fast_blink_hz"):
        shelf_config(fast_blink_hz=4.0)
    with pytest.raises(ValidationError, match="slow_blink_hz"):
        strip_config(slow_blink_hz=3.01)
    assert shelf_config(fast_blink_hz=3.0).fast_blink_hz == 3.0


def test_indication_validation_and_display_text():
    assert Indication(Colour.BLUE, qty=12).display == "  12"
    assert Indication(Colour.BLUE, qty=12, text="Err").display == "Err "
    assert Indication(Colour.BLUE).display is None
    with pytest.raises(ValueError):
        Indication(Colour.BLUE, qty=10000)
    with pytest.raises(ValueError):
        Indication(Colour.BLUE, text="ERROR")


def test_named_indications_differ_by_more_than_colour():
    assert Indication(Colour.VERMILLION, Pattern.FAST_BLINK, text="Err") == ERROR
    assert EXPRESS.pattern is Pattern.SLOW_BLINK and EXPRESS.text == "Prio"
    assert express(5).qty == 5 and express(5).text is None
    assert DONE.pattern is Pattern.STEADY and DONE.text == "donE"
    cues = {(i.pattern, i.text) for i in (ERROR, EXPRESS, DONE)}
    assert len(cues) == 3
