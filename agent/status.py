"""What a running node says about itself: its screen state and its metrics, read now.

Both read the node's internals (outbox, store, transport, floor health) at the moment they
are asked, so they sit above :mod:`agent.node` and :mod:`agent.floor`; :mod:`agent.metrics`
stays a counter library below them that the node bumps and the OMS dashboard reuses.
"""

from __future__ import annotations

from typing import Any

from agent.floor import DeviceFloor
from agent.metrics import Family, counter, gauge
from agent.node import Node
from agent.workflows.health import screen_devices


def node_state(node: Node, floor: DeviceFloor) -> dict[str, Any]:
    """What the node's screen and ``GET /api/state`` show."""
    return {
        "site": node.config.site,
        "node": node.config.node,
        "role": node.config.role,
        "online": node.online.is_set(),
        "link": node.transport.link_state if node.online.is_set() else "offline",
        "boot": node.boot,
        "last_seq": node.store.store.last_seq,
        "outbox": node.sender.pending,
        "inputs": node.stats["inputs"],
        "inputs_ignored": dict(node.ignored),
        "link_conflict": node.link_conflict(),
        "devices": screen_devices({k: v.model_dump() for k, v in floor.health().items()}),
        "lights": floor.lights(),
        "workflow": node.workflow.snapshot(),
    }


def node_families(node: Node, floor: DeviceFloor) -> list[Family]:
    """Every metric of a running node, read now."""
    m = node.metrics
    config = node.config
    sender = node.sender
    last_seq = node.store.store.last_seq
    health = floor.health()
    status = {
        (name, h.kind, s): 1 if h.status == s else 0
        for name, h in health.items()
        for s in ("starting", "ok", "unavailable", "fault")
    }
    stats = node.stats
    return [
        gauge(
            "zone_node_info",
            "Always 1; the node's identity in its labels.",
            {(config.site, config.node, config.role, str(node.boot)): 1},
            ("site", "node", "role", "boot"),
        ),
        counter(
            "zone_events_published_total",
            "Events committed to the outbox (each published until acknowledged), by event.",
            m.events,
            ("event",),
        ),
        counter(
            "zone_commands_total",
            "Commands received, by command and outcome (accepted, rejected, duplicate, invalid).",
            m.commands,
            ("command", "outcome"),
        ),
        gauge("zone_outbox_events", "Events not yet acknowledged by the OMS.", sender.pending),
        gauge(
            "zone_outbox_oldest_unacked_age_seconds",
            "Age of the oldest event the OMS has not acknowledged (0 when none).",
            m.oldest_unacked_age_s(sender.acked, last_seq),
        ),
        counter(
            "zone_outbox_resends_total",
            "Times the outbox resent its unacknowledged events for want of an ack.",
            sender.resends,
        ),
        counter(
            "zone_outbox_resends_held_total",
            "Resend checks that waited because a publish was still without PUBACK (congestion).",
            sender.resends_held,
        ),
        gauge("zone_outbox_last_seq", "Seq of the latest committed event.", last_seq),
        gauge(
            "zone_mqtt_connected",
            "1 while connected to the broker.",
            1 if node.transport.connected.is_set() else 0,
        ),
        gauge(
            "zone_mqtt_link_congested",
            "1 while a publish has waited over 2 s for PUBACK (a slow or congested link).",
            1 if node.transport.link_state == "congested" else 0,
        ),
        counter("zone_mqtt_connects_total", "MQTT connections made.", m.connects),
        counter(
            "zone_mqtt_reconnects_total",
            "MQTT connections made after the first one.",
            max(0, m.connects - 1),
        ),
        gauge(
            "zone_device_up",
            "1 when the device is ok, else 0.",
            {(n, h.kind): 1 if h.status == "ok" else 0 for n, h in health.items()},
            ("device", "kind"),
        ),
        gauge(
            "zone_device_status",
            "1 for the device's current status (starting, ok, unavailable, fault), else 0.",
            status,
            ("device", "kind", "status"),
        ),
        gauge(
            "zone_device_parts_down",
            "Parts of a device (tags of a bus controller) not ok, by status.",
            {
                (n, h.kind, s): sum(1 for p in h.parts.values() if p.status == s)
                for n, h in health.items()
                for s in ("unavailable", "fault")
            },
            ("device", "kind", "status"),
        ),
        gauge(
            "zone_device_part_down",
            "1 for each part that is not ok (by the location it serves), with its status.",
            {(n, where, p.status): 1 for n, h in health.items() for where, p in h.parts.items()},
            ("device", "part", "status"),
        ),
        counter(
            "zone_device_bus_total",
            "A bus driver's own counts: frames out and in, events by kind, bad input (bad_*).",
            {(n, k): v for n, counts in floor.counters().items() for k, v in counts.items()},
            ("device", "count"),
        ),
        counter("zone_scans_total", "Barcode scans taken, by scanner.", m.scans, ("device",)),
        counter(
            "zone_misscans_total",
            "Scans the workflow refused, by the event it published and its reason.",
            m.misscans,
            ("event", "reason"),
        ),
        counter(
            "zone_inputs_total",
            "Device inputs taken (presses, scans, weights, ...).",
            stats["inputs"],
        ),
        counter(
            "zone_inputs_refused_total",
            "Device inputs not taken because the outbox was full.",
            stats["inputs_refused"],
        ),
        counter(
            "zone_inputs_ignored_total",
            "Device inputs taken but not acted on, by reason: stale_press (pressed for what its "
            "slot no longer shows), press_too_old (older than [input] press_max_age_s).",
            node.ignored,
            ("reason",),
        ),
        counter(
            "zone_handling_failures_total",
            "Commands or inputs dropped because handling them raised (a bug: see the log).",
            stats["failed"],
        ),
        Family(
            "zone_commit_duration_seconds",
            "histogram",
            "Store commit latency: one SQLite transaction with its fsync.",
            (),
            [((), m.commit_seconds)],
        ),
    ]
