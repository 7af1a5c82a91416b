"""Webhooks that push the log's events, signed per Standard Webhooks 1.0.

Signing is the specification's symmetric scheme, written out here (15 lines of the standard
library rather than a dependency): the secret is ``whsec_`` + base64 of 32 random bytes; the
signed content is ``{webhook-id}.{webhook-timestamp}.{body}``; ``webhook-signature`` is
``v1,`` + base64(HMAC-SHA256). tests/test_site_webhooks.py checks it against the
specification's reference library (PyPI ``standardwebhooks``), the Node.js OMS in
tests/oms_node/ against ``crypto.createHmac``.

Delivery follows each endpoint's cursor in the log (openwcs's "the dispatcher advances each
subscription's cursor as deliveries succeed"): messages go out in log order, up to ``[webhooks]
in_flight`` of them on their way at once (no order of arrival is promised, as most
senders promise none: Convoy's guide for webhook providers calls ordering an anti-pattern;
the event ids and each node's ``seq`` give the order), and the cursor is the end of the
longest run of delivered messages, so a restart sends again what might not have arrived. The
client is aiohttp's: a keep-alive POST costs ~100 us of CPU against httpx's ~780 us (measured
here, both against the same local server), and with one message per event (``batch = 1``)
the client is most of what a delivery costs: under httpx a 1,000 events/s stream kept one
core busy and its webhook fell seconds behind. A message is one
event (``batch = 1``, ``webhook-id`` = ``evt_<id>``) or up to ``batch`` events
(``evts_<first>_<last>``); the consumer's idempotency key is the event id either way. Only a
2xx is success. Failures are retried after each wait of ``[webhooks] retry_s``
(``Retry-After`` honoured when longer); when they are used up, or the endpoint answers 410,
it is disabled with the reason and its cursor stays where it was: ``POST
/v1/webhooks/{id}/replay`` enables it again from any position. A redirect is not followed
(a failed attempt), and connections go only where agent/oms/site/urlguard.py allows.
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
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp

from agent.oms.site import urlguard
from agent.oms.site.log import Entry, SqlLog, Webhook

if TYPE_CHECKING:
    from agent.oms.site.settings import WebhookConfig

log = logging.getLogger("agent.oms.site.webhooks")

READ_AHEAD = 500
"""Events read from the log at once for an endpoint's next messages."""
ERROR_BYTES = 200
"""How much of a failed delivery's answer is kept with the attempt."""


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
        self._client: aiohttp.ClientSession | None = None
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
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _session(self) -> aiohttp.ClientSession:
        # Made in the loop that uses it (aiohttp binds a session to its loop).
        if self._client is None:
            self._client = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                auto_decompress=False,
                connector=urlguard.connector(self.settings),  # SSRF: each address checked
            )
        return self._client

    async def _run(self, hook_id: str) -> None:
        hook = await asyncio.to_thread(self.log.webhook, hook_id)
        if hook is None or not hook.enabled:
            return
        cursor = saved = hook.cursor  # every event up to here is delivered
        sent = cursor  # every event up to here is delivered or on its way
        saved_at = time.monotonic()
        window: deque[tuple[int, asyncio.Task[bool]]] = deque()
        going = True
        try:
            while True:
                # Read only when the log grew past what was sent (every read is a hop to a
                # worker thread: with single events arriving it was several per event), and
                # then ahead: one query for many messages.
                head = self.head_changed.head
                entries = (
                    await asyncio.to_thread(
                        self.log.read, sent, max(hook.batch, READ_AHEAD), names=hook.names
                    )
                    if head > sent
                    else []
                )
                if not entries and window:
                    cursor, going = await self._settle(window, cursor, wait=True)
                    if not going:
                        break
                    continue
                if not entries:
                    # Nothing up to ``head`` is for this endpoint (filtered out): step over.
                    cursor = sent = max(sent, head)
                    # Caught up: the cursor is written a second after the last write at the
                    # latest, not each time (a stream of single events catches up hundreds
                    # of times a second, and every write is an fsync).
                    since = time.monotonic() - saved_at
                    if saved != cursor and since >= 1.0:
                        await asyncio.to_thread(self.log.update_webhook, hook.id, cursor=cursor)
                        saved, saved_at = cursor, time.monotonic()
                    await self.head_changed.wait(
                        cursor, 15.0 if saved == cursor else max(0.01, 1.0 - since)
                    )
                    continue
                for start in range(0, len(entries), hook.batch):
                    chunk = entries[start : start + hook.batch]
                    while going and len(window) >= self.settings.in_flight:
                        cursor, going = await self._settle(window, cursor, wait=True)
                    if not going:
                        break
                    window.append((chunk[-1].id, asyncio.create_task(self._deliver(hook, chunk))))
                    sent = chunk[-1].id
                if not going:
                    break
                cursor, going = await self._settle(window, cursor, wait=False)
                if not going:
                    break
                # The cursor is written at most every second while messages flow (a write
                # is an fsync): after a crash the last second's messages may come again,
                # under the same ids, which receivers deduplicate anyway.
                if cursor != saved and time.monotonic() - saved_at >= 1.0:
                    await asyncio.to_thread(
                        self.log.update_webhook, hook.id, cursor=cursor, failures=0
                    )
                    saved, saved_at = cursor, time.monotonic()
        finally:
            for _, task in window:
                task.cancel()
        # Given up (disabled): the cursor stays just before the message that failed; the
        # later ones may have arrived, and come again on a replay under the same ids.
        await asyncio.to_thread(self.log.update_webhook, hook.id, cursor=cursor)

    @staticmethod
    async def _settle(
        window: deque[tuple[int, asyncio.Task[bool]]], cursor: int, *, wait: bool
    ) -> tuple[int, bool]:
        """Take the delivered messages off the front of ``window``.

        ``wait``: for the oldest first. Returns the new cursor and whether delivery goes
        on (``False``: a message was given up on and the endpoint disabled).
        """
        if wait and window:
            await asyncio.wait([window[0][1]])
        while window and window[0][1].done():
            last, task = window.popleft()
            if not task.result():
                return cursor, False
            cursor = last
        return cursor, True

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
                async with self._session().post(
                    hook.url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    status = response.status
                    # Only the start of an answer is kept (the attempts table): a receiver
                    # cannot make the service read a body of any size.
                    text = await response.content.read(ERROR_BYTES)
                    error = "" if 200 <= status < 300 else text.decode("utf-8", "replace")
                    if 300 <= status < 400:  # never followed: a URL nobody registered
                        where = response.headers.get("location", "")[:120]
                        error = f"redirect to {where!r} not followed: register the final URL"
                    with contextlib.suppress(ValueError):
                        retry_after = float(response.headers.get("retry-after", "0"))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
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
            # The cursor is not moved back here: it is only ever the end of what was
            # delivered, and with messages side by side a later one may be failing too.
            await asyncio.to_thread(self.log.update_webhook, hook.id, failures=attempt)
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
