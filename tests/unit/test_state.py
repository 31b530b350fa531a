"""The pure state reducers and lifecycle rules (no broker)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from streams import samples
from streams.models import ApprovalResponse
from streams.policy import evaluate, parse_policy
from streams.state import apply_update, build_context, lifecycle, reducers

POLICY = parse_policy(
    (Path(__file__).parents[2] / "policies" / "escalation-policy.yaml").read_bytes()
)
NOW = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)


def _context(**state):
    base = {
        "now": NOW,
        "decision_id": "d-self",
        "history": None,
        "budget": None,
        "verdicts": None,
        "requalification": None,
        "velocity_service": None,
        "velocity_fleet": [],
        "freeze": {},
        "velocity_window_seconds": 600,
    }
    return build_context(**{**base, **state})


def test_a_redelivered_delta_folds_once() -> None:
    value = None
    for update_id in ["a", "b", "a", "c", "b"]:
        new = apply_update(value, {"op": "outcome", "success": True, "id": update_id})
        value = new if new is not None else value
    assert value is not None
    assert (value["seen"], value["successes"]) == (3, 3)


def test_unknown_ops_and_out_of_range_budgets_are_ignored() -> None:
    assert apply_update(None, {"op": "explode"}) is None
    assert apply_update(None, {"op": "budget", "remaining": 1.5, "at": 0}) is None
    assert apply_update(None, {"op": "budget", "remaining": "0.5", "at": 0}) is None


def test_an_older_budget_never_replaces_a_newer_one() -> None:
    newer = apply_update(None, {"op": "budget", "remaining": 0.2, "at": 200})
    older = apply_update(newer, {"op": "budget", "remaining": 0.9, "at": 100})
    assert older is not None
    assert older["remaining"] == 0.2


def test_the_false_positive_rate_is_a_rolling_seven_days() -> None:
    value = None
    for days_ago, fp in [(10, True), (3, True), (2, False), (1, False)]:
        value = reducers.apply_verdict(
            value, at=NOW - dt.timedelta(days=days_ago), false_positive=fp
        )
    assert reducers.ai_fp_rate(value, NOW) == pytest.approx(1 / 3)
    assert reducers.ai_fp_rate(None, NOW) is None


def test_unreadable_state_is_absent_and_absence_means_unknown() -> None:
    context = _context(history={"seen": "many"}, budget={"remaining": "x"})
    assert context.history.seen == 0
    assert context.error_budget_remaining is None
    assert context.ai_false_positive_rate_7d is None
    assert context.requalified_at is None


def test_velocity_counts_what_came_before_this_proposal_only() -> None:
    service = None
    for offset, decision_id in enumerate(["d1", "d2", "d3", "d4"]):
        service = reducers.record_autonomous(
            service, decision_id=decision_id, at=NOW, window_seconds=600, offset=offset
        )
    other = reducers.record_autonomous(None, decision_id="x", at=NOW, window_seconds=600)
    # Redelivered with offset 2 after d3 and d4 were recorded: it sees d1 and d2 only.
    context = _context(
        decision_id="d3", velocity_service=service, velocity_fleet=[service, other], offset=2
    )
    assert context.recent_autonomous.service == 2
    assert context.recent_autonomous.fleet == 3
    old = NOW - dt.timedelta(seconds=601)
    stale = reducers.record_autonomous(None, decision_id="o", at=old, window_seconds=600)
    assert _context(velocity_service=stale, velocity_fleet=[stale]).recent_autonomous.fleet == 0


def test_a_fleet_freeze_or_a_service_freeze_freezes() -> None:
    frozen = apply_update(None, {"op": "freeze", "user": "alice", "at": 1})
    assert _context(freeze={"*": frozen}).frozen
    assert _context(freeze={"checkout-api": frozen, "*": None}).frozen
    lifted = apply_update(frozen, {"op": "unfreeze", "user": "alice", "at": 2})
    assert not _context(freeze={"*": lifted}).frozen


def _entry(name: str) -> dict:
    scenario = next(s for s in samples.SCENARIOS if s.name == name)
    proposal = samples.proposal(scenario, 1, at=NOW)
    context = _context(
        history={"seen": scenario.history, "successes": scenario.history},
        budget={"remaining": 0.9},
        verdicts=reducers.apply_verdict(None, at=NOW, false_positive=False),
        requalification={"requalified_at": NOW.timestamp()} if scenario.requalify else None,
    )
    decision = evaluate(proposal, context, POLICY)
    assert decision.level == scenario.expected_level
    return lifecycle.open_entry(decision.model_dump(mode="json"), POLICY)


def _answer(kind: str, decision_id: str, user: str = "alice", **fields) -> ApprovalResponse:
    issued = fields.pop("issued_at", NOW)
    return ApprovalResponse(
        schema_version=1,
        kind=kind,
        decision_id=decision_id,
        user=user,
        nonce=fields.pop("nonce", "n-0000001"),
        issued_at=issued,
        expires_at=issued + dt.timedelta(minutes=5),
        **fields,
    )


def _judge(entry, answer, *, now=NOW, refusal=None):
    """``refusal``: what the keyring said of the signature (None: it verified)."""
    return lifecycle.judge_answer(entry, answer, policy=POLICY, now=now, refusal=refusal)


@pytest.mark.parametrize(
    ("answer", "refusal", "reason"),
    [
        (_answer("approve", "D"), "unsigned", "unsigned"),
        (_answer("approve", "D"), "forged", "forged"),
        (_answer("approve", "D"), "ai_system", "ai_system_cannot_answer"),
        (_answer("approve", "d-other"), None, "unknown_decision"),
        (_answer("approve", "D", user="holmesgpt"), None, "ai_system_cannot_answer"),
        (_answer("approve", "D", user="mallory"), None, "not_an_approver"),
        (_answer("approve", "D", issued_at=NOW - dt.timedelta(hours=1)), None, "expired"),
        (_answer("abort", "D"), None, "not_abortable"),
    ],
)
def test_answers_that_change_nothing(answer, refusal, reason) -> None:
    entry = _entry("wide-blast")
    answer = answer.model_copy(
        update={"decision_id": entry["decision_id"] if answer.decision_id == "D" else "d-x"}
    )
    result = _judge(entry if answer.decision_id != "d-x" else None, answer, refusal=refusal)
    assert not result.accepted
    assert result.reason == reason
    assert result.commands == ()


def test_an_approval_executes_once_and_a_replay_is_refused() -> None:
    entry = _entry("wide-blast")
    answer = _answer("approve", entry["decision_id"])
    first = _judge(entry, answer)
    assert first.accepted
    assert first.commands == ("execute",)
    assert first.entry is not None
    replay = _judge(first.entry, answer)
    assert replay.reason == "replayed"
    again = _judge(first.entry, _answer("approve", entry["decision_id"], nonce="n-0000002"))
    assert again.reason == "already_approved"


def test_a_regulated_approval_needs_a_change_record() -> None:
    entry = _entry("payments")
    assert _judge(entry, _answer("approve", entry["decision_id"])).reason == "change_record_missing"
    ok = _judge(
        entry, _answer("approve", entry["decision_id"], nonce="n-0000002", change_record="C-1")
    )
    assert ok.accepted


def test_abort_only_inside_the_window() -> None:
    entry = _entry("deadlock-statefulset")
    inside = _judge(entry, _answer("abort", entry["decision_id"], user="dana"))
    assert inside.commands == ("abort",)
    late = NOW + dt.timedelta(seconds=POLICY.abort_window_seconds + 1)
    answer = _answer("abort", entry["decision_id"], user="dana", issued_at=late)
    assert _judge(entry, answer, now=late).reason == "abort_window_closed"


def test_timeouts_escalate_up_to_the_policy_limit_and_stay_open() -> None:
    entry = _entry("wide-blast")
    at = NOW
    numbers = []
    for _ in range(POLICY.approval.max_escalations + 2):
        at += dt.timedelta(seconds=POLICY.approval.timeout_seconds)
        escalated = lifecycle.due_escalation(entry, at)
        if escalated is not None:
            entry = escalated
            numbers.append(entry["escalations"])
    assert numbers == list(range(1, POLICY.approval.max_escalations + 1))
    assert entry["status"] == "open"
    assert lifecycle.due_escalation(entry, NOW) is None


# ---------------------------------------------------------------- the lifecycle log


def _opened(decision_id: str = "d-1") -> dict[str, object]:
    return {"decision_id": decision_id, "level": 2, "status": "open", "escalations": 0}


def test_fold_keeps_the_first_open_of_a_decision() -> None:
    pending: dict[str, lifecycle.Entry] = {}
    first = _opened()
    assert lifecycle.fold(pending, {"type": "open", "entry": first}) == first
    # A redelivered decision opens nothing new, whatever it carries.
    assert lifecycle.fold(pending, {"type": "open", "entry": {**first, "level": 3}}) is None
    assert pending == {"d-1": first}


def test_fold_takes_newer_entries_and_ignores_its_own_updates_read_back() -> None:
    pending: dict[str, lifecycle.Entry] = {}
    opened = _opened()
    lifecycle.fold(pending, {"type": "open", "entry": opened})
    first = lifecycle.next_version(opened, {**opened, "escalations": 1})
    second = lifecycle.next_version(first, {**first, "status": "approved"})
    assert (first["version"], second["version"]) == (1, 2)
    assert lifecycle.fold(pending, {"type": "entry", "entry": second}) == second
    # The worker applied both, then reads the first back from the log: no regression.
    assert lifecycle.fold(pending, {"type": "entry", "entry": first}) is None
    assert lifecycle.fold(pending, {"type": "entry", "entry": second}) is None
    assert pending["d-1"]["status"] == "approved"


def test_fold_of_an_update_without_its_open_stores_it() -> None:
    # Compaction keeps only a decision's latest record: often an update, no open.
    pending: dict[str, lifecycle.Entry] = {}
    update = lifecycle.next_version(None, {**_opened(), "status": "rejected"})
    assert lifecycle.fold(pending, {"type": "entry", "entry": update}) == update


@pytest.mark.parametrize(
    "record",
    [
        {"type": "tick", "decision_id": "d-1"},
        {"type": "open"},
        {"type": "open", "entry": {"decision_id": 7}},
        {"type": "entry", "entry": "x"},
        {"type": "other", "entry": {"decision_id": "d-1"}},
        ["open"],
        None,
        "open",
    ],
)
def test_fold_ignores_what_it_does_not_know(record: object) -> None:
    pending: dict[str, lifecycle.Entry] = {"d-1": _opened()}
    assert lifecycle.fold(pending, record) is None
    assert pending == {"d-1": _opened()}
