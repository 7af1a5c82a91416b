"""The site service's routing survives a restart and a takeover in the middle of a wave.

A real broker, the service as a child process, and simulated nodes (testing/fakefleet.py)
on an event loop of their own, so they keep running while the service is killed: two pick
zones, a put wall of two cubbies, a pack station and a dock. Eight orders go all the way
to ``shipped``, as they do without a restart:

* SQLite: the service is SIGKILLed while the wave's plan waits for a pick node's reply to
  ``wave_begin``; the node answers while the service is down; the restarted service goes
  on with the plan and the orders.
* PostgreSQL: the active instance is SIGKILLed while two orders sit in the wall's cubbies
  and two wait for one; the wall completes them while nobody leads; the standby takes
  over and frees the cubbies, puts the waiting orders, packs and ships everything.

Each time every command is kept once per id and applied once per id by its node, and no
order got a second put, pack or load under another id.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from agent.link.settings import BrokerConfig
from agent.oms.demo.broker import LocalBroker
from testing.fakefleet import FakeNode
from testing.postgres import LocalPostgres, find_bin
from tests.harness import SITE
from tests.site_harness import SiteProcess, site_file

pytestmark = [pytest.mark.broker, pytest.mark.slow]

T = TypeVar("T")
CUTOFF = 1_796_601_600_000
MULTI = [f"M{i}" for i in range(1, 5)]  # a line on each zone: through the wall
SINGLE = [f"S{i}" for i in range(1, 5)]  # S1, S2 on zone-1; S3, S4 on zone-2


def wave_body(wave: str) -> dict[str, Any]:
    catalogue: dict[str, Any] = {}
    orders = []

    def sku(name: str, location: str) -> dict[str, Any]:
        catalogue[name] = {"location": location, "barcodes": [f"CODE-{name}"]}
        return {"sku": name, "qty": 1}

    for i, order in enumerate(MULTI, 1):
        lines = [sku(f"A{i}", f"Z1-{i}"), sku(f"B{i}", f"Z2-{i}")]
        orders.append({"order": order, "carrier": "DHL", "lines": lines})
    for i, order in enumerate(SINGLE, 1):
        line = sku(f"C{i}", f"Z1-{4 + i}" if i <= 2 else f"Z2-{4 + i}")
        orders.append({"order": order, "carrier": "DHL", "lines": [line]})
    return {
        "wave": wave,
        "catalogue": catalogue,
        "orders": orders,
        "cutoffs": {"DHL": CUTOFF},
    }


class Fleet:
    """The simulated nodes on an event loop in a thread of their own."""

    def __init__(self, broker: LocalBroker) -> None:
        config = BrokerConfig(urls=[broker.url], backoff_initial_s=0.05, backoff_max_s=0.5)
        self.nodes = {
            "zone-1": FakeNode(config, SITE, "zone-1", [f"Z1-{i}" for i in range(1, 7)]),
            "zone-2": FakeNode(config, SITE, "zone-2", [f"Z2-{i}" for i in range(1, 9)]),
            "wall-1": FakeNode(config, SITE, "wall-1", ["C1", "C2"], role="put_wall"),
            "pack-1": FakeNode(config, SITE, "pack-1", [], role="pack"),
            "dock-1": FakeNode(config, SITE, "dock-1", [], role="dispatch"),
        }
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Fleet:
        self.thread.start()
        for node in self.nodes.values():
            self.run(node.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes.values():
            self.run(node.__aexit__())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def do(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the fleet's loop (the nodes' state is that loop's)."""
        done: Future[T] = Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the test thread
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(call)
        return done.result(30)

    def received(self) -> dict[str, list[tuple[str, str]]]:
        return self.do(lambda: {n: list(node.received) for n, node in self.nodes.items()})

    def applied(self) -> dict[str, dict[str, tuple[str, dict[str, Any]]]]:
        return self.do(lambda: {n: dict(node.applied) for n, node in self.nodes.items()})


