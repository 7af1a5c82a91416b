"""Which build a node runs: the version from the git tag, on the command line and in the birth.

The version is set when the package is built (setuptools-scm, pyproject.toml); these tests
check that every place that shows it shows the installed distribution's version.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from agent import __version__
from agent.app import STATE_FILE
from agent.oms.dashboard import SiteView
from agent.oms.demo.broker import LocalBroker
from agent.store import SCHEMA_VERSION, Store
from tests.harness import node_file, node_in_process, oms_for

# PEP 440 as setuptools-scm writes it: a tag "1.2.0", or "1.2.1.dev3+g1a2b3c4[.d20261206]".
PEP440 = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[a-z0-9.]+)?")


def test_the_version_is_the_installed_distributions() -> None:
    assert __version__ == version("zone-agent")
    assert PEP440.fullmatch(__version__), __version__


def test_zone_agent_version_prints_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (out.returncode, out.stdout.strip()) == (0, f"zone-agent {__version__}")


@pytest.mark.broker
def test_the_birth_and_the_dashboard_carry_it(tmp_path: Path, broker: LocalBroker) -> None:
    path = node_file(tmp_path, broker)

    async def scenario() -> None:
        async with oms_for(broker) as oms, node_in_process(path):
            async with asyncio.timeout(10):
                while not (oms.nodes.get("zone-a1") and oms.nodes["zone-a1"].state):
                    await asyncio.sleep(0.02)
            assert oms.nodes["zone-a1"].state.sw == __version__  # type: ignore[union-attr]
            rows = SiteView(oms).snapshot()["nodes"]
            assert [(r["node"], r["sw"]) for r in rows] == [("zone-a1", __version__)]

    asyncio.run(scenario())


def test_run_refuses_a_store_of_a_newer_release(tmp_path: Path) -> None:
    """A downgrade: exit 2 (the unit does not restart it), one clear line, no traceback."""
    path = tmp_path / "zone-a1.toml"
    state = tmp_path / "state"
    path.write_text(
        'site = "dc1"\nnode = "zone-a1"\nrole = "pick"\n'
        '[broker]\nurls = ["mqtt://127.0.0.1:9"]\n'
        '[[devices]]\nname = "shelf"\nkind = "gpio_slots"\n'
        '[[devices.slots]]\nid = "A1"\nled = 17\nconfirm = 27\n'
    )
    Store(state / STATE_FILE).close()
    with sqlite3.connect(state / STATE_FILE) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    run = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", str(path), "--simulate", "--state-dir", state],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert f"store schema {SCHEMA_VERSION + 1} was written by a newer zone-agent" in run.stderr
    assert f"this one ({__version__}) knows schema {SCHEMA_VERSION}" in run.stderr
