"""``agent.tomllines``: the line of each key of a TOML text, as tomllib reads the text."""

from __future__ import annotations

import tomllib

from agent.tomllines import field_path, key_lines, line_of

TEXT = '''\
site = "dc1"            # 1
"quoted.key" = 2        # 2
a.b.c = 3               # 3
urls = [                # 4
  "mqtt://x:1",         # 5  (inside a value: no key here)
  "not = a key",        # 6
]                       # 7
note = """              # 8
fake = 1                # 9
"""                     # 10
after = true            # 11
[broker]                # 12
urls = ["a"]            # 13
[[devices]]             # 14
name = "shelf"          # 15
display = { clk = 5, "dio" = 6 }   # 16
[[devices.slots]]       # 17
id = "A1"               # 18
[[devices.slots]]       # 19
id = "A2"               # 20
[[devices]]             # 21
name = "s"              # 22
[[devices.slots]]       # 23
id = "B1"               # 24
[settings.supervisors]  # 25
"SUP-1" = "maria"       # 26
boxes = [{ name = "S" }, { name = "M" }]  # 27
'''


def test_every_key_at_its_line() -> None:
    tomllib.loads(TEXT)  # the text is valid TOML
    lines = key_lines(TEXT)
    assert lines[("site",)] == 1
    assert lines[("quoted.key",)] == 2
    assert (lines[("a",)], lines[("a", "b", "c")]) == (3, 3)
    assert lines[("urls",)] == 4
    assert lines[("note",)] == 8 and ("fake",) not in lines
    assert lines[("after",)] == 11
    assert (lines[("broker",)], lines[("broker", "urls")]) == (12, 13)
    assert lines[("devices", 0)] == 14
    assert lines[("devices", 0, "display", "clk")] == 16
    assert lines[("devices", 0, "display", "dio")] == 16
    assert lines[("devices", 0, "slots", 1, "id")] == 20
    assert lines[("devices", 1, "slots", 0)] == 23
    assert lines[("devices", 1, "slots", 0, "id")] == 24
    assert lines[("settings", "supervisors", "SUP-1")] == 26
    assert lines[("settings", "supervisors", "boxes")] == 27


def test_a_missing_key_is_found_at_its_table() -> None:
    lines = key_lines(TEXT)
    assert line_of(lines, field_path("devices[1].slots[0].confirm")) == 23
    assert line_of(lines, field_path("devices[0].display.clk")) == 16
    assert line_of(lines, field_path("role")) is None


def test_field_path() -> None:
    assert field_path("devices[0].slots[12].led") == ("devices", 0, "slots", 12, "led")
    assert field_path("broker.urls") == ("broker", "urls")