def wait_until(
    what: str, check: Callable[[], bool], site: SiteProcess, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s\n{site.text()}"
        time.sleep(0.05)


def statuses(api: httpx.Client) -> dict[str, str]:
    return {o["order"]: o["status"] for o in api.get("/v1/orders").json()["orders"]}


def all_online(api: httpx.Client) -> bool:
    return sum(n["online"] for n in api.get("/v1/nodes").json()) == 5


def check_commands_once(fleet: Fleet, kept: list[tuple[str, str, str, bool]]) -> None:
    """Every command kept once per id, answered, applied once per id by its node; no order
    got a second put, pack or load, and no pick task went out twice, under another id."""
    ids = [row[0] for row in kept]
    assert len(ids) == len(set(ids))
    assert [row for row in kept if not row[3]] == [], "commands never answered"
    applied = fleet.applied()
    by_id = {cid: (node, name) for node, cmds in applied.items() for cid, (name, _) in cmds.items()}
    assert by_id == {cid: (node, name) for cid, node, name, _ in kept}
    per_order: Counter[tuple[str, str]] = Counter()
    tasks: Counter[str] = Counter()
    begins: Counter[str] = Counter()
    for node, cmds in applied.items():
        for name, body in cmds.values():
            if name == "put":
                per_order.update(("put", o["order"]) for o in body["orders"])
            elif name == "pack":
                per_order[("pack", body["order"])] += 1
            elif name == "load":
                per_order.update(("load", p["order"]) for p in body["parcels"])
            elif name == "pick":
                tasks.update(t["task"] for t in body["tasks"])
            elif name == "wave_begin":
                begins[node] += 1
    expected = {("put", o): 1 for o in MULTI}
    expected |= {(kind, o): 1 for kind in ("pack", "load") for o in MULTI + SINGLE}
    assert dict(per_order) == expected
    assert dict(tasks) == {f"{o}-{n}": 1 for o in MULTI for n in (1, 2)} | {
        f"{o}-1": 1 for o in SINGLE
    }
    assert dict(begins) == {"zone-1": 1, "zone-2": 1}


def check_shipped(api: httpx.Client) -> None:
    orders = api.get("/v1/orders").json()["orders"]
    assert {o["order"]: (o["status"], o["detail"], o["carrier"], o["cutoff"]) for o in orders} == {
        o: ("shipped", "manifest DHL-0001", "DHL", CUTOFF) for o in MULTI + SINGLE
    }


def restored(site: SiteProcess) -> tuple[int, int, int]:
    """What the restore replayed: (node events, commands they made, new to the log)."""
    found = re.findall(
        r"restored 1 wave\(s\) in [0-9.]+ s: (\d+) node event\(s\) replayed, which made "
        r"(\d+) command\(s\), (\d+) of them new",
        site.text(),
    )
    assert len(found) == 1, site.text()
    print(found[0])
    return int(found[0][0]), int(found[0][1]), int(found[0][2])


def test_a_restart_in_the_middle_of_a_wave_goes_on_routing_it(
    tmp_path: Path, broker: LocalBroker
) -> None:
    log = f'path = "{tmp_path / "site.db"}"\nsnapshot_s = 3600'
    site = SiteProcess(site_file(tmp_path, broker, log=log))
    with Fleet(broker) as fleet:
        zone2 = fleet.nodes["zone-2"]
        fleet.do(lambda: setattr(zone2, "hold_replies", True))
        try:
            site.start()
            with site.client() as api:
                wait_until("five nodes online", lambda: all_online(api), site)
                sent = api.post(
                    "/v1/waves", json=wave_body("R1"), headers={"Idempotency-Key": "R1"}
                )
                assert sent.status_code == 202, sent.text
                # zone-1's part goes all the way; the plan waits for zone-2's wave_begin.
                wait_until(
                    "zone-1's single-line orders shipped",
                    lambda: (
                        statuses(api)
                        == {
                            **{o: "picking" for o in MULTI + SINGLE},
                            "S1": "shipped",
                            "S2": "shipped",
                        }
                    ),
                    site,
                )
                assert [n for n, _ in fleet.received()["zone-2"]] == ["wave_begin"]
            site.kill()
            fleet.do(zone2.release)  # answered while the service is down

            site.start()
            with site.client() as api:
                wait_until(
                    "every order shipped",
                    lambda: set(statuses(api).values()) == {"shipped"},
                    site,
                )
                check_shipped(api)
                again = api.post(
                    "/v1/waves", json=wave_body("R1"), headers={"Idempotency-Key": "R1-again"}
                )
                assert (again.status_code, again.json()["error"]) == (409, "wave_exists")
        finally:
            site.stop()
        with sqlite3.connect(tmp_path / "site.db") as db:
            kept = db.execute(
                "SELECT id, node, name, reply IS NOT NULL FROM commands ORDER BY created"
            ).fetchall()
            finished = db.execute("SELECT id FROM waves WHERE finished IS NOT NULL").fetchall()
        check_commands_once(fleet, kept)
        assert finished == [("R1",)]
    # Its state was kept at submission only (snapshot_s 3600): the restart replayed every
    # node event since, which made again the commands sent before, none of them new.
    replayed, made, new = restored(site)
    assert replayed > 0 and made > 0 and new == 0


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    if find_bin() is None:
        pytest.skip("PostgreSQL not installed")
    with LocalPostgres() as pg:
        yield pg


def kept_up(dsn: str) -> bool:
    """Whether the wave's kept state has taken every node event of the log."""
    with psycopg.connect(dsn) as db:
        row = db.execute(
            "SELECT (SELECT position FROM waves), "
            "(SELECT MAX(id) FROM events WHERE seq IS NOT NULL)"
        ).fetchone()
    assert row is not None
    return bool(row[0] >= row[1])


def test_the_standby_takes_over_a_wave_with_orders_at_the_wall_and_ships_them_all(
    tmp_path: Path, broker: LocalBroker, postgres: LocalPostgres
) -> None:
    log = f'postgres = "{postgres.dsn}"\nlease_s = 0.5'
    one = SiteProcess(site_file(tmp_path, broker, name="one", log=log))
    two = SiteProcess(site_file(tmp_path, broker, name="two", log=log))
    with Fleet(broker) as fleet:
        wall = fleet.nodes["wall-1"]
        fleet.do(lambda: setattr(wall, "hold_work", True))
        try:
            one.start()
            one.wait_role("active")
            two.start()
            two.wait_role("standby")
            with one.client() as api:
                wait_until("five nodes online", lambda: all_online(api), one)
                sent = api.post(
                    "/v1/waves", json=wave_body("F1"), headers={"Idempotency-Key": "F1"}
                )
                assert sent.status_code == 202, sent.text
            with two.client() as reader:
                # Read through the standby: two orders in the cubbies, two waiting for one.
                wait_until(
                    "single-line orders shipped, the wall full",
                    lambda: (
                        sorted(statuses(reader).values())
                        == ["at_wall"] * 2 + ["shipped"] * 4 + ["waiting_for_cubby"] * 2
                    ),
                    one,
                )
                # The active instance keeps the wave's state once it went quiet.
                wait_until("the wave's state kept", lambda: kept_up(postgres.dsn), one)
                one.kill()
                fleet.do(wall.release)  # the wall completes both while nobody leads
                two.wait_role("active")
                wait_until(
                    "every order shipped",
                    lambda: set(statuses(reader).values()) == {"shipped"},
                    two,
                )
                check_shipped(reader)
        finally:
            one.stop()
            two.stop()
        with psycopg.connect(postgres.dsn) as db:
            kept = db.execute(
                "SELECT id, node, name, reply IS NOT NULL FROM commands ORDER BY created"
            ).fetchall()
        check_commands_once(fleet, [tuple(row) for row in kept])
    # The standby took the state kept after the last event: nothing to replay.
    assert restored(two) == (0, 0, 0)
