"""Hostile payloads against a running node while it confirms real work (bench.hostile, small).

The node runs in its own process (``bench.nodehost``) on a real Mosquitto; a few thousand
payloads of every hostile kind go in between rounds of real picks. ``python -m
bench.hostile`` is the same at 100,000 payloads, with RSS and tracemalloc figures.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.hostile import Case, Generator, Tally, check, check_repeat, run_hostile

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_a_few_thousand_hostile_payloads_answered_as_documented_and_nothing_lost(broker, tmp_path):
    result = asyncio.run(
        asyncio.wait_for(run_hostile(tmp_path, broker.port, 3000, per_round=300), 240)
    )
    assert result["node_alive"]
    assert set(result["kinds"]) == {f.__name__ for f in Generator(0).kinds}
    assert result["answers_checked"] > 1000
    assert result["repeats_checked"] > 50
    assert result["mismatches"] == []
    assert result["unexpected_replies"] == []
    assert result["real_tasks"] == 8 * (result["rounds"] + 1)
    assert (result["confirmed_once"], result["lost"], result["doubled"]) == (
        result["real_tasks"],
        0,
        0,
    )
    assert result["open_after"] == 0  # the flood left no task behind
    assert result["node_stats"]["failed"] == 0  # no payload reached a bug
    # One line per reason, then a count a minute: not one line per payload (issue 18).
    assert result["log_warnings"] < 100, result["log_warnings"]


def test_the_checks_see_a_wrong_answer():
    case = Case("wrong_type", "pick", b"", "H1", "invalid_body")
    right = {"cmd": "pick", "status": "rejected", "reason": "invalid_body", "detail": "qty"}
    assert check(case, [(5, "r1", right)]) is None
    assert "accepted" in (check(case, [(5, "r1", {"cmd": "pick", "status": "accepted"})]) or "")
    assert check(case, []) == "0 replies"
    assert check(case, [(5, "r1", right), (6, "r2", right)]) == "2 replies"
    assert "detail" in (check(case, [(5, "r1", {**right, "detail": None})]) or "")
    tally = Tally()
    tally.replies["H2"] = [(7, "r7", {})]
    tally.arrivals["H2"] = [(7, "r7"), (7, "r7")]
    assert check_repeat("H2", 1, tally) is None
    assert check_repeat("H2", 2, tally) is not None  # a repeat went unanswered
    tally.arrivals["H2"].append((9, "r9"))
    assert check_repeat("H2", 2, tally) is not None  # answered with a new reply
