"""Prometheus metrics of a node and of the reference OMS (``GET /metrics``), see docs/metrics.md.

The hot paths only count: a counter is a plain ``int`` in a dict or an attribute, bumped
where the thing happens (no lock, no label lookup object, no call into a library), and the
commit-latency histogram is one ``bisect`` and two additions on the store thread. Gauges
(outbox depth, the oldest unacknowledged event's age, device health, connection state) are
read from the node when Prometheus scrapes. Only the scrape touches ``prometheus_client``
(imported on the first scrape: ~1 MB RSS, see bench/README.md), which renders the text
exposition format and adds the ``process_*`` metrics (RSS, CPU, open files) of the process.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agent.store import OutboxRow

COMMIT_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds of the commit-latency buckets: 0.2 ms on an SSD, milliseconds on an SD card."""


MAX_LABEL_VALUES = 64
"""Distinct values kept per free-text label (reasons, devices); the rest count as ``other``."""

Kind = Literal["counter", "gauge", "histogram"]


class Histogram:
    """Cumulative-bucket histogram fed with plain arithmetic (see the module doc).

    Args:
        bounds: the buckets' upper bounds, ascending (``+Inf`` is implied).
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (``value <= bound`` falls in that bucket: Prometheus `le`)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of observations <= le)`` for every bucket, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class Family:
    """One metric with its samples, built at scrape time.

    Attributes:
        name: the full name; counters end in ``_total`` (as exposed).
        kind: counter, gauge or histogram.
        help: what it counts, in its unit.
        labels: the label names, in order.
        samples: ``(label values, value)``; for a histogram the value is a ``Histogram``.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], Any]] = field(default_factory=list)


def counter(
    name: str, help_: str, values: Mapping[Any, int] | int, labels: tuple[str, ...] = ()
) -> Family:
    """A counter family from a plain int or a dict of ints keyed by label value(s)."""
    return _family(name, "counter", help_, values, labels)


def gauge(
    name: str, help_: str, values: Mapping[Any, float] | float, labels: tuple[str, ...] = ()
) -> Family:
    """A gauge family from a number or a dict of numbers keyed by label value(s)."""
    return _family(name, "gauge", help_, values, labels)


def _family(
    name: str, kind: Kind, help_: str, values: Mapping[Any, float] | float, labels: tuple[str, ...]
) -> Family:
    if not isinstance(values, Mapping):
        return Family(name, kind, help_, (), [((), values)])
    samples = [
        ((key,) if isinstance(key, str) else tuple(key), value)
        for key, value in sorted(values.items())
    ]
    return Family(name, kind, help_, labels, samples)


def bump(counts: dict[Any, int], key: Any) -> None:
    """``counts[key] += 1``, folding keys beyond ``MAX_LABEL_VALUES`` into ``"other"``."""
    if key in counts:
        counts[key] += 1
    elif len(counts) < MAX_LABEL_VALUES:
        counts[key] = 1
    else:
        other: Any = "other" if isinstance(key, str) else tuple("other" for _ in key)
        counts[other] = counts.get(other, 0) + 1


