"""A zone of 1,000 ATOP tags end to end: a real Mosquitto, the node in this process on five
simulated controllers (TCP servers speaking the CCBs), the reference OMS.

A wave of 10,000 tasks (ten per tag) lights every tag with its first task's quantity; one
round of presses confirms 1,000 lines, 100 of them short with the quantity the picker set
on the tag; a controller is killed while the wave arrives and another while the presses
come, each restarted (the lights come back, nothing is lost or doubled); a pulled tag
shows in the birth; garbage from a controller is counted and ignored.
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest

from agent.metrics import render
from agent.oms.dashboard import SiteView
from agent.oms.demo.broker import LocalBroker
from agent.status import node_families, node_state
from agent.wire.messages import PickTask
from devices.lights.atop.sim import AtopSimulator
from tests.harness import SITE, node_in_process, oms_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

NODE = "zone-c1"
CONTROLLERS = 5
TAGS = 200
PER_TAG = 10
NAME = "Stainless steel kitchen scissors, 21 cm, dishwasher safe, red"  # 60 characters


def atop_node_file(tmp_path: Path, broker: LocalBroker) -> Path:
    lines = [
        f'site = "{SITE}"',
        f'node = "{NODE}"',
        'role = "pick"',
        f'state_dir = "{tmp_path / NODE}"',
        "[broker]",
        f'urls = ["{broker.url}"]',
        "keepalive_s = 5",
        "backoff_initial_s = 0.05",
        "backoff_max_s = 0.5",
    ]
    for c in range(CONTROLLERS):
        lines += [
            "[[devices]]",
            f'name = "atop-{c + 1}"',
            'kind = "atop"',
            f'host = "10.0.50.{101 + c}"',
            "poll_s = 0.2",
            "silent_after_s = 2.0",
            "reconnect_max_s = 0.3",
            "double_press_s = 0",
            "[[devices.slots]]",
            f'tags = "1-{TAGS}"',
            f'first_id = "A-{c * TAGS + 1:04}"',
        ]
    path = tmp_path / f"{NODE}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def location(n: int) -> str:
    return f"A-{n + 1:04}"


def qty_of(n: int, r: int) -> int:
    return 2 + (n * 7 + r) % 8


def wave() -> list[PickTask]:
    tasks = []
    for r in range(PER_TAG):
        for n in range(CONTROLLERS * TAGS):
            i = len(tasks)
            tasks.append(
                PickTask(
                    task=f"t{r}-{n:04}",
                    order=f"o{i // 8:05}",
                    location=location(n),
                    sku=f"SKU-{n:04}",
                    qty=qty_of(n, r),
                    description=NAME,
                )
            )
    return tasks


def shown(sims: dict[str, AtopSimulator]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sim in sims.values():
        out.update(sim.state()["slots"])
    return out


async def until(check: Any, limit_s: float, what: str) -> None:
    async with asyncio.timeout(limit_s):  # a safety net, not a budget
        while not check():
            await asyncio.sleep(0.05)


def test_a_wave_over_a_thousand_tags_on_five_controllers(
    tmp_path: Path, broker: LocalBroker
) -> None:
    path = atop_node_file(tmp_path, broker)

    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(path) as running:
            await oms.wait_connected()
            sims: dict[str, AtopSimulator] = running.floor.simulators  # type: ignore[assignment]
            assert len(sims) == CONTROLLERS
            await until(lambda: NODE in oms.nodes and oms.nodes[NODE].online, 20, "online")

            # The wave, with controller 3 killed while it arrives and restarted after.
            tasks = wave()
            futures = oms.send_tasks(NODE, tasks)
            await asyncio.wait_for(asyncio.gather(*futures[:5]), 60)
            await sims["atop-3"].control("kill", {})
            replies = await asyncio.wait_for(asyncio.gather(*futures), 120)
            assert {r.status for r in replies} == {"accepted"}
            await sims["atop-3"].control("restart", {})

            def first_round_lit() -> bool:
                tags = shown(sims)
                return all(
                    tags[location(n)]["qty"] == qty_of(n, 0) and tags[location(n)]["on"]
                    for n in range(CONTROLLERS * TAGS)
                )

            await until(first_round_lit, 60, "every tag shows its first task")
            assert running.floor.devices["atop-3"].counts["restored"] > 0  # type: ignore[attr-defined]

            # One press per tag; every tenth a short with the quantity set on the tag;
            # controller 5 killed half-way and restarted.
            expected: dict[str, tuple[str, int]] = {}
            for n in range(CONTROLLERS * TAGS):
                sim = sims[f"atop-{n // TAGS + 1}"]
                if n == 500:
                    # Presses made so far handled (their tags show the next task), then
                    # the controller dies and comes back.
                    await until(
                        lambda: all(
                            shown(sims)[location(m)]["qty"] == qty_of(m, 1) for m in range(500)
                        ),
                        30,
                        "the first 500 presses handled",
                    )
                    await sim.control("kill", {})
                    await sim.control("restart", {})

                    def restored(upto: int = n) -> bool:
                        tags = shown(sims)
                        return all(
                            tags[location(m)]["qty"] == qty_of(m, 1 if m < upto else 0)
                            for m in range(2 * TAGS, 3 * TAGS)
                        )

                    await until(restored, 30, "controller 3's tags restored")
                q = qty_of(n, 0)
                if n % 10 == 3:
                    args = {"slot": location(n), "button": "short", "qty": q - 1}
                    expected[f"t0-{n:04}"] = ("short", q - 1)
                else:
                    args = {"slot": location(n)}
                    expected[f"t0-{n:04}"] = ("picked", q)
                assert (await sim.control("press", args))["sent"]

            got: collections.Counter[str] = collections.Counter()
            picked: dict[str, tuple[str, int]] = {}
            async with asyncio.timeout(120):
                while len(picked) < len(expected):
                    event = await oms.next_event(60)
                    if event.name in ("picked", "short"):
                        body = event.body
                        task = body["task"] if isinstance(body, dict) else body.task  # type: ignore[attr-defined]
                        got[task] += 1
                        value = body["picked"] if isinstance(body, dict) else body.picked  # type: ignore[attr-defined]
                        picked[task] = (event.name, value)
            assert picked == expected
            assert max(got.values()) == 1  # nothing doubled
            assert len(running.node.workflow.tasks) == len(tasks) - len(expected)  # type: ignore[attr-defined]

            def second_round_lit() -> bool:
                tags = shown(sims)
                return all(
                    tags[location(n)]["qty"] == qty_of(n, 1) for n in range(CONTROLLERS * TAGS)
                )

            await until(second_round_lit, 60, "every tag shows its next task")

            # A tag pulled: the birth lists it; plugged back: it shows its task again.
            await sims["atop-2"].control("pull", {"slot": "A-0250"})

            def parts() -> dict[str, Any]:
                state = oms.nodes[NODE].state
                return {} if state is None else state.devices["atop-2"].parts

            await until(lambda: "A-0250" in parts(), 20, "the pulled tag in the birth")
            assert parts()["A-0250"].status == "unavailable"
            # ... and so do the zone screen, /metrics and the site dashboard.
            screen = node_state(running.node, running.floor)["devices"]["atop-2"]
            assert screen["status"] == "ok" and screen["detail"] == "1 of 200 tags down"
            assert screen["parts"]["A-0250"]["status"] == "unavailable"
            metrics = render(node_families(running.node, running.floor)).decode()
            assert (
                'zone_device_part_down{device="atop-2",part="A-0250",status="unavailable"} 1.0'
                in metrics
            )
            assert 'zone_device_bus_total{count="frames_out",device="atop-1"}' in metrics
            site = SiteView(oms).snapshot()
            (row,) = [r for r in site["nodes"] if r["node"] == NODE]
            (atop2,) = [d for d in row["devices"] if d["name"] == "atop-2"]
            assert "A-0250" in atop2["parts"] and row["devices_ok"] is False
            await sims["atop-2"].control("plug", {"slot": "A-0250"})
            await until(lambda: "A-0250" not in parts(), 20, "the tag back in the birth")
            await until(lambda: shown(sims)["A-0250"]["qty"] == qty_of(249, 1), 20, "re-lit")

            # Garbage, and a confirm from tag 230 which no slot owns: counted, ignored.
            before = running.node.stats["inputs"]
            open_lines = len(running.node.workflow.tasks)  # type: ignore[attr-defined]
            for kind in ("random", "bad_length", "unknown_sub", "orphan", "truncated"):
                await sims["atop-4"].control("garbage", {"kind": kind, "tag": 230})
            counts = running.floor.devices["atop-4"].counts  # type: ignore[attr-defined]
            await until(lambda: counts["bad_truncated"] >= 1, 10, "garbage counted")
            assert counts["bad_bad_length"] == counts["bad_unknown_sub"] == 1
            assert counts["bad_unknown_tag"] == 1 and counts["bad_garbage"] >= 1
            await sims["atop-4"].control("press", {"slot": "A-0607"})  # the stream is in step
            await until(lambda: running.node.stats["inputs"] == before + 1, 10, "a real press")
            assert len(running.node.workflow.tasks) == open_lines - 1  # type: ignore[attr-defined]
            event = await oms.next_event(20)
            while event.name not in ("picked", "short"):
                event = await oms.next_event(20)
            assert event.name == "picked" and event.body.task == "t1-0606"  # type: ignore[union-attr]

    asyncio.run(scenario())
