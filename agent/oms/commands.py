"""``zone-agent oms ...``: the reference OMS on the command line.

* ``oms watch``: a live table of the site's nodes (online, boot, role, devices, outbox);
  ``--record FILE`` also writes every event, once and in order, as JSON lines.
* ``oms serve``: the supervisor dashboard (``agent.oms.dashboard``): one live page of the whole
  site (nodes, orders stuck first, exceptions, KPIs, picks per hour) over SSE, with
  ``/metrics``; on 127.0.0.1 unless ``--bind`` says otherwise. ``--orders FILE`` also routes
  an order file through the site as ``oms dispatch`` does; ``--no-ack`` watches beside
  another OMS without acknowledging events on its behalf.
* ``oms kpi FILE``: the KPI table from a recording (definitions in docs/kpi.md).
* ``oms dispatch FILE``: routes an order file (JSON or CSV, see docs/orders.md) through the
  site with ``agent.oms.fulfilment``: pick waves to the nodes owning the locations, then (unless
  ``--no-follow``) each order to a put wall and a pack station as its picks come in, its
  parcel to a dispatch station (``--dock-carrier``, ``--cutoff``) and its returns to a
  returns station.
* ``oms send NODE COMMAND BODY``: one command (``pick``, ``pack``, ``pack_cancel``, ...) with
  a JSON body (text, ``@file`` or ``-`` for stdin), checked against the command's model
  first, resent until the node replies; prints the reply as JSON. Exit 0 when everything
  was accepted, 1 when the node refused the command or any item (or did not answer in
  ``--timeout``), 2 for a body the command cannot take. It does not acknowledge the node's
  events: those stay in the node's outbox for the OMS (``oms watch``, ``oms dispatch``).

``--site-file FILE`` takes the site and its ``[broker]`` table (username, the password from
``ZONE_AGENT_BROKER_PASSWORD``, CA, client certificate, several URLs) from the site service's
file (docs/api.md), validated like a node file. Without it, ``--broker`` (a URL without
credentials) defaults to the first of ``ZONE_AGENT_BROKER_URLS``, else
``mqtt://127.0.0.1:1883``, and ``--site`` is required. Each command connects with a stable
client id (``<client id>-<command>``) and a persistent session; a broker that refuses the
login is an error and exit 2, not an empty table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agent.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError, LoginRefused


def register(commands: Any, sim: Any) -> None:
    """Add ``oms watch``, ``oms serve``, ``oms kpi``, ``oms dispatch`` and ``oms send``."""
    oms = commands.add_parser("oms", help="the reference OMS: watch, serve, kpi, dispatch, send")
    sub = oms.add_subparsers(dest="oms_command", required=True, metavar="ACTION")
    watch = sub.add_parser("watch", help="live table of the site's nodes")
    _broker_args(watch)
    watch.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    watch.add_argument("--record", type=Path, help="append every event to this JSON-lines file")
    watch.set_defaults(func=_checked(cmd_watch))
    serve = sub.add_parser("serve", help="the supervisor dashboard of the site (a web page)")
    _broker_args(serve)
    serve.add_argument("--bind", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8900, help="port (8900; 0 picks a free one)")
    serve.add_argument("--orders", type=Path, help="also route this order file (docs/orders.md)")
    serve.add_argument("--wave", default="W1", help="wave id for --orders")
    serve.add_argument(
        "--no-ack",
        dest="ack",
        action="store_false",
        help="do not acknowledge events (watching beside the OMS that does)",
    )
    serve.add_argument(
        "--stuck-after",
        type=float,
        default=None,
        help="one threshold (s) for every stage; default: per stage (pick 30 min, pack 15 min "
        "once started, a queue at packing is never stuck; docs/dashboard.md)",
    )
    serve.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    serve.add_argument("--record", type=Path, help="append every event to this JSON-lines file")
    serve.add_argument(
        "--log",
        type=Path,
        help="the site log it keeps (SQLite; default: $XDG_STATE_HOME or ~/.local/state, "
        "zone-agent/oms-serve-SITE.db): what the page shows survives a restart",
    )
    serve.add_argument(
        "--language", help="the page's words: en, de, pl (default: the site file's, else en)"
    )
    serve.add_argument("--messages", type=Path, help="a site's JSON file of words (agent.i18n)")
    serve.set_defaults(func=_checked(cmd_serve))
    kpi = sub.add_parser("kpi", help="the KPI table from a recording")
    kpi.add_argument("file", type=Path)
    kpi.add_argument("--json", action="store_true")
    kpi.set_defaults(func=cmd_kpi)
    dispatch = sub.add_parser(
        "dispatch", help="route an order file: pick waves, put walls, pack stations"
    )
    _broker_args(dispatch)
    dispatch.add_argument("file", type=Path, help="orders, .json or .csv (docs/orders.md)")
    dispatch.add_argument("--wave", default="W1")
    dispatch.add_argument("--wait", type=float, default=5.0, help="seconds to wait for births")
    dispatch.add_argument(
        "--no-follow",
        dest="follow",
        action="store_false",
        help="send the pick waves and exit (default: follow orders to the wall and packing)",
    )
    dispatch.add_argument("--timeout", type=float, default=3600.0, help="stop following after")
    dispatch.add_argument("--record", type=Path, help="append every event to this JSON-lines file")
    dispatch.add_argument(
        "--sscc-start", type=int, default=1, help="first SSCC serial reference for own labels"
    )
    dispatch.add_argument("--company-prefix", help="GS1 company prefix (default: the station's)")
    dispatch.add_argument(
        "--dock-carrier",
        action="append",
        metavar="CARRIER",
        help="a carrier collected at the dispatch station (repeat; default: every carrier)",
    )
    dispatch.add_argument(
        "--cutoff",
        action="append",
        default=[],
        metavar="CARRIER=HH:MM",
        type=_cutoff,
        help="a carrier's cut-off today, local time (repeat), sent with its parcels",
    )
    dispatch.set_defaults(func=_checked(cmd_dispatch))
    send = sub.add_parser("send", help="send one command to a node and print its reply")
    _broker_args(send)
    send.add_argument("node", help="the node's name, as in its node file")
    send.add_argument("name", metavar="COMMAND", help="pick, pack, pack_cancel, cancel, ...")
    send.add_argument("body", help="the body as JSON text, @FILE, or - for stdin")
    send.add_argument("--timeout", type=float, default=15.0, help="wait this long for a reply")
    send.set_defaults(func=_checked(cmd_send))


def _default_broker() -> str:
    urls = os.environ.get("ZONE_AGENT_BROKER_URLS", "")
    return next((u.strip() for u in urls.split(",") if u.strip()), "mqtt://127.0.0.1:1883")


def _broker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--site-file",
        type=Path,
        help="the site file: site and [broker] table (username, CA, certificates, URLs)",
    )
    parser.add_argument(
        "--broker",
        help="broker URL (default: the first of ZONE_AGENT_BROKER_URLS, else localhost:1883)",
    )
    parser.add_argument("--site", help="the site (required without --site-file)")


def _checked(func: Any) -> Any:
    """Resolve the broker settings first; a bad site file or a refused login: exit 2."""

    async def run(args: argparse.Namespace) -> int:
        try:
            _resolve_broker(args)
        except ConfigError as exc:
            for field, reason in exc.problems:
                print(f"{exc.where(field)}: {field}: {reason}", file=sys.stderr)
            return EXIT_USAGE
        try:
            result: int = await func(args)
            return result
        except LoginRefused as exc:
            print(
                f"zone-agent: {exc} (check broker.username, ZONE_AGENT_BROKER_PASSWORD and "
                "the client certificate)",
                file=sys.stderr,
            )
            return EXIT_USAGE

    run.__doc__ = func.__doc__
    return run


def _resolve_broker(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from agent.link.settings import BrokerConfig
    from agent.oms.site.settings import load_site

    if args.site_file is not None:
        if args.broker is not None:
            raise ConfigError(
                "<command line>", "--broker", "give --site-file or --broker, not both"
            )
        config = load_site(args.site_file)
        if args.site is not None and args.site != config.site:
            raise ConfigError(str(args.site_file), "site", f"is {config.site}, not {args.site}")
        args.site = config.site
        args.site_config = config
        args.broker_config = config.broker
        args.client_base = config.client_id
        args.broker = ", ".join(config.broker.urls)
        return
    if args.site is None:
        raise ConfigError("<command line>", "--site", "required (or give --site-file)")
    args.site_config = None
    args.broker = args.broker or _default_broker()
    try:
        args.broker_config = BrokerConfig(urls=[args.broker])
    except ValidationError as exc:
        raise ConfigError("<command line>", "--broker", exc.errors()[0]["msg"]) from None
    args.client_base = f"zone-agent-oms-{args.site}"


@contextlib.asynccontextmanager
async def _client(args: argparse.Namespace, **kw: Any) -> AsyncIterator[Any]:
    """The OMS client of a command: stable client id, persistent session, login checked."""
    from agent.oms import OmsClient

    broker = args.broker_config
    oms = OmsClient(broker, args.site, client_id=f"{args.client_base}-{args.oms_command}", **kw)
    async with oms:
        # A broker that refuses the login does so at once; one that is only down is waited
        # for by the command as before (the transport keeps trying).
        wait = min(15.0, broker.connect_timeout_s * len(broker.urls) + 1.0)
        with contextlib.suppress(TimeoutError):
            await oms.wait_connected(wait)
        yield oms


def _table(oms: Any, open_work: dict[str, int]) -> Any:
    from rich.table import Table

    table = Table(title=f"site {oms.site}")
    columns = ("node", "state", "boot", "role", "devices", "open", "last seq", "outbox", "events")
    for column in columns:
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
            str(open_work.get(name, "")),
            str(state.last_seq if state else ""),
            str(state.outbox if state else ""),
            str(view.delivered),
        )
    return table


async def cmd_watch(args: argparse.Namespace) -> int:
    """Show the nodes live; record events if asked."""
    from rich.live import Live

    from agent.oms import event_record

    out = args.record.open("a") if args.record else None
    loop = asyncio.get_running_loop()
    end = loop.time() + args.seconds if args.seconds else None
    open_work: dict[str, int] = {}  # open lines or queued orders, from the latest counters
    async with _client(args) as oms:
        with Live(_table(oms, open_work), refresh_per_second=4) as live:
            while end is None or loop.time() < end:
                try:
                    event = await asyncio.wait_for(oms.events.get(), 0.25)
                except TimeoutError:
                    live.update(_table(oms, open_work))
                    continue
                count = getattr(event.body, "open_lines", getattr(event.body, "queued", None))
                if event.name in ("counters", "pack_counters") and isinstance(count, int):
                    open_work[event.node] = count
                if out is not None:
                    out.write(event_record(event))
                    out.flush()
                live.update(_table(oms, open_work))
    if out is not None:
        out.close()
    return EXIT_OK


def default_log(site: str) -> Path:
    """Where ``oms serve`` keeps its site log unless ``--log`` says: the user's state dir."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "zone-agent" / f"oms-serve-{site}.db"


