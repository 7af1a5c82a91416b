"""The ``zone-agent`` command line.

Exit codes (also in the README):

* 0: done, or stopped cleanly by SIGTERM/SIGINT;
* 1: a runtime failure (store unusable, a bug); systemd restarts the service;
* 2: bad usage, an invalid node file, or a store written by a newer release: fix it,
  restarting will not help;
* 3: a device could not be reached by a commissioning command.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Sequence

from agent import __version__
from agent.errors import EXIT_OK

COMMAND_MODULES = (
    "agent.commands.node",
    "agent.oms.commands",
    "agent.oms.site.commands",
    "agent.commands.scanners",
    "agent.commands.scales",
    "agent.commands.lights",
    "agent.commands.printers",
)

# Which module registers each top-level command. ``zone-agent run`` imports only the node
# commands: the device families' commissioning tools pull in drivers and libraries (biip
# alone is ~20 MB) that a running pick node does not need. tests/test_cli.py keeps this
# table true to what the modules register.
OWNER = {
    "run": "agent.commands.node",
    "check-config": "agent.commands.node",
    "oms": "agent.oms.commands",
    "site": "agent.oms.site.commands",
    "scanner": "agent.commands.scanners",
    "scale": "agent.commands.scales",
    "probe": "agent.commands.scales",
    "light": "agent.commands.lights",
    "printer": "agent.commands.printers",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``command``, only the module that owns it is loaded."""
    parser = argparse.ArgumentParser(prog="zone-agent", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"zone-agent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim_parser = commands.add_parser("sim", help="run a device simulator on its own")
    sim = sim_parser.add_subparsers(dest="device", required=True, metavar="DEVICE")
    owner = OWNER.get(command or "")
    for name in (owner,) if owner else COMMAND_MODULES:
        importlib.import_module(name).register(commands, sim)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option (the command), if any."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def setup_logging(verbose: bool) -> None:
    """One line per record, without timestamps when journald adds its own."""
    import os

    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=fmt)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    func = args.func
    try:
        result = asyncio.run(func(args)) if inspect.iscoroutinefunction(func) else func(args)
    except KeyboardInterrupt:
        return EXIT_OK
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
