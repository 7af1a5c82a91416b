"""Per-node access control with the ACLs shipped in docs/brokers/, on real brokers.

A node's credentials cannot publish another node's events, read another node's commands,
or write the OMS's acks for another node; they can do their own and read the site-wide
rebirth. The OMS's credentials can do all of it. Mosquitto, NATS and RabbitMQ each.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr

from agent.link.settings import BrokerConfig
from agent.link.transport import MqttTransport, Subscription
from agent.oms.demo.broker import LocalBroker
from tests.conftest import cluster_or_skip

pytestmark = pytest.mark.broker

BROKERS = Path(__file__).resolve().parent.parent / "docs" / "brokers"
PASSWORDS = {"zone-a1": "pw-a1-x7", "zone-a2": "pw-a2-y8", "oms": "pw-oms-z9"}


@dataclass
class AclBroker:
    """A running broker with the shipped ACL and the three users of PASSWORDS."""

    kind: str
    url: str


@pytest.fixture(
    scope="module",
    params=[
        "mosquitto",
        pytest.param("nats", marks=pytest.mark.cluster),
        pytest.param("rabbitmq", marks=pytest.mark.cluster),
    ],
)
def acl_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AclBroker]:
    kind: str = request.param
    work = tmp_path_factory.mktemp(f"acl-{kind}")
    if kind == "mosquitto":
        if shutil.which("mosquitto_passwd") is None:
            pytest.skip("mosquitto_passwd is not installed")
        passwd = work / "passwd"
        for i, (user, pw) in enumerate(PASSWORDS.items()):
            flags = ["-c", "-b"] if i == 0 else ["-b"]
            subprocess.run(["mosquitto_passwd", *flags, str(passwd), user, pw], check=True)
        passwd.chmod(0o600)
        broker = LocalBroker(
            work / "broker",
            extra_config=f"password_file {passwd}\nacl_file {BROKERS / 'mosquitto-acl.conf'}\n",
        )
        broker.start()
        conf = broker.workdir / "mosquitto.conf"
        conf.write_text(conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
        broker.restart()
        try:
            yield AclBroker(kind, broker.url)
        finally:
            broker.stop()
        return
    if kind == "nats":
        for user, pw in PASSWORDS.items():
            os.environ[user.upper().replace("-", "_") + "_PASSWORD"] = pw
        cluster = cluster_or_skip(
            kind, work, 1, extra_config=(BROKERS / "nats-authorization.conf").read_text()
        )
        cluster.probe_user = ("oms", PASSWORDS["oms"])  # type: ignore[attr-defined]
        with cluster:
            yield AclBroker(kind, cluster.url)
        return
    cluster = cluster_or_skip(kind, work, 1, extra_config="mqtt.allow_anonymous = false")
    cluster.probe_user = ("oms", PASSWORDS["oms"])  # type: ignore[attr-defined]
    cluster.workdir.mkdir(parents=True, exist_ok=True)
    for m in cluster.members:
        cluster._spawn(m)
    try:
        # Users exist only once the node runs: start it, add them, then wait for MQTT.
        ctl = cluster.bin / "rabbitmqctl"  # type: ignore[attr-defined]
        env = {**cluster.env(cluster.members[0]), "RABBITMQCTL": f"{ctl} -n r1@localhost"}  # type: ignore[attr-defined]
        for _ in range(120):  # until the Erlang node answers (epmd knows it)
            done = subprocess.run(
                [str(ctl), "-n", "r1@localhost", "await_startup", "--timeout", "60"],
                env=env,
                capture_output=True,
                timeout=90,
                check=False,
            )
            if done.returncode == 0:
                break
            time.sleep(0.5)
        for user, pw in PASSWORDS.items():
            role = ["oms"] if user == "oms" else []
            subprocess.run(
                ["sh", str(BROKERS / "rabbitmq-acl.sh"), user, pw, *role],
                env=env,
                check=True,
                capture_output=True,
                timeout=120,
            )
        cluster._wait_ready([0], 60)
        yield AclBroker(kind, cluster.url)
    finally:
        cluster.stop()


@dataclass
class Client:
    """A bare MQTT client with one user's credentials, recording what it receives."""

    transport: MqttTransport
    got: list[tuple[str, bytes]] = field(default_factory=list)


