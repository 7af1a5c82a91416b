"""The wall clock, checked before TLS: a Raspberry Pi has no real-time clock.

A Pi boots with the time fake-hwclock saved at the last clean shutdown (or 1970 without
it) until NTP answers. A TLS handshake made before then fails with "certificate is not
yet valid", which the link would report as a broker it cannot reach, again and again. So
before the node starts, the clock is compared with the earliest time it can truly show:
when this build of zone-agent was made and when the broker's CA certificates became
valid. If it is earlier, the node says so once at WARNING and waits, polling, until NTP
has set the clock; under systemd it keeps the start timeout and the watchdog from
expiring meanwhile and shows what it waits for in ``systemctl status``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.link.settings import BrokerConfig

log = logging.getLogger("agent.link")

POLL_S = 5.0
"""How often the clock is read again while it is behind."""

REMIND_S = 60.0
"""How often the journal is reminded that the node is still waiting."""


def build_time() -> float:
    """When this copy of zone-agent was built or installed: its package files' mtime.

    A wheel and a Debian package keep the files' times from the build; a checkout has
    its own. Either way no correct clock can be earlier.
    """
    here = Path(__file__).resolve().parent.parent
    return max(path.stat().st_mtime for path in (here / "__init__.py", Path(__file__)))


def ca_not_before(ca_file: Path) -> list[tuple[float, str]]:
    """Each CA certificate of ``ca_file`` as ``(notBefore, its subject's common name)``.

    Read through the ssl module's own certificate store: no parser of ours. A file that
    cannot be read gives nothing (check-config reports it).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (OSError, ssl.SSLError, ValueError):
        return []
    found: list[tuple[float, str]] = []
    for cert in context.get_ca_certs():
        # subject: ((("commonName", "..."),), ...), as ssl.getpeercert() gives it.
        subject: Any = cert.get("subject", ())
        names = [value for rdn in subject for key, value in rdn if key == "commonName"]
        name = names[0] if names else "a CA certificate"
        found.append((ssl.cert_time_to_seconds(str(cert["notBefore"])), name))
    return found


def clock_floor(broker: BrokerConfig) -> tuple[float, str]:
    """The earliest time a correct clock can show, and what says so."""
    floor = (build_time(), "this build of zone-agent")
    if broker.uses_tls and broker.ca_file is not None:
        for not_before, name in ca_not_before(broker.ca_file):
            if not_before > floor[0]:
                floor = (not_before, f"{name!r} in {broker.ca_file} becomes valid")
    return floor


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def wait_for_clock(
    broker: BrokerConfig,
    *,
    notify: Callable[[str], object] = lambda message: None,
    stop: asyncio.Event | None = None,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Return once the wall clock is no earlier than ``clock_floor``: ``True``.

    Only nodes that connect with TLS wait: the check is about certificates. ``notify``
    is sd_notify (``agent.systemd.notify``), called with ``STATUS=``, ``WATCHDOG=1`` and
    ``EXTEND_TIMEOUT_USEC=`` while waiting; ``stop`` being set ends the wait early (SIGTERM):
    ``False``, start nothing.
    """
    if not broker.uses_tls:
        return True
    floor, why = clock_floor(broker)
    if now() >= floor:
        return True
    log.warning(
        "the clock says %s, earlier than %s (%s): this machine has no real-time clock or "
        "NTP has not set it yet; TLS would refuse every certificate as not yet valid. "
        "Waiting for the clock (timedatectl status; systemd-timesyncd or chrony must reach "
        "an NTP server) before connecting",
        _when(now()),
        _when(floor),
        why,
    )
    started = reminded = time.monotonic()
    while now() < floor:
        if stop is not None and stop.is_set():
            return False
        notify(f"STATUS=waiting for the clock: it says {_when(now())}, before {_when(floor)}")
        notify("WATCHDOG=1")
        notify(f"EXTEND_TIMEOUT_USEC={int(POLL_S * 3 * 1_000_000)}")
        await sleep(POLL_S)
        if time.monotonic() - reminded >= REMIND_S:
            reminded = time.monotonic()
            log.warning(
                "still waiting for the clock after %.0f s: it says %s",
                reminded - started,
                _when(now()),
            )
    waited = time.monotonic() - started
    log.warning("the clock is set (%s): connecting after %.0f s", _when(now()), waited)
    notify("STATUS=")
    return True
