"""The console's read model, folded from audit records sealed as the worker seals them."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import pytest

from streams.console.sample import Chains
from streams.console.view import ConsoleView
from streams.files import read_policy
from streams.policy.model import Policy

FAST = Path(__file__).resolve().parents[1] / "fixtures" / "fast-policy.yaml"
T0 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def policy() -> Policy:
    return read_policy(FAST)


def _fold(view: ConsoleView, records: list[dict]) -> None:
    for record in records:
        view.apply_audit(record)


def test_a_level_2_decision_waits_until_it_is_answered(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView()
    decision, records = chains.decide("wide-blast", 1, T0)
    _fold(view, records)
    now = T0.timestamp() + 1
    (item,) = view.waiting(now)
    assert item.decision_id == decision["decision_id"]
    assert item.level == 2
    assert item.deadline() == pytest.approx(T0.timestamp() + policy.approval.timeout_seconds)
    assert "blast_radius" in item.triggers
    assert any(c["name"] == "replica_fraction" and c["holds"] for c in item.conditions())
    assert "replica_fraction" in item.holding
    _fold(view, chains.answer(decision, "approve", "alice", T0 + dt.timedelta(seconds=2)))
    assert view.waiting(now) == []
    assert item.status == "approved"
    assert [s.kind for s in item.timeline] == [
        "proposal_received", "decision", "approval_accepted", "execute_command"
    ]  # fmt: skip
    assert view.trends.answer_times[-1][1] == pytest.approx(2.0)


def test_waiting_is_sorted_by_the_soonest_deadline(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView()
    late, records = chains.decide("wide-blast", 1, T0 + dt.timedelta(seconds=30))
    _fold(view, records)
    soon, records = chains.decide("deadlock-statefulset", 2, T0)
    _fold(view, records)
    order = [i.decision_id for i in view.waiting(T0.timestamp())]
    assert order == [soon["decision_id"], late["decision_id"]]


def test_an_abort_window_stops_waiting_when_it_closes(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView()
    decision, records = chains.decide("deadlock-statefulset", 1, T0)
    _fold(view, records)
    ends = T0.timestamp() + policy.abort_window_seconds
    assert [i.level for i in view.waiting(ends - 0.5)] == [3]
    assert view.waiting(ends + 0.5) == []
    assert decision["decision_id"] not in view.open
    assert view.get(decision["decision_id"]).status == "window closed"


def test_a_timeout_pages_and_the_approval_stays_open_with_the_next_deadline(
    policy: Policy,
) -> None:
    chains, view = Chains(policy), ConsoleView()
    decision, records = chains.decide("wide-blast", 1, T0)
    _fold(view, records)
    page = chains.seal(
        0, "timeout_escalation", event_id="x:timeout:1", actor="escalation-gate",
        at=T0 + dt.timedelta(seconds=3), decision_id=decision["decision_id"],
        proposal_id=decision["proposal_id"], data={"escalation": {"escalation_number": 1}},
    )  # fmt: skip
    view.apply_audit(page)
    (item,) = view.waiting(T0.timestamp() + 4)
    assert item.escalations == 1
    assert item.deadline() == pytest.approx(T0.timestamp() + 2 * policy.approval.timeout_seconds)
    assert sum(view.trends.timeouts.values()) == 1


def test_the_chain_verifies_and_an_edited_event_is_reported(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView()
    decision, records = chains.decide("wide-blast", 1, T0)
    _fold(view, records)
    ok, how = view.chain_verdict(view.get(decision["decision_id"]))
    assert ok, how
    edited_view = ConsoleView()
    tampered = copy.deepcopy(records)
    tampered[1]["event"]["data"]["decision"]["level"] = 4
    _fold(edited_view, tampered)
    ok, how = edited_view.chain_verdict(edited_view.get(decision["decision_id"]))
    assert not ok
    assert "edit" in how


def test_a_missing_event_is_a_gap(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView()
    first, records = chains.decide("wide-blast", 1, T0)
    second, more = chains.decide("wide-blast", 2, T0)
    _fold(view, records[:1] + more)  # the first decision's own event is lost
    ok, how = view.chain_verdict(view.get(second["decision_id"]))
    assert not ok
    assert "gap" in how
    assert view.get(first["decision_id"]) is not None


def test_memory_is_bounded_and_open_approvals_are_kept(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView(max_decisions=100)
    waiting, records = chains.decide("wide-blast", 0, T0)
    _fold(view, records)
    for n in range(1, 300):
        _fold(view, chains.decide("novel", n, T0, seen=0)[1])
    assert len(view.items) == 100
    assert [i.decision_id for i in view.waiting(T0.timestamp())] == [waiting["decision_id"]]
    assert view.get(waiting["decision_id"]) is not None
    assert len(view.by_proposal) <= 101


def test_the_feed_filters_and_search_by_proposal_id(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView()
    l2, records = chains.decide("wide-blast", 1, T0)
    _fold(view, records)
    _fold(view, chains.decide("novel", 2, T0, seen=0)[1])
    assert [i.level for i in view.feed()] == [1, 2]
    assert [i.decision_id for i in view.feed(level=2)] == [l2["decision_id"]]
    assert view.feed(service="nothing") == []
    assert view.feed(ai_system="holmesgpt", pattern=l2["proposal"]["pattern"], level=2)
    assert view.get(l2["proposal_id"]).decision_id == l2["decision_id"]


def test_decisions_are_counted_per_level_per_minute(policy: Policy) -> None:
    chains, view = Chains(policy), ConsoleView()
    _fold(view, chains.decide("wide-blast", 1, T0)[1])
    _fold(view, chains.decide("novel", 2, T0, seen=0)[1])
    minute = int(T0.timestamp() // 60 * 60)
    assert view.trends.levels[minute] == [0, 1, 1, 0, 0]


def test_state_updates_fold_with_the_gates_reducers() -> None:
    view = ConsoleView()
    at = T0.timestamp()
    view.apply_state({"table": "freeze", "key": "search-api", "op": "freeze", "user": "alice",
                      "at": at})  # fmt: skip
    view.apply_state({"table": "budgets", "key": "search-api", "op": "budget", "remaining": 0.4,
                      "at": at})  # fmt: skip
    for n in range(3):
        view.apply_state({"table": "velocity", "key": "search-api", "op": "autonomous",
                          "id": f"v{n}", "decision_id": f"d{n}", "at": at + n,
                          "window_seconds": 600})  # fmt: skip
    view.apply_state({"table": "nonsense", "key": "x", "op": "freeze"})
    view.apply_state("not a dict")
    assert view.frozen("search-api") == {"frozen": True, "by": "alice", "at": at}
    assert view.budget("search-api") == pytest.approx(0.4)
    assert view.velocity("search-api", at + 10, 600) == 3
    assert view.velocity("search-api", at + 700, 600) == 0
    assert view.services() == ["search-api"]
    assert view.unreadable == 1


def test_unreadable_audit_records_are_counted_not_folded() -> None:
    view = ConsoleView()
    for record in (None, [], {"event": "x"}, {"event": {"no": "kind"}}):
        view.apply_audit(record)
    assert view.unreadable == 4
    assert not view.items


def test_the_view_and_the_story_are_pure() -> None:
    """No Kafka client, Faust, web framework or metrics behind the view, its charts, its
    sample records and the demo's story (checked in a fresh interpreter)."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    code = (
        "import sys; import streams.console.view, streams.console.svg, streams.console.sample,"
        " streams.story; bad = [m for m in ('faust', 'confluent_kafka', 'aiokafka', 'starlette',"
        " 'prometheus_client', 'uvicorn') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_redelivered_event_is_folded_once(policy: Policy) -> None:
    """The gate seals a redelivered input again (same event id, next seq): one timeline
    entry, one count, and the chain still verifies."""
    chains, view = Chains(policy), ConsoleView()
    decision, records = chains.decide("wide-blast", 1, T0)
    _fold(view, records)
    body = records[1]["event"]
    again = chains.seal(
        0, "decision", event_id=body["event_id"], actor=body["actor"], at=T0,
        decision_id=body["decision_id"], proposal_id=body["proposal_id"], data=body["data"],
    )  # fmt: skip
    view.apply_audit(again)
    item = view.get(decision["decision_id"])
    assert [s.kind for s in item.timeline] == ["proposal_received", "decision"]
    assert sum(sum(c) for c in view.trends.levels.values()) == 1
    assert view.chain_verdict(item)[0]
