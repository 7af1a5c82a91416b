"""Shared fixtures: a real Mosquitto on a free loopback port; NATS and RabbitMQ brokers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.oms.demo.broker import LocalBroker
from testing.localcluster import BrokerCluster, NatsCluster, RabbitCluster, missing_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A private mosquitto for one test."""
    with LocalBroker(tmp_path / "broker") as b:
        yield b


def cluster_or_skip(kind: str, workdir: Path, members: int, **kw: object) -> BrokerCluster:
    """A NATS or RabbitMQ broker of ``members`` (not started); skips when not installed."""
    why = missing_broker(kind)
    if why is not None:
        pytest.skip(f"{kind} broker not available: {why}")
    cls = NatsCluster if kind == "nats" else RabbitCluster
    return cls(workdir, members, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["nats", "rabbitmq"])
def single_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerCluster]:
    """One NATS (JetStream, MQTT gateway) or one RabbitMQ (MQTT plugin), shared by a module.

    Tests sharing it use their own node names and OMS client ids: sessions persist.
    """
    kind: str = request.param
    with cluster_or_skip(kind, tmp_path_factory.mktemp(kind), 1) as b:
        yield b
