"""``zone-agent run`` and ``zone-agent check-config``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from agent.config import advice, gaps, load_config, locate, tls_file_problems
from agent.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    AgentError,
    ConfigError,
    StateDirLocked,
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

    A valid file that still lacks what its node needs (no devices, no broker), or names a
    CA, certificate or key file this machine does not have or this user cannot read, is not
    "ok": each gap is printed the same way and the exit code is 2, as for a mistake.
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
        missing = gaps(config) + tls_file_problems(config.broker)
        if missing:
            _print_config_error(locate(missing, path))
            print(f"{path}: incomplete ({what})")
            status = EXIT_USAGE
        else:
            print(f"{path}: ok ({what})")
        warnings = advice(config)
        if warnings:
            located = locate([(f, f"warning: {r}") for f, r in warnings], path)
            _print_config_error(located)
    return status


async def cmd_run(args: argparse.Namespace) -> int:
    """Run a node until SIGTERM or SIGINT."""
    from agent.app import run_node

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        _print_config_error(exc)
        return EXIT_USAGE
    tls_problems = tls_file_problems(config.broker)
    if tls_problems:
        _print_config_error(locate(tls_problems, args.file))
        return EXIT_USAGE
    if args.state_dir is not None:
        config = config.model_copy(update={"state_dir": args.state_dir})
    warnings = advice(config)
    if warnings:
        located = locate(warnings, args.file)
        for field, reason in located.problems:
            log.warning("%s: %s: %s", located.where(field), field, reason)
    try:
        await run_node(config, simulate=args.simulate)
    except (AgentError, BaseExceptionGroup) as exc:
        return _run_failed(exc, args.file)
    return EXIT_OK


def _run_failed(exc: BaseException, path: Path) -> int:
    """Say why ``run`` stopped, once, without a traceback for what we raised on purpose.

    A ``ConfigError`` found while starting (the HTTP port taken) is exit 2 with
    ``file:line: field: reason``, as at check-config: a restart cannot fix it. The node's
    task group wraps what its tasks raise in an exception group: what is inside counts.
    """
    leaves = _leaves(exc)
    config_errors = [e for e in leaves if isinstance(e, ConfigError)]
    if config_errors:
        problems = [problem for e in config_errors for problem in e.problems]
        _print_config_error(locate(problems, path))
        return EXIT_USAGE
    too_new = [e for e in leaves if isinstance(e, StoreTooNew | StateDirLocked)]
    if too_new:  # a downgrade, or another node on the store: restarting will not help
        for downgrade in too_new:
            log.error("%s", downgrade)
        return EXIT_USAGE
    if all(isinstance(e, AgentError) for e in leaves):
        for error in leaves:
            log.error("%s", error)
        return EXIT_FAILURE
    raise exc  # a bug: the traceback is what is needed


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]
