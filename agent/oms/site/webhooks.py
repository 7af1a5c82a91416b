"""Webhooks that push the log's events, signed per Standard Webhooks 1.0.

Signing is the specification's symmetric scheme, written out here (15 lines of the standard
library rather than a dependency): the secret is ``whsec_`` + base64 of 32 random bytes; the
signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; ``webhook-signature`` is
``v1,`` + base64(HMAC-SHA256). tests/test_site_webhooks.py checks it against the
specification's reference library (PyPI ``standardwebhooks``), the Node.js OMS in
tests/oms_node/ against ``crypto.createHmac``.

Delivery follows each endpoint's cursor in the log, in order, one message at a time
(openwcs's "the dispatcher advances each subscription's cursor as deliveries succeed"; 8
messages in flight measured slower with httpx than one after the other). A message is one
event (``batch = 1``, ``webhook-id`` = ``evt_<id>``) or up to ``batch`` events
(``evts_<first>_<last>``); the consumer's idempotency key is the event id either way. Only a
2xx is success. Failures are retried after each wait of ``[webhooks] retry_s``
(``Retry-After`` honoured when longer); when they are used up, or the endpoint answers 410,
it is disabled with the reason and its cursor stays where it was: ``POST
/v1/webhooks/{id}/replay`` enables it again from any position.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from agent.oms.site.log import Entry, SqlLog, Webhook

if TYPE_CHECKING:
    from agent.oms.site.settings import WebhookConfig

log = logging.getLogger("agent.oms.site.webhooks")

READ_AHEAD = 500
"""Events read from the log at once for an endpoint's next messages."""


