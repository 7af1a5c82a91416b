"""``zone-agent oms ...``: the reference OMS on the command line.

* ``oms watch``: a live table of the site's nodes (online, boot, role, devices, outbox);
  ``--record FILE`` also writes every event, once and in order, as JSON lines.
* ``oms kpi FILE``: the KPI table from a recording (definitions in docs/kpi.md).
* ``oms dispatch FILE``: sends the pick lines of an order file (JSON or CSV, see
  docs/orders.md) as one wave to the nodes that own their locations.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from agent.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE


def register(commands: Any, sim: Any) -> None:
    """Add ``oms watch``, ``oms kpi`` and ``oms dispatch``."""
    oms = commands.add_parser("oms", help="the reference OMS: watch, kpi, dispatch")
    sub = oms.add_subparsers(dest="oms_command", required=True, metavar="ACTION")
    watch = sub.add_parser("watch", help="live table of the site's nodes")
    _broker_args(watch)
    watch.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    watch.add_argument("--record", type=Path, help="append every event to this JSON-lines file")
    watch.set_defaults(func=cmd_watch)
    kpi = sub.add_parser("kpi", help="the KPI table from a recording")
    kpi.add_argument("file", type=Path)
    kpi.add_argument("--json", action="store_true")
    kpi.set_defaults(func=cmd_kpi)
    dispatch = sub.add_parser("dispatch", help="send an order file's pick lines as a wave")
    _broker_args(dispatch)
    dispatch.add_argument("file", type=Path, help="orders, .json or .csv (docs/orders.md)")
    dispatch.add_argument("--wave", default="W1")
    dispatch.add_argument("--wait", type=float, default=5.0, help="seconds to wait for births")
    dispatch.set_defaults(func=cmd_dispatch)


def _broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL")
    parser.add_argument("--site", required=True)


def _client(args: argparse.Namespace) -> Any:
    from agent.config import BrokerConfig
    from agent.oms import OmsClient

    return OmsClient(BrokerConfig(urls=[args.broker]), args.site, client_id=f"oms-cli-{id(args)}")


def _table(oms: Any) -> Any:
    from rich.table import Table

    table = Table(title=f"site {oms.site}")
    for column in ("node", "state", "boot", "role", "devices", "last seq", "outbox", "events"):
        table.add_column(column)
    for name, view in sorted(oms.nodes.items()):
        state = view.state
        devices = ", ".join(f"{d}:{h.status}" for d, h in (state.devices if state else {}).items())
        table.add_row(
            name,
            "online" if view.online else "offline",
            str(view.boot),
            state.role if state else "",
            devices,
            str(state.last_seq if state else ""),
            str(state.outbox if state else ""),
            str(view.delivered),
        )
    return table


async def cmd_watch(args: argparse.Namespace) -> int:
    """Show the nodes live; record events if asked."""
    from rich.live import Live

    from agent.link.messages import Wire

    out = args.record.open("a") if args.record else None
    loop = asyncio.get_running_loop()
    end = loop.time() + args.seconds if args.seconds else None
    async with _client(args) as oms:
        with Live(_table(oms), refresh_per_second=4) as live:
            while end is None or loop.time() < end:
                try:
                    event = await asyncio.wait_for(oms.events.get(), 0.25)
                except TimeoutError:
                    live.update(_table(oms))
                    continue
                if out is not None:
                    body = event.body.model_dump() if isinstance(event.body, Wire) else event.body
                    record = {
                        "node": event.node,
                        "name": event.name,
                        "seq": event.envelope.seq,
                        "ts": event.envelope.ts,
                        "body": body,
                    }
                    out.write(json.dumps(record, default=str) + "\n")
                    out.flush()
                live.update(_table(oms))
    if out is not None:
        out.close()
    return EXIT_OK


def cmd_kpi(args: argparse.Namespace) -> int:
    """Print the KPI table of a recording."""
    from agent.kpi import Kpis

    kpis = Kpis()
    try:
        lines = args.file.read_text().splitlines()
    except OSError as exc:
        print(f"{args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            kpis.add(record["node"], record["name"], record["body"])
        except (ValueError, KeyError, TypeError) as exc:
            print(f"{args.file}:{number}: not an event record ({exc})", file=sys.stderr)
            return EXIT_USAGE
    rows = kpis.table()
    if args.json:
        print(json.dumps({name: value for name, value, _ in rows}))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title="KPIs")
    for column in ("KPI", "value", "definition"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    return EXIT_OK


def read_orders(path: Path) -> list[dict[str, Any]]:
    """Orders from JSON (``{"orders": [...]}``) or CSV (one line per row); see docs/orders.md."""
    if path.suffix == ".csv":
        orders: dict[str, dict[str, Any]] = {}
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                order = orders.setdefault(
                    row["order"],
                    {
                        "order": row["order"],
                        "channel": row.get("channel", ""),
                        "express": row.get("express", "").lower() in ("1", "true", "yes"),
                        "tote": row.get("tote") or None,
                        "lines": [],
                    },
                )
                order["lines"].append(
                    {
                        "sku": row["sku"],
                        "qty": int(row["qty"]),
                        "location": row["location"],
                        "barcodes": [b for b in row.get("barcode", "").split("|") if b],
                    }
                )
        return list(orders.values())
    data = json.loads(path.read_text())
    return list(data["orders"])


async def cmd_dispatch(args: argparse.Namespace) -> int:
    """Route the order file's lines to the nodes owning their locations, as one wave."""
    from agent.link.messages import PickTask

    try:
        orders = read_orders(args.file)
    except (OSError, ValueError, KeyError) as exc:
        print(f"{args.file}: cannot read orders: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with _client(args) as oms:
        await asyncio.sleep(args.wait)  # retained births arrive right after subscribing
        owner = {
            loc: name
            for name, view in oms.nodes.items()
            if view.online and view.state
            for loc in view.state.locations
        }
        per_node: dict[str, list[PickTask]] = defaultdict(list)
        unrouted = []
        for order in orders:
            for n, line in enumerate(order["lines"]):
                node = owner.get(line["location"])
                if node is None:
                    unrouted.append(f"{order['order']}/{line['sku']}@{line['location']}")
                    continue
                per_node[node].append(
                    PickTask(
                        task=f"{order['order']}-{n + 1}",
                        order=order["order"],
                        location=line["location"],
                        sku=line["sku"],
                        qty=line["qty"],
                        barcodes=line.get("barcodes", []),
                        wave=args.wave,
                        express=bool(order.get("express")),
                        container=order.get("tote"),
                    )
                )
        status = EXIT_OK
        for node, tasks in sorted(per_node.items()):
            await oms.call(node, "wave_begin", {"wave": args.wave})
            replies = await asyncio.gather(*oms.send_tasks(node, tasks))
            refused = [i for r in replies for i in r.items if i.status == "rejected"]
            await oms.call(node, "wave_release", {"wave": args.wave})
            accepted = len(tasks) - len(refused)
            print(f"{node}: {accepted} lines in wave {args.wave}, {len(refused)} refused")
            status = status or (EXIT_FAILURE if refused else EXIT_OK)
        for line in unrouted:
            print(f"no online node owns {line}", file=sys.stderr)
        return status if not unrouted else EXIT_FAILURE
