"""Node files: valid files load, every mistake names the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import load_config, parse_config
from agent.errors import ConfigError

GOOD = """
site = "dc1"
node = "zone-a1"
role = "pick"
state_dir = "/tmp/zone-a1"

[broker]
urls = ["mqtt://127.0.0.1:1883", "mqtts://broker.example:8883"]
username = "zone-a1"
"""


SHELF = """
[[devices]]
name = "shelf"
kind = "gpio_slots"
[[devices.slots]]
id = "A1"
led = 17
confirm = 27
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={})
    assert config.node == "zone-a1" and config.role == "pick"
    assert config.broker.urls[1] == "mqtts://broker.example:8883" and config.broker.uses_tls
    assert config.client_id == "dc1-zone-a1"


def test_password_comes_from_the_environment_and_never_prints(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={"ZONE_AGENT_BROKER_PASSWORD": "s3cret"})
    assert config.broker.password is not None
    assert config.broker.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.broker)


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        (
            GOOD.replace('role = "pick"', 'role = "picking"'),
            "role",
            "'pick', 'put_wall', 'pack', 'returns'",
        ),
        (GOOD + "\nkeepalive = 3\n", "broker.keepalive", "Extra inputs are not permitted"),
        (GOOD.replace("mqtt://127.0.0.1:1883", "http://x"), "broker.urls", "expected mqtt://"),
        (
            GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://x:99999"),
            "broker.urls",
            "Port out of range",
        ),
        (GOOD.replace('node = "zone-a1"', 'node = "zone/a1"'), "node", "must be 1-64"),
        (GOOD.replace('node = "zone-a1"', 'node = "zone.a1"'), "node", "NATS refuses"),
        (GOOD.replace('site = "dc1"', 'site = "dc.1"'), "site", "use '-' or '_'"),
        (GOOD.replace('node = "zone-a1"', 'node = "_site"'), "node", "reserved"),
        (
            GOOD + '\n[[devices]]\nname = "x"\nkind = "laser"\n',
            "devices[0].kind",
            "unknown kind 'laser'",
        ),
        (GOOD.replace('site = "dc1"', "site = dc1"), "(syntax)", "Invalid value"),
    ],
)
def test_mistakes_name_file_field_and_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.file == str(path)
    assert any(f == field and reason in r for f, r in info.value.problems), info.value.problems


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "nope.toml")


