"""The dashboard page with a whole site on it: nothing unreachable, in headless chromium.

A site of 26 and one of 100 nodes (pick zones of 300 slots, pack stations, a dock, a
returns station; some offline, one with a device fault in long words, one with tags down,
one sharing its node id), 500 open orders of up to 8 lines routed by the real
``Fulfilment`` (carriers with cut-offs, one past), about 30 exceptions and every KPI row.
The page is read at 1920x1080 and 1280x800; every node, order, exception and KPI row is
scrolled into view in its own panel and must then be inside the viewport, not clipped by
any ancestor that clips, and be what the browser finds at its middle (nothing drawn over
it), while the page itself never scrolls. Then an exception is acknowledged with the mouse.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.i18n import catalogue, msg, render
from agent.link.settings import BrokerConfig
from agent.oms import NodeEvent, OmsClient
from agent.oms.client import NodeView
from agent.oms.dashboard import SiteView, serve_dashboard
from agent.oms.fulfilment import Fulfilment, OrderFile
from agent.wire.messages import DeviceHealth, Envelope, PartHealth, State
from tests.browser import Page, browser, needs_chromium

NOW = 1_780_000_000_000  # a fixed wall clock (ms): the page's "no news" and cut-offs count from it
SIZES = [(1920, 1080), (1280, 800)]
CARRIERS = ["DHL Paket", "UPS Standard", "DPD Classic", "GLS Business"]
FAULT = (
    "serial port /dev/ttyUSB3 went away (cable pulled or hub reset); reconnecting every "
    "10 s with backoff, scans at this station are refused until it is back"
)

REACHABLE = """
(() => {
  // Every row of every list: scroll it into view in its panel, then it must be inside the
  // viewport, inside every ancestor that clips, and on top at its middle.
  const problems = [];
  let checked = 0;
  const clips = (e) => { const s = getComputedStyle(e);
    return s.overflowX !== "visible" || s.overflowY !== "visible"; };
  const inside = (r, b) => r.top >= b.top - 1 && r.bottom <= b.bottom + 1 &&
                           r.left >= b.left - 1 && r.right <= b.right + 1;
  const view = { top: 0, left: 0, bottom: innerHeight, right: innerWidth };
  const lists = ["#node-rows tr", "#order-rows tr", "#kpi-rows tr", "#exception-list li"];
  for (const selector of lists) {
    for (const row of document.querySelectorAll(selector)) {
      checked += 1;
      row.scrollIntoView({ block: "nearest", inline: "nearest" });
      const r = row.getBoundingClientRect();
      const d = row.dataset;
      const name = `${selector} ${d.node || d.order || d.kpi || d.id}`;
      if (r.height < 4 || r.width < 40) problems.push(`${name}: ${r.width}x${r.height}`);
      if (!inside(r, view)) problems.push(`${name}: outside the viewport ${JSON.stringify(r)}`);
      for (let a = row.parentElement; a && a !== document.documentElement; a = a.parentElement) {
        if (clips(a) && !inside(r, a.getBoundingClientRect())) {
          problems.push(`${name}: clipped by ${a.tagName}#${a.id}.${a.className}`);
          break;
        }
      }
      const hit = document.elementFromPoint((r.left + r.right) / 2, (r.top + r.bottom) / 2);
      if (!hit || !row.contains(hit))
        problems.push(`${name}: covered by ${hit && hit.outerHTML.slice(0, 80)}`);
    }
  }
  const page = document.scrollingElement;
  if (scrollX || scrollY || page.scrollTop || page.scrollLeft) problems.push(`the page scrolled`);
  if (page.scrollHeight > innerHeight || page.scrollWidth > innerWidth)
    problems.push(`the page is ${page.scrollWidth}x${page.scrollHeight}`);
  return { checked, problems: problems.slice(0, 20) };
})()
"""


def build_site(nodes: int, clock: Callable[[], int]) -> SiteView:
    """A site of ``nodes`` nodes with 500 open orders and about 30 exceptions."""
    rng = random.Random(nodes)
    picks = 20 if nodes == 26 else nodes - 20
    packs, docks, returns = (4, 1, 1) if nodes == 26 else (14, 4, 2)
    oms = OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1")
    births: dict[str, State] = {}

    def birth(name: str, role: str, **extra: Any) -> None:
        devices = extra.pop("devices", {})
        births[name] = State(online=True, role=role, sw="0.9.3", devices=devices, **extra)

    locations: list[str] = []
    for i in range(1, picks + 1):
        slots = [f"Z{i:03d}-{s:03d}" for s in range(1, 301)]
        locations += slots[:10]
        shelf = DeviceHealth(kind="ptl_serial", status="ok")
        scanner = DeviceHealth(kind="serial_scanner", status="ok")
        birth(
            f"zone-{i:03d}", "pick", locations=slots, devices={"shelf": shelf, "scanner": scanner}
        )
    for i in range(1, packs + 1):
        scale = DeviceHealth(kind="mt_sics", status="ok")
        birth(f"pack-{i:02d}", "pack", devices={"scale": scale})
    for i in range(1, docks + 1):
        birth(f"dock-{i}", "dispatch")
    for i in range(1, returns + 1):
        birth(f"returns-{i}", "returns")
    offline = ["zone-004", "zone-011"] + (
        [] if nodes == 26 else ["zone-050", "zone-061", "pack-09"]
    )
    for name in offline:
        births[name] = births[name].model_copy(update={"online": False})
    faulty = births["pack-02"].devices | {
        "scanner": DeviceHealth(kind="serial_scanner", status="unavailable", detail=FAULT)
    }
    births["pack-02"] = births["pack-02"].model_copy(update={"devices": faulty})
    tags = {f"Z007-{s:03d}": PartHealth(status="unavailable", detail="tag silent") for s in (3, 4)}
    shelf = DeviceHealth(kind="atop", status="ok", parts=tags)
    births["zone-007"] = births["zone-007"].model_copy(
        update={"devices": births["zone-007"].devices | {"shelf": shelf}}
    )
    births["zone-015"] = births["zone-015"].model_copy(update={"takeovers": 4})
    for name, state in births.items():
        oms.nodes[name] = NodeView(name, online=state.online, boot=3, state=state)

    catalogue = {
        f"SKU-{n:05d}": {
            "location": loc,
            "barcodes": [f"40{n:011d}"],
            "description": f"Merino wool hiking sock, anthracite melange, size 43-46, {n:05d}",
            "unit_weight_g": 90,
        }
        for n, loc in enumerate(locations, 1)
    }
    skus = sorted(catalogue)
    orders = [
        {
            "order": f"SO-2026-{n:06d}",
            "lines": [
                {"sku": sku, "qty": rng.randint(1, 3)} for sku in rng.sample(skus, 1 + n % 8)
            ],
            "carrier": CARRIERS[n % 4],
            "express": n % 17 == 0,
        }
        for n in range(1, 501)
    ]
    cutoffs = {c: NOW + (i + 1) * 3_600_000 for i, c in enumerate(CARRIERS)}
    cutoffs["GLS Business"] = NOW - 600_000  # the GLS truck has left: its open orders are late
    cutoffs["UPS Standard"] = NOW + 20 * 60_000  # UPS collects in 20 minutes: due soon
    fulfilment = Fulfilment(OrderFile.model_validate({"catalogue": catalogue, "orders": orders}))
    fulfilment.cutoffs = cutoffs
    fulfilment.plan(births)
    view = SiteView(oms, fulfilment, clock=clock)
    progress = list(fulfilment.orders.values())
    for n, p in enumerate(progress[100:160]):  # at packing: most queued, some started
        p.status, p.station = "packing", f"pack-{1 + n % packs:02d}"

    feed: list[tuple[str, str, dict[str, Any]]] = []
    for p in progress[:300]:
        line = p.order.lines[0]
        where = fulfilment.file.item(line).location
        node = f"zone-{int(where[1:4]):03d}"
        feed.append(
            (
                node,
                "picked",
                {
                    "order": p.order.order,
                    "task": f"{p.order.order}-1",
                    "sku": line.sku,
                    "location": where,
                    "qty": line.qty,
                    "picked": line.qty,
                },
            )
        )
    for p in progress[100:110]:
        feed.append((p.station or "pack-01", "verified", {"order": p.order.order}))
    for n in range(12):
        p = progress[200 + n]
        feed.append(
            (
                f"zone-{1 + n:03d}",
                "short",
                {
                    "order": p.order.order,
                    "sku": p.order.lines[0].sku,
                    "location": f"Z{1 + n:03d}-017",
                    "qty": 3,
                    "picked": 1,
                    "reason": "empty",
                },
            )
        )
    for n in range(6):
        feed.append(
            (
                f"zone-{2 + n:03d}",
                "misscan",
                {
                    "code": f"4006381333{n:03d}",
                    "reason": "wrong_item",
                    "location": f"Z{2 + n:03d}-120",
                },
            )
        )
    for n in range(3):
        feed.append(
            (
                "pack-01",
                "weighed",
                {
                    "order": progress[100 + n].order.order,
                    "verdict": "over",
                    "actual_g": 612.0,
                    "expected_g": 540.0,
                },
            )
        )
    feed.append(
        (
            "pack-03",
            "print_failed",
            {
                "order": progress[104].order.order,
                "document": "label",
                "printer": "zebra-zt411",
                "reason": "paper out",
            },
        )
    )
    feed.append(
        ("dock-1", "load_refused", {"code": "00340123450000000017", "reason": "wrong_lane"})
    )
    for n, p in enumerate(progress[300:320]):  # the guide's later KPIs need these
        order = p.order.order
        feed.append(("pack-01", "packed", {"order": order, "units": 2, "at": NOW - 900_000}))
        if n < 10:
            feed.append(("dock-1", "loaded", {"order": order, "late": n == 0}))
            feed.append(("dock-1", "shipped", {"order": order, "at": NOW - 600_000 + n}))
    for reason in ("too_small", "wrong_item_sent", "damaged_in_transit", "changed_mind"):
        feed.append(("returns-1", "return_received", {"reason": reason, "sku": skus[0]}))
    for n, (node, name, body) in enumerate(feed):
        at = NOW - 3_600_000 + n * 1000
        view.on_event(
            NodeEvent(node, name, Envelope(v=1, id=f"e{n}", ts=at, seq=n + 1, body=body), body)
        )
    return view


def check_site(
    page: Page,
    url: str,
    size: tuple[int, int],
    nodes: int,
    offline: int,
    shots: Path,
    language: str = "en",
) -> None:
    """The page at one size: totals, problems first, every row reachable."""
    words = catalogue(language)
    width, height = size
    page.viewport(width, height)
    online = render(msg("dashboard.nodes_online", online=nodes - offline, total=nodes), words)
    page.wait_text("#totals", online)
    rows = page.evaluate("document.querySelectorAll('#node-rows tr').length")
    orders = page.evaluate("document.querySelectorAll('#order-rows tr').length")
    assert rows == nodes and orders == 500, (rows, orders)
    totals = page.evaluate("document.getElementById('totals').innerText")
    gone = render(msg("dashboard.nodes_offline", n=offline), words, language)
    assert totals.startswith(f"{online} · {gone}"), totals
    # Problems first and marked: the offline nodes, the shared id, then the device trouble.
    marked = page.evaluate(
        "[...document.querySelectorAll('#node-rows tr')].map(r => r.dataset.problem || '')"
    )
    firsts = [m for m in marked if m]
    assert marked[: len(firsts)] == firsts and firsts[0] == "offline", marked[:12]
    assert sorted(set(firsts)) == ["device", "duplicate id", "offline"]
    pack2 = page.wait_text('#node-rows tr[data-node="pack-02"]', "scanner:")
    assert FAULT in pack2.replace("\n", " ")  # all its words, wrapped, none cut
    # Orders: carrier and cut-off; GLS's is past, so its open orders are marked late, and
    # UPS collects within the half hour: its orders are due soon. Both right after the
    # problems (the unrouted), late first: a warehouse's most urgent fact.
    dues = page.evaluate(
        "[...document.querySelectorAll('#order-rows tr')].map(r => "
        "[r.classList.contains('problem'), r.dataset.due || ''])"
    )
    assert [d for _, d in dues].count("late") == 125, dues
    assert [d for _, d in dues].count("soon") == 125, dues
    rank = [(not problem, {"late": 0, "soon": 1}.get(due, 2)) for problem, due in dues]
    assert rank == sorted(rank) and rank[-1] == (True, 2)
    late_row = page.evaluate(
        "document.querySelector('#order-rows tr[data-due=late] td:nth-child(4)').innerText"
    )
    assert "GLS Business" in late_row and words["dashboard.cutoff_late"] in late_row, late_row
    soon_row = page.evaluate(
        "document.querySelector('#order-rows tr[data-due=soon] td:nth-child(4)').innerText"
    )
    assert "UPS Standard" in soon_row and render(
        msg("dashboard.cutoff_soon", min=18), words, language
    ) in soon_row.replace("\n", " "), soon_row
    boxes = page.evaluate(
        "[...document.querySelectorAll('#stages .stage')].map(d => d.dataset.stage + "
        "'=' + d.querySelector('b').innerText)"
    )
    assert "late=125" in boxes and "soon=125" in boxes, boxes
    queued = page.evaluate(
        "[...document.querySelectorAll('#order-rows tr')].filter(r => "
        f"r.children[1].innerText === {json.dumps(words['dashboard.queued'])}).length"
    )
    assert queued == 50, queued  # 60 at packing, 10 of them started by a packer
    assert page.evaluate("document.querySelectorAll('#kpi-rows tr').length") >= 20
    page.screenshot(shots / f"site{nodes}-{width}x{height}-top.png")
    result = page.evaluate(REACHABLE)
    assert result["problems"] == [], result
    assert result["checked"] >= nodes + 500 + 20 + 25
    page.screenshot(shots / f"site{nodes}-{width}x{height}-scrolled.png")


def acknowledge_one(page: Page, words: dict[str, str]) -> None:
    """Type a name, click the first Acknowledge: the row says who and when, the count drops."""
    before = page.evaluate("document.getElementById('open-exceptions').innerText")
    page.evaluate(
        "(() => { const i = document.getElementById('ack-by'); i.value = 'Maria';"
        " i.dispatchEvent(new Event('change')); })()"
    )
    target = page.evaluate(
        "(() => { const b = document.querySelector('#exception-list button[data-ack]');"
        " b.scrollIntoView({block: 'nearest'}); return b.dataset.ack; })()"
    )
    page.click(f'#exception-list button[data-ack="{target}"]')
    by = words["dashboard.acked_by"].split("{name}")[0].split("}")[-1] + "Maria"  # " by Maria"
    text = page.wait_text(f'#exception-list li[data-id="{target}"]', by.strip())
    assert words["dashboard.acked_by"].split(" {time}")[0] in text
    assert (
        page.evaluate(
            f"document.querySelector('#exception-list li[data-id=\"{target}\"]').className"
        )
        == "acked"
    )
    after = page.evaluate("document.getElementById('open-exceptions').innerText")
    assert int(after.split()[0]) == int(before.split()[0]) - 1, (before, after)


@needs_chromium
@pytest.mark.parametrize(("nodes", "language"), [(26, "en"), (100, "en"), (26, "de")])
def test_every_row_is_reachable_at_tv_and_tablet_sizes(
    tmp_path: Path, nodes: int, language: str
) -> None:
    """Both sizes, every row; in German too: the same page, its words from de.json."""
    now = [NOW]
    view = build_site(nodes, lambda: now[0])
    state = view.snapshot()
    assert 28 <= len(state["exceptions"]) <= 32, len(state["exceptions"])
    # One offline node comes back: its exception shows as cleared, a "back online" opens.
    back = "zone-011"
    view.oms.nodes[back].online = True
    now[0] += 120_000
    words = catalogue(language)

    async def scenario() -> None:
        web = await serve_dashboard(view, "127.0.0.1", 0, language=language)
        try:
            await asyncio.to_thread(in_browser, f"http://127.0.0.1:{web.port}/")
        finally:
            await web.close()

    def in_browser(url: str) -> None:
        with browser() as page:
            page.open(url)
            for width, height in SIZES:
                run_size(page, url, width, height)
            if language != "en":
                said_in(page, language)
            acknowledge_one(page, words)
            page.screenshot(tmp_path / f"site{nodes}-{language}-acknowledged.png")

    def run_size(page: Page, url: str, width: int, height: int) -> None:
        offline = 1 if nodes == 26 else 4  # one of those the site was built with is back
        check_site(page, url, (width, height), nodes, offline, tmp_path, language)
        cleared = page.evaluate(
            "[...document.querySelectorAll('#exception-list li.cleared')].map(l => l.innerText)"
        )
        gone = words["dashboard.exc.offline"]
        done = words["dashboard.cleared"].split(" {time}")[0]
        assert any(gone in c and done in c for c in cleared), cleared

    asyncio.run(scenario())


def said_in(page: Page, language: str) -> None:
    """The page in another language: its headings, codes and exceptions in its words, no
    English word of the dashboard's left where the catalogue has its own."""
    words = catalogue(language)
    assert page.evaluate("document.documentElement.lang") == language
    heading = page.evaluate("document.querySelector('#nodes h2').innerText")
    assert heading.lower() == words["dashboard.nodes"].lower()
    text = page.evaluate("document.body.innerText")
    kinds = page.evaluate(
        "[...document.querySelectorAll('#exception-list .kind')].map(k => k.innerText)"
    )
    assert words["dashboard.kind.short"] in kinds and "SHORT" not in kinds, kinds
    # A reason code as the language's words: the short picks' "empty" shelf.
    assert f"({words['reason.empty']})" in text
    assert "(location empty)" not in text and "empty)" not in text
    stages = page.evaluate("document.getElementById('stages').innerText")
    assert words["dashboard.stage.late"] in stages and words["dashboard.stage.pick"] in stages
    kpis = page.evaluate("[...document.querySelectorAll('#kpi-rows tr')].map(r => r.innerText)")
    assert any(k.startswith(words["dashboard.kpi.lines_picked"]) for k in kpis), kpis
    roles = page.evaluate(
        "document.querySelector('#node-rows tr[data-node=\"pack-01\"] td:nth-child(2)').innerText"
    )
    assert roles == words["dashboard.role.pack"], roles


