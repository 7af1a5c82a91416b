"""The ATOP driver against the simulated controller, over real TCP, with every fault."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from light_helpers import eventually

from devices.base import HealthStatus
from devices.context import DeviceContext
from devices.events import Button, ButtonPress
from devices.lights.atop import codec
from devices.lights.atop.config import AtopConfig
from devices.lights.atop.driver import AtopController
from devices.lights.atop.sim import AtopSimulator
from devices.lights.palette import ERROR, Colour, Indication, Pattern

FAST = {
    "poll_s": 0.05,
    "silent_after_s": 0.6,
    "resend_after_s": 0.02,
    "reconnect_max_s": 0.2,
    "frame_gap_s": 0.2,
    "double_press_s": 0.0,
    "buzz_s": 0.1,
}


def atop_config(**changes: Any) -> AtopConfig:
    base: dict[str, Any] = {
        "name": "atop-1",
        "kind": "atop",
        "slots": [{"tags": "1-20", "first_id": "A-001"}],
        **FAST,
    }
    return AtopConfig.model_validate({**base, **changes})


Scenario = Callable[[AtopController, AtopSimulator], Awaitable[None]]


def run(scenario: Scenario, **changes: Any) -> AtopSimulator:
    config = atop_config(**changes)

    async def main() -> AtopSimulator:
        sim = AtopSimulator(config, DeviceContext(simulate=True))
        await sim.start()
        try:
            driver = AtopController.from_config(sim.patched_config(), DeviceContext())
            async with driver:
                assert driver.health.status is HealthStatus.OK
                await scenario(driver, sim)
            return sim
        finally:
            await sim.stop()

    return asyncio.run(main())


def tag(sim: AtopSimulator, slot: str) -> dict[str, Any]:
    return sim.state()["slots"][slot]  # type: ignore[no-any-return]


async def next_press(driver: AtopController, within: float = 3.0) -> ButtonPress:
    async with asyncio.timeout(within):
        return await driver._events.get()


def test_start_clears_every_tag_and_a_task_shows_with_its_keys() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        c = sim.controller
        await eventually(lambda: c.received.by_sub.get(0x09, 0) >= 1)
        assert c.received.by_sub[0x01] >= 1  # broadcast clear at start
        assert not any(t.confirm_key for t in c.tags.values())
        # A node start turns every slot off: after the broadcasts that costs no CCB.
        sent = driver.counts["frames_out"]
        await driver.apply([(slot, None) for slot in driver.slots()])
        assert driver.counts["frames_out"] == sent
        await driver.show("A-003", Indication(Colour.SKY_BLUE, Pattern.STEADY, qty=12))
        await eventually(lambda: tag(sim, "A-003")["qty"] == 12)
        state = tag(sim, "A-003")
        assert state["display"] == "    12" and state["colour"] == "cyan"
        assert state["on"] and state["pattern"] == "steady"
        assert state["confirm_key"] and state["shortage_key"]
        assert not tag(sim, "A-004")["confirm_key"]
        await driver.show("A-004", Indication(Colour.ORANGE, Pattern.SLOW_BLINK, text="1.5"))
        await eventually(lambda: tag(sim, "A-004")["display"] == "    1.5")
        blink = tag(sim, "A-004")
        assert blink["pattern"] == "flashing" and blink["interval"] == 0x04
        assert not blink["confirm_key"]  # a text, not a task: keys stay off
        await driver.off("A-003")
        await eventually(lambda: not tag(sim, "A-003")["on"])
        assert tag(sim, "A-003")["display"] is None and not tag(sim, "A-003")["confirm_key"]

    sim = run(scenario)
    assert not any(t["on"] for t in sim.controller.state()["tags"].values())  # dark at close


def test_at5xx_colours_and_the_error_buzzer() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        await driver.show("A-001", Indication(Colour.BLUE, qty=3))
        await driver.show("A-002", ERROR)
        await eventually(lambda: tag(sim, "A-002")["buzzer"])
        assert tag(sim, "A-001")["colour"] == "orange"  # AT5xx: every picker orange
        assert tag(sim, "A-002")["colour"] == "red"
        assert tag(sim, "A-002")["interval"] == 0x02  # fast blink: 0.5 s, under 3/s
        await eventually(lambda: not tag(sim, "A-002")["buzzer"])  # off after buzz_s

    run(scenario, model="at5xx")


def test_confirm_and_shortage_keys_report_the_quantity() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        await driver.show("A-005", Indication(Colour.BLUE, qty=7))
        await eventually(lambda: tag(sim, "A-005")["qty"] == 7 and tag(sim, "A-005")["on"])
        await sim.control("press", {"slot": "A-005"})
        press = await next_press(driver)
        assert (press.slot, press.button, press.qty) == ("A-005", Button.CONFIRM, 7)
        await sim.control("press", {"slot": "A-005", "button": "short", "qty": 4})
        short = await next_press(driver)
        assert (short.slot, short.qty) == ("A-005", 4)
        # A tag with nothing shown has its keys off: the press never reaches the host.
        result = await sim.control("press", {"slot": "A-006"})
        assert result["sent"] is False
        assert driver._events._queue.empty()

    run(scenario)


def test_controller_killed_and_restarted_shows_every_lit_tag_again() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        for n in range(1, 11):
            await driver.show(f"A-{n:03}", Indication(Colour.BLUE, qty=n))
        await eventually(lambda: tag(sim, "A-010")["qty"] == 10)
        await sim.control("kill", {})
        await eventually(lambda: driver.health.status is HealthStatus.UNAVAILABLE)
        # Shown while the controller is away: kept, sent once it is back.
        await driver.show("A-011", Indication(Colour.BLUE, qty=11))
        await driver.off("A-001")
        await sim.control("restart", {})
        await eventually(lambda: driver.health.status is HealthStatus.OK, 5)
        await eventually(lambda: tag(sim, "A-011")["qty"] == 11)
        for n in range(2, 11):
            assert tag(sim, f"A-{n:03}")["qty"] == n
        assert not tag(sim, "A-001")["on"]
        assert driver.counts["restored"] >= 10

    run(scenario)


def test_a_pulled_tag_is_down_and_shown_again_when_back() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        seen: list[str] = []
        driver.add_health_listener(lambda name, health: seen.append(health.detail))
        await driver.show("A-007", Indication(Colour.BLUE, qty=2))
        await eventually(lambda: tag(sim, "A-007")["qty"] == 2)
        await sim.control("pull", {"slot": "A-007"})
        await eventually(lambda: "A-007" in driver.parts())
        assert driver.parts()["A-007"].status is HealthStatus.UNAVAILABLE
        assert driver.health.status is HealthStatus.OK
        assert driver.health.detail == "1 of 20 tags down"
        assert "1 of 20 tags down" in seen
        await sim.control("plug", {"slot": "A-007"})  # powers on dark
        await eventually(lambda: "A-007" not in driver.parts())
        await eventually(lambda: tag(sim, "A-007")["qty"] == 2)
        assert driver.health.detail == ""

    run(scenario)


def test_power_cycle_busy_lock_and_time_out_are_sent_again() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        await driver.show("A-008", Indication(Colour.BLUE, qty=8))
        await eventually(lambda: tag(sim, "A-008")["qty"] == 8)
        await sim.control("power_cycle", {"slot": "A-008"})
        await eventually(lambda: tag(sim, "A-008")["qty"] == 8 and tag(sim, "A-008")["on"])
        await sim.control("busy", {"slot": "A-009", "count": 2})
        await driver.show("A-009", Indication(Colour.BLUE, qty=9))
        await eventually(lambda: tag(sim, "A-009")["qty"] == 9 and tag(sim, "A-009")["on"])
        assert driver.counts["event_special"] >= 2 and driver.counts["resent"] >= 1
        await sim.control("lock", {"slot": "A-010"})
        await driver.show("A-010", Indication(Colour.BLUE, qty=10))
        await eventually(lambda: tag(sim, "A-010")["qty"] == 10 and tag(sim, "A-010")["on"])
        assert driver.counts["event_buttons_locked"] == 1
        await sim.control("malfunction", {"slot": "A-002"})
        await eventually(lambda: "A-002" in driver.parts())
        assert driver.parts()["A-002"].status is HealthStatus.FAULT
        assert "1 broken" in driver.health.detail

    run(scenario)


def test_a_silent_controller_is_dropped_and_reconnected() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        await driver.show("A-001", Indication(Colour.BLUE, qty=1))
        await sim.control("slow", {"delay_s": 2.0})
        await eventually(lambda: driver.health.status is HealthStatus.UNAVAILABLE, 5)
        assert "silent" in driver.health.detail
        await sim.control("slow", {"delay_s": 0})
        await eventually(lambda: driver.health.status is HealthStatus.OK, 5)
        await eventually(lambda: tag(sim, "A-001")["qty"] == 1)

    run(scenario)


def test_bad_input_is_counted_logged_once_and_never_acted_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        await driver.show("A-001", Indication(Colour.BLUE, qty=1))
        await eventually(lambda: tag(sim, "A-001")["qty"] == 1 and tag(sim, "A-001")["on"])
        for kind in ("random", "bad_length", "unknown_sub", "orphan", "truncated"):
            await sim.control("garbage", {"kind": kind, "tag": 150})
        await eventually(lambda: driver.counts["bad_truncated"] == 1)
        # After all that the stream is in step: a real press still arrives.
        await sim.control("press", {"slot": "A-001"})
        press = await next_press(driver)
        assert (press.slot, press.qty) == ("A-001", 1)
        assert driver._events._queue.empty()  # the orphan confirm was not acted on
        counts = driver.counts
        assert counts["bad_garbage"] >= 1
        assert counts["bad_bad_length"] == counts["bad_unknown_sub"] == 1
        assert counts["bad_unknown_tag"] == 1
        assert driver.health.status is HealthStatus.OK

    with caplog.at_level(logging.WARNING, logger="devices"):
        run(scenario)
    lines = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert any("08 00 60 00 00 00 77 01" in line for line in lines), lines
    assert any("from tag 150, which no slot owns" in line for line in lines), lines
    assert len([line for line in lines if "unknown sub" in line]) == 1


def test_controller_not_there_at_start_is_retried() -> None:
    async def main() -> None:
        config = atop_config()
        sim = AtopSimulator(config, DeviceContext(simulate=True))
        await sim.start()
        port = sim.controller.port
        await sim.controller.kill()
        driver = AtopController(config.model_copy(update={"host": "127.0.0.1", "port": port}))
        async with driver:
            assert driver.health.status is HealthStatus.UNAVAILABLE
            await driver.show("A-002", Indication(Colour.BLUE, qty=5))  # kept
            await sim.controller.start()
            await eventually(lambda: driver.health.status is HealthStatus.OK, 5)
            await eventually(lambda: tag(sim, "A-002")["qty"] == 5)
        await sim.stop()

    asyncio.run(main())


def test_a_tag_refusing_messages_in_a_row_is_a_fault_until_it_takes_them() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        await driver.show("A-012", Indication(Colour.BLUE, qty=12))
        await eventually(lambda: tag(sim, "A-012")["qty"] == 12)
        # Every message to the tag dropped (64h 01h) three times: each is sent again.
        await sim.control("busy", {"slot": "A-012", "count": 3})
        await driver.show("A-012", Indication(Colour.BLUE, qty=11))
        await eventually(lambda: "A-012" in driver.parts())
        part = driver.parts()["A-012"]
        assert part.status is HealthStatus.FAULT and "tag busy, message dropped" in part.detail
        assert "1 broken" in driver.health.detail
        await eventually(lambda: tag(sim, "A-012")["qty"] == 11)  # the fourth try got through
        await eventually(lambda: "A-012" not in driver.parts(), 5)  # quiet for two polls
        # A sub-command the controller does not know: 0Ch, in the controller's health.
        await driver.request([codec.frame(0x77, 1)])
        await eventually(lambda: "illegal (0Ch)" in driver.health.detail)
        assert driver.counts["event_illegal"] == 1

    run(scenario)


def test_a_confirm_of_the_quantity_shown_before_is_stale_and_ignored() -> None:
    async def scenario(driver: AtopController, sim: AtopSimulator) -> None:
        await driver.show("A-013", Indication(Colour.BLUE, qty=5))
        await driver.show("A-013", Indication(Colour.BLUE, qty=3))
        await eventually(lambda: tag(sim, "A-013")["qty"] == 3)
        # The tag reports a confirm while it still showed 5 (pressed as 3 was on its way).
        sim.controller.send(bytes.fromhex("0F 00 60 00 00 00 06 0D 00 00 00 00 00 35 00"))
        await eventually(lambda: driver.counts["presses_stale"] == 1)
        assert driver._events._queue.empty()
        # Counted down to 2 with the up/down keys, then confirm: a short of 2, not stale.
        sim.controller.send(bytes.fromhex("0F 00 60 00 00 00 06 0D 00 00 00 00 00 32 00"))
        press = await next_press(driver)
        assert (press.slot, press.qty) == ("A-013", 2)

    run(scenario)