def test_every_problem_is_reported_at_once() -> None:
    raw = {"site": "dc1", "node": "n", "role": "x", "bogus": 1, "devices": [{"kind": "nope"}]}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "f.toml", env={})
    fields = [f for f, _ in info.value.problems]
    assert fields == ["devices[0].kind", "role", "bogus"]


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, GOOD + SHELF)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace('role = "pick"', 'role = "nap"'))
    assert main(["check-config", str(good)]) == 0
    assert main(["check-config", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4: role: " in err  # the line of the key in the file


def _numbered(text: str) -> dict[str, int]:
    """Each stripped line of ``text`` and its 1-based number (first occurrence)."""
    found: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        found.setdefault(line.strip(), number)
    return found


def test_schema_errors_carry_the_line_of_the_key(tmp_path: Path) -> None:
    text = (
        GOOD
        + "keepalive_s = 2\n"
        + SHELF
        + 'plus = "up"\n'
        + "[[devices.slots]]\n"
        + 'id = "A2"\n'  # no light, no confirm: reported at the slot's header
        + '\n[[devices]]\nname = "scan"\nkind = "serial_scanner"\n'
        + 'port = "/dev/ttyUSB0"\nbaudrate = { value = 9600 }\n'
        + "\n[settings]\ncounters_every_s = -1\n"
    )
    path = write(tmp_path, text)
    at = _numbered(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    error = info.value
    second_slot = text.splitlines().index("[[devices.slots]]", at["[[devices.slots]]"]) + 1
    expected = {
        "broker.keepalive_s": at["keepalive_s = 2"],
        "devices[0].slots[0].plus": at['plus = "up"'],
        "devices[0].slots[1].confirm": second_slot,
        "devices[1].baudrate": at["baudrate = { value = 9600 }"],
        "settings.counters_every_s": at["counters_every_s = -1"],
    }
    assert {f: error.lines.get(f) for f in expected} == expected, error.problems
    assert str(error).startswith(f"{path}:{error.lines[error.field]}: {error.field}: ")


def test_a_pin_clash_names_the_field_and_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD + SHELF + '[[devices.slots]]\nid = "A2"\nled = 22\nconfirm = 17\n'
    path = write(tmp_path, text)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    line = _numbered(text)["confirm = 17"]
    assert err == [
        f"{path}:{line}: devices[0].slots[1].confirm: Value error, GPIO 17 is used twice: "
        "slot A1 light and slot A2 confirm"
    ]


def test_a_led_strip_overlap_names_the_field() -> None:
    raw = {
        "site": "dc1",
        "node": "n",
        "role": "pick",
        "devices": [
            {
                "name": "strip",
                "kind": "led_strip",
                "led_count": 10,
                "slots": [
                    {"id": "B1", "first": 0, "count": 6, "confirm": 17},
                    {"id": "B2", "first": 4, "count": 6, "confirm": 27},
                ],
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "f.toml", env={})
    assert info.value.problems == [
        ("devices[0].slots[1].first", "Value error, LED 4 is in both slot B1 and slot B2")
    ]


def test_check_config_says_what_an_empty_pick_node_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'site = "dc1"\nnode = "zone-a1"\nrole = "pick"\n')
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "ok" not in captured.out
    assert captured.out == f"{path}: incomplete (pick node dc1/zone-a1, 0 devices)\n"
    assert captured.err.splitlines() == [
        f"{path}: devices: none: a pick node needs at least one [[devices]]",
        f"{path}: broker.urls: not set: the node would only try mqtt://127.0.0.1:1883",
    ]
    # A put wall with a scanner and no light has nowhere to show a put.
    pack_no_light = write(
        tmp_path,
        GOOD.replace('"pick"', '"put_wall"')
        + '[[devices]]\nname = "s"\nkind = "serial_scanner"\nport = "/dev/ttyUSB0"\n',
    )
    assert main(["check-config", str(pack_no_light)]) == 2
    assert capsys.readouterr().err == (
        f"{pack_no_light}: devices: no gpio_slots, led_strip, atop or modbus_io: "
        "a put_wall node shows lines on one\n"
    )


def test_role_settings_are_checked_at_load_with_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + '\n[settings]\nconfirm = "telepathy"\ncounters_every_s = -1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.file == str(path)
    fields = [f for f, _ in info.value.problems]
    assert fields == ["settings.confirm", "settings.counters_every_s"]


def test_pack_settings_typo_is_reported_by_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pack = GOOD.replace('role = "pick"', 'role = "pack"') + SHELF
    good = tmp_path / "pack.toml"
    good.write_text(pack + "\n[settings]\ntolerance_g = 40.0\nlabel_timeout_s = 15\n")
    bad = tmp_path / "pack-typo.toml"
    bad.write_text(pack + "\n[settings]\ntolerance_gram = 40.0\ndpi = 250\n")
    assert main(["check-config", str(good)]) == 0
    capsys.readouterr()
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    settings_at = bad.read_text().splitlines().index("tolerance_gram = 40.0") + 1
    assert f"{bad}:{settings_at}: settings.tolerance_gram: Extra inputs are not permitted" in err
    assert any(
        line.startswith(f"{bad}:{settings_at + 1}: settings.dpi: Input should be 203 or 300")
        for line in err
    )


def test_the_http_port_comes_from_the_environment_when_set(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[http]\nport = 8080\n")
    assert load_config(path, env={}).http.port == 8080
    assert load_config(path, env={"ZONE_AGENT_HTTP_PORT": "0"}).http.port == 0
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"ZONE_AGENT_HTTP_PORT": "eighty"})
    assert info.value.problems[0][0] == "http.port"