async def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the dashboard until Ctrl-C (or ``--seconds``); route ``--orders`` if given.

    A thin front over the site service (``agent.oms.site``): its events, births and
    acknowledgements go to a SQLite site log first, and the page is the one ``site serve
    --dashboard-port`` serves, built from that log, so a restart shows what it showed.
    """
    import signal

    from pydantic import ValidationError

    from agent.errors import AgentError
    from agent.oms.fulfilment import read_order_file
    from agent.oms.site.board import board_for
    from agent.oms.site.log import SqliteLog
    from agent.oms.site.service import LeadershipLost, SiteService
    from agent.oms.site.settings import DashboardConfig, LogConfig, SiteConfig

    orders = None
    if args.orders is not None:
        try:
            orders = read_order_file(args.orders)
        except ConfigError as exc:
            for field_, reason in exc.problems:
                print(f"{exc.file}: {field_}: {reason}", file=sys.stderr)
            return EXIT_USAGE
    site: SiteConfig = args.site_config or SiteConfig(site=args.site)
    try:
        dashboard = DashboardConfig(
            language=args.language or site.dashboard.language,
            messages=args.messages or site.dashboard.messages,
        )
    except ValidationError as exc:
        print(f"zone-agent: {exc.errors()[0]['msg']}", file=sys.stderr)
        return EXIT_USAGE
    path = args.log or default_log(args.site)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        store = SqliteLog(path)
    except (OSError, AgentError) as exc:
        print(f"zone-agent: the site log {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    broker = args.broker_config.model_copy(update={"client_id": f"{args.client_base}-serve"})
    config = site.model_copy(
        update={"broker": broker, "dashboard": dashboard, "log": LogConfig(path=path)}
    )
    service = SiteService(config, store, acknowledge=args.ack)
    board = board_for(service, stuck_after_s=args.stuck_after)
    try:
        web = await board.start(args.bind, args.port)
    except OSError as exc:
        print(f"zone-agent: cannot listen on {args.bind}:{args.port}: {exc}", file=sys.stderr)
        store.close()
        return EXIT_FAILURE
    print(f"dashboard on http://{args.bind}:{web.port}/ (metrics on /metrics)", flush=True)
    print(f"site log: {path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    extra = []
    if orders is not None:
        extra.append(asyncio.create_task(_route(service, orders, args.wave)))
    if args.record is not None:
        extra.append(asyncio.create_task(_record(service, args.record)))
    if args.seconds is not None:
        loop.call_later(args.seconds, stop.set)
    code = EXIT_OK
    try:
        await service.run(stop)
    except LoginRefused:
        raise  # exit 2, said by _checked
    except (LeadershipLost, AgentError) as exc:
        print(f"zone-agent: stopping: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    finally:
        for task in extra:
            task.cancel()
        await asyncio.gather(*extra, return_exceptions=True)
        await board.close()
        store.close()
    return code


async def _route(service: Any, orders: Any, wave: str) -> None:
    """Route an order file once the service leads: once per log, not again at a restart."""
    await service.active.wait()
    await asyncio.sleep(2.0)  # retained births arrive right after subscribing
    first = orders.orders[0].order if orders.orders else None
    if first is not None and await asyncio.to_thread(service.log.order, first) is not None:
        print(f"the orders of {wave} are in the site log already: not routed again", flush=True)
        return
    routed = await service.submit_wave(wave, orders)
    print(f"routed {len(routed)} orders as wave {wave}", flush=True)


async def _record(service: Any, path: Path) -> None:
    """Append every node event logged from now on to ``path``, as ``oms watch --record``."""
    store, head = service.log, service.head
    cursor = await asyncio.to_thread(store.head)
    with path.open("a") as out:
        while True:
            await head.wait(cursor, 1.0)
            entries = await asyncio.to_thread(store.read, cursor, 2000)
            for entry in entries:
                if entry.seq is not None:
                    record = {
                        "node": entry.node,
                        "name": entry.name,
                        "seq": entry.seq,
                        "ts": entry.ts,
                        "body": json.loads(entry.body),
                    }
                    out.write(json.dumps(record) + "\n")
            out.flush()
            if entries:
                cursor = entries[-1].id


def cmd_kpi(args: argparse.Namespace) -> int:
    """Print the KPI table of a recording."""
    from agent.oms.kpi import Kpis

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


async def cmd_dispatch(args: argparse.Namespace) -> int:
    """Route an order file through the site: pick waves, put walls, pack stations."""
    from agent.errors import ConfigError
    from agent.oms import event_record
    from agent.oms.fulfilment import Fulfilment, drive, read_order_file

    try:
        orders = read_order_file(args.file)
    except ConfigError as exc:
        for field_, reason in exc.problems:
            print(f"{exc.file}: {field_}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    fulfilment = Fulfilment(
        orders,
        wave=args.wave,
        serial_start=args.sscc_start,
        company_prefix=args.company_prefix,
        dock_carriers=args.dock_carrier,
        cutoffs=dict(args.cutoff),
    )
    out = args.record.open("a") if args.record else None
    per_node: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def on_send(send: Any, reply: Any) -> None:
        if send.command == "pick":
            refused = sum(1 for i in reply.items if i.status == "rejected")
            if reply.status == "rejected":
                refused = len(send.body.tasks)
            per_node[send.node][0] += len(send.body.tasks) - refused
            per_node[send.node][1] += refused
        elif send.command == "wave_release":
            accepted, refused = per_node[send.node]
            print(f"{send.node}: {accepted} lines in wave {args.wave}, {refused} refused")
        elif send.command in ("put", "pack"):
            print(f"{send.order}: {send.command} at {send.node}: {reply.status}", flush=True)

    def on_event(event: Any) -> None:
        if out is not None:
            out.write(event_record(event))
            out.flush()

    try:
        async with _client(args) as oms:
            await asyncio.sleep(args.wait)  # retained births arrive right after subscribing
            try:
                async with asyncio.timeout(args.timeout):
                    await drive(
                        oms, fulfilment, follow=args.follow, on_event=on_event, on_send=on_send
                    )
            except TimeoutError:
                print(f"gave up after {args.timeout:.0f} s", file=sys.stderr)
    finally:
        if out is not None:
            out.close()
    status = EXIT_OK
    for order_id, progress in fulfilment.orders.items():
        if progress.status in ("unrouted", "refused"):
            print(f"order {order_id} not sent: {progress.detail}", file=sys.stderr)
            status = EXIT_FAILURE
        elif args.follow:
            print(f"{order_id}: {progress.status} {progress.detail}".rstrip())
            status = status if progress.status in ("shipped", "packed", "picked") else EXIT_FAILURE
    for rma, ret in fulfilment.returns.items():
        if args.follow and ret.status != "waiting":
            print(f"return {rma}: {ret.status} {ret.detail}".rstrip())
    return status


def _cutoff(text: str, now: float | None = None) -> tuple[str, int]:
    """``CARRIER=HH:MM`` as (carrier, today at HH:MM local time in ms since the epoch)."""
    import datetime as dt

    carrier, sep, clock = text.rpartition("=")
    try:
        at = dt.datetime.strptime(clock.strip(), "%H:%M").time()
    except ValueError:
        at = None
    if not sep or not carrier.strip() or at is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected CARRIER=HH:MM, e.g. DPD=17:30")
    today = dt.datetime.fromtimestamp(now if now is not None else dt.datetime.now().timestamp())
    when = dt.datetime.combine(today.date(), at)
    return carrier.strip(), int(when.timestamp() * 1000)


def _read_body(text: str) -> Any:
    """The command body: JSON text, ``@file`` or ``-`` (stdin); ``ValueError`` when bad."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise ValueError(f"{text[1:]}: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None


