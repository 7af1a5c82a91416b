"""``zone-agent run`` and ``zone-agent check-config``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from agent.config import gaps, load_config
from agent.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    AgentError,
    ConfigError,
    StoreTooNew,
)

log = logging.getLogger("agent")


def register(commands: Any, sim: Any) -> None:
    """Add ``run`` and ``check-config``."""
    run = commands.add_parser("run", help="run a node")
    run.add_argument("file", type=Path, help="the node file (TOML)")
    run.add_argument("--simulate", action="store_true", help="run on simulated hardware")
    run.add_argument("--state-dir", type=Path, help="override state_dir from the file")
    run.set_defaults(func=cmd_run)
    check = commands.add_parser("check-config", help="validate node files without starting")
    check.add_argument("files", type=Path, nargs="+")
    check.set_defaults(func=cmd_check_config)


def _print_config_error(exc: ConfigError) -> None:
    for field, reason in exc.problems:
        print(f"{exc.where(field)}: {field}: {reason}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate each file; print every problem as ``file:line: field: reason``.

    A valid file that still lacks what its node needs (no devices, no broker) is not "ok":
    each gap is printed the same way and the exit code is 2, as for a mistake.
    """
    status = EXIT_OK
    for path in args.files:
        try:
            config = load_config(path)
        except ConfigError as exc:
            _print_config_error(exc)
            status = EXIT_USAGE
            continue
        what = f"{config.role} node {config.site}/{config.node}, {len(config.devices)} devices"
        missing = gaps(config)
        for field, reason in missing:
            print(f"{path}: {field}: {reason}", file=sys.stderr)
        if missing:
            print(f"{path}: incomplete ({what})")
            status = EXIT_USAGE
        else:
            print(f"{path}: ok ({what})")
    return status


async def cmd_run(args: argparse.Namespace) -> int:
    """Run a node until SIGTERM or SIGINT."""
    from agent.app import run_node

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_USAGE
    if args.state_dir is not None:
        config = config.model_copy(update={"state_dir": args.state_dir})
    try:
        await run_node(config, simulate=args.simulate)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_USAGE
    except StoreTooNew as exc:  # a downgrade: restarting will not help (unit: no restart)
        log.error("%s", exc)
        return EXIT_USAGE
    except AgentError as exc:
        log.error("%s", exc)
        return EXIT_FAILURE
    return EXIT_OK
