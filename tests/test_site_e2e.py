"""The site service end to end: a real broker, a pick node process, the service process.

A wave goes in through the API, the simulated picker confirms every line, and every
confirmation comes out once through the cursor and through a signed webhook; the same
Idempotency-Key gives the same answer; the log keeps (node, store, seq) once across a
service restart, and every acknowledged event is in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook as ReferenceVerifier

from agent.oms.demo.broker import LocalBroker
from tests.harness import NodeProcess
from tests.site_harness import TOKEN, Receiver, SiteProcess, pick_node, site_file
from tests.test_picking_e2e import Control

pytestmark = pytest.mark.broker

NODE = "zone-a1"
SLOTS = 8


def wave_body(wave: str, slots: int = SLOTS, node: str = NODE) -> dict[str, Any]:
    """One single-line order per slot; realistic 60-character item descriptions."""
    catalogue = {
        f"SKU-{wave}-{i}": {
            "location": f"{node}-S{i}",
            "barcodes": [f"400000{i:07d}"],
            "description": f"Stainless steel insulated bottle 750 ml, brushed, model {i:04d}"[:60],
        }
        for i in range(1, slots + 1)
    }
    orders = [
        {"order": f"{wave}-O{i}", "channel": "web", "lines": [{"sku": f"SKU-{wave}-{i}", "qty": i}]}
        for i in range(1, slots + 1)
    ]
    return {"wave": wave, "catalogue": catalogue, "orders": orders}


def read_all(api: httpx.Client, after: int, want: int, name: str, timeout: float = 60) -> list[Any]:
    """Follow the cursor until ``want`` events named ``name`` came (long-poll)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        params: dict[str, Any] = {"after": after, "wait": 5}
        if name:
            params["name"] = name
        page = api.get("/v1/events", params=params).json()
        out.extend(page["events"])
        after = page["next"]
    return out


def read_everything(api: httpx.Client) -> list[Any]:
    """The whole log, page by page."""
    out: list[Any] = []
    after = 0
    while True:
        page = api.get("/v1/events", params={"after": after, "limit": 1000}).json()
        if not page["events"]:
            return out
        out.extend(page["events"])
        after = page["next"]


async def confirm_all(control: Control, slots: int = SLOTS, node: str = NODE) -> None:
    for i in range(1, slots + 1):
        slot = f"{node}-S{i}"
        async with asyncio.timeout(30):
            while not (await control.slot(slot))["on"]:
                await asyncio.sleep(0.02)
        await control.press(slot)


def test_a_wave_through_the_api_comes_back_once_by_cursor_and_signed_webhook(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pick_node(tmp_path, broker, NODE, SLOTS))
    control = Control(tmp_path / NODE)
    site = SiteProcess(site_file(tmp_path, broker))
    try:
        node.start()
        assert node.proc is not None
        asyncio.run(control.connect(node.proc.pid))
        site.start()
        with Receiver() as receiver, site.client() as api:
            deadline = time.monotonic() + 30
            while not any(n["online"] for n in api.get("/v1/nodes").json()):
                assert time.monotonic() < deadline, site.text()
                time.sleep(0.05)
            hook = api.post(
                "/v1/webhooks",
                json={"url": receiver.url, "names": ["picked"]},
                headers={"Idempotency-Key": "hook-1"},
            )
            assert hook.status_code == 201, hook.text
            secret = hook.json()["secret"]
            assert secret.startswith("whsec_")

            body = {**wave_body("W1"), "cutoffs": {"Standard": 1_796_601_600_000}}
            sent = api.post("/v1/waves", json=body, headers={"Idempotency-Key": "wave-W1"})
            assert sent.status_code == 202, sent.text
            assert {o["status"] for o in sent.json()["orders"]} == {"picking"}
            again = api.post("/v1/waves", json=body, headers={"Idempotency-Key": "wave-W1"})
            assert (again.status_code, again.json()) == (202, sent.json())
            assert again.headers["idempotent-replayed"] == "true"
            other = api.post(
                "/v1/waves", json=wave_body("W2"), headers={"Idempotency-Key": "wave-W1"}
            )
            assert (other.status_code, other.json()["error"]) == (409, "key_reused")

            asyncio.run(confirm_all(control))
            picked = read_all(api, 0, SLOTS, "picked")
            assert sorted(e["body"]["order"] for e in picked) == sorted(
                o["order"] for o in body["orders"]
            )
            assert len({e["id"] for e in picked}) == SLOTS
            assert [e["seq"] for e in picked] == sorted(e["seq"] for e in picked)

            deadline = time.monotonic() + 30
            while len(receiver.events()) < SLOTS and time.monotonic() < deadline:
                time.sleep(0.05)
            verifier = ReferenceVerifier(secret)
            for headers, raw in receiver.got:
                verifier.verify(raw, headers)  # raises on a bad signature
                assert headers["webhook-id"] == f"evt_{json.loads(raw)['data']['id']}"
            # Each once; side by side ([webhooks] in_flight) they may arrive in another order.
            assert sorted(e["id"] for e in receiver.events()) == [e["id"] for e in picked]

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                orders = api.get("/v1/orders").json()["orders"]
                if {o["status"] for o in orders} == {"picked"}:
                    break
                time.sleep(0.1)
            assert {o["status"] for o in orders} == {"picked"}, orders
            # The station's own label goes with Standard: the order views say so, and when.
            assert {(o["carrier"], o["cutoff"]) for o in orders} == {
                ("Standard", 1_796_601_600_000)
            }
            detail = api.get("/v1/orders/W1-O3").json()
            assert [e["name"] for e in detail["events"] if e["name"] == "picked"] == ["picked"]
            assert detail["submitted"]["lines"] == [{"sku": "SKU-W1-3", "qty": 3}]
            everything = read_everything(api)
    finally:
        site.stop()
        node.stop()
    seqs = [e["seq"] for e in everything if e["node"] == NODE and e["seq"] is not None]
    assert seqs == list(range(1, len(seqs) + 1)), seqs


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js not installed (make installs it)")
def test_an_oms_in_javascript_dispatches_a_wave_and_gets_every_confirmation_once(
    tmp_path: Path, broker: LocalBroker
) -> None:
    node = NodeProcess(pick_node(tmp_path, broker, NODE, SLOTS))
    control = Control(tmp_path / NODE)
    site = SiteProcess(site_file(tmp_path, broker))
    try:
        node.start()
        assert node.proc is not None
        asyncio.run(control.connect(node.proc.pid))
        site.start()
        with site.client() as api:
            deadline = time.monotonic() + 30
            while not any(n["online"] for n in api.get("/v1/nodes").json()):
                assert time.monotonic() < deadline, site.text()
                time.sleep(0.05)
        script = Path(__file__).parent / "oms_node" / "oms.mjs"
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SITE_URL": site.url,
            "SITE_TOKEN": TOKEN,
            "CONTROL_URL": control.url,
            "NODE": NODE,
            "SLOTS": str(SLOTS),
            "WAVE": "JS1",
        }
        done = subprocess.run(
            ["node", str(script)], env=env, capture_output=True, text=True, timeout=180
        )
    finally:
        site.stop()
        node.stop()
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{site.text()}"
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    orders = sorted(f"JS1-J{i}" for i in range(1, SLOTS + 1))
    assert (summary["webhook"], summary["cursor"], summary["sameIds"]) == (orders, orders, True)
    assert (summary["replayedStatus"], summary["tamperedStatus"]) == (204, 401)
