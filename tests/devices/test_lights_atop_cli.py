"""Commissioning ATOP controllers: ``light test``, ``light seen``, ``light address``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main
from agent.commands import lights
from devices.lights.atop.sim import ControllerSim

NODE = """
site = "s1"
node = "zone-c"
role = "pick"

[[devices]]
name = "atop-1"
kind = "atop"
host = "{host}"
port = {port}
poll_s = 0.1
silent_after_s = 2.0

[[devices.slots]]
tags = "1-4"
first_id = "C-01"
"""


def node_file(tmp_path: Path, host: str = "10.0.50.100", port: int = 4660, extra: str = "") -> Path:
    path = tmp_path / "node.toml"
    path.write_text(NODE.format(host=host, port=port) + extra)
    return path


def run_cli(argv: list[str], act: Callable[[Any, asyncio.AbstractEventLoop], bool]) -> int:
    """Run ``zone-agent argv`` in a thread; call ``act(simulator, loop)`` until it is done."""
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", main(argv)))
    thread.start()
    deadline = time.monotonic() + 30  # safety net only
    done = False
    while thread.is_alive() and time.monotonic() < deadline:
        session = lights.active
        if session is not None and not done:
            done = act(session.simulators["atop-1"], session.loop)
        time.sleep(0.01)
    thread.join(30)
    return result["rc"]


def control(sim: Any, loop: asyncio.AbstractEventLoop, action: str, **args: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(sim.control(action, args), loop).result(5)


def test_light_test_walks_every_tag_showing_its_own_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pressed: list[int] = []

    def press_what_shows_its_address(sim: Any, loop: asyncio.AbstractEventLoop) -> bool:
        for tag in sim.controller.tags.values():
            shows_own = tag.shows_address and tag.confirm_key
            if shows_own and tag.address not in pressed and tag.address != 3:
                assert tag.display_text().strip() == str(tag.address)
                pressed.append(tag.address)
                control(sim, loop, "press", tag=tag.address)
        return False

    argv = ["light", "test", str(node_file(tmp_path)), "--simulate", "--timeout", "1.5"]
    rc = run_cli(argv, press_what_shows_its_address)
    out = capsys.readouterr().out
    assert rc == 3, out
    assert pressed == [1, 2, 4]
    assert "atop-1/C-01: tag 1 shows its address: press its confirm key" in out
    assert "atop-1/C-03: NO ANSWER" in out
    assert "answered: atop-1/C-01, atop-1/C-02, atop-1/C-04" in out


def test_light_address_gives_a_replaced_tag_its_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps: list[str] = []

    def replace_then_press_the_new_tag(sim: Any, loop: asyncio.AbstractEventLoop) -> bool:
        if not steps:
            control(sim, loop, "replace", tag=2)
            steps.append("replaced")
        if sim.controller.offer == 2:
            assert control(sim, loop, "press_spare")["sent"]
            steps.append("pressed")
            return True
        return False

    argv = ["light", "address", str(node_file(tmp_path)), "atop-1", "2", "--simulate"]
    rc = run_cli(argv, replace_then_press_the_new_tag)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert steps == ["replaced", "pressed"]
    assert "atop-1: a tag took address 2" in out
    assert main(["light", "address", str(node_file(tmp_path)), "nope", "2"]) == 2


def test_light_seen_compares_the_bitmap_with_the_node_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loop = asyncio.new_event_loop()
    controller = ControllerSim(6)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(controller.start(), loop).result(5)
        loop.call_soon_threadsafe(controller.pull, 2)
        extra = (
            '\n[[devices.slots]]\ntag = 6\nid = "C-06"\n\n[[devices.slots]]\ntag = 7\nid = "C-07"\n'
        )
        path = node_file(tmp_path, "127.0.0.1", controller.port, extra)
        rc = main(["light", "seen", str(path), "--timeout", "5"])
        out = capsys.readouterr().out
        assert rc == 3, out
        assert "atop-1: 4 of 6 tags of the node file answer" in out
        assert "missing: 2 (C-02), 7 (C-07)" in out
        assert "not in the node file: 5" in out
    finally:
        asyncio.run_coroutine_threadsafe(controller.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
