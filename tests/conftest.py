"""Shared fixtures: brokers.

* ``memory_broker``: the in-process broker (``agent.link.memory``) of the fast tier;
* ``broker``: a real Mosquitto on a free loopback port (mark the test ``broker``);
* ``single_broker``: NATS or RabbitMQ (marked ``cluster`` and ``broker`` automatically).

* ``any_broker``: both, the in-process one in the fast tier and Mosquitto under ``broker``.

A module whose in-process end-to-end tests run on one of these overrides its ``broker``
fixture with it, so the test bodies name only ``broker`` (anything with a ``url``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.link.memory import MemoryBroker
from agent.oms.demo.broker import LocalBroker
from testing.localcluster import BrokerCluster, NatsCluster, RabbitCluster, missing_broker
from tests.harness import Broker

_names = itertools.count(1)


@pytest.fixture
def memory_broker() -> Iterator[MemoryBroker]:
    """A fresh in-process broker for one test (``memory://...``)."""
    name = f"test-{next(_names)}"
    yield MemoryBroker.named(name)
    MemoryBroker.forget(name)


@pytest.fixture(params=["memory", pytest.param("mosquitto", marks=pytest.mark.broker)])
def any_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """The same test on the in-process broker and on a real Mosquitto (the contract subset)."""
    if request.param == "memory":
        name = f"test-{next(_names)}"
        yield MemoryBroker.named(name)
        MemoryBroker.forget(name)
    else:
        with LocalBroker(tmp_path / "broker") as b:
            yield b


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """NATS and RabbitMQ tests are ``cluster`` (and ``broker``): ``make test-fast`` skips them."""
    for item in items:
        if "single_broker" in getattr(item, "fixturenames", ()) or item.get_closest_marker(
            "cluster"
        ):
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.broker)


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
