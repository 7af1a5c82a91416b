"""``zone-agent site ...``: the site service on the command line.

* ``site serve SITE_FILE``: run the service (docs/api.md): the log, the exactly-once
  protocol toward every node, the HTTP API and the webhooks (``--dashboard-port``: the
  supervisor dashboard too, built from the log). Exit 0 on SIGTERM/SIGINT, 1
  when the log fails or the leadership is lost (systemd starts it again, as the standby),
  2 for an invalid site file, a refused broker login or a port in use.
* ``site check SITE_FILE``: validate a site file without starting anything.
* ``site openapi``: print the OpenAPI 3.1 document (docs/openapi.yaml is this output).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from agent.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, AgentError, ConfigError, LoginRefused

log = logging.getLogger("agent.oms.site")


def register(commands: Any, sim: Any) -> None:
    """Add ``site serve``, ``site check`` and ``site openapi``."""
    site = commands.add_parser("site", help="the site service: event log, HTTP API, webhooks")
    sub = site.add_subparsers(dest="site_command", required=True, metavar="ACTION")
    serve = sub.add_parser("serve", help="run the site service")
    serve.add_argument("file", type=Path, help="the site file (docs/api.md)")
    serve.add_argument("--port", type=int, help="override [api] port (0: a free one)")
    serve.add_argument("--ready-file", type=Path, help="write {url, pid} here once the API listens")
    serve.add_argument(
        "--dashboard-port",
        type=int,
        help="also serve the supervisor dashboard, built from the log, on 127.0.0.1:PORT "
        "(0: a free one; docs/dashboard.md)",
    )
    serve.set_defaults(func=cmd_serve)
    check = sub.add_parser("check", help="validate a site file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check)
    openapi = sub.add_parser("openapi", help="print the OpenAPI 3.1 document as YAML")
    openapi.set_defaults(func=cmd_openapi)


def openapi_yaml() -> str:
    """The API's OpenAPI document as YAML (what docs/openapi.yaml holds)."""
    import yaml

    from agent.oms.site.api import build_app
    from agent.oms.site.log import SqlLog
    from agent.oms.site.service import SiteService
    from agent.oms.site.settings import SiteConfig

    document = build_app(SiteService(SiteConfig(site="site"), SqlLog())).openapi()
    return str(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100))


def cmd_openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI document."""
    sys.stdout.write(openapi_yaml())
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a site file."""
    from agent.oms.site.settings import load_site

    try:
        config = load_site(args.file)
    except ConfigError as exc:
        for field, reason in exc.problems:
            print(f"{exc.where(field)}: {field}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    where = "PostgreSQL" if config.log.postgres else str(config.log.path)
    print(f"{args.file}: ok (site {config.site}, log in {where})")
    return EXIT_OK


async def cmd_serve(args: argparse.Namespace) -> int:
    """Run the site service until SIGTERM / SIGINT."""
    import uvicorn

    from agent.oms.site.api import build_app
    from agent.oms.site.log import SqliteLog
    from agent.oms.site.service import LeadershipLost, SiteService
    from agent.oms.site.settings import load_site

    try:
        config = load_site(args.file)
    except ConfigError as exc:
        for field, reason in exc.problems:
            print(f"{exc.where(field)}: {field}: {reason}", file=sys.stderr)
        return EXIT_USAGE
    if args.port is not None:
        config = config.model_copy(
            update={"api": config.api.model_copy(update={"port": args.port})}
        )
    try:
        if config.log.postgres:
            from agent.oms.site.pglog import PostgresLog

            store: Any = PostgresLog(config.log.postgres)
        else:
            path = config.log.path
            if not path.is_absolute():
                path = args.file.resolve().parent / path
            store = SqliteLog(path)
    except AgentError as exc:
        print(f"site log: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per webhook POST is noise
    service = SiteService(config, store)
    app = build_app(service)
    api = config.api
    server = _Server(
        uvicorn.Config(
            app,
            host=api.bind,
            port=api.port,
            ssl_certfile=str(api.tls_cert) if api.tls_cert else None,
            ssl_keyfile=str(api.tls_key) if api.tls_key else None,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.02)
    if serving.done():
        print(f"the API could not listen on {api.bind}:{api.port}", file=sys.stderr)
        store.close()
        return EXIT_USAGE
    port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if api.tls_cert else "http"
    url = f"{scheme}://{api.bind}:{port}"
    print(f"site service {config.site}: API on {url}, docs at {url}/docs", flush=True)
    ready: dict[str, Any] = {"url": url, "pid": os.getpid()}
    board = None
    if args.dashboard_port is not None:
        from agent.oms.site.board import board_for

        board = board_for(service)
        try:
            web = await board.start("127.0.0.1", args.dashboard_port)
        except OSError as exc:
            print(f"the dashboard could not listen: {exc}", file=sys.stderr)
            server.should_exit = True
            store.close()
            return EXIT_USAGE
        ready["dashboard"] = f"http://127.0.0.1:{web.port}/"
        print(f"dashboard on {ready['dashboard']}", flush=True)
    if args.ready_file:
        args.ready_file.write_text(json.dumps(ready))
    code = EXIT_OK
    try:
        await service.run(stop)
    except LeadershipLost as exc:
        log.error("stopping: %s", exc)
        code = EXIT_FAILURE
    except LoginRefused as exc:
        log.error(
            "stopping: %s (check broker.username, ZONE_AGENT_BROKER_PASSWORD and the client "
            "certificate)",
            exc,
        )
        code = EXIT_USAGE
    except AgentError as exc:
        log.error("stopping: %s", exc)
        code = EXIT_FAILURE
    finally:
        if board is not None:
            await board.close()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        store.close()
    return code


class _Server:
    """uvicorn's server without its own signal handling (the service has its own)."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Generator[None, None, None]:
                yield

        return Server(config)
