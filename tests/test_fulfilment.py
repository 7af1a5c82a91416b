"""OMS fulfilment: the pick -> put wall -> pack state machine driven directly, order files."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.errors import ConfigError
from agent.oms.fulfilment import Fulfilment, OrderFile, Send, read_order_file
from agent.wire.messages import (
    CancelCommand,
    ItemResult,
    PickCommand,
    PickTask,
    Reply,
    State,
    WaveCommand,
)
from agent.workflows.dispatch import LoadCommand
from agent.workflows.packing import CarrierLabel, OwnLabel, PackCommand, PackLine, ShipTo
from agent.workflows.picking import Picked
from agent.workflows.putwall import PutCommand, PutItem, PutOrder
from agent.workflows.returns import RmaCommand

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MUG_CODES = ["4012345000009"]
TEE_CODES = ["4012345000108", "TEE-CODE"]
BOOK_CODES = ["4012345000405"]
CATALOGUE: dict[str, Any] = {
    "MUG": {
        "location": "A1",
        "barcodes": MUG_CODES,
        "description": "Ceramic mug",
        "unit_weight_g": 380,
        "dims_mm": [120, 95, 100],
        "fragile": True,
    },
    "TEE": {
        "location": "A2",
        "barcodes": TEE_CODES,
        "description": "T-shirt",
        "unit_weight_g": 180,
        "dims_mm": [300, 250, 20],
    },
    "BOOK": {"location": "B1", "barcodes": BOOK_CODES, "unit_weight_g": 310},
}
ZPL = "^XA^FO50,50^A0N,60,60^FDPARCELFORCE 48^FS^XZ"


def order(order_id: str, *lines: tuple[str, int], **extra: Any) -> dict[str, Any]:
    return {"order": order_id, "lines": [{"sku": s, "qty": q} for s, q in lines], **extra}


def orders(*items: dict[str, Any]) -> OrderFile:
    return OrderFile.model_validate({"catalogue": CATALOGUE, "orders": list(items)})


def pick(*locations: str, online: bool = True) -> State:
    return State(online=online, role="pick", locations=list(locations))


def wall(*slots: str, online: bool = True) -> State:
    return State(online=online, role="put_wall", locations=list(slots))


def station(online: bool = True) -> State:
    return State(online=online, role="pack")


SITE = {
    "pick-a": pick("A1", "A2"),
    "pick-b": pick("B1"),
    "wall": wall("W1", "W2"),
    "pack": station(),
}


def started(site: dict[str, State], *items: dict[str, Any], **kwargs: Any) -> Fulfilment:
    f = Fulfilment(orders(*items), **kwargs)
    f.plan(site)
    return f


def picked(f: Fulfilment, task: str, n: int) -> list[Send]:
    return f.on_event("pick-a", "picked", {"task": task, "picked": n})


def short(f: Fulfilment, task: str, n: int) -> list[Send]:
    return f.on_event("pick-a", "short", {"task": task, "picked": n, "reason": "empty"})


def complete(f: Fulfilment, order_id: str, slot: str = "W1") -> list[Send]:
    return f.on_event("wall", "order_complete", {"order": order_id, "slot": slot, "at": 1})


def put(order_id: str, slot: str, *items: tuple[str, int, list[str]], node: str = "wall") -> Send:
    body = PutCommand(
        orders=[
            PutOrder(
                order=order_id,
                slot=slot,
                items=[PutItem(sku=s, qty=q, barcodes=b) for s, q, b in items],
            )
        ]
    )
    return Send(node, "put", body, order_id)


def pack_lines(sends: list[Send]) -> list[tuple[str, int]]:
    (send,) = sends
    assert isinstance(send.body, PackCommand)
    return [(line.sku, line.qty) for line in send.body.lines]


def tasks_of(send: Send) -> list[tuple[str, str, str, str, int]]:
    assert isinstance(send.body, PickCommand)
    return [(t.task, t.order, t.location, t.sku, t.qty) for t in send.body.tasks]


# --- plan --------------------------------------------------------------------------------


def test_plan_sends_one_wave_per_node_to_the_owner_of_each_location() -> None:
    f = Fulfilment(orders(order("O1", ("MUG", 2), ("BOOK", 1)), order("O2", ("TEE", 1))), wave="W7")
    sends = f.plan(SITE)
    assert [(s.node, s.command, s.order) for s in sends] == [
        ("pick-a", "wave_begin", None),
        ("pick-a", "pick", None),
        ("pick-a", "wave_release", None),
        ("pick-b", "wave_begin", None),
        ("pick-b", "pick", None),
        ("pick-b", "wave_release", None),
    ]
    for i in (0, 2, 3, 5):
        assert sends[i].body == WaveCommand(wave="W7")
    assert tasks_of(sends[1]) == [("O1-1", "O1", "A1", "MUG", 2), ("O2-1", "O2", "A2", "TEE", 1)]
    assert tasks_of(sends[4]) == [("O1-2", "O1", "B1", "BOOK", 1)]
    assert f.orders["O1"].open_tasks == {"O1-1", "O1-2"}
    assert f.lines() == (0, 3)
    assert f.counts() == {"picking": 2}
    assert not f.done()


def test_plan_tasks_carry_catalogue_codes_and_express_priority() -> None:
    f = Fulfilment(
        orders(order("N1", ("MUG", 1)), order("E1", ("TEE", 3), express=True, tote="T-9"))
    )
    (_, batch, _) = f.plan({"pick-a": pick("A1", "A2")})
    assert isinstance(batch.body, PickCommand)
    assert list(batch.body.tasks) == [
        PickTask(
            task="N1-1",
            order="N1",
            location="A1",
            sku="MUG",
            qty=1,
            barcodes=MUG_CODES,
            wave="W1",
            container=None,
            priority=5,
            express=False,
            description="Ceramic mug",
        ),
        PickTask(
            task="E1-1",
            order="E1",
            location="A2",
            sku="TEE",
            qty=3,
            barcodes=TEE_CODES,
            wave="W1",
            container="T-9",
            priority=2,
            express=True,
            description="T-shirt",
        ),
    ]


def test_plan_splits_a_large_wave_into_batches_of_500() -> None:
    f = Fulfilment(orders(*(order(f"O{n}", ("MUG", 1)) for n in range(501))))
    sends = f.plan({"pick-a": pick("A1")})
    assert [s.command for s in sends] == ["wave_begin", "pick", "pick", "wave_release"]
    assert [len(tasks_of(s)) for s in sends[1:3]] == [500, 1]
    assert tasks_of(sends[2]) == [("O500-1", "O500", "A1", "MUG", 1)]


def test_an_order_with_a_line_nobody_owns_is_not_sent_at_all() -> None:
    stray = {"sku": "X9", "qty": 1, "location": "Z9", "barcodes": ["X9"]}
    f = Fulfilment(
        orders(
            order("O1", ("MUG", 1), ("BOOK", 2)),
            {"order": "O2", "lines": [{"sku": "TEE", "qty": 1}, stray]},
            order("O3", ("TEE", 1)),
        )
    )
    # pick-b owns B1 but is offline: BOOK cannot be picked.
    sends = f.plan({"pick-a": pick("A1", "A2"), "pick-b": pick("B1", online=False)})
    assert [(s.node, s.command) for s in sends] == [
        ("pick-a", "wave_begin"),
        ("pick-a", "pick"),
        ("pick-a", "wave_release"),
    ]
    assert tasks_of(sends[1]) == [("O3-1", "O3", "A2", "TEE", 1)]
    assert f.orders["O1"].status == "unrouted"
    assert f.orders["O1"].detail == "no online pick node owns BOOK@B1"
    assert f.orders["O2"].status == "unrouted"
    assert f.orders["O2"].detail == "no online pick node owns X9@Z9"
    assert f.orders["O1"].open_tasks == set()
    assert f.lines() == (0, 1)
    assert f.counts() == {"unrouted": 2, "picking": 1}


def test_offline_nodes_are_ignored() -> None:
    site = {
        "pick-0": pick("A1", "A2", online=False),  # sorts first, would win the location
        "pick-a": pick("A1", "A2"),
        "wall": wall("W1", online=False),
        "pack": station(online=False),
    }
    f = Fulfilment(orders(order("O1", ("MUG", 1), ("TEE", 1))))
    sends = f.plan(site)
    assert {s.node for s in sends} == {"pick-a"}
    assert picked(f, "O1-1", 1) == []
    # No wall and no station online: the order ends once picked.
    assert picked(f, "O1-2", 1) == []
    assert f.orders["O1"].status == "picked"
    assert f.done()


# --- pick -> wall -> pack ----------------------------------------------------------------


def test_a_single_line_order_goes_to_pack_as_soon_as_it_is_confirmed() -> None:
    f = started(SITE, order("O1", ("MUG", 2)))
    event = Picked(
        task="O1-1", order="O1", location="A1", sku="MUG", qty=2, picked=2, confirmed_at=5
    )
    sends = f.on_event("pick-a", "picked", event)  # a model body works as well as a dict
    assert [(s.node, s.command, s.order) for s in sends] == [("pack", "pack", "O1")]
    assert pack_lines(sends) == [("MUG", 2)]
    assert f.orders["O1"].status == "packing"
    assert f.orders["O1"].station == "pack"
    assert f.orders["O1"].wall is None
    assert f.lines() == (1, 1)


def test_a_multi_line_order_waits_for_every_line_then_goes_to_a_cubby() -> None:
    f = started(SITE, order("O1", ("MUG", 2), ("TEE", 1), ("BOOK", 3)))
    assert picked(f, "O1-1", 2) == []
    assert f.orders["O1"].status == "picking"
    assert short(f, "O1-2", 0) == []  # nothing there: left off the put
    assert f.orders["O1"].status == "picking"
    sends = short(f, "O1-3", 1)  # one of three: the put carries one
    assert sends == [put("O1", "W1", ("MUG", 2, MUG_CODES), ("BOOK", 1, BOOK_CODES))]
    progress = f.orders["O1"]
    assert (progress.status, progress.wall, progress.slot) == ("at_wall", "wall", "W1")
    assert f.lines() == (3, 3)

    sends = complete(f, "O1")
    assert [(s.node, s.command, s.order) for s in sends] == [("pack", "pack", "O1")]
    assert pack_lines(sends) == [("MUG", 2), ("BOOK", 1)]
    assert (progress.status, progress.slot) == ("packing", None)


def test_with_every_cubby_taken_orders_wait_express_first() -> None:
    f = started(
        {"pick-a": pick("A1", "A2"), "wall": wall("W1"), "pack": station()},
        order("A", ("MUG", 1), ("TEE", 1)),
        order("B", ("MUG", 1), ("TEE", 1)),
        order("C", ("MUG", 1), ("TEE", 1), express=True),
    )
    picked(f, "A-1", 1)
    assert picked(f, "A-2", 1) == [put("A", "W1", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))]
    for o in ("B", "C"):
        picked(f, f"{o}-1", 1)
        assert picked(f, f"{o}-2", 1) == []
        assert f.orders[o].status == "waiting_for_cubby"
        assert f.orders[o].slot is None

    sends = complete(f, "A")
    # The cubby goes to the express order C, although B waited longer; A goes to pack.
    assert [(s.node, s.command, s.order) for s in sends] == [
        ("wall", "put", "C"),
        ("pack", "pack", "A"),
    ]
    assert sends[0] == put("C", "W1", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))
    assert f.counts() == {"packing": 1, "at_wall": 1, "waiting_for_cubby": 1}

    sends = complete(f, "C")
    assert [(s.node, s.command, s.order) for s in sends] == [
        ("wall", "put", "B"),
        ("pack", "pack", "C"),
    ]
    assert f.orders["B"].slot == "W1"
    assert complete(f, "B")[0].order == "B"
    assert f.counts() == {"packing": 3}


def test_orders_fill_every_free_cubby_before_waiting() -> None:
    f = started(
        SITE,
        order("A", ("MUG", 1), ("TEE", 1)),
        order("B", ("MUG", 1), ("TEE", 1)),
        order("C", ("MUG", 1), ("TEE", 1)),
    )
    slots = []
    for o in ("A", "B", "C"):
        picked(f, f"{o}-1", 1)
        slots.append([s.body.orders[0].slot for s in picked(f, f"{o}-2", 1)])  # type: ignore[union-attr]
    assert slots == [["W1"], ["W2"], []]
    assert complete(f, "B", "W2")[0] == put("C", "W2", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))


def test_order_complete_counts_only_for_an_order_at_the_wall() -> None:
    f = started(SITE, order("O1", ("MUG", 1), ("TEE", 1)))
    assert complete(f, "O1") == []  # still picking
    assert complete(f, "NOPE") == []
    assert f.orders["O1"].status == "picking"
    picked(f, "O1-1", 1)
    picked(f, "O1-2", 1)
    assert len(complete(f, "O1")) == 1
    assert complete(f, "O1") == []  # a second time: already packing
    assert f.orders["O1"].status == "packing"


# --- the pack command --------------------------------------------------------------------


def test_the_pack_command_carries_catalogue_facts_and_the_carrier_label() -> None:
    ship_to = {"name": "Amira Haddad", "address": ["14 Mill Lane"], "city": "Leeds"}
    f = started(
        {"pick-a": pick("A1", "A2"), "pack": station()},
        order("Z", ("MUG", 2), carrier_zpl=ZPL, tote="T-1"),
        order(
            "L1",
            ("TEE", 3),
            ("MUG", 1),
            express=True,
            ship_to=ship_to,
            carrier="DPD",
            service="Next day",
            gift_note="Happy birthday",
            bonus_item="Sample",
            packing_slip=True,
        ),
        order("L2", ("MUG", 1)),
        serial_start=41,
        company_prefix="4012345",
    )
    mug = PackLine(
        sku="MUG",
        qty=2,
        barcodes=MUG_CODES,
        unit_weight_g=380,
        dims_mm=(120, 95, 100),
        fragile=True,
        description="Ceramic mug",
    )
    (send,) = picked(f, "Z-1", 2)
    assert send.body == PackCommand(order="Z", tote="T-1", lines=[mug], carrier_zpl=ZPL.encode())
    assert isinstance(send.body, PackCommand)
    assert type(send.body.carrier_zpl) is bytes

    picked(f, "L1-1", 2)  # two of three T-shirts
    (send,) = picked(f, "L1-2", 1)
    assert send.body == PackCommand(
        order="L1",
        lines=[
            PackLine(
                sku="TEE",
                qty=2,
                barcodes=TEE_CODES,
                unit_weight_g=180,
                dims_mm=(300, 250, 20),
                description="T-shirt",
            ),
            mug.model_copy(update={"qty": 1}),
        ],
        express=True,
        gift_note="Happy birthday",
        bonus_item="Sample",
        packing_slip=True,
        label=OwnLabel(
            ship_to=ShipTo(name="Amira Haddad", address=["14 Mill Lane"], city="Leeds"),
            carrier="DPD",
            service="Next day",
            company_prefix="4012345",
            serial_reference="41",
        ),
    )

    (send,) = picked(f, "L2-1", 1)
    assert isinstance(send.body, PackCommand)
    assert send.body.carrier_zpl is None
    assert send.body.label == OwnLabel(
        ship_to=ShipTo(name="Order L2"),
        carrier="Standard",
        service="",
        company_prefix="4012345",
        serial_reference="42",  # the carrier label of Z took no serial
    )


def test_a_carrier_pdf_in_the_order_file_goes_in_the_pack_command() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 300 + b"\n%%EOF\n"  # 77 KB, binary
    entry = {"format": "pdf", "base64": base64.b64encode(pdf).decode()}
    f = started(
        {"pick-a": pick("A1", "A2"), "pack": station()}, order("P", ("MUG", 1), carrier_label=entry)
    )
    (send,) = picked(f, "P-1", 1)
    assert isinstance(send.body, PackCommand)
    assert send.body.carrier_label == CarrierLabel(format="pdf", data=pdf)
    assert (send.body.label, send.body.carrier_zpl) == (None, None)


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"format": "pdf", "base64": "bm90IGEgcGRm"}, "not a PDF"),
        ({"format": "png", "base64": "%%%%"}, "not base64"),
    ],
)
def test_a_bad_carrier_label_in_the_order_file_is_refused(
    entry: dict[str, str], words: str
) -> None:
    with pytest.raises(ValidationError, match=words):
        orders(order("P", ("MUG", 1), carrier_label=entry))


def test_the_least_loaded_pack_station_gets_the_order() -> None:
    site = {"pick-a": pick("A1"), "pack-1": station(), "pack-2": station()}
    f = started(site, *(order(f"O{n}", ("MUG", 1)) for n in range(1, 5)))
    assert picked(f, "O1-1", 1)[0].node == "pack-1"  # a tie: by name
    assert picked(f, "O2-1", 1)[0].node == "pack-2"
    assert f.on_event("pack-1", "packed", {"order": "O1"}) == []
    assert f.orders["O1"].status == "packed"
    assert picked(f, "O3-1", 1)[0].node == "pack-1"  # pack-1: 0 open, pack-2: 1
    assert picked(f, "O4-1", 1)[0].node == "pack-1"  # 1 and 1: by name
    assert [f.orders[f"O{n}"].station for n in range(1, 5)] == [
        "pack-1",
        "pack-2",
        "pack-1",
        "pack-1",
    ]


# --- how orders end ----------------------------------------------------------------------


def test_an_order_with_nothing_picked_is_unfulfilled_and_sends_nothing() -> None:
    f = started(SITE, order("M", ("MUG", 2), ("TEE", 1)), order("S", ("BOOK", 1)))
    assert short(f, "M-1", 0) == []
    assert short(f, "M-2", 0) == []
    assert f.on_event("pick-b", "short", {"task": "S-1", "picked": 0, "reason": "empty"}) == []
    for o in ("M", "S"):
        assert f.orders[o].status == "unfulfilled"
        assert f.orders[o].detail == "nothing picked: out of stock"
        assert f.orders[o].slot is None
    assert f.done()
    assert f.counts() == {"unfulfilled": 2}
    assert f.lines() == (3, 3)


def test_a_duplicate_confirmation_does_not_count_twice() -> None:
    f = started(SITE, order("O1", ("MUG", 2), ("TEE", 1)))
    assert picked(f, "O1-1", 2) == []
    assert picked(f, "O1-1", 2) == []  # sent again (the outbox resends until acked)
    assert f.lines() == (1, 2)
    assert f.orders["O1"].units() == 2
    assert picked(f, "O1-2", 1) == [put("O1", "W1", ("MUG", 2, MUG_CODES), ("TEE", 1, TEE_CODES))]
    assert picked(f, "O1-2", 1) == []  # after the put: still nothing new
    assert f.orders["O1"].units() == 3
    assert picked(f, "UNKNOWN-1", 1) == []


def test_an_expired_line_counts_as_nothing_picked() -> None:
    site = {"pick-a": pick("A1", "A2"), "pack": station()}
    f = started(site, order("O1", ("MUG", 2), ("TEE", 1)), order("O2", ("MUG", 1)))
    assert f.on_event("pick-a", "expired", {"task": "O1-1", "deadline": 1, "at": 2}) == []
    sends = picked(f, "O1-2", 1)
    assert pack_lines(sends) == [("TEE", 1)]
    assert f.on_event("pick-a", "expired", {"task": "O2-1", "deadline": 1, "at": 2}) == []
    assert f.orders["O2"].status == "unfulfilled"
    assert f.lines() == (3, 3)


def test_packed_ends_an_order_that_is_packing() -> None:
    f = started(SITE, order("O1", ("MUG", 1)), order("O2", ("TEE", 1)))
    assert f.on_event("pack", "packed", {"order": "O1"}) == []  # not at the station yet
    assert f.orders["O1"].status == "picking"
    picked(f, "O1-1", 1)
    picked(f, "O2-1", 1)
    assert f.on_event("pack", "packed", {"order": "O1"}) == []
    assert f.orders["O1"].status == "packed"
    assert not f.done()
    f.on_event("pack", "packed", {"order": "O2"})
    assert f.done()
    assert f.counts() == {"packed": 2}


def test_a_site_without_a_put_wall_packs_multi_line_orders_directly() -> None:
    f = started(
        {"pick-a": pick("A1", "A2"), "pick-b": pick("B1"), "pack": station()},
        order("O1", ("MUG", 2), ("TEE", 1), ("BOOK", 1)),
    )
    assert picked(f, "O1-1", 2) == []
    assert short(f, "O1-2", 0) == []
    sends = f.on_event("pick-b", "picked", {"task": "O1-3", "picked": 1})
    assert [(s.node, s.command, s.order) for s in sends] == [("pack", "pack", "O1")]
    assert pack_lines(sends) == [("MUG", 2), ("BOOK", 1)]
    assert f.orders["O1"].wall is None


def test_a_site_without_a_pack_station_ends_orders_picked() -> None:
    f = started(
        {"pick-a": pick("A1", "A2"), "wall": wall("W1")},
        order("O1", ("MUG", 1), ("TEE", 1)),
        order("O2", ("MUG", 1), ("TEE", 1)),
        order("O3", ("MUG", 1)),
    )
    assert picked(f, "O3-1", 1) == []
    assert f.orders["O3"].status == "picked"
    for o in ("O1", "O2"):
        picked(f, f"{o}-1", 1)
        picked(f, f"{o}-2", 1)
    assert f.counts() == {"picked": 1, "at_wall": 1, "waiting_for_cubby": 1}
    # The cubby of O1 goes to O2; O1 has no station to go to.
    assert complete(f, "O1") == [put("O2", "W1", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))]
    assert f.orders["O1"].status == "picked"
    assert not f.done()
    assert complete(f, "O2") == []
    assert f.done()
    assert f.counts() == {"picked": 3}
    assert f.lines() == (5, 5)


# --- replies -----------------------------------------------------------------------------


def pick_send(f: Fulfilment, node: str) -> Send:
    (send,) = [s for s in f.plan(SITE) if s.node == node and s.command == "pick"]
    return send


def test_a_refused_pick_item_ends_its_order_refused() -> None:
    f = Fulfilment(orders(order("O1", ("MUG", 1), ("BOOK", 1)), order("O2", ("TEE", 1))))
    send = pick_send(f, "pick-a")
    reply = Reply(
        cmd="c1",
        status="accepted",
        items=[
            ItemResult(id="O1-1", status="rejected", reason="unknown_location"),
            ItemResult(id="O2-1", status="accepted"),
        ],
    )
    # O1's other line is cancelled on its node: half an order helps nobody.
    assert f.on_reply(send, reply) == [
        Send("pick-b", "cancel", CancelCommand(tasks=["O1-2"]), "O1")
    ]
    assert f.orders["O1"].status == "refused"
    assert f.orders["O1"].detail == "pick-a refused O1-1: unknown_location"
    assert f.orders["O2"].status == "picking"
    assert f.lines() == (0, 1)  # O1's two lines are no longer counted
    # Confirmed anyway (the cancel crossed a pick): O1 stays refused.
    assert f.on_event("pick-b", "picked", {"task": "O1-2", "picked": 1}) == []
    assert f.orders["O1"].status == "refused"


def test_a_refused_pick_command_ends_every_order_in_it() -> None:
    f = Fulfilment(orders(order("O1", ("MUG", 1), ("BOOK", 1)), order("O2", ("TEE", 1))))
    send = pick_send(f, "pick-a")
    reply = Reply(cmd="c1", status="rejected", reason="outbox_full", detail="try later")
    assert f.on_reply(send, reply) == [
        Send("pick-b", "cancel", CancelCommand(tasks=["O1-2"]), "O1")
    ]
    assert [f.orders[o].detail for o in ("O1", "O2")] == [
        "pick-a refused pick: outbox_full try later"
    ] * 2
    assert f.counts() == {"refused": 2}
    assert f.done()


def test_a_refused_wave_command_or_an_accepted_reply_changes_nothing() -> None:
    f = Fulfilment(orders(order("O1", ("MUG", 1))))
    begin, batch, _ = f.plan(SITE)
    assert f.on_reply(begin, Reply(cmd="c1", status="rejected", reason="busy")) == []
    assert f.on_reply(batch, Reply(cmd="c2", status="accepted")) == []
    assert f.counts() == {"picking": 1}


def test_a_refused_pack_ends_the_order_refused() -> None:
    f = started(SITE, order("O1", ("MUG", 1)))
    (send,) = picked(f, "O1-1", 1)
    reply = Reply(cmd="c9", status="rejected", reason="invalid", detail="no unit weight")
    assert f.on_reply(send, reply) == []
    assert f.orders["O1"].status == "refused"
    assert f.orders["O1"].detail == "pack refused pack: invalid no unit weight"
    assert f.on_event("pack", "packed", {"order": "O1"}) == []  # final stays final
    assert f.orders["O1"].status == "refused"
    assert f.done()


def test_a_refused_put_frees_the_cubby_for_the_next_order() -> None:
    f = started(
        {"pick-a": pick("A1", "A2"), "wall": wall("W1"), "pack": station()},
        order("A", ("MUG", 1), ("TEE", 1)),
        order("B", ("MUG", 1), ("TEE", 1)),
    )
    picked(f, "A-1", 1)
    (send,) = picked(f, "A-2", 1)
    picked(f, "B-1", 1)
    assert picked(f, "B-2", 1) == []
    sends = f.on_reply(send, Reply(cmd="c5", status="rejected", reason="invalid"))
    assert sends == [put("B", "W1", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))]
    assert f.orders["A"].status == "refused"
    assert f.orders["A"].detail == "wall refused put: invalid"
    assert f.orders["A"].slot is None
    assert f.orders["B"].status == "at_wall"
    assert complete(f, "A") == []  # a refused order cannot leave the wall again


def test_a_put_refused_per_order_names_the_order_not_a_task_with_its_id() -> None:
    # first() repeats "X" as "X-2", which is also the id of X's second pick task.
    f = Fulfilment(orders(order("X", ("MUG", 1), ("TEE", 1))).first(2))
    f.plan(SITE)
    picked(f, "X-1", 1)
    assert picked(f, "X-2", 1)[0].order == "X"
    picked(f, "X-2-1", 1)
    (send,) = picked(f, "X-2-2", 1)
    assert send == put("X-2", "W2", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))
    reply = Reply(
        cmd="c7",
        status="accepted",
        items=[ItemResult(id="X-2", status="rejected", reason="out_of_order")],
    )
    assert f.on_reply(send, reply) == []
    assert f.orders["X-2"].status == "refused"
    assert f.orders["X-2"].detail == "wall refused X-2: out_of_order"
    assert f.orders["X"].status == "at_wall"


def test_a_busy_or_unknown_cubby_is_not_used_again_and_the_order_tries_another() -> None:
    f = started(
        {"pick-a": pick("A1", "A2"), "wall": wall("W1", "W2"), "pack": station()},
        order("A", ("MUG", 1), ("TEE", 1)),
    )
    picked(f, "A-1", 1)
    (send,) = picked(f, "A-2", 1)
    assert send == put("A", "W1", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))
    busy = Reply(
        cmd="c5",
        status="accepted",
        items=[ItemResult(id="A", status="rejected", reason="slot_busy")],
    )
    (retry,) = f.on_reply(send, busy)
    assert retry == put("A", "W2", ("MUG", 1, MUG_CODES), ("TEE", 1, TEE_CODES))
    assert f.problems == ["wall refused cubby W1 (slot_busy): not used again"]
    unknown = Reply(
        cmd="c6",
        status="accepted",
        items=[ItemResult(id="A", status="rejected", reason="unknown_location")],
    )
    # No cubby left on any wall: the order goes straight to packing.
    (pack,) = f.on_reply(retry, unknown)
    assert (pack.node, pack.command, pack.order) == ("pack", "pack", "A")
    assert f.orders["A"].status == "packing"
    assert len(f.problems) == 2


# --- order files -------------------------------------------------------------------------


def test_the_sample_json_file_loads() -> None:
    file = read_order_file(EXAMPLES / "orders.json")
    assert len(file.orders) == 20
    assert len(file.catalogue) == 10
    first = file.orders[0]
    assert (first.order, first.express, first.tote, first.carrier) == (
        "WEB-1001",
        True,
        "T-101",
        "DPD",
    )
    assert [(line.sku, line.qty) for line in first.lines] == [
        ("MUG-350", 2),
        ("TEE-BLK-M", 1),
        ("BOOK-PB-17", 1),
    ]
    assert file.catalogue["TEA-GRN-100"].on_shelf == 0
    assert file.catalogue["MUG-350"].dims_mm == (120, 95, 100)
    assert file.orders[1].carrier_zpl is not None
    assert file.orders[1].carrier_zpl.startswith("^XA")


def test_the_sample_csv_file_loads() -> None:
    file = read_order_file(EXAMPLES / "orders.csv")
    assert file.catalogue == {}
    assert [(o.order, o.channel, o.express, o.tote) for o in file.orders] == [
        ("WEB-1001", "web", False, None),
        ("AMZ-2001", "amazon", True, None),
        ("EBY-3001", "ebay", False, None),
    ]
    lines = [
        (line.sku, line.qty, line.location, line.barcodes) for o in file.orders for line in o.lines
    ]
    assert lines == [
        ("SKU-100", 2, "A1", ["09501101531000"]),
        ("SKU-101", 1, "A2", []),
        ("SKU-102", 3, "A3", []),
        ("SKU-103", 1, "A1", []),
        ("SKU-999", 1, "Z9", []),
    ]
    # No barcode: the SKU itself is the code to scan.
    item = file.item(file.orders[0].lines[1])
    assert (item.location, item.barcodes) == ("A2", ["SKU-101"])


def test_the_sample_csv_plans_with_its_stray_location_unrouted() -> None:
    f = Fulfilment(read_order_file(EXAMPLES / "orders.csv"))
    sends = f.plan({"pick-a": pick("A1", "A2", "A3")})
    assert tasks_of(sends[1]) == [
        ("WEB-1001-1", "WEB-1001", "A1", "SKU-100", 2),
        ("WEB-1001-2", "WEB-1001", "A2", "SKU-101", 1),
        ("AMZ-2001-1", "AMZ-2001", "A3", "SKU-102", 3),
    ]
    assert f.orders["EBY-3001"].detail == "no online pick node owns SKU-999@Z9"


def write_json(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "orders.json"
    path.write_text(json.dumps(data))
    return path


def read_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        read_order_file(path)
    return caught.value


def test_a_file_that_is_not_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "orders.json"
    path.write_text('{"orders": [')
    error = read_error(path)
    assert (error.file, error.field) == (str(path), "(file)")
    assert error.reason.startswith("not valid JSON: ")
    assert str(error).startswith(f"{path}: (file): not valid JSON: ")


def test_a_zero_quantity_names_the_field(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"catalogue": CATALOGUE, "orders": [order("O1", ("MUG", 0))]})
    error = read_error(path)
    assert (error.file, error.field) == (str(path), "orders[0].lines[0].qty")
    assert error.reason == "Input should be greater than or equal to 1"
    assert (
        str(error) == f"{path}: orders[0].lines[0].qty: Input should be greater than or equal to 1"
    )


def test_a_sku_unknown_without_a_location_is_reported(tmp_path: Path) -> None:
    data = {"catalogue": CATALOGUE, "orders": [order("O1", ("MUG", 1), ("NOPE", 1))]}
    error = read_error(write_json(tmp_path, data))
    assert error.field == "orders[0].lines[1].sku"
    assert error.reason == "'NOPE' is not in the catalogue and the line has no location"


def test_an_order_id_twice_is_reported(tmp_path: Path) -> None:
    data = {
        "catalogue": CATALOGUE,
        "orders": [order("O1", ("MUG", 1)), order("O2", ("MUG", 1)), order("O1", ("TEE", 1))],
    }
    error = read_error(write_json(tmp_path, data))
    assert error.field == "orders[2].order"
    assert error.reason == "'O1' appears twice"


def test_an_unreadable_path_is_reported(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    error = read_error(missing)
    assert (error.file, error.field, error.reason) == (
        str(missing),
        "(file)",
        "No such file or directory",
    )
    error = read_error(tmp_path)  # a directory
    assert (error.file, error.field, error.reason) == (str(tmp_path), "(file)", "Is a directory")
    error = read_error(tmp_path / "nope.csv")
    assert error.reason == "No such file or directory"


def test_first_repeats_orders_with_new_ids_and_totes() -> None:
    file = orders(order("A", ("MUG", 1), tote="T-1"), order("B", ("TEE", 2)))
    assert [o.order for o in file.first(1).orders] == ["A"]
    more = file.first(5)
    assert [(o.order, o.tote) for o in more.orders] == [
        ("A", "T-1"),
        ("B", None),
        ("A-2", "T-1-2"),
        ("B-2", None),
        ("A-3", "T-1-3"),
    ]
    assert [o.lines for o in more.orders] == [file.orders[i % 2].lines for i in range(5)]
    assert more.catalogue == file.catalogue
    assert len(file.orders) == 2  # the file itself is unchanged
    f = Fulfilment(more)
    f.plan(SITE)
    assert f.lines() == (0, 5)
    assert sorted(f.orders) == ["A", "A-2", "A-3", "B", "B-2"]


def test_first_never_makes_an_id_the_file_already_has() -> None:
    file = orders(order("A", ("MUG", 1)), order("A-2", ("TEE", 1)))
    assert [o.order for o in file.first(4).orders] == ["A", "A-2", "A-3", "A-2-2"]


def test_a_csv_saved_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefforder,sku,qty,location\nO1,MUG,2,A1\n".encode())
    (only,) = read_order_file(path).orders
    assert (only.order, only.lines[0].sku, only.lines[0].qty) == ("O1", "MUG", 2)


def test_a_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    for name in ("latin1.csv", "latin1.json"):
        path = tmp_path / name
        path.write_bytes(b"order,sku\n\xe9t\xe9,MUG\n")
        with pytest.raises(ConfigError) as err:
            read_order_file(path)
        assert (err.value.field, err.value.reason.split(":")[0]) == ("(file)", "not UTF-8 text")


# --- dock and returns --------------------------------------------------------------------

DOCKED = {**SITE, "dock": State(online=True, role="dispatch", locations=["L1", "L2"])}
WITH_RETURNS = {**DOCKED, "returns": State(online=True, role="returns", locations=["B1"])}
RETURNS = [
    {"rma": "R-1", "order": "O1", "lines": [{"sku": "MUG", "reason": "defective"}], "grade": "C"},
    {"rma": "R-2", "order": "O2", "lines": [{"sku": "TEE", "reason": "wrong_item_sent"}]},
]


def with_returns(*items: dict[str, Any], returns: list[dict[str, Any]]) -> OrderFile:
    return OrderFile.model_validate(
        {"catalogue": CATALOGUE, "orders": list(items), "returns": returns}
    )


def packed_at(f: Fulfilment, order_id: str, sscc: str | None = None) -> list[Send]:
    f.on_event("pack", "label_printed", {"order": order_id, "sscc": sscc})
    return f.on_event("pack", "packed", {"order": order_id})


def test_a_packed_parcel_goes_to_the_dock_and_shipped_ends_it_then_its_return_is_announced() -> (
    None
):
    f = Fulfilment(
        with_returns(
            order("O1", ("MUG", 1), carrier="DPD", service="Next day", express=True),
            returns=RETURNS[:1],
        ),
        cutoffs={"DPD": 1_700_000_000_000},
    )
    f.plan(WITH_RETURNS)
    picked(f, "O1-1", 1)
    [send] = packed_at(f, "O1", "376104250021234569")
    assert (send.node, send.command, send.order) == ("dock", "load", "O1")
    assert isinstance(send.body, LoadCommand)
    assert send.body.parcels[0].model_dump() == {
        "sscc": "376104250021234569",
        "tracking": None,
        "carrier": "DPD",
        "service": "Next day",
        "order": "O1",
        "express": True,
        "cutoff": 1_700_000_000_000,
    }
    assert f.orders["O1"].status == "dispatching" and not f.done()
    [rma] = f.on_event("dock", "shipped", {"order": "O1", "manifest": "DPD-0001"})
    assert f.orders["O1"].status == "shipped" and f.orders["O1"].detail == "manifest DPD-0001"
    assert (rma.node, rma.command) == ("returns", "rma")
    assert isinstance(rma.body, RmaCommand)
    line = rma.body.rmas[0].lines[0]
    assert (line.sku, line.qty, line.barcodes, line.reason) == ("MUG", 1, MUG_CODES, "defective")
    assert f.returns["R-1"].status == "announced" and not f.done()
    f.on_event("returns", "return_closed", {"rma": "R-1"})
    assert f.returns["R-1"].status == "received" and f.done()


def test_carriers_the_dock_does_not_serve_end_packed_and_no_lane_ends_packed_too() -> None:
    f = Fulfilment(
        with_returns(
            order("O1", ("MUG", 1), carrier="Evri"),
            order("O2", ("TEE", 1), carrier="DPD"),
            returns=RETURNS,
        ),
        dock_carriers={"DPD"},
    )
    f.plan(WITH_RETURNS)
    picked(f, "O1-1", 1)
    f.on_event("pick-a", "picked", {"task": "O2-1", "picked": 1})
    [rma] = packed_at(f, "O1", "376104250021234569")
    assert f.orders["O1"].status == "packed" and rma.command == "rma"
    [load] = packed_at(f, "O2", "376104250021234576")
    assert load.command == "load"
    refused = {"order": "O2", "reason": "no_lane", "carrier": "DPD"}
    [rma] = f.on_event("dock", "load_refused", refused)
    assert f.orders["O2"].status == "packed" and "no lane for DPD" in f.orders["O2"].detail
    assert f.on_event("dock", "load_refused", {"order": "O2", "reason": "wrong_lane"}) == []


def test_a_carrier_label_parcel_goes_by_its_tracking_number_or_not_at_all() -> None:
    f = started(
        DOCKED,
        order("O1", ("MUG", 1), carrier_zpl=ZPL, carrier="Parcelforce", tracking="PF1"),
        order("O2", ("TEE", 1), carrier_zpl=ZPL),
    )
    picked(f, "O1-1", 1)
    f.on_event("pick-a", "picked", {"task": "O2-1", "picked": 1})
    [load] = packed_at(f, "O1")
    assert isinstance(load.body, LoadCommand)
    parcel = load.body.parcels[0]
    assert (parcel.sscc, parcel.tracking, parcel.carrier) == (None, "PF1", "Parcelforce")
    assert packed_at(f, "O2") == []
    assert f.orders["O2"].status == "packed" and "not sent to the dock" in f.orders["O2"].detail


def test_returns_without_a_returns_station_do_not_hold_the_run() -> None:
    f = Fulfilment(with_returns(order("O1", ("MUG", 1)), returns=RETURNS[:1]))
    f.plan(SITE)
    picked(f, "O1-1", 1)
    assert packed_at(f, "O1") == []
    assert f.returns["R-1"].status == "no_station" and f.done()


def test_a_refused_rma_is_noted_and_does_not_hold_the_run() -> None:
    f = Fulfilment(with_returns(order("O1", ("MUG", 1)), returns=RETURNS[:1]))
    f.plan({**SITE, "returns": State(online=True, role="returns")})
    picked(f, "O1-1", 1)
    [rma] = packed_at(f, "O1")
    f.on_reply(rma, Reply(cmd="rma", status="rejected", reason="invalid_body"))
    assert f.returns["R-1"].status == "refused" and f.done()


@pytest.mark.parametrize(
    ("returns", "where"),
    [
        ([{**RETURNS[0], "order": "NOPE"}], "returns[0].order"),
        ([{**RETURNS[0], "lines": [{"sku": "GLUE"}]}], "returns[0].lines[0].sku"),
        ([{**RETURNS[0], "contents": ["GLUE"]}], "returns[0].contents[0]"),
        ([RETURNS[0], RETURNS[0]], "returns[1].rma"),
    ],
)
def test_a_bad_return_names_the_field(
    tmp_path: Path, returns: list[dict[str, Any]], where: str
) -> None:
    path = tmp_path / "o.json"
    body = {"catalogue": CATALOGUE, "orders": [order("O1", ("MUG", 1))], "returns": returns}
    path.write_text(json.dumps(body))
    with pytest.raises(ConfigError) as info:
        read_order_file(path)
    assert info.value.field == where, info.value.problems


def test_first_keeps_the_returns_of_the_orders_it_keeps() -> None:
    file = with_returns(order("O1", ("MUG", 1)), order("O2", ("TEE", 1)), returns=RETURNS)
    assert [r.rma for r in file.first(1).returns] == ["R-1"]
    assert [r.rma for r in file.first(3).returns] == ["R-1", "R-2"]


# --- snapshot and restore ----------------------------------------------------------------

BUSY_SITE = {
    **WITH_RETURNS,
    "wall": wall("W1"),  # one cubby: orders wait for it
    "pack-2": station(),
}


def world(f: Fulfilment, start: list[Send], cut: int | None = None) -> tuple[list[Any], Any, int]:
    """Play the nodes to the end: each command answered, then its events; the router is
    swapped for one restored from a JSON round trip of its snapshot after ``cut`` steps.

    Returns what the router did (every command it sent, in order), its final snapshot and
    the number of steps.
    """
    queue = list(start)
    out: list[Any] = []
    steps = 0

    def step(sends: list[Send]) -> None:
        nonlocal f, steps
        steps += 1
        queue.extend(sends)
        out.extend((s.node, s.command, s.order, s.body.model_dump()) for s in sends)
        if steps == cut:
            again = Fulfilment(f.file, dock_carriers=f.dock_carriers, cutoffs=f.cutoffs)
            again.restore(json.loads(json.dumps(f.snapshot())))
            f = again

    while queue:
        send = queue.pop(0)
        body = send.body
        if isinstance(body, PutCommand) and body.orders[0].order == "O2":
            # The wall refuses its one cubby once: O2 goes on without the wall.
            step(
                f.on_reply(
                    send,
                    Reply(
                        cmd="put",
                        status="accepted",
                        items=[ItemResult(id="O2", status="rejected", reason="slot_busy")],
                    ),
                )
            )
            continue
        if isinstance(body, PickCommand):
            rejected = [t.task for t in body.tasks if t.task == "O4-1"]
            items = [
                ItemResult(id=t, status="rejected", reason="unknown_location") for t in rejected
            ]
            step(f.on_reply(send, Reply(cmd=send.command, status="accepted", items=items)))
            for task in body.tasks:
                if task.task not in rejected:
                    got = 0 if task.task == "O5-1" else task.qty
                    step(f.on_event(send.node, "picked", {"task": task.task, "picked": got}))
            continue
        step(f.on_reply(send, Reply(cmd=send.command, status="accepted")))
        if isinstance(body, PutCommand):
            step(f.on_event(send.node, "order_complete", {"order": body.orders[0].order}))
        elif isinstance(body, PackCommand):
            sscc = f"37610425002123456{body.order[-1]}"
            f.on_event(send.node, "label_printed", {"order": body.order, "sscc": sscc})
            step(f.on_event(send.node, "packed", {"order": body.order}))
        elif isinstance(body, LoadCommand):
            order_id = body.parcels[0].order
            step(f.on_event(send.node, "shipped", {"order": order_id, "manifest": "M1"}))
        elif isinstance(body, RmaCommand):
            step(f.on_event(send.node, "return_closed", {"rma": body.rmas[0].rma}))
    assert f.done()
    return out, f.snapshot(), steps


def test_a_router_restored_from_its_snapshot_at_any_step_routes_as_the_one_that_ran_on() -> None:
    file = with_returns(
        order("O1", ("MUG", 1), ("TEE", 2), carrier="DPD", express=True),
        order("O2", ("MUG", 1), ("BOOK", 1), carrier="DPD"),
        order("O3", ("TEE", 1), ("BOOK", 2), carrier="DPD"),
        order("O4", ("MUG", 1), ("TEE", 1)),  # a line the node refuses: refused, cancelled
        order("O5", ("BOOK", 1)),  # nothing picked: unfulfilled
        order("O6", ("TEE", 3), carrier_zpl=ZPL),  # no SSCC or tracking: not to the dock
        {"order": "O7", "lines": [{"sku": "GLUE", "qty": 1, "location": "X9"}]},  # unrouted
        returns=RETURNS,
    )

    def run(cut: int | None) -> tuple[list[Any], Any, int]:
        f = Fulfilment(file, dock_carriers={"DPD"}, cutoffs={"DPD": 1_700_000_000_000})
        return world(f, f.plan(BUSY_SITE), cut)

    whole, last, steps = run(None)
    commands = {c[1] for c in whole}
    assert commands == {"cancel", "put", "pack", "load", "rma"}, commands
    statuses = {k: v["status"] for k, v in last["orders"].items()}
    assert statuses == {
        "O1": "shipped",
        "O2": "shipped",
        "O3": "shipped",
        "O4": "refused",
        "O5": "unfulfilled",
        "O6": "packed",
        "O7": "unrouted",
    }
    assert last["problems"] and last["serial"] > 1
    for cut in range(1, steps + 1):
        assert run(cut) == (whole, last, steps), f"restored after step {cut}"
