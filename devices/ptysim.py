"""The far end of a pseudo-terminal, for simulators of serial devices.

The driver opens ``link`` (a symlink to the pty's slave, like a udev name) with its real
serial code; the simulator reads what the driver writes and writes what the device would
send. ``unplug()`` closes the pty (the driver sees the port vanish) and ``replug()`` makes a
fresh one behind the same link.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import tty
from collections.abc import Callable
from pathlib import Path


class PtyEndpoint:
    """A pty pair whose slave is exposed at ``link``.

    Args:
        link: the stable path drivers open (created as a symlink to ``/dev/pts/N``).
        on_data: called on the event loop with each chunk the driver writes.
    """

    def __init__(self, link: str | Path, on_data: Callable[[bytes], None]) -> None:
        self.link = Path(link)
        self._on_data = on_data
        self._master = -1
        self._slave = -1

    @property
    def plugged(self) -> bool:
        """Whether the pty exists (the simulated device is connected)."""
        return self._master >= 0

    def open(self) -> str:
        """Create the pty and the link; returns the link path."""
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass as the device sends them
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(os.ttyname(slave))
        asyncio.get_running_loop().add_reader(master, self._readable)
        return str(self.link)

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no one holds the slave open: nothing to read
        if data:
            self._on_data(data)

    def write(self, data: bytes) -> None:
        """Send bytes to the driver as the device would (dropped while unplugged)."""
        if self._master < 0:
            return
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                continue
            view = view[written:]

    def close(self) -> None:
        """Close the pty and remove the link; safe to call twice."""
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    def unplug(self) -> None:
        """Simulate pulling the cable: the pty disappears."""
        self.close()

    def replug(self) -> str:
        """Simulate plugging the cable back in: a new pty behind the same link."""
        self.close()
        return self.open()
