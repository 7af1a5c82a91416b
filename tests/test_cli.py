"""The command line: every command is owned by the module that registers it."""

from __future__ import annotations

import subprocess
import sys

from agent.cli import COMMAND_MODULES, OWNER, build_parser


def _commands(parser) -> set[str]:
    action = next(a for a in parser._actions if a.dest == "command")
    return set(action.choices)


def test_every_registered_command_has_its_owner_in_the_table() -> None:
    assert _commands(build_parser()) == set(OWNER) | {"sim"}
    for command, module in OWNER.items():
        assert module in COMMAND_MODULES
        assert command in _commands(build_parser(command))


def test_run_does_not_import_the_commissioning_tools() -> None:
    code = (
        "import sys; from agent.cli import build_parser; build_parser('run'); "
        "heavy = ('biip', 'escpos', 'agent.commands.'); "
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['agent.commands.node']"