def render(families: Iterable[Family]) -> bytes:
    """The Prometheus text exposition of ``families`` plus this process's ``process_*``."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    built: list[Any] = []
    for fam in families:
        labels = list(fam.labels)
        if fam.kind == "counter":
            metric: Any = CounterMetricFamily(fam.name, fam.help, labels=labels)
            for values, value in fam.samples:
                metric.add_metric(list(values), value)
        elif fam.kind == "gauge":
            metric = GaugeMetricFamily(fam.name, fam.help, labels=labels)
            for values, value in fam.samples:
                metric.add_metric(list(values), value)
        else:
            metric = HistogramMetricFamily(fam.name, fam.help, labels=labels)
            for values, hist in fam.samples:
                metric.add_metric(list(values), hist.cumulative(), hist.total)
        built.append(metric)

    class _Collector:
        def collect(self) -> Iterator[Any]:
            yield from built

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    ProcessCollector(registry=registry)
    data: bytes = generate_latest(registry)
    return data


class NodeMetrics:
    """The counters a node bumps as it works (read at scrape time by ``agent.status``).

    Attributes:
        events: events committed to the outbox, by event name (each one is published until
            the OMS acknowledges it).
        commands: commands by ``(command, outcome)``; outcome is the reply's status,
            ``duplicate`` (answered again) or ``invalid`` (refused before the workflow).
        scans: scans by scanner.
        misscans: scans the workflow refused, by ``(event, reason)``.
        connects: MQTT connections made (the first one included).
        commit_seconds: store commit latency (one transaction, one fsync).
    """

    __slots__ = (
        "_unacked",
        "commands",
        "commit_seconds",
        "connects",
        "events",
        "misscans",
        "scans",
    )

    def __init__(self, last_seq: int, acked: int) -> None:
        self.events: dict[str, int] = {}
        self.commands: dict[tuple[str, str], int] = {}
        self.scans: dict[str, int] = {}
        self.misscans: dict[tuple[str, str], int] = {}
        self.connects = 0
        self.commit_seconds = Histogram(COMMIT_BUCKETS_S)
        # (last seq of a commit, when it was committed): the oldest unacknowledged event's
        # age without a timestamp per event. Events restored at start count from then.
        self._unacked: deque[tuple[int, float]] = deque()
        if last_seq > acked:
            self._unacked.append((last_seq, time.monotonic()))

    def committed(self, rows: list[OutboxRow], acked: int) -> None:
        """Count a commit's events; remember when its last seq was committed."""
        events = self.events
        for row in rows:
            name = row.name
            if name in events:
                events[name] += 1
            else:
                bump(events, name)
        unacked = self._unacked
        while unacked and unacked[0][0] <= acked:
            unacked.popleft()
        unacked.append((rows[-1].seq, time.monotonic()))

    def oldest_unacked_age_s(self, acked: int, last_seq: int) -> float:
        """Seconds since the oldest event not yet acknowledged was committed (0: none)."""
        unacked = self._unacked
        while unacked and unacked[0][0] <= acked:
            unacked.popleft()
        if last_seq <= acked or not unacked:
            return 0.0
        return max(0.0, time.monotonic() - unacked[0][1])


# --- repeated log lines ----------------------------------------------------------------
#
# One log line per reason per interval, with a count, instead of one line per occurrence.
#
# A node on a hostile network (or behind a stalled link) may be handed the same kind of bad
# input thousands of times a minute; a line for each fills the journal and buries everything
# else. ``RepeatLog`` logs the first occurrence of a reason at once (so a single event is
# seen when it happens, with its detail), then counts the repeats and logs one summary line
# per reason when the interval is over: ``... 2,314 more in the last 60 s``. A summary is
# written by the next call after the interval ends, or by ``flush`` (the node calls it once a
# second from its clock tick), so nothing waits on a timer task.

REPEAT_INTERVAL_S = 60.0
"""How long repeats of one reason are counted before their summary line."""

REPEAT_MAX_REASONS = 256
"""Reasons tracked at once; further reasons share the ``other`` line (bounded memory)."""


@dataclass(slots=True)
class _Window:
    """One reason's interval: when it began, repeats since its first line, the latest."""

    start: float
    repeats: int = 0
    message: str = ""
    args: tuple[object, ...] = ()


class RepeatLog:
    """Logs occurrences through ``logger`` at ``level``, aggregated per reason.

    Args:
        logger: where the lines go.
        level: their level (``logging.WARNING`` for hostile input).
        interval_s: how long repeats are counted before their summary.
        clock: monotonic seconds (tests inject one).
    """

    def __init__(
        self,
        logger: logging.Logger,
        level: int = logging.WARNING,
        *,
        interval_s: float = REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.level = level
        self.interval_s = interval_s
        self.clock = clock
        self.total: dict[str, int] = {}
        """Occurrences by reason since the start (for metrics and tests)."""
        self._open: dict[str, _Window] = {}

    def note(self, reason: str, message: str, *args: object) -> None:
        """One occurrence of ``reason``; ``message % args`` is its line (the first one)."""
        if reason not in self._open and len(self._open) >= REPEAT_MAX_REASONS:
            reason = "other"
        self.total[reason] = self.total.get(reason, 0) + 1
        now = self.clock()
        self.flush(now)
        window = self._open.get(reason)
        if window is None:
            self._open[reason] = _Window(now)
            self.logger.log(self.level, message, *args)
            return
        window.repeats += 1
        window.message, window.args = message, args

    def flush(self, now: float | None = None) -> None:
        """Write the summary of every reason whose interval is over."""
        now = self.clock() if now is None else now
        over = [r for r, w in self._open.items() if now - w.start >= self.interval_s]
        for reason in over:
            window = self._open.pop(reason)
            if window.repeats:
                self.logger.log(
                    self.level,
                    "%s: %d more in the last %.0f s (the latest: " + window.message + ")",
                    reason,
                    window.repeats,
                    now - window.start,
                    *window.args,
                )
