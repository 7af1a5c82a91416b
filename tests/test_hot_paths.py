"""The shortcuts taken on the node's hot paths give exactly what the plain ways give."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig
from agent.link.transport import MqttTransport, Subscription
from agent.oms.demo.broker import LocalBroker
from agent.store import Store, StoredTask, Unit
from agent.wire.messages import CancelCommand, Envelope, PickCommand, PickTask, WaveCommand
from agent.workflows.base import Step
from agent.workflows.picking import Line, PickingWorkflow
from devices.events import Button, ButtonPress

ENV = Envelope(v=1, id="c1", ts=0, body={})
SLOTS = ["A1", "A2", "A3"]


def _brute_next(w: PickingWorkflow, location: str) -> Line | None:
    lines = [line for line in w.tasks.values() if line.location == location and line.released]
    return min(lines, key=lambda t: (t.priority, t.release, t.arrival), default=None)


def test_the_line_a_slot_shows_is_the_most_urgent_after_any_sequence_of_changes() -> None:
    rng = random.Random(7)
    w = PickingWorkflow(SLOTS)
    n = 0
    for _ in range(600):
        step = Step()
        roll = rng.random()
        if roll < 0.45:
            tasks = []
            for _ in range(rng.randint(1, 4)):
                n += 1
                wave = rng.choice([None, "w1", "w2"])
                tasks.append(
                    PickTask(
                        task=f"t{n}",
                        order=f"o{n % 5}",
                        location=rng.choice(SLOTS),
                        sku="s",
                        qty=2,
                        wave=wave,
                        priority=rng.randint(0, 9),
                    )
                )
            w.on_command("pick", ENV, PickCommand(tasks=tasks), step, 1)
        elif roll < 0.55:
            name = rng.choice(["wave_begin", "wave_release"])
            w.on_command(name, ENV, WaveCommand(wave=rng.choice(["w1", "w2"])), step, 1)
        elif roll < 0.65 and w.tasks:
            victim = rng.choice(sorted(w.tasks))
            w.on_command("cancel", ENV, CancelCommand(tasks=[victim]), step, 1)
        else:
            w.on_input(ButtonPress("shelf", rng.choice(SLOTS), Button.CONFIRM), step, 2)
        for location in SLOTS:
            assert w._next_for(location) is _brute_next(w, location)
            shown = w.lit.get(location)
            best = _brute_next(w, location)
            assert shown == (best.task if best is not None else None)


def _line(**kw: Any) -> Line:
    fields: dict[str, Any] = {
        "task": "t1",
        "order": "o1",
        "location": "A1",
        "sku": "S1",
        "qty": 3,
        "barcodes": ("04000000000001", "X"),
        "wave": "w1",
        "container": "TOTE-1",
        "priority": 2,
        "express": True,
        "deadline": 99,
        "description": "Widget",
        "arrival": 4,
        "release": 7,
        "lit_at": 11,
        "picked": 1,
        "reason": "damaged",
        "picker": "ann",
        "colour": 3,
    }
    fields.update(kw)
    return Line(**fields)


def test_a_line_comes_back_from_the_store_as_it_went_in(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    lines = [_line(), _line(task="t2", wave=None, barcodes=(), lit_at=None, picked=None)]
    unit = Unit()
    for line in lines:
        unit.put_task(line.stored())
    store.commit(unit)
    rows = store.tasks()
    assert [Line.from_stored(row) for row in rows] == lines
    assert rows[0] == StoredTask("t1", "pick", "w1", rows[0].data)


# --- transport --------------------------------------------------------------------------


def test_in_flight_slots_go_in_turn_and_a_cancelled_waiter_passes_its_slot_on() -> None:
    from agent.link.transport import _Slots

    async def scenario() -> None:
        slots = _Slots(1)
        assert slots.take_nowait() is True
        assert slots.take_nowait() is False
        order: list[str] = []

        async def taker(name: str) -> None:
            await slots.take()
            order.append(name)

        first = asyncio.create_task(taker("first"))
        cancelled = asyncio.create_task(taker("cancelled"))
        last = asyncio.create_task(taker("last"))
        await asyncio.sleep(0)
        slots.give()  # to "first"
        assert slots.take_nowait() is False  # others wait: no overtaking
        await first
        slots.give()  # handed to "cancelled"...
        cancelled.cancel()  # ...which is cancelled before it runs: "last" gets it
        await asyncio.gather(cancelled, return_exceptions=True)
        await last
        assert order == ["first", "last"]
        assert slots.free == 0
        slots.give()
        assert slots.free == 1 and slots.take_nowait() is True

    asyncio.run(scenario())


def test_a_failing_message_handler_loses_that_message_only_and_publishes_are_counted(
    broker: LocalBroker,
) -> None:
    seen: list[bytes] = []

    def handle(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise RuntimeError("a bug in the handler")
        seen.append(payload)

    async def scenario() -> None:
        config = BrokerConfig(urls=[broker.url], backoff_initial_s=0.05, backoff_max_s=0.1)
        transport = MqttTransport(
            config, client_id="hot-1", subscriptions=[Subscription("t/#")], on_message=handle
        )
        runner = asyncio.create_task(transport.run())
        try:
            await asyncio.wait_for(transport.connected.wait(), 10)
            for payload in (b"one", b"bad", b"two"):
                await transport.publish("t/x", payload)
            assert transport.publish_nowait("t/x", b"three") is True
            async with asyncio.timeout(10):
                while len(seen) < 3:
                    await asyncio.sleep(0.01)
                await transport.drain()
            assert seen == [b"one", b"two", b"three"]
            assert transport.connected.is_set()
            assert transport._slots.free == config.max_inflight  # every PUBACK came back
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        assert transport.publish_nowait("t/x", b"four") is False  # not connected

    asyncio.run(scenario())


def test_lines_share_the_strings_many_lines_repeat() -> None:
    import msgpack

    raw = [
        {
            "task": f"t{i}",
            "order": "ORDER-7",
            "location": "A1",
            "sku": f"S{i}",
            "qty": 1,
            "wave": "W-1",
            "container": "TOTE-9",
            "description": "Widget, blue",
        }
        for i in range(2)
    ]
    # Decoded from bytes, as the node gets them: equal strings, distinct objects.
    tasks = [PickTask.model_validate(msgpack.unpackb(msgpack.packb(t))) for t in raw]
    assert tasks[0].order is not tasks[1].order
    w = PickingWorkflow(SLOTS)
    w.on_command("pick", ENV, PickCommand(tasks=tasks), Step(), 1)
    a, b = w.tasks["t0"], w.tasks["t1"]
    for name in ("order", "location", "wave", "container", "description"):
        assert getattr(a, name) is getattr(b, name), name
    restored = [Line.from_stored(line.stored()) for line in (a, b)]
    assert restored == [a, b]
    assert restored[0].order is restored[1].order


def test_publishes_bigger_than_the_socket_takes_at_once_all_arrive_in_order(
    broker: LocalBroker,
) -> None:
    got: list[bytes] = []

    async def scenario() -> None:
        config = BrokerConfig(urls=[broker.url], backoff_initial_s=0.05, backoff_max_s=0.1)
        receiver = MqttTransport(
            config,
            client_id="hot-rx",
            subscriptions=[Subscription("big/#")],
            on_message=lambda _t, p: got.append(p[:8]),
        )
        sender = MqttTransport(config, client_id="hot-tx", subscriptions=[], on_message=print)
        runners = [asyncio.create_task(t.run()) for t in (receiver, sender)]
        try:
            for t in (receiver, sender):
                await asyncio.wait_for(t.connected.wait(), 10)
            # 60 x 1 MB at once: far more than a loopback socket buffer holds, so paho's
            # writes come back short and the rest waits for writability.
            for i in range(60):
                await sender.publish("big/x", f"{i:08d}".encode() + bytes(1_000_000))
            async with asyncio.timeout(30):
                while len(got) < 60:
                    await asyncio.sleep(0.01)
                await sender.drain(timeout=10)
            assert got == [f"{i:08d}".encode() for i in range(60)]
            assert sender._slots.free == config.max_inflight
        finally:
            for r in runners:
                r.cancel()
            await asyncio.gather(*runners, return_exceptions=True)

    asyncio.run(scenario())
