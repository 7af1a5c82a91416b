"""The state directory: one node process at a time, and a clear line when its disk fails."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from unittest import mock

import pytest

from agent.errors import StateDirLocked, StoreError
from agent.oms.demo.broker import LocalBroker
from agent.store import LOCK_FILE, StateLock, Store, store_failure
from tests.harness import NodeProcess, node_file, oms_for


def test_a_second_lock_on_a_state_directory_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = StateLock(tmp_path / "state")
    first.acquire()
    assert (tmp_path / "state" / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    with pytest.raises(
        StateDirLocked, match=f"in use by another zone-agent process \\(PID {os.getpid()}\\)"
    ):
        StateLock(tmp_path / "state").acquire()
    first.release()
    again = StateLock(tmp_path / "state")
    again.acquire()  # released: free again (a killed holder frees it the same way)
    again.release()


def _statvfs(flag: int = 0, free_blocks: int = 1_000_000) -> os.statvfs_result:
    return os.statvfs_result((4096, 4096, 2_000_000, free_blocks, free_blocks, 0, 0, 0, flag, 255))


def test_a_failing_disk_is_named_with_its_cause(tmp_path: Path) -> None:
    """SQLite's "disk I/O error" on a full or read-only disk gets the file system's reason."""
    path = tmp_path / "state.sqlite3"
    error = Exception("disk I/O error")
    with mock.patch("os.statvfs", return_value=_statvfs(free_blocks=0)):
        assert store_failure(path, error) == (
            f"{path}: disk I/O error: the disk is full (0 bytes free): free space, then start again"
        )
    with mock.patch("os.statvfs", return_value=_statvfs(flag=os.ST_RDONLY)):
        assert store_failure(path, error).startswith(
            f"{path}: disk I/O error: the file system is read-only"
        )
    assert store_failure(path, error) == f"{path}: disk I/O error"  # nothing more known


def _tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_store_on_a_full_disk_fails_with_one_line(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    _tmpfs(disk, "1m")
    try:
        Store(disk / "state.sqlite3").close()
        with (disk / "filler").open("wb") as filler, pytest.raises(OSError):
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        with pytest.raises(StoreError) as caught:
            Store(disk / "state.sqlite3")
        assert str(caught.value).startswith(f"{disk / 'state.sqlite3'}: ")
        assert "the disk is full" in str(caught.value)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.broker
def test_a_second_run_on_the_same_state_directory_exits_2_naming_the_first(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """A hand-run node beside the service: refused before it touches the store."""
    path = node_file(tmp_path, broker)
    first = NodeProcess(path)

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            first.start()
            async with asyncio.timeout(20):
                while not (oms.nodes.get("zone-a1") and oms.nodes["zone-a1"].online):
                    await asyncio.sleep(0.05)
            boot = oms.nodes["zone-a1"].boot
            second = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "agent.cli", "run", str(path), "--simulate"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 2, second.stderr
            assert first.proc is not None
            lines = [line for line in second.stderr.splitlines() if line.strip()]
            assert any(
                f"in use by another zone-agent process (PID {first.proc.pid})" in line
                for line in lines
            ), lines
            assert "Traceback" not in second.stderr
            assert first.proc.poll() is None  # the first one runs on, untouched
            assert oms.nodes["zone-a1"].online and oms.nodes["zone-a1"].boot == boot
            assert first.terminate() == 0

    try:
        asyncio.run(scenario())
    finally:
        first.stop()


def _api_state(state_dir: Path) -> dict[str, object]:
    url = json.loads((state_dir / "control.json").read_text())["url"]
    with urllib.request.urlopen(url + "/api/state", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.mark.broker
def test_two_nodes_with_one_node_id_say_so_at_error_on_the_screen_and_in_the_birth(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """Two Pis set up as zone-a1 with their own stores knock each other off the broker."""
    for pi in ("pi1", "pi2"):
        (tmp_path / pi).mkdir()
    nodes = [NodeProcess(node_file(tmp_path / pi, broker)) for pi in ("pi1", "pi2")]

    async def scenario() -> None:
        async with oms_for(broker) as oms:
            await oms.wait_connected()
            for node in nodes:
                node.start()
            stores: set[str] = set()
            async with asyncio.timeout(60):
                while True:
                    name, state, _ = await oms.state_changes.get()
                    if name == "zone-a1" and state.online and state.store:
                        stores.add(state.store)
                        if (state.takeovers or 0) >= 3 and len(stores) == 2:
                            break
            for pi in ("pi1", "pi2"):
                state_dir = tmp_path / pi / "zone-a1"
                async with asyncio.timeout(30):
                    while True:
                        screen = await asyncio.to_thread(_api_state, state_dir)
                        if screen["link_conflict"]:
                            break
                        await asyncio.sleep(0.2)
                assert "another node" in str(screen["link_conflict"])
        for node in nodes:
            node.terminate()
        for node in nodes:
            errors = [line for line in node.log.read_text().splitlines() if " ERROR " in line]
            assert any("most likely another node runs with this node id" in e for e in errors)

    try:
        asyncio.run(scenario())
    finally:
        for node in nodes:
            node.stop()