async def cmd_send(args: argparse.Namespace) -> int:
    """Send one command, wait for the reply, print it."""
    from pydantic import ValidationError

    from agent.wire.messages import COMMANDS
    from agent.workflows import register_all

    register_all()
    if not args.verbose:  # one reply line on stdout; the link's comings and goings are noise
        logging.getLogger("agent.link").setLevel(logging.WARNING)
    model = COMMANDS.get(args.name)
    if model is None:
        known = ", ".join(sorted(COMMANDS))
        print(f"zone-agent: unknown command {args.name!r}; known: {known}", file=sys.stderr)
        return EXIT_USAGE
    try:
        body = model.model_validate(_read_body(args.body))
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "body"
            print(f"zone-agent: {args.name}: {where}: {err['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"zone-agent: {args.name}: body: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with _client(args, auto_ack=False) as oms:
        try:
            reply = await oms.call(args.node, args.name, body, timeout=args.timeout)
        except TimeoutError:
            print(
                f"zone-agent: no reply from {args.site}/{args.node} within {args.timeout:g} s "
                f"(is it running, on {args.broker}?)",
                file=sys.stderr,
            )
            return EXIT_FAILURE
    print(json.dumps(reply.model_dump(exclude={"cmd"}), default=str))
    refused = reply.status != "accepted" or any(i.status == "rejected" for i in reply.items)
    return EXIT_FAILURE if refused else EXIT_OK
