"""The demo run: broker, six node processes, the reference OMS, simulated people, KPIs.

``run(options)`` starts a private Mosquitto on a free loopback port and the four nodes of
``agent.oms.demo.site`` (each ``zone-agent run --simulate`` in its own process), waits for
their births, and has the reference OMS route the sample orders through the site with
``agent.oms.fulfilment`` while the people of ``agent.oms.demo.people`` work. The terminal shows
rich progress bars (nodes online, lines picked, orders packed and shipped, returns received)
and what goes wrong; at the
end, the KPI table computed from the events the OMS received (``agent.oms.kpi``). Every
process it started is stopped on the way out, also on Ctrl-C or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.errors import ConfigError
from agent.link.settings import BrokerConfig
from agent.oms.client import NodeEvent, OmsClient, event_record
from agent.oms.dashboard import SiteView, serve_dashboard
from agent.oms.demo.broker import LocalBroker
from agent.oms.demo.people import (
    Catalogue,
    Incidents,
    Loader,
    Pace,
    Packer,
    ReturnsClerk,
    picker,
    put_wall_operator,
)
from agent.oms.demo.site import (
    DOCK_CARRIERS,
    ROLES,
    SITE,
    ZONE_A,
    ZONE_B,
    ZONE_C,
    ZONE_C_DEVICES,
    Control,
    NodeProcess,
    SiteServiceProcess,
    write_node_files,
)
from agent.oms.fulfilment import Fulfilment, OrderFile, Send, drive, read_order_file
from agent.oms.kpi import Kpis, field_of
from agent.wire.messages import Reply, Wire

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class Options:
    """What ``python -m agent.oms.demo`` was asked to do (see ``--help``)."""

    orders: int
    speed: float
    seed: int
    keep_running: bool
    order_file: Path
    workdir: Path | None = None
    record: Path | None = None
    kpi_json: Path | None = None
    timeout: float = 600.0


class Recorder:
    """Every event the OMS receives: into the KPIs, the progress bars and a JSON-lines file."""

    def __init__(self, out: IO[str] | None) -> None:
        self.out = out
        self.kpis = Kpis()
        self.counts: dict[str, int] = {}
        self.last_counters: dict[str, int] = {}

    def __call__(self, event: NodeEvent) -> None:
        """Take one event."""
        body = event.body.model_dump() if isinstance(event.body, Wire) else event.body
        self.kpis.add(event.node, event.name, body)
        self.counts[event.name] = self.counts.get(event.name, 0) + 1
        if event.name == "counters":
            self.last_counters[event.node] = int(body.get("at", 0))
        if self.out is not None:
            self.out.write(event_record(event))
            self.out.flush()


def kpi_table(kpis: Kpis) -> Table:
    """The KPI table as the terminal shows it."""
    table = Table(title="KPIs (from the events the OMS received)")
    for column in ("KPI", "value", "definition"):
        table.add_column(column)
    for row in kpis.table():
        table.add_row(*row)
    return table


def orders_table(fulfilment: Fulfilment) -> Table:
    """Where each order ended."""
    table = Table(title="orders")
    for column in ("order", "channel", "express", "status", "units", "detail"):
        table.add_column(column)
    for progress in fulfilment.orders.values():
        order = progress.order
        table.add_row(
            order.order,
            order.channel,
            "yes" if order.express else "",
            progress.status,
            str(progress.units()),
            progress.detail,
        )
    return table


async def run(options: Options, console: Console) -> int:
    """The whole demo; the exit code."""
    try:
        orders = read_order_file(options.order_file).first(options.orders)
    except ConfigError as exc:
        console.print(f"[red]{exc}[/]")
        return EXIT_USAGE
    code, kept = EXIT_FAILED, False
    with contextlib.ExitStack() as stack:
        if options.workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="zone-demo-"))

            def remove() -> None:
                # Kept when the run failed: the message names the node logs in it.
                if not kept:
                    shutil.rmtree(workdir, ignore_errors=True)

            stack.callback(remove)
        else:
            workdir = options.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        broker = stack.enter_context(LocalBroker(workdir / "broker"))
        console.print(f"[bold]broker[/] private Mosquitto on {broker.url}; files in {workdir}")
        paths = write_node_files(workdir, broker.url)
        nodes = {
            name: NodeProcess(name, path, workdir / f"{name}.log") for name, path in paths.items()
        }
        out = stack.enter_context(options.record.open("w")) if options.record else None
        service = SiteServiceProcess(workdir, broker.url)
        try:
            service_url = await service.start()
            if service_url is None:
                console.print(f"[red]the site service did not start[/] (log: {service.log})")
            else:
                console.print(
                    f"[bold]site service[/] API on {service_url} (docs: {service_url}/docs, "
                    f"docs/api.md); its event log: {workdir / 'site.db'}"
                )
            for node in nodes.values():
                await node.start()
            code = await _operate(options, console, workdir, broker, orders, Recorder(out), service)
            kept = code == EXIT_FAILED
        finally:
            exits = await asyncio.gather(*(n.stop() for n in nodes.values()))
            exits.append(await service.stop())
            names = [*nodes, "site service"]
            stopped = ", ".join(f"{n} exit {c}" for n, c in zip(names, exits, strict=True))
            console.print(f"[bold]stopped[/] {stopped}")
            if code != EXIT_OK:
                for node in nodes.values():
                    tail = node.log.read_text(errors="replace")[-1500:]
                    console.print(f"[red]{node.name} log (end):[/]\n{tail}")
        return code


async def _operate(
    options: Options,
    console: Console,
    workdir: Path,
    broker: LocalBroker,
    orders: OrderFile,
    recorder: Recorder,
    service: SiteServiceProcess,
) -> int:
    rng = random.Random(options.seed)
    catalogue = Catalogue(dict(orders.catalogue))
    incidents = Incidents()
    # The site service acknowledges (each event is in its log first); this process routes,
    # drives the people and counts, from the same events, and acknowledges nothing
    # (confirm_acks without confirming: its acks say "nothing" but still ask for resends).
    # Without a site service it acknowledges itself, as before.
    listening = service.url is not None
    oms = OmsClient(
        BrokerConfig(urls=[broker.url]),
        SITE,
        client_id="demo-oms",
        auto_ack=not listening,
        confirm_acks=listening,
    )
    columns = (
        TextColumn("{task.description:<14}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    async with oms, contextlib.AsyncExitStack() as stack:
        with Progress(*columns, console=console) as progress:

            def say(text: str) -> None:
                progress.console.print(f"  [yellow]![/] {text}")

            online = progress.add_task("nodes online", total=len(ROLES))
            waiting = time.monotonic()
            try:
                # A slow machine (an emulated Pi: 46 s to six births) gets what --timeout says.
                async with asyncio.timeout(options.timeout):
                    while sum(v.online for v in oms.nodes.values()) < len(ROLES):
                        await oms.state_changes.get()
                        count = sum(v.online for v in oms.nodes.values())
                        progress.update(online, completed=count)
            except TimeoutError:
                up = sorted(n for n, v in oms.nodes.items() if v.online)
                missing = ", ".join(r for r in ROLES if r not in up)
                console.print(
                    f"[red]{len(up)} of {len(ROLES)} nodes online after "
                    f"{time.monotonic() - waiting:.1f} s; logs in {workdir}[/] (not online: "
                    f"{missing}; more time: --timeout)"
                )
                return EXIT_FAILED
            controls = {name: await Control.find(workdir / name) for name in oms.nodes}
            for name, control in sorted(controls.items()):
                progress.console.print(f"  {name} screen: {control.url}/")
            # DPD collects at 2 hours from now; Royal Mail's van left a minute ago, so its
            # parcels are loaded after their cut-off (the KPI has something to count).
            now_ms = int(time.time() * 1000)
            fulfilment = Fulfilment(
                orders,
                wave="W1",
                serial_start=1000 + options.seed,
                dock_carriers=DOCK_CARRIERS,
                cutoffs={"DPD": now_ms + 7_200_000, "Royal Mail": now_ms - 60_000},
            )
            # The supervisor dashboard, served by this OMS process, the one that routes: the
            # page shows exactly the events it got and the router's view of every order.
            site_view = SiteView(oms, fulfilment)
            dashboard = await serve_dashboard(site_view, "127.0.0.1", 0)
            stack.push_async_callback(dashboard.close)
            progress.console.print(
                f"  [bold]dashboard[/]: http://127.0.0.1:{dashboard.port}/ (metrics: /metrics)"
            )
            total_lines = sum(len(o.lines) for o in orders.orders)
            to_dock = sum(fulfilment.carrier_of(o) in DOCK_CARRIERS for o in orders.orders)
            lines = progress.add_task("lines picked", total=total_lines)
            packed = progress.add_task("orders packed", total=len(orders.orders))
            shipped = progress.add_task("orders shipped", total=to_dock)
            returned = progress.add_task("returns received", total=len(orders.returns))

            def on_event(event: NodeEvent) -> None:
                recorder(event)
                site_view.on_event(event)
                done, _ = fulfilment.lines()
                progress.update(lines, completed=done)
                counts = fulfilment.counts()
                ends = counts["unfulfilled"] + counts["unrouted"] + counts["refused"]
                out = counts["packed"] + counts["dispatching"] + counts["shipped"]
                progress.update(packed, completed=out, total=len(orders.orders) - ends)
                progress.update(shipped, completed=counts["shipped"])
                done = sum(r.status == "received" for r in fulfilment.returns.values())
                progress.update(returned, completed=done)
                if event.name == "print_delayed":
                    order = field_of(event.body, "order")
                    say(f"OMS: {event.node} says the label for {order} is late")
                elif event.name in ("pack_refused", "load_refused", "return_refused"):
                    say(f"OMS: {event.node} refused a scan ({field_of(event.body, 'reason')})")
                elif event.name == "manifest_closed":
                    loaded = len(field_of(event.body, "loaded") or [])
                    say(f"OMS: manifest {field_of(event.body, 'manifest')}: {loaded} shipped")

            def on_send(send: Send, reply: Reply) -> None:
                site_view.on_reply(send, reply)
                if reply.status != "accepted" or any(i.status != "accepted" for i in reply.items):
                    say(f"OMS: {send.node} refused {send.command}: {reply.reason or reply.items}")

            pace = Pace(options.speed, rng)
            people = [
                picker(
                    "ana",
                    controls["zone-a"],
                    "shelf",
                    ZONE_A,
                    True,
                    catalogue,
                    pace,
                    incidents,
                    say,
                ),
                picker(
                    "ben",
                    controls["zone-b"],
                    "strip",
                    ZONE_B,
                    False,
                    catalogue,
                    pace,
                    incidents,
                    say,
                ),
                picker(
                    "cleo",
                    controls["zone-c"],
                    {slot: dev for dev, slots in ZONE_C_DEVICES.items() for slot in slots},
                    ZONE_C,
                    False,
                    catalogue,
                    pace,
                    incidents,
                    say,
                    tag_keys=True,
                ),
                put_wall_operator(controls["wall-1"], catalogue, pace, incidents, say),
                Packer(controls["pack-1"], catalogue, pace, incidents, say).run(),
                Loader(controls["dock-1"], pace, incidents, say).run(),
                ReturnsClerk(
                    controls["returns-1"],
                    catalogue,
                    {r.rma: r for r in orders.returns},
                    pace,
                    incidents,
                    say,
                ).run(),
            ]
            workers = [asyncio.create_task(p) for p in people]
            started = time.monotonic()
            try:
                async with asyncio.timeout(options.timeout):
                    await drive(oms, fulfilment, on_event=on_event, on_send=on_send)
                    await _final_counters(oms, recorder, on_event)
            except TimeoutError:
                if fulfilment.done():  # every order ended; the nodes' last counters did not come
                    console.print("[red]no counters from the pick nodes after the last pick[/]")
                else:
                    console.print(f"[red]not finished after {options.timeout:.0f} s[/]")
                console.print(orders_table(fulfilment))
                return EXIT_FAILED
            finally:
                for worker in workers:
                    worker.cancel()
                results = await asyncio.gather(*workers, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    console.print(f"[red]a simulated person failed: {result!r}[/]")
                    return EXIT_FAILED
        console.print(orders_table(fulfilment))
        console.print(kpi_table(recorder.kpis))
        elapsed = time.monotonic() - started
        console.print(
            f"done in {elapsed:.1f} s: {incidents.misscans} mis-scans, {incidents.shorts} short "
            f"picks, {incidents.weigh_failures} check-weigh failure(s), "
            f"{incidents.paper_outs} printer paper-out(s), "
            f"{incidents.wrong_pack_scans} wrong item(s) refused at packing, "
            f"{incidents.wrong_lanes} wrong lane(s) refused at the dock, "
            f"{incidents.manifests} manifest(s) closed, "
            f"{incidents.units_returned} unit(s) returned, "
            f"{incidents.wrong_bins} wrong bin(s) refused at returns"
        )
        for what in incidents.stuck:
            console.print(f"[red]waited in vain: {what}[/]")
        head = await service.head()
        if head is not None:
            console.print(
                f"site service: {head} entries in its event log; read them with "
                f"curl '{service.url}/v1/events?after=0'"
            )
        if options.kpi_json is not None:
            options.kpi_json.write_text(
                json.dumps(
                    {
                        "kpis": {name: value for name, value, _ in recorder.kpis.table()},
                        "statuses": {o: p.status for o, p in fulfilment.orders.items()},
                        "returns": {r: p.status for r, p in fulfilment.returns.items()},
                        "dashboard": {
                            row["node"]: {
                                "online": row["online"],
                                "devices": {
                                    d["name"]: [d["kind"], d["status"]] for d in row["devices"]
                                },
                            }
                            for row in site_view.snapshot()["nodes"]
                        },
                        "locations": {
                            name: len(view.state.locations)
                            for name, view in oms.nodes.items()
                            if view.state is not None
                        },
                        "incidents": {
                            "misscans": incidents.misscans,
                            "shorts": incidents.shorts,
                            "weigh_failures": incidents.weigh_failures,
                            "paper_outs": incidents.paper_outs,
                            "wrong_pack_scans": incidents.wrong_pack_scans,
                            "wrong_lanes": incidents.wrong_lanes,
                            "manifests": incidents.manifests,
                            "units_returned": incidents.units_returned,
                            "wrong_bins": incidents.wrong_bins,
                            "stuck": incidents.stuck,
                        },
                    },
                    indent=1,
                )
            )
        if options.keep_running:
            console.print(
                "[bold]still running[/]: open the dashboard and the screens above; "
                "Ctrl-C stops everything"
            )
            await _keep_recording(oms, on_event)
        return EXIT_OK if not incidents.stuck else EXIT_FAILED


async def _final_counters(oms: OmsClient, recorder: Recorder, on_event: Any) -> None:
    """Wait for each pick node's counters published after the last confirmation.

    The mis-scan rate divides by the scans the nodes counted; the nodes publish their
    counters every second in the demo, so the last one after the work is the total.
    """
    end_ms = int(time.time() * 1000)
    pick_nodes = [n for n, v in oms.nodes.items() if v.state and v.state.role == "pick"]
    async with asyncio.timeout(10):
        while any(recorder.last_counters.get(n, 0) <= end_ms for n in pick_nodes):
            on_event(await oms.events.get())


async def _keep_recording(oms: OmsClient, on_event: Any) -> None:
    while True:
        on_event(await oms.events.get())