def new_secret() -> str:
    """A fresh signing secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value of one message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> bool:
    """Whether ``headers`` carry a valid, recent signature of ``body`` (for receivers)."""
    try:
        msg_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance_s:
        return False
    expected = sign(secret, msg_id, timestamp, body).encode()
    return any(
        hmac.compare_digest(expected, given.encode())
        for given in headers.get("webhook-signature", "").split()
    )


def message(entries: Sequence[Entry], batch: int) -> tuple[str, bytes]:
    """The id and body of the message carrying ``entries``."""
    records = [e.record() for e in entries]
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if batch == 1:
        msg_id = f"evt_{entries[0].id}"
        payload: dict[str, Any] = {
            "type": f"event.{entries[0].name}",
            "timestamp": now,
            "data": records[0],
        }
    else:
        msg_id = f"evts_{entries[0].id}_{entries[-1].id}"
        payload = {"type": "events", "timestamp": now, "data": {"events": records}}
    return msg_id, json.dumps(payload, separators=(",", ":")).encode()


class Dispatcher:
    """Delivers the log to every enabled endpoint, one task per endpoint.

    Args:
        log: the event log (endpoints and cursors live there too).
        settings: the retry schedule and timeout.
        head_changed: wait for news in the log (``wait(after, timeout)``).
    """

    def __init__(self, log: SqlLog, settings: WebhookConfig, head_changed: Any) -> None:
        self.log = log
        self.settings = settings
        self.head_changed = head_changed
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client = httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False)
        self.delivered = 0  # messages delivered since start (bench, metrics)
        self.latencies_ms: list[float] = []  # logged -> 2xx, per event (bench)
        self.keep_latencies = False

    async def start(self) -> None:
        """Start a delivery task for every enabled endpoint."""
        for hook in await asyncio.to_thread(self.log.webhooks):
            self.follow(hook.id)

    def follow(self, hook_id: str) -> None:
        """(Re)start delivering to ``hook_id`` (registered, replayed or enabled)."""
        old = self._tasks.pop(hook_id, None)
        if old is not None:
            old.cancel()
        self._tasks[hook_id] = asyncio.get_running_loop().create_task(self._run(hook_id))

    def forget(self, hook_id: str) -> None:
        """Stop delivering to ``hook_id`` (deleted)."""
        task = self._tasks.pop(hook_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        """Stop every delivery task."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()

    async def _run(self, hook_id: str) -> None:
        hook = await asyncio.to_thread(self.log.webhook, hook_id)
        if hook is None or not hook.enabled:
            return
        cursor = saved = hook.cursor
        saved_at = time.monotonic()
        while True:
            # Read ahead: one query for many messages (the log's lock is shared with the
            # writer, whose commits wait for the disk).
            entries = await asyncio.to_thread(
                self.log.read, cursor, max(hook.batch, READ_AHEAD), names=hook.names
            )
            if not entries:
                if saved != cursor:
                    await asyncio.to_thread(self.log.update_webhook, hook.id, cursor=cursor)
                    saved, saved_at = cursor, time.monotonic()
                await self.head_changed.wait(cursor, 15.0)
                # Filtered out or nothing new: step over what is there.
                if hook.names:
                    head = await asyncio.to_thread(self.log.head)
                    if not await asyncio.to_thread(self.log.read, cursor, 1, names=hook.names):
                        cursor = max(cursor, head)
                continue
            for start in range(0, len(entries), hook.batch):
                chunk = entries[start : start + hook.batch]
                if not await self._deliver(hook, chunk):
                    return  # disabled
                cursor = chunk[-1].id
                # The cursor is written at most every second while messages flow (a write
                # is an fsync): after a crash the last second's messages may come again,
                # under the same ids, which receivers deduplicate anyway.
                if time.monotonic() - saved_at >= 1.0:
                    await asyncio.to_thread(
                        self.log.update_webhook, hook.id, cursor=cursor, failures=0
                    )
                    saved, saved_at = cursor, time.monotonic()

    async def _deliver(self, hook: Webhook, entries: Sequence[Entry]) -> bool:
        """Deliver one message until a 2xx; ``False`` when the endpoint was disabled."""
        msg_id, body = message(entries, hook.batch)
        span = (entries[0].id, entries[-1].id)
        schedule = self.settings.retry_s
        for attempt in range(1, len(schedule) + 2):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(hook.secret, msg_id, timestamp, body),
                "user-agent": "zone-agent-site",
            }
            status, error, retry_after = 0, "", 0.0
            try:
                response = await self._client.post(hook.url, content=body, headers=headers)
                status = response.status_code
                error = "" if 200 <= status < 300 else response.text[:200]
                with contextlib.suppress(ValueError):
                    retry_after = float(response.headers.get("retry-after", "0"))
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
            if 200 <= status < 300:
                self.delivered += 1
                if self.keep_latencies:
                    now = time.time() * 1000
                    self.latencies_ms.extend(now - e.logged for e in entries)
                if attempt > 1:
                    await asyncio.to_thread(
                        self.log.add_attempt, hook.id, msg_id, span, attempt, status, ""
                    )
                return True
            await asyncio.to_thread(
                self.log.add_attempt, hook.id, msg_id, span, attempt, status, error
            )
            if status == 410:
                await self._disable(hook, "the endpoint answered 410 Gone", attempt)
                return False
            if attempt > len(schedule):
                break
            log.warning(
                "webhook %s: %s got %s; retry %d in %.1f s",
                hook.id,
                msg_id,
                status or error,
                attempt,
                max(schedule[attempt - 1], min(retry_after, 86_400)),
            )
            await asyncio.to_thread(
                self.log.update_webhook, hook.id, cursor=span[0] - 1, failures=attempt
            )
            await asyncio.sleep(max(schedule[attempt - 1], min(retry_after, 86_400)))
        await self._disable(hook, f"{len(schedule) + 1} attempts failed at {msg_id}", attempt)
        return False

    async def _disable(self, hook: Webhook, reason: str, attempts: int) -> None:
        log.error("webhook %s disabled: %s", hook.id, reason)
        await asyncio.to_thread(
            self.log.update_webhook,
            hook.id,
            enabled=False,
            failures=attempts,
            disabled_reason=reason,
        )
