import asyncio
import threading
import time

from agent.cli import main
from agent.commands import lights

NODE = """
site = "s1"
node = "zone-3"
role = "pick"
state_dir = "/var/lib/zone-agent"

[broker]
host = "127.0.0.1"

[[devices]]
name = "shelf-a"
kind = "gpio_slots"
slots = [
  { id = "A1", rgb = [17, 27, 22], confirm = 5, display = { clk = 23, dio = 24 } },
  { id = "A2", led = 16, confirm = 26, display = { clk = 20, dio = 21 } },
]

[[devices]]
name = "scanner"
kind = "serial_scanner"
port = "/dev/ttyUSB0"

[[devices]]
name = "strip-b"
kind = "led_strip"
led_count = 8
slots = [ { id = "B1", first = 0, count = 4, confirm = 19 } ]
"""


def run_with_presser(tmp_path, capsys, argv_extra, skip=()):
    """Run `light test --simulate` in a thread; press confirm on each lit slot but `skip`."""
    node = tmp_path / "node.toml"
    node.write_text(NODE)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "rc", main(["light", "test", str(node), "--simulate", *argv_extra])
        )
    )
    thread.start()
    pressed: list[tuple[str, str, str | None]] = []
    deadline = time.monotonic() + 20  # safety net only
    while thread.is_alive() and time.monotonic() < deadline:
        session = lights.active
        if session is None:
            time.sleep(0.01)
            continue
        for name, sim in list(session.simulators.items()):
            for slot, shown in sim.state()["slots"].items():
                key = (name, slot)
                # the display is written just after the light: wait for both
                ready = shown["on"] and (shown["display"] is not None or name == "strip-b")
                if ready and key not in {p[:2] for p in pressed} and slot not in skip:
                    pressed.append((name, slot, shown["display"]))
                    future = asyncio.run_coroutine_threadsafe(
                        sim.control("press", {"slot": slot, "button": "confirm"}), session.loop
                    )
                    future.result(5)
        time.sleep(0.01)
    thread.join(20)
    return result["rc"], pressed, capsys.readouterr().out


def test_light_test_simulated_all_slots_answer(tmp_path, capsys):
    rc, pressed, out = run_with_presser(tmp_path, capsys, ["--timeout", "10"])
    assert rc == 0
    # each slot shows its number on its display while it waits
    assert pressed == [
        ("shelf-a", "A1", "   1"),
        ("shelf-a", "A2", "   2"),
        ("strip-b", "B1", None),
    ]
    assert "answered: shelf-a/A1, shelf-a/A2, strip-b/B1" in out
    assert "no answer: -" in out


def test_light_test_reports_a_silent_slot_with_exit_3(tmp_path, capsys):
    rc, pressed, out = run_with_presser(tmp_path, capsys, ["--timeout", "0.5"], skip=("A2",))
    assert rc == 3
    assert [p[1] for p in pressed] == ["A1", "B1"]
    assert "shelf-a/A2: NO ANSWER" in out
    assert "no answer: shelf-a/A2" in out


def test_light_test_usage_errors(tmp_path, capsys):
    missing = tmp_path / "none.toml"
    assert main(["light", "test", str(missing), "--simulate"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[[devices]]\nname = "x"\nkind = "gpio_slots"\nslots = []\n')
    assert main(["light", "test", str(bad), "--simulate"]) == 2
    assert "devices[0].slots" in capsys.readouterr().out
    empty = tmp_path / "empty.toml"
    empty.write_text('site = "s"\n')
    assert main(["light", "test", str(empty)]) == 2
    assert "no [[devices]] of kind gpio_slots or led_strip" in capsys.readouterr().out
