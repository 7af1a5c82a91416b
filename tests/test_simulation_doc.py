"""docs/simulation.md runs as written: every shell block, in order, in one shell.

The blocks are taken from the page itself rather than from scripts beside it, so what a
reader copies is exactly what ran: a page whose examples drift from the code fails here.
They run from the repository root with ``set -euo pipefail`` against a private Mosquitto
(the page's first block defaults ``ZONE_AGENT_BROKER_URLS`` to a loopback broker; the test
points it at its own), in a process group of their own so nothing they start outlives the
test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from agent.oms.demo.broker import LocalBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "simulation.md"
FENCE = re.compile(r"^( *)```sh\n(.*?)^\1```\n", re.S | re.M)


def shell_blocks(text: str) -> list[str]:
    """The ```sh blocks of a Markdown text, de-indented (blocks in list items too)."""
    blocks = []
    for match in FENCE.finditer(text):
        indent = len(match.group(1))
        lines = match.group(2).splitlines()
        blocks.append("\n".join(line[indent:] for line in lines) + "\n")
    return blocks


def test_the_shell_blocks_are_found_in_list_items_too() -> None:
    text = "a\n```sh\necho one\n```\n* item\n\n  ```sh\n  echo two\n  ```\n```json\n{}\n```\n"
    assert shell_blocks(text) == ["echo one\n", "echo two\n"]


def test_every_shell_block_of_simulation_md_runs(tmp_path: Path, broker: LocalBroker) -> None:
    blocks = shell_blocks(DOC.read_text())
    assert len(blocks) >= 8, "the page lost its examples"
    script = tmp_path / "simulation.sh"
    # Each block is introduced by a marker line, so a failure says which block it was.
    body = "".join(f"echo '=== block {n}'\n{block}" for n, block in enumerate(blocks, 1))
    script.write_text("set -euo pipefail\n" + body + "echo '=== all blocks ran'\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ZONE_AGENT_") and key != "VIRTUAL_ENV"
    }
    env.update(ZONE_AGENT_BROKER_URLS=broker.url, TMPDIR=str(tmp_path))
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Whatever the script left running (a node after a failed block) goes too.
        with_group = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True)
        for pid in with_group.stdout.split():
            os.kill(int(pid), signal.SIGKILL)
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text()[-1500:]}" for log in tmp_path.rglob("*.log")
    )
    assert proc.returncode == 0, out[-6000:] + logs
    assert "=== all blocks ran" in out, out
    # What the page says the examples show.
    assert out.count('{"status": "accepted", "reason": null, "detail": null, "items": []}') == 5
    assert "1 label(s) printed" in out
    assert "label | Label not printed yet: check paper, print head and power." in out
    assert "weigh_failed | Too heavy by 553 g" in out
    assert "idle | Order o2 packed" in out
    assert "'lines_short': 1" in out
    assert "{'CAGE-DPD': 'Prio', 'CAGE-UPS': None, 'DOOR-3': 'Prio'}" in out
    assert "idle | Manifest DPD-0001 closed: 1 parcel shipped." in out
    assert "idle | Return RMA-7002 closed: 1 unit received, 1 missing." in out
    assert "1 unit label(s) printed" in out
