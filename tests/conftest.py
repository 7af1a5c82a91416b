"""Shared fixtures: a real Mosquitto on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.localbroker import LocalBroker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A private mosquitto for one test."""
    with LocalBroker(tmp_path / "broker") as b:
        yield b