def _client(broker: AclBroker, user: str, client_id: str, subs: list[str]) -> Client:
    config = BrokerConfig(
        urls=[broker.url],
        username=user,
        password=SecretStr(PASSWORDS[user]),
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
    )
    got: list[tuple[str, bytes]] = []
    transport = MqttTransport(
        config,
        client_id=client_id,
        subscriptions=[Subscription(s) for s in subs],
        on_message=lambda t, p: got.append((t, p)),
    )
    return Client(transport, got)


async def _publish(client: Client, topic: str, payload: bytes) -> None:
    await asyncio.sleep(0)
    if client.transport.connected.is_set():
        await client.transport.publish(topic, payload)


def test_a_node_is_confined_to_its_own_topics_and_the_oms_is_not(acl_broker: AclBroker) -> None:
    base = "wh/v1/dc1"

    async def scenario() -> None:
        oms = _client(acl_broker, "oms", "oms-acl", [f"{base}/+/evt/+", f"{base}/+/state"])
        a1 = _client(
            acl_broker,
            "zone-a1",
            "dc1-zone-a1",
            [f"{base}/zone-a1/cmd/+", f"{base}/zone-a1/ack", f"{base}/_site/cmd/rebirth"],
        )
        a2 = _client(acl_broker, "zone-a2", "dc1-zone-a2", [f"{base}/zone-a2/ack"])
        # zone-a1's credentials trying to read zone-a2's commands (refused or silent).
        spy = _client(acl_broker, "zone-a1", "dc1-zone-a1-spy", [f"{base}/zone-a2/cmd/+"])
        tasks = [asyncio.create_task(c.transport.run()) for c in (oms, a1, a2, spy)]
        try:
            async with asyncio.timeout(20):
                for c in (oms, a1, a2):
                    await c.transport.connected.wait()
            await asyncio.sleep(0.5)
            # Allowed: its own event and state; the OMS's commands, acks and rebirth.
            await a1.transport.publish(f"{base}/zone-a1/evt/picked", b"own-event")
            await a1.transport.publish(f"{base}/zone-a1/state", b"own-state")
            await oms.transport.publish(f"{base}/zone-a1/cmd/pick", b"cmd-a1")
            await oms.transport.publish(f"{base}/zone-a1/ack", b"ack-a1")
            await oms.transport.publish(f"{base}/_site/cmd/rebirth", b"rebirth")
            await oms.transport.publish(f"{base}/zone-a2/cmd/pick", b"cmd-a2")
            await oms.transport.publish(f"{base}/zone-a2/ack", b"ack-a2-from-oms")
            # Forbidden for zone-a1: another node's event and state, an ack for zone-a2.
            await _publish(a1, f"{base}/zone-a2/evt/picked", b"forged-event")
            await _publish(a1, f"{base}/zone-a2/state", b"forged-state")
            await _publish(a1, f"{base}/zone-a2/ack", b"forged-ack")
            await asyncio.sleep(1.5)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        oms_got = {p for _, p in oms.got}
        assert {b"own-event", b"own-state"} <= oms_got
        assert not {b"forged-event", b"forged-state"} & oms_got
        assert {p for _, p in a1.got} == {b"cmd-a1", b"ack-a1", b"rebirth"}
        assert {p for _, p in a2.got} == {b"ack-a2-from-oms"}  # not the forged one
        assert b"cmd-a2" not in {p for _, p in spy.got}
        # A refused subscription is the broker answering, not a dead network: the spy
        # backs off (0.1-0.5 s) instead of reconnecting at once (it made ~850 attempts in
        # these 2-3 s when the refusal was taken for a dead link).
        assert spy.transport.link <= 40, spy.transport.link

    asyncio.run(scenario())
