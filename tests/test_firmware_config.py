"""Every node file shipped in firmware_config/ is valid, and a broken one says where."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError
from devices.lights.led_strip import LedStripConfig, encode_frame

FILES = sorted((Path(__file__).resolve().parent.parent / "firmware_config").glob("*.toml"))


def test_there_are_node_files() -> None:
    assert {f.name for f in FILES} >= {"zone-gpio.toml", "zone-strip.toml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_node_file_is_valid(path: Path) -> None:
    config = load_config(path, env={})
    assert config.devices, "a shipped node file drives devices"
    assert config.broker.uses_tls, "shipped examples connect with TLS"
    assert config.http.bind == "127.0.0.1"


def test_a_pin_used_twice_across_devices_is_caught(tmp_path: Path) -> None:
    text = (FILES[0].parent / "zone-gpio.toml").read_text()
    text += (
        '\n[[devices]]\nname = "lamp2"\nkind = "gpio_slots"\n'
        '[[devices.slots]]\nid = "X"\nled = 17\nconfirm = 4\n'
    )
    path = tmp_path / "clash.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    reasons = [r for _, r in info.value.problems]
    assert any("gpio:17 is used by both 'shelf' and 'lamp2'" in r for r in reasons), reasons
    assert any("gpio:4 is used by both 'shelf' and 'lamp2'" in r for r in reasons), reasons


# --- The Raspberry Pi firmware fragments (firmware_config/rpi/), read as the firmware does ---
#
# config.txt: one ``key=value`` a line; a comment is a line that starts with "#" (after a
# value, "# ..." is part of the value: ``dtoverlay=disable-wifi  # x`` names an overlay
# that does not exist); ``[filter]`` lines make the lines after them apply only to the
# boards the filter names, until the next filter; ``[all]`` applies to every board again.

RPI = Path(__file__).resolve().parent.parent / "firmware_config" / "rpi"
FRAGMENTS = sorted(RPI.glob("config-*.txt"))
# Model filters of the firmware's documentation, and the boards they match.
BOARDS = {"pi3": {"pi3"}, "pi4": {"pi4"}, "pi400": {"pi4", "pi400"}, "pi5": {"pi5"}}
BOARDS["pi02"] = {"pi02"}
FILTERS = {"all", "none", "pi0", "pi0w", "pi02", "pi1", "pi2", "pi3", "pi3+", "pi4", "pi400"}
FILTERS |= {"pi5", "pi500", "cm4", "cm5"}
# The settings the fragments may use (config.txt ignores unknown ones without a word).
KEYS = {"dtparam", "dtoverlay", "enable_uart", "core_freq", "core_freq_min"}
KEYS |= {"camera_auto_detect", "display_auto_detect"}


def read_config_txt(text: str) -> tuple[list[tuple[int, str, str, str]], list[str]]:
    """(line, filter, key, value) of every setting, and every problem as 'line N: reason'."""
    settings, problems, section = [], [], "all"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if raw != raw.rstrip():
            problems.append(f"line {number}: trailing whitespace is part of the value")
        if line.startswith("["):
            section = line.strip("[]")
            if not line.endswith("]") or section not in FILTERS:
                problems.append(f"line {number}: unknown filter {line}")
            continue
        key, eq, value = line.partition("=")
        if not eq or key != key.strip() or value != value.strip() or " " in value:
            problems.append(f"line {number}: not key=value without spaces: {line!r}")
        if "#" in value:
            problems.append(f"line {number}: a comment after a value is part of it: {line!r}")
        if key.strip() not in KEYS:
            problems.append(f"line {number}: unknown setting {key.strip()!r}")
        if len(line) > 98:
            problems.append(f"line {number}: longer than the firmware reads (98)")
        settings.append((number, section, key.strip(), value))
    if section != "all":
        problems.append(f"ends under [{section}]: lines appended after it would not apply")
    return settings, problems


def on_board(settings: list[tuple[int, str, str, str]], board: str) -> dict[str, list[str]]:
    """What a board reads: every value of each key, in order (dtoverlay may repeat)."""
    applies = BOARDS[board] | {"all"}
    seen: dict[str, list[str]] = {}
    for _, section, key, value in settings:
        if section in applies:
            seen.setdefault(key, []).append(value)
    return seen


def test_the_fragments_are_there() -> None:
    assert {f.name for f in FRAGMENTS} == {
        "config-quiet.txt",
        "config-spi-strip.txt",
        "config-uart.txt",
    }


@pytest.mark.parametrize("path", FRAGMENTS, ids=lambda p: p.name)
def test_fragment_reads_as_the_firmware_reads_it(path: Path) -> None:
    settings, problems = read_config_txt(path.read_text())
    assert settings and problems == []


def test_the_checker_catches_the_mistakes_it_is_for() -> None:
    _, problems = read_config_txt(
        "[all]\ndtoverlay=disable-wifi   # wired only\ncore_fre=250\n[pi9]\n[pi4]\nx =1\n"
    )
    assert [p.split(":")[0] for p in problems] == [
        "line 2",  # spaces in the value...
        "line 2",  # ... that are a comment
        "line 3",  # a setting the firmware does not know
        "line 4",  # no such board
        "line 6",  # spaces round "="
        "line 6",  # ... and no such setting
        "ends under [pi4]",
    ]


def test_the_core_clock_is_pinned_only_where_spi_needs_it() -> None:
    settings, _ = read_config_txt((RPI / "config-spi-strip.txt").read_text())
    assert all(s != "all" for _, s, k, _ in settings if k.startswith("core_freq"))
    assert on_board(settings, "pi4")["core_freq"] == ["500"]  # a Pi 4's own default
    assert on_board(settings, "pi4")["core_freq_min"] == ["500"]
    assert on_board(settings, "pi400")["core_freq"] == ["500"]
    assert on_board(settings, "pi3")["core_freq"] == ["250"]
    assert "core_freq" not in on_board(settings, "pi5")  # SPI on RP1: its own clock
    assert on_board(settings, "pi5")["dtparam"] == ["spi=on"]


def test_bluetooth_gives_the_uart_back_only_where_it_holds_it() -> None:
    settings, _ = read_config_txt((RPI / "config-uart.txt").read_text())
    for board in ("pi3", "pi4", "pi02"):
        assert on_board(settings, board)["dtoverlay"] == ["disable-bt"], board
    assert "dtoverlay" not in on_board(settings, "pi5")
    assert on_board(settings, "pi5")["dtparam"] == ["uart0=on"]
    assert all(on_board(settings, b)["enable_uart"] == ["1"] for b in BOARDS)


def test_the_kernel_command_line_holds_a_whole_strip_frame_in_one_transfer() -> None:
    """spidev splits a write into transfers of bufsiz; the gap between two latches the strip."""
    text = (RPI / "cmdline-spi-strip.txt").read_text()
    assert text.count("\n") == 1 and text.endswith("\n") and "#" not in text
    params = dict(token.partition("=")[::2] for token in text.split())
    longest = LedStripConfig.model_fields["led_count"].metadata
    most = next(m.le for m in longest if hasattr(m, "le"))
    frame = len(encode_frame([(255, 255, 255)] * most))
    assert most == 2000 and frame > 4096  # spidev's default bufsiz
    assert int(params["spidev.bufsiz"]) >= frame


def test_the_atop_zone_lists_a_thousand_slots_and_a_clash_names_its_line(tmp_path: Path) -> None:
    path = FILES[0].parent / "zone-atop.toml"
    config = load_config(path, env={})
    atop = [d for d in config.devices if d.kind == "atop"]
    assert len(atop) == 5
    slots = [slot for device in atop for slot in device.locations()]
    assert len(slots) == len(set(slots)) == 1000
    assert slots[0] == "A-0001" and slots[-2] == "A-0999" and slots[-1] == "TOTE-OUT"
    text = path.read_text()
    clash = tmp_path / "clash.toml"
    clash.write_text(text.replace('tags = "1-199"', 'tags = "1-200"'))
    with pytest.raises(ConfigError) as info:
        load_config(clash, env={})
    line = text.splitlines().index("tag = 200") + 1
    assert str(info.value).startswith(f"{clash}:{line}: devices[4].slots[1].tag: "), str(info.value)
    assert "tag 200 is both 'A-1000' and 'TOTE-OUT'" in str(info.value)
    same_host = tmp_path / "same.toml"
    same_host.write_text(text.replace('"10.0.50.102"', '"10.0.50.101"\nport = 4660'))
    with pytest.raises(ConfigError) as info:
        load_config(same_host, env={})
    reasons = [r for _, r in info.value.problems]
    assert any("tcp:10.0.50.101:4660 is used by both 'atop-1' and 'atop-2'" in r for r in reasons)
