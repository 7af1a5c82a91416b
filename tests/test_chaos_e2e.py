"""Chaos, short: ``bench.chaos`` with every kind of fault once, on a real Mosquitto.

The node (``zone-agent run --simulate``, a child process) is driven only through the broker
and its control API while the broker is stopped with SIGTERM and with SIGKILL, the node is
SIGKILLed mid-work, its link is blackholed for a few seconds, and the OMS's connection is
cut. Every accepted task must be confirmed exactly once and the lights must match the OMS's
open tasks after every fault. ``python -m bench.chaos`` is the long run (5 broker restarts,
3 node kills, a 30 s partition).
"""

from __future__ import annotations

import asyncio

import pytest

from bench.chaos import Params, run_chaos

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_every_task_confirmed_exactly_once_through_every_kind_of_fault(tmp_path):
    params = Params(
        broker_restarts=2,
        node_kills=1,
        oms_cuts=1,
        partition_s=3.0,
        down_s=1.0,
        work_s=1.5,
        settle_s=60.0,
    )
    result = asyncio.run(asyncio.wait_for(run_chaos(tmp_path, params, print), 240))
    faults = [f["fault"] for f in result["faults"]]
    assert sorted(faults) == sorted(
        ["broker_sigterm", "broker_sigkill", "node_sigkill", "oms_reconnect", "partition"]
    )
    assert result["tasks_accepted"] == result["tasks_sent"] > 0
    assert result["tasks_refused"] == {}
    assert (result["lost"], result["doubled"]) == (0, 0)
    assert result["confirmed_exactly_once"] == result["tasks_accepted"]
    assert result["confirmed_but_never_accepted"] == []
    assert result["light_checks"] == len(faults) + 1
    assert result["light_checks_failed"] == []
    assert result["final_check"]["open"] == 0
    # Work flowed again after every fault (the figures themselves are bench/'s).
    assert all(f["healed_to_confirmation_s"] is not None for f in result["faults"])
