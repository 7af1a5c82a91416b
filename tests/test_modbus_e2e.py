"""A pick zone on Modbus I/O end to end: the OMS's pick lights a lamp on a module's output, a
button on its input confirms, a silent module shows in the birth, in the state API and in
/metrics. The node runs with ``--simulate`` (pymodbus's server on loopback plays the
modules) and is driven through its HTTP control API; the OMS is the reference client.

On the in-process broker (the fast tier), and once on a real Mosquitto.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agent.oms import OmsClient
from agent.wire.messages import PickTask
from tests.harness import SITE, Broker, node_in_process, oms_for

NODE = "zone-m1"


@pytest.fixture
def broker(any_broker: Broker) -> Broker:
    """Each test on the in-process broker and on a real Mosquitto."""
    return any_broker


def node_file(tmp_path: Path, broker: Broker) -> Path:
    path = tmp_path / f"{NODE}.toml"
    path.write_text(
        f"""
site = "{SITE}"
node = "{NODE}"
role = "pick"
state_dir = "{tmp_path / NODE}"
[broker]
urls = ["{broker.url}"]
backoff_initial_s = 0.05
backoff_max_s = 0.5
[[devices]]
name = "shelf-m"
kind = "modbus_io"
transport = "tcp"
host = "10.0.50.20"
poll_ms = 10
timeout_ms = 150
[[devices.units]]
unit = 1
preset = "waveshare_io8"
first_id = "M-01"
[[devices.units]]
unit = 2
preset = "adam6060"
first_id = "M-09"
count = 5
[devices.zone_lamp]
unit = 2
green = 5
"""
    )
    return path


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = reply.read()
    return body if url.endswith("/metrics") else json.loads(body)


def post(url: str, args: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, json.dumps(args).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


async def until(check: Any, timeout: float = 10.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (value := await check()):
            await asyncio.sleep(0.02)
        return value


async def picked(oms: OmsClient, count: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while len(out) < count:
            event = await oms.events.get()
            if event.name in ("picked", "short"):
                body = event.body
                out.append(body if isinstance(body, dict) else body.model_dump())
    return out


def test_modbus_pick_zone_through_the_broker(tmp_path: Path, broker: Broker) -> None:
    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(node_file(tmp_path, broker)) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            url = json.loads((running.config.state_dir / "control.json").read_text())["url"]
            tasks = [
                PickTask(task=f"t{i}", order=f"o{i}", location=loc, sku=f"S{i}", qty=i + 1)
                for i, loc in enumerate(["M-03", "M-10", "M-13"])
            ]
            reply = await oms.call(NODE, "pick", {"tasks": [t.model_dump() for t in tasks]})
            assert reply.status == "accepted"

            async def lit() -> list[str] | None:
                state = await asyncio.to_thread(get, f"{url}/sim/shelf-m")
                return state["lit"] if state["lit"] == ["M-03", "M-10", "M-13"] else None

            await until(lit)
            await asyncio.to_thread(post, f"{url}/sim/shelf-m/press", {"slot": "M-10"})
            await asyncio.to_thread(post, f"{url}/sim/shelf-m/press", {"slot": "M-03"})
            got = await picked(oms, 2)
            assert sorted((e["task"], e["location"], e["qty"]) for e in got) == [
                ("t0", "M-03", 1),
                ("t1", "M-10", 2),
            ]

            async def dark() -> bool:
                state = await asyncio.to_thread(get, f"{url}/sim/shelf-m")
                return bool(state["lit"] == ["M-13"])

            await until(dark)

            # A module goes silent: its slots are parts down, in the birth and the state API.
            await asyncio.to_thread(post, f"{url}/sim/shelf-m/silent", {"unit": 2})

            async def parts_down() -> dict[str, Any] | None:
                view = oms.nodes[NODE].state
                devices = view.devices if view is not None else {}
                shelf = devices.get("shelf-m")
                parts = getattr(shelf, "parts", None) or {}
                return parts if "M-13" in parts else None

            parts = await until(parts_down)
            assert set(parts) == {f"M-{i:02d}" for i in range(9, 14)}
            metrics = (await asyncio.to_thread(get, f"{url}/metrics")).decode()
            assert 'device="shelf-m"' in metrics
            state = await asyncio.to_thread(get, f"{url}/api/state")
            assert state["devices"]["shelf-m"]["status"] == "ok"
            assert "units silent" in state["devices"]["shelf-m"]["detail"]

            # Back: its lamp is lit again and its button confirms.
            await asyncio.to_thread(post, f"{url}/sim/shelf-m/silent", {"unit": 2, "silent": False})

            async def back() -> bool:
                # The node sees the bus and the module again (on TCP the simulated module's
                # restart drops the connection: a press while the bus is down is not seen).
                sim = await asyncio.to_thread(get, f"{url}/sim/shelf-m")
                node = await asyncio.to_thread(get, f"{url}/api/state")
                health = node["devices"]["shelf-m"]
                ok = health["status"] == "ok" and not health["detail"]
                return bool(sim["lit"] == ["M-13"]) and not sim["silent"] and ok

            await until(back)
            await asyncio.sleep(0.1)
            await asyncio.to_thread(post, f"{url}/sim/shelf-m/press", {"slot": "M-13"})
            (last,) = await picked(oms, 1)
            assert last["task"] == "t2"

    asyncio.run(scenario())
