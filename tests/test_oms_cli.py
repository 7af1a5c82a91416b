"""``zone-agent oms``: dispatch an order file, record events, compute KPIs; the KPI maths."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.link.settings import BrokerConfig
from agent.oms import OmsClient
from agent.oms.demo.broker import LocalBroker
from agent.oms.kpi import Kpis, percentile
from devices.events import Button, ButtonPress
from tests.harness import node_file, node_in_process

ORDERS = Path(__file__).resolve().parent.parent / "examples" / "orders.csv"


def _picked(
    task: str, order: str, lit: int, done: int, name: str = "picked", picked: int = 1
) -> tuple:
    body = {
        "task": task,
        "order": order,
        "qty": 1,
        "picked": picked,
        "lit_at": lit,
        "confirmed_at": done,
    }
    return ("z", name, body)


def test_kpi_definitions() -> None:
    kpis = Kpis()
    for event in [
        _picked("t1", "o1", 0, 1000),
        _picked("t2", "o1", 0, 2000),
        ("z", "misscan", {"task": "t3", "code": "X"}),
        _picked("t3", "o2", 1000, 3000),
        _picked("t4", "o3", 2000, 3_600_000, name="short", picked=0),
        ("z", "counters", {"counts": {"scans": 10}}),
        ("p", "weighed", {"order": "o1", "verdict": "pass"}),
        ("p", "weighed", {"order": "o2", "verdict": "over"}),
        ("p", "weighed", {"order": "o2", "verdict": "pass"}),  # re-weighed: still failed once
        ("p", "packed", {"order": "o1", "labelled_at": 4000}),
    ]:
        kpis.add(*event)
    rows = {name: value for name, value, _ in kpis.table()}
    assert rows["lines picked"] == "4"
    assert rows["picks per hour"] == "4"  # 4 lines over exactly one hour
    assert rows["line pick accuracy"] == "50.00 %"  # t3 mis-scanned, t4 short
    assert rows["order pick accuracy"] == "33.33 %"  # only o1 all right
    assert rows["short-pick rate"] == "25.00 %"
    assert rows["mis-scan rate"] == "10.00 %"
    assert rows["check-weigh failure rate"] == "50.00 %"
    assert rows["orders packed"] == "1"
    assert rows["order lead time median"] == "4.0 s"  # o1 4 s (label), o2 2 s, o3 1 h
    assert percentile([1, 2, 3, 4, 100], 0.95) == 100


def test_kpis_of_the_dock_and_returns() -> None:
    kpis = Kpis()
    for event in [
        _picked("t1", "o1", 0, 1000),
        _picked("t2", "o2", 500, 2000),
        _picked("t3", "o3", 1000, 3000),
        _picked("t4", "o4", 1000, 3000),
        ("p", "packed", {"order": "o1", "units": 4, "labelled_at": 4000}),
        ("p", "packed", {"order": "o2", "units": 3, "labelled_at": 5000}),
        ("p", "packed", {"order": "o2", "units": 3, "labelled_at": 5000}),  # counted once
        ("p", "packed", {"order": "o3", "units": 2, "labelled_at": 5000}),
        ("p", "packed", {"order": "o4", "units": 1, "labelled_at": 5000}),
        ("d", "loaded", {"order": "o1", "late": False}),
        ("d", "loaded", {"order": "o2", "late": True}),
        ("d", "shipped", {"order": "o1", "at": 10_000}),
        ("d", "shipped", {"order": "o2", "at": 30_500}),
        ("r", "return_received", {"order": "o1", "reason": "size_or_fit"}),
        ("r", "return_received", {"order": "o1", "reason": "defective"}),
        ("r", "return_received", {"order": "o2", "reason": "wrong_item_sent"}),
        ("r", "return_received", {"order": "o2", "reason": "wrong_item_sent"}),  # one order
        ("r", "return_received", {"order": None, "reason": "wrong_item_sent"}),  # unexpected
    ]:
        kpis.add(*event)
    rows = {name: value for name, value, _ in kpis.table()}
    assert rows["orders shipped"] == "2"
    assert rows["order lead time to shipped median"] == "20.0 s"  # 10 s and 30 s
    assert rows["order lead time to shipped p95"] == "30.0 s"
    assert rows["parcels loaded after cut-off"] == "1 of 2"
    assert rows["rate of return"] == "50.00 %"  # 5 units of 10 sold
    assert rows["rate of return: wrong_item_sent"] == "30.00 %"
    assert rows["rate of return: defective"] == "10.00 %"
    assert rows["rate of return: size_or_fit"] == "10.00 %"
    assert rows["picking accuracy (guide)"] == "75.00 %"  # (4 orders - o2) / 4
    empty = {name: value for name, value, _ in Kpis().table()}
    assert empty["rate of return"] == empty["parcels loaded after cut-off"] == "-"


def _picked_and_counted(record: Path, picks: int) -> bool:
    """Whether ``record`` holds ``picks`` picked events and, after them, counters saying 0 open."""
    if not record.exists():
        return False
    lines = record.read_text().split("\n")[:-1]  # whole lines only: the watch may be writing
    events = [json.loads(line) for line in lines]
    names = [e["name"] for e in events]
    if names.count("picked") < picks:
        return False
    last_pick = max(i for i, name in enumerate(names) if name == "picked")
    return any(
        e["name"] == "counters" and e["body"].get("open_lines") == 0 for e in events[last_pick:]
    )


@pytest.mark.broker
def test_dispatch_record_and_kpi_end_to_end(tmp_path: Path, broker: LocalBroker) -> None:
    record = tmp_path / "events.jsonl"
    table = ""

    async def scenario() -> None:
        nonlocal table
        path = node_file(tmp_path, broker, extra="[settings]\ncounters_every_s = 1")
        async with node_in_process(path) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            cli = [sys.executable, "-m", "agent.cli", "oms"]
            # The watch runs until the picks and the counters after them are recorded (then
            # SIGINT, its Ctrl-C); --seconds only bounds it. A fixed 6 s ran out under load
            # before the events reached it, and its table showed no counters yet; and a
            # watch that subscribed after the dispatch had acknowledged waited for ever.
            watch = await asyncio.create_subprocess_exec(
                *cli,
                "watch",
                "--broker",
                broker.url,
                "--site",
                "dc1",
                "--seconds",
                "120",
                "--record",
                str(record),
                stdout=subprocess.PIPE,
                env={**os.environ, "COLUMNS": "200"},
            )
            try:
                # Dispatch once the watch follows the node (its first event recorded): an
                # OMS that comes later gets only what nobody acknowledged before its birth.
                async with asyncio.timeout(60):
                    while not (record.exists() and record.read_text().endswith("\n")):
                        assert watch.returncode is None, "the watch ended before any event"
                        await asyncio.sleep(0.1)
                done = await asyncio.create_subprocess_exec(
                    *cli,
                    "dispatch",
                    str(ORDERS),
                    "--broker",
                    broker.url,
                    "--site",
                    "dc1",
                    "--wait",
                    "1",
                    "--no-follow",
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                out, err = await done.communicate()
                assert done.returncode == 1  # one line's location belongs to no node
                # EBY-3001 is not sent at all: half an order on the floor helps nobody
                assert b"zone-a1: 3 lines in wave W1, 0 refused" in out
                assert b"order EBY-3001 not sent: no online pick node owns SKU-999@Z9" in err
                for slot in ("A1", "A2", "A3"):
                    running.node.submit_input(ButtonPress("shelf", slot, Button.CONFIRM))
                    await asyncio.sleep(0.1)
                try:
                    async with asyncio.timeout(90):
                        while not _picked_and_counted(record, picks=3):
                            assert watch.returncode is None, "the watch ended before the picks"
                            await asyncio.sleep(0.2)
                except TimeoutError:
                    text = record.read_text() if record.exists() else ""
                    seen = [line[:120] for line in text.splitlines()]
                    pytest.fail(f"no 3 picks then 0 open lines recorded in 90 s: {seen}")
                watch.send_signal(signal.SIGINT)
                table = (await watch.communicate())[0].decode()
            finally:
                if watch.returncode is None:
                    watch.kill()
                    await watch.wait()
            assert watch.returncode == 0

    asyncio.run(scenario())
    # The watch's last table: zone-a1 online with 0 open lines (its latest counters).
    header = next(line for line in table.splitlines() if "last seq" in line)
    row = [line for line in table.splitlines() if "zone-a1" in line][-1]
    cells = dict(
        zip(
            [c.strip() for c in header.split("┃")],
            [c.strip() for c in row.split("│")],
            strict=True,
        )
    )
    assert cells["state"] == "online" and cells["open"] == "0", table
    names = [json.loads(line)["name"] for line in record.read_text().splitlines()]
    assert names.count("picked") == 3
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "oms", "kpi", str(record), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    kpis = json.loads(out.stdout)
    assert kpis["lines picked"] == "3" and kpis["short-pick rate"] == "0.00 %"


@pytest.mark.broker
def test_an_oms_that_joins_after_another_acknowledged_gets_the_later_events(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """Events another OMS acknowledged are gone from the node: a client that follows the
    node later (``oms watch`` beside the site service) skips them, not waits for them for
    ever (it delivered nothing at all, and ``oms watch`` showed no event)."""

    async def scenario() -> tuple[int, list[int]]:
        path = node_file(tmp_path, broker, extra="[settings]\ncounters_every_s = 1")
        config = BrokerConfig(urls=[broker.url])
        async with node_in_process(path) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            async with OmsClient(config, "dc1", client_id="first") as first:
                await first.wait_connected()
                async with asyncio.timeout(30):
                    while (
                        first.nodes.get("zone-a1") is None or first.nodes["zone-a1"].delivered < 3
                    ):
                        await first.events.get()
                    # ... and the node has taken the acknowledgement.
                    while running.node.store.store.acked_seq < 3:
                        await asyncio.sleep(0.05)
            acked = running.node.store.store.acked_seq
            async with OmsClient(config, "dc1", client_id="later") as later:
                await later.wait_connected()
                async with asyncio.timeout(30):
                    seqs = [(await later.events.get()).envelope.seq or 0 for _ in range(3)]
        return acked, seqs

    acked, seqs = asyncio.run(scenario())
    assert seqs == list(range(seqs[0], seqs[0] + 3)) and seqs[0] > acked >= 3


@pytest.mark.broker
def test_dispatch_follows_orders_until_picked_and_records(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """Without a put wall or a pack station, dispatch follows each order to ``picked``."""
    orders = tmp_path / "orders.json"
    orders.write_text(
        json.dumps(
            {
                "catalogue": {
                    "MUG": {"location": "A1", "barcodes": ["4012345000009"]},
                    "TEE": {"location": "A2", "barcodes": ["4012345000108"]},
                },
                "orders": [
                    {"order": "O1", "lines": [{"sku": "MUG", "qty": 1}, {"sku": "TEE", "qty": 2}]},
                    {"order": "O2", "express": True, "lines": [{"sku": "TEE", "qty": 1}]},
                ],
            }
        )
    )
    record = tmp_path / "events.jsonl"

    async def scenario() -> tuple[int, str]:
        async with node_in_process(node_file(tmp_path, broker)) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            dispatch = await asyncio.create_subprocess_exec(
                *[sys.executable, "-m", "agent.cli", "oms", "dispatch", str(orders)],
                *["--broker", broker.url, "--site", "dc1", "--wait", "1", "--timeout", "60"],
                *["--record", str(record)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            # Three lines: A1 once, A2 twice (the express O2 lights first). Wait for both
            # slots to light, i.e. for wave_release: a press before it finds nothing lit.
            workflow = running.node.workflow
            while len(workflow.tasks) < 3 or len(workflow.lit) < 2:  # type: ignore[attr-defined]
                await asyncio.sleep(0.05)
            for slot in ("A1", "A2", "A2"):
                running.node.submit_input(ButtonPress("shelf", slot, Button.CONFIRM))
                await asyncio.sleep(0.4)  # over the shelf's double-press guard
            out, _ = await asyncio.wait_for(dispatch.communicate(), 30)
            assert dispatch.returncode is not None
            return dispatch.returncode, out.decode()

    code, out = asyncio.run(scenario())
    assert code == 0, out
    assert "zone-a1: 3 lines in wave W1, 0 refused" in out
    assert "O1: picked" in out and "O2: picked" in out
    picked = [json.loads(line) for line in record.read_text().splitlines()]
    tasks = sorted(e["body"]["task"] for e in picked if e["name"] == "picked")
    assert tasks == ["O1-1", "O1-2", "O2-1"]


@pytest.mark.broker
def test_send_one_command_checked_first_and_its_reply(tmp_path: Path, broker: LocalBroker) -> None:
    """``oms send``: the reply as JSON; 0 only when all was accepted; bad bodies never leave."""
    cli = [sys.executable, "-m", "agent.cli", "oms", "send", "--broker", broker.url]

    async def send(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *cli,
            *args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    def task(task_id: str, location: str) -> dict[str, object]:
        return {"task": task_id, "order": "o1", "location": location, "sku": "S", "qty": 1}

    async def scenario() -> None:
        async with node_in_process(node_file(tmp_path, broker)) as running:
            await asyncio.wait_for(running.node.online.wait(), 10)
            good = json.dumps({"tasks": [task("t1", "A1")]})
            code, out, err = await send("zone-a1", "pick", "--site", "dc1", good)
            assert (code, json.loads(out)["status"]) == (0, "accepted"), err
            assert err == ""  # no link chatter around the one reply line
            # From a file, one task the node does not own: the command is accepted, the
            # item refused, and the exit code says so.
            body = tmp_path / "pick.json"
            body.write_text(json.dumps({"tasks": [task("t2", "A2"), task("t3", "Z9")]}))
            code, out, _ = await send("zone-a1", "pick", "--site", "dc1", f"@{body}")
            reply = json.loads(out)
            assert (code, reply["status"]) == (1, "accepted")
            assert [(i["id"], i["status"]) for i in reply["items"]] == [("t3", "rejected")]
            # Bodies the command cannot take are refused before anything is sent.
            code, _, err = await send("zone-a1", "pick", "--site", "dc1", "-", stdin=b"{}")
            assert (code, err) == (2, "zone-agent: pick: tasks: Field required\n")
            code, _, err = await send("zone-a1", "pick", "--site", "dc1", "{tasks")
            assert code == 2 and err.startswith("zone-agent: pick: body: not JSON: ")
            code, _, err = await send("zone-a1", "launch", "--site", "dc1", "{}")
            assert code == 2 and "unknown command 'launch'" in err
            code, _, err = await send("nobody", "pick", "--site", "dc1", "--timeout", "0.5", good)
            assert code == 1 and "no reply from dc1/nobody within 0.5 s" in err

    asyncio.run(scenario())


def test_dispatch_cutoff_option_is_today_at_that_local_time() -> None:
    import argparse
    import datetime as dt

    from agent.oms.commands import _cutoff

    now = dt.datetime(2026, 12, 3, 11, 0).timestamp()
    carrier, at = _cutoff("Royal Mail=17:30", now)
    assert carrier == "Royal Mail"
    assert dt.datetime.fromtimestamp(at / 1000) == dt.datetime(2026, 12, 3, 17, 30)
    for bad in ("DPD", "DPD=25:00", "=17:30", "DPD=5pm"):
        with pytest.raises(argparse.ArgumentTypeError, match="CARRIER=HH:MM"):
            _cutoff(bad, now)
