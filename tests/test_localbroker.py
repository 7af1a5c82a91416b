"""The private Mosquitto of the demo and the tests (agent/oms/demo/broker.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.errors import LinkUnavailable
from agent.oms.demo.broker import LocalBroker

pytestmark = pytest.mark.broker


def test_a_port_taken_before_mosquitto_binds_it_is_chosen_again(tmp_path: Path) -> None:
    # The race a loaded machine loses: the port was free when chosen, then another process
    # listened on it. The broker must not take the other listener for itself.
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    try:
        broker = LocalBroker(tmp_path / "auto")
        broker.port = taken  # as if free_port() had returned it a moment before
        with broker:
            assert broker.port != taken and broker.running
        fixed = LocalBroker(tmp_path / "fixed", port=taken)
        with pytest.raises(LinkUnavailable, match="exited at start"):
            fixed.start()
    finally:
        squatter.close()
