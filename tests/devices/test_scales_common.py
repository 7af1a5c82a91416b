"""What every scale driver shares: unplug/replug, live weight, the request lock, registry."""

from __future__ import annotations

import asyncio

import pytest
from scale_helpers import MODULES, HealthLog, make_config, rig, run, simulator

from agent.errors import DeviceUnavailable
from devices.base import HealthStatus
from devices.config import DeviceConfig
from devices.registry import module_for
from devices.scales.base import Scale, next_backoff, to_grams
from devices.sim import Simulator

PROTOCOLS = sorted(MODULES)


def _collapsed(statuses):
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_registry_module_contract(protocol):
    module = module_for(protocol)
    assert issubclass(module.CONFIG, DeviceConfig)
    assert issubclass(module.DRIVER, Scale)
    assert issubclass(module.SIMULATOR, Simulator)
    assert module.DRIVER.protocol == protocol == module.SIMULATOR.protocol
    config = make_config(protocol)
    assert config.claims() == ["serial:/dev/ttyUSB9"]
    assert config.poll_interval == 0.25


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unplug_and_replug_with_health_transitions(protocol, tmp_path):
    # One protocol keeps the default backoff (0.5 s first retry); the others retry sooner.
    fast = {} if protocol == "mt_sics" else {"reconnect_min_s": 0.05}

    async def scenario():
        async with rig(protocol, tmp_path, **fast) as (sim, scale):
            health = HealthLog(scale)
            await sim.control("set", {"grams": 1000.0})
            before = await scale.read()
            await sim.control("unplug", {})
            with pytest.raises(DeviceUnavailable):
                await scale.read()
            await health.wait_for("unavailable")
            with pytest.raises(DeviceUnavailable):
                await scale.read()  # nothing is invented while the port is gone
            await sim.control("set", {"grams": 2000.0})
            await sim.control("replug", {})
            await health.wait_for("ok")
            after = await scale.read()
            return before, after, health.seen, sim.state()["plugged"]

    before, after, seen, plugged = run(scenario())
    assert before.grams == 1000.0
    assert after.grams == 2000.0
    assert _collapsed(seen) == ["unavailable", "ok"]
    assert plugged is True


def test_unplug_noticed_without_a_request(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path, reconnect_min_s=0.05) as (sim, scale):
            health = HealthLog(scale)
            await sim.control("unplug", {})
            await health.wait_for("unavailable")
            detail = scale.health.detail
            await sim.control("replug", {})
            await health.wait_for("ok")
            return detail

    assert str(tmp_path) in run(scenario())


def test_driver_opened_before_the_device_appears(tmp_path):
    async def scenario():
        async with simulator("nci", tmp_path, reconnect_min_s=0.05) as sim:
            config = sim.patched_config().model_copy(update={"port": str(tmp_path / "late.tty")})
            driver = module_for("nci").DRIVER.from_config(config, None)
            async with driver:
                first = driver.health
                health = HealthLog(driver)
                sim.link.rename(tmp_path / "late.tty")  # the udev link appears
                await health.wait_for("ok")
                await sim.control("set", {"grams": 100.0})
                return first, await driver.read()

    first, weight = run(scenario())
    assert first.status is HealthStatus.UNAVAILABLE
    assert "no such port" in first.detail
    assert weight.grams == 100.0


def test_events_yield_only_on_change(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path, poll_interval=0.01) as (sim, scale):
            await sim.control("set", {"grams": 100.0})
            events = scale.events()
            first = await anext(events)
            # Let several polls see the same weight, then change it.
            polls = bytes(sim.received).count(b"SI\r\n")
            nexted = asyncio.ensure_future(anext(events))
            while bytes(sim.received).count(b"SI\r\n") < polls + 3:
                await asyncio.sleep(0.01)
            assert not nexted.done()
            await sim.control("set", {"mode": "moving", "grams": 150.0})
            moving = await nexted
            await sim.control("set", {"mode": "stable"})
            settled = await anext(events)
            await events.aclose()
            return first, moving, settled

    first, moving, settled = run(scenario())
    assert (first.grams, first.stable) == (100.0, True)
    assert (moving.grams, moving.stable) == (150.0, False)
    assert (settled.grams, settled.stable) == (150.0, True)


