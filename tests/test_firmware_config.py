"""Every node file shipped in firmware_config/ is valid, and a broken one says where."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError

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