def _wait(page: Page, expression: str, timeout: float = 15) -> Any:
    import time

    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{expression} stayed {value!r}")


ARCHIVE_IDS = (
    "[...document.querySelectorAll('#order-rows tr[data-order]')].map(r => r.dataset.order)"
)


@needs_chromium
def test_older_finished_orders_are_a_more_away_page_by_page_and_by_search(
    tmp_path: Path,
) -> None:
    """A site log of 640 orders, 40 open: the page holds the open ones and the 200 latest
    finished, and a "more" row for the 400 others; pressing it pages through every order
    of the log, highest first, each once and each reachable on the page; a search finds
    orders by the beginning of their id; "back to live" returns to the live list."""
    from agent.oms.site.board import LogBoard, log_view
    from agent.oms.site.log import SqliteLog
    from agent.oms.site.service import HeadNotifier
    from tests.test_site_dashboard_e2e import births, shipped_orders

    store = SqliteLog(tmp_path / "site.db")
    store.append(births())
    store.append(shipped_orders(640, open_=40))
    oms = OmsClient(BrokerConfig(urls=["mqtt://127.0.0.1:1"]), "dc1")
    board = LogBoard(log_view(oms, store), store, HeadNotifier())
    everything = [f"SO-{n:04d}" for n in range(639, -1, -1)]

    def in_browser(url: str) -> None:
        with browser() as page:
            page.open(url)
            page.viewport(1280, 800)
            live = _wait(page, "document.querySelectorAll('#order-rows tr[data-order]').length")
            assert live == 240, live
            more = page.wait_text("#more-orders", "400")
            assert more.startswith("400 older finished orders"), more
            assert page.evaluate(REACHABLE)["problems"] == []
            page.screenshot(tmp_path / "live-with-more.png")

            page.click("#more-orders")
            _wait(page, f"{ARCHIVE_IDS}[0] === 'SO-0639'")
            seen: list[str] = []
            for number in range(1, 20):
                ids = page.evaluate(ARCHIVE_IDS)
                assert len(ids) == (50 if number < 13 else 40), (number, len(ids))
                seen += ids
                for width, height in SIZES:
                    if number in (1, 13):  # the first page and the last, at both sizes
                        page.viewport(width, height)
                        result = page.evaluate(REACHABLE)
                        assert result["problems"] == [], result
                        page.screenshot(tmp_path / f"older-{number}-{width}x{height}.png")
                if page.evaluate("document.getElementById('order-next').hidden"):
                    break
                page.click("#order-next")
                _wait(page, f"{ARCHIVE_IDS}[0] !== {json.dumps(ids[0])}")
            assert seen == everything  # every order of the log, each once, highest first

            page.click("#order-first")
            _wait(page, f"{ARCHIVE_IDS}[0] === 'SO-0639'")
            page.click("#order-live")
            _wait(page, "document.querySelectorAll('#order-rows tr[data-order]').length === 240")
            assert page.evaluate("document.getElementById('order-nav').hidden")

            page.evaluate(
                "(() => { const f = document.getElementById('order-find'); f.value = 'SO-001';"
                " f.dispatchEvent(new Event('input')); })()"
            )
            _wait(page, f"{ARCHIVE_IDS}.length === 10")
            assert page.evaluate(ARCHIVE_IDS) == [f"SO-001{n}" for n in range(9, -1, -1)]
            assert "SO-001" in page.evaluate("document.getElementById('order-what').innerText")
            shipped = page.evaluate(
                "document.querySelector('#order-rows tr[data-order=\"SO-0012\"]').innerText"
            )
            assert "shipped" in shipped and "pack-1" in shipped, shipped
            page.screenshot(tmp_path / "found.png")

    async def scenario() -> None:
        web = await board.start("127.0.0.1", 0)
        try:
            await asyncio.to_thread(in_browser, f"http://127.0.0.1:{web.port}/")
        finally:
            await board.close()

    asyncio.run(scenario())
    store.close()