def test_events_across_unplug_do_not_replay(tmp_path):
    async def scenario():
        async with rig("toledo_8217", tmp_path, poll_interval=0.01, reconnect_min_s=0.05) as (
            sim,
            scale,
        ):
            health = HealthLog(scale)
            await sim.control("set", {"grams": 500.0})
            events = scale.events()
            first = await anext(events)
            await sim.control("unplug", {})
            await health.wait_for("unavailable")
            nexted = asyncio.ensure_future(anext(events))
            await sim.control("set", {"grams": 750.0})
            await sim.control("replug", {})
            after = await nexted
            await events.aclose()
            return first, after

    first, after = run(scenario())
    assert first.grams == 500.0
    assert after.grams == 750.0


def test_events_disabled_by_zero_poll_interval(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path, poll_interval=0) as (sim, scale):
            events = [weight async for weight in scale.events()]
            return events, bytes(sim.received)

    assert run(scenario()) == ([], b"")


def test_busy_port_is_reported(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, _):
            second = module_for("mt_sics").DRIVER.from_config(sim.patched_config(), None)
            async with second:
                return second.health

    health = run(scenario())
    assert health.status is HealthStatus.UNAVAILABLE
    assert "busy" in health.detail


def test_lock_serialises_concurrent_requests(tmp_path):
    async def scenario():
        async with rig("mt_sics", tmp_path) as (sim, scale):
            await sim.control("set", {"grams": 10.0, "split_s": 0.02})
            results = await asyncio.gather(
                scale.read(), scale.read_stable(), scale.tare(), scale.read()
            )
            return results, bytes(sim.received)

    results, sent = run(scenario())
    assert [results[0].grams, results[1].grams, results[3].grams] == [10.0, 10.0, 0.0]
    assert sent == b"SI\r\nSI\r\nT\r\nSI\r\n"


def test_backoff_doubles_up_to_the_cap():
    config = make_config("nci")
    delays = [config.reconnect_min_s]
    for _ in range(6):
        delays.append(next_backoff(delays[-1], config.reconnect_max_s))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_to_grams():
    assert to_grams(1.5, "kg") == 1500.0
    assert to_grams(1, "LB") == 453.592
    assert to_grams(1, "oz") == 28.35
    assert to_grams(250, "mg") == 0.25


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simulator_control_validation(protocol, tmp_path):
    async def scenario():
        sim = MODULES[protocol].SIMULATOR(make_config(protocol), None, link_dir=tmp_path)
        for action, args in (
            ("set", {"mode": "dancing"}),
            ("set", {"colour": "red"}),
            ("set", {"split_s": -1}),
            ("inject", {}),
            ("explode", {}),
        ):
            with pytest.raises(ValueError):
                await sim.control(action, args)
        return await sim.control("set", {"grams": 12.0, "mode": "moving"}), sim.patched_config()

    state, config = run(scenario())
    assert state == {
        "protocol": protocol,
        "grams": 12.0,
        "mode": "moving",
        "tare_g": 0.0,
        "plugged": False,
    }
    assert config.port == str(tmp_path / "scale1.tty")


def test_link_dir_set_after_construction_like_the_node_does(tmp_path):
    async def scenario():
        sim = MODULES["nci"].SIMULATOR(make_config("nci"), None)
        sim.link_dir = tmp_path / "sims"
        await sim.start()
        try:
            config = sim.patched_config()
            async with MODULES["nci"].DRIVER.from_config(config, None) as scale:
                await sim.control("set", {"grams": 250.0})
                return config.port, (await scale.read()).grams
        finally:
            await sim.stop()

    port, grams = run(scenario())
    assert port == str(tmp_path / "sims" / "scale1.tty")
    assert grams == 250.0
    assert not (tmp_path / "sims" / "scale1.tty").exists()
