"""Webhook URLs against SSRF, through the running service on a real broker.

The site file allows one LAN (10.0.0.0/8) and one loopback address (127.0.0.2), not
127.0.0.1: registration refuses the cloud metadata address, a private address outside the
allowed networks, loopback by address and by name, credentials in the URL and a scheme
other than http(s), each with a 422 naming the field and the reason; an allowed network is
accepted and delivered to; a receiver answering 302 to another receiver is not followed,
and the 302 is a failed attempt.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent.link.settings import BrokerConfig
from agent.oms.demo.broker import LocalBroker
from testing.fakefleet import FakeNode
from tests.harness import SITE
from tests.site_harness import Receiver, SiteProcess, site_file

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteProcess]:
    tmp = tmp_path_factory.mktemp("site")
    with LocalBroker(tmp / "broker") as broker:
        path = site_file(tmp, broker, allow_networks=("10.0.0.0/8", "127.0.0.2"))
        site = SiteProcess(path)
        site.broker = broker  # type: ignore[attr-defined]
        try:
            site.start()
            site.wait_role("active")
            yield site
        finally:
            site.stop()


def register(service: SiteProcess, url: str, key: str, **extra: Any) -> Any:
    with service.client() as api:
        return api.post(
            "/v1/webhooks", json={"url": url, **extra}, headers={"Idempotency-Key": key}
        )


@pytest.mark.parametrize(
    ("url", "error", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "url_refused", "cloud metadata"),
        ("http://192.168.1.10/hook", "url_refused", "is private, not in [webhooks]"),
        ("http://127.0.0.1:8910/v1/webhooks", "url_refused", "is loopback"),
        ("http://localhost:8910/", "url_refused", "localhost resolves to an address that"),
        ("http://oms:s3cret-pw@10.1.2.3/hook", "url_refused", "credentials in the URL"),
        ("ftp://10.1.2.3/hook", "invalid_request", "URL scheme should be 'http' or 'https'"),
        ("gopher://127.0.0.2:6379/_INFO", "invalid_request", "URL scheme should be"),
    ],
)
def test_registration_refuses_what_is_neither_public_nor_allowed(
    service: SiteProcess, url: str, error: str, why: str
) -> None:
    answer = register(service, url, f"refuse-{url}")
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["error"] == error
    assert problem["detail"].startswith("body.url: ") and why in problem["detail"], problem
    with service.client() as api:
        assert url not in [h["url"] for h in api.get("/v1/webhooks").json()]
    assert "s3cret-pw" not in answer.text and "s3cret-pw" not in service.text()


def test_an_allowed_network_is_registered(service: SiteProcess) -> None:
    answer = register(service, "http://10.1.2.3:9/hook", "lan-1", names=["never_sent"])
    assert answer.status_code == 201, answer.text
    assert answer.json()["url"] == "http://10.1.2.3:9/hook"


def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_delivered_to_an_allowed_address_and_a_redirect_is_not_followed(
    service: SiteProcess,
) -> None:
    broker: LocalBroker = service.broker  # type: ignore[attr-defined]
    with Receiver("127.0.0.2") as receiver, Receiver("127.0.0.2") as inside:
        hook = register(service, receiver.url, "allowed-1", names=["ssrf_check"], batch=1)
        assert hook.status_code == 201, hook.text
        hook_id = hook.json()["id"]
        second = threading.Event()
        done = threading.Event()

        async def fleet() -> None:
            config = BrokerConfig(urls=[broker.url], backoff_initial_s=0.05, backoff_max_s=0.5)
            async with FakeNode(config, SITE, "ssrf-node", ["S-1"]) as node:
                node.emit("ssrf_check", {"n": 1})
                while not second.is_set():
                    await asyncio.sleep(0.02)
                node.emit("ssrf_check", {"n": 2})
                while not done.is_set():
                    await asyncio.sleep(0.02)

        thread = threading.Thread(target=lambda: asyncio.run(fleet()), daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(receiver.events()) == 1)
            assert receiver.events()[0]["body"] == {"n": 1}

            # From now on it redirects to another receiver, one the rules would allow: a
            # redirect is still not followed (it is a URL nobody registered or checked).
            receiver.fail, receiver.fail_status = 10**6, 302
            receiver.location = inside.url
            second.set()
            with service.client() as api:
                wait_for(lambda: not api.get(f"/v1/webhooks/{hook_id}").json()["enabled"])
                attempts = api.get(f"/v1/webhooks/{hook_id}/attempts").json()
        finally:
            done.set()
            thread.join(10)
        assert [a["status"] for a in attempts] == [302] * 4  # 1 + the 3 retries of retry_s
        assert all(f"redirect to '{inside.url}' not followed" in a["error"] for a in attempts), (
            attempts
        )
        assert inside.got == [] and len(receiver.events()) == 1
