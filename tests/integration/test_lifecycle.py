"""After the decision, on the real broker: approvals, timeouts, aborts, verification,
re-qualification, velocity and freeze (SPEC section 6), with the fast test policy
(approval timeout 3 s, abort window 4 s)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import pytest
from harness import DecisionReader, Feed, Reader, Worker, wait_processed

from streams import keys, samples
from streams.models import ApprovalResponse, Proposal
from streams.settings import Settings
from streams.signing import sign_answer
from streams.testing import wait_until

BY_NAME = {s.name: s for s in samples.SCENARIOS}


@pytest.fixture
def worker(start_worker: Callable[..., Worker]) -> Worker:
    # RocksDB, as in production (the audit-head checkpoints); pending approvals survive a
    # SIGKILL through the lifecycle log, which a restarted worker folds again.
    return start_worker(store="rocksdb://")


EXTRA_SERVICES = ("svc-a", "svc-b", "svc-c", "burst-api", "frozen-api", "other-api")


@pytest.fixture
def feed(settings: Settings, worker: Worker) -> Feed:
    feed = Feed(settings)
    for service in EXTRA_SERVICES:  # a known, healthy error budget: unknown means Level 2
        feed.budget(service, 0.9)
    feed.seed_samples(worker)
    worker.wait_metric(
        "escalation_state_updates_applied_total",
        len(EXTRA_SERVICES) + len(samples.SERVICES_BUDGET),
        table="budgets",
    )
    return feed


def _proposal(name: str, number: int, **target: str) -> Proposal:
    base = samples.proposal(BY_NAME[name], number, at=dt.datetime.now(tz=dt.UTC), tag="lc-")
    if not target:
        return base
    data = base.model_dump(mode="json")
    data["action"]["target"].update(target)
    return Proposal.model_validate(data)


def _decide(settings: Settings, feed: Feed, proposal: Proposal) -> dict[str, Any]:
    feed.proposals([proposal])
    with DecisionReader(settings) as reader:
        return reader.wait_for([proposal.proposal_id])[proposal.proposal_id]


def _commands(settings: Settings, feed: Feed, decision_id: str) -> list[dict]:
    """Every command for ``decision_id`` once the gate has handled the last answer sent.

    The gate commits an answer only after what it caused is on the broker, so reading
    ``decisions.execute`` to its end then proves a missing (or a second) command.
    """
    wait_processed(settings, feed.last)
    with Reader(settings.bootstrap_servers or "", [settings.topic("decisions.execute")]) as r:
        r.read_to_end()
        return [
            v
            for v in r.values()
            if v.get("type") in {"execute", "abort"} and v["decision_id"] == decision_id
        ]


def test_a_listed_approver_approves_once_and_execute_is_emitted_once(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    decision = _decide(settings, feed, _proposal("wide-blast", 1))
    assert decision["level"] == 2
    assert decision["approval_timeout_at"]
    feed.answer("approve", decision["decision_id"], "alice")
    worker.wait_metric("escalation_answers_accepted_total", 1, kind="approve")
    feed.answer("approve", decision["decision_id"], "bob")
    worker.wait_metric("escalation_answers_refused_total", 1, reason="already_approved")
    commands = _commands(settings, feed, decision["decision_id"])
    assert [c["type"] for c in commands] == ["execute"]
    assert commands[0]["by"] == "alice"
    assert commands[0]["command_id"] == f"{decision['decision_id']}:execute"


def test_a_regulated_approval_needs_a_change_record(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    decision = _decide(settings, feed, _proposal("payments", 1))
    assert decision["level"] == 2
    assert decision["change_record_required"] is True
    feed.answer("approve", decision["decision_id"], "alice")
    worker.wait_metric("escalation_answers_refused_total", 1, reason="change_record_missing")
    feed.answer("approve", decision["decision_id"], "alice", change_record="CHG-1234")
    commands = _commands(settings, feed, decision["decision_id"])
    assert commands[0]["change_record"] == "CHG-1234"


def test_forged_unsigned_replayed_unknown_and_ai_answers_change_nothing(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    decision = _decide(settings, feed, _proposal("wide-blast", 2))
    decision_id = decision["decision_id"]
    alice = feed.ids.person("alice")
    # Signed by alice, then changed: the signature no longer covers the bytes.
    forged = ApprovalResponse.model_validate(
        {**_signed_answer(feed, decision_id, "alice").model_dump(mode="json"), "reason": "changed"}
    )
    feed.answer_raw(forged)
    feed.answer("approve", decision_id, "alice", signed=False)
    feed.answer("approve", "d-does-not-exist", "alice")
    feed.answer("approve", decision_id, "holmesgpt", signer=alice)  # an AI system as a user
    feed.answer("approve", decision_id, "bob", signer=alice)  # alice signs as bob
    feed.answer("approve", decision_id, "mallory", signer=keys.generate("mallory"))
    feed.answer("approve", decision_id, "sre-oncall-primary")  # may not approve (role)
    rejected_once = feed.answer("reject", decision_id, "carol", reason="first")
    feed.answer_raw(rejected_once)  # the same signed message again: a replay
    for reason in ("forged", "unsigned", "unknown_decision", "ai_system_cannot_answer",
                   "signer_is_not_user", "unknown_key", "role_missing", "replayed"):  # fmt: skip
        worker.wait_metric("escalation_answers_refused_total", 1, reason=reason)
    wait_processed(settings, feed.sent)
    with Reader(settings.bootstrap_servers or "", [settings.topic("audit")]) as audit:
        audit.read_to_end()
        reasons = {
            v["event"]["data"]["reason"]
            for v in audit.values()
            if v["event"]["kind"] == "answer_refused"
        }
        accepted = [v["event"] for v in audit.values() if v["event"]["kind"] == "approval_accepted"]
    assert {"forged", "unsigned", "unknown_decision", "replayed", "signer_is_not_user",
            "unknown_key", "role_missing", "ai_system_cannot_answer"} <= reasons  # fmt: skip
    assert accepted == []  # only carol's rejection was accepted, once
    assert worker.metric("escalation_answers_accepted_total", kind="reject") == 1
    assert _commands(settings, feed, decision_id) == []


def _signed_answer(feed: Feed, decision_id: str, user: str) -> ApprovalResponse:
    now = dt.datetime.now(tz=dt.UTC)
    answer = ApprovalResponse(
        schema_version=1, kind="approve", decision_id=decision_id, user=user,
        nonce=f"n-{time.monotonic_ns()}", issued_at=now,
        expires_at=now + dt.timedelta(minutes=5),
    )  # fmt: skip
    return sign_answer(answer, feed.ids.person(user))


def test_a_false_positive_rejection_feeds_the_ai_rate(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    assert worker.metric("escalation_ai_false_positive_rate", ai_system="holmesgpt") == 0.0
    decision = _decide(settings, feed, _proposal("wide-blast", 3))
    feed.answer("reject", decision["decision_id"], "bob", false_positive=True)
    assert wait_until(
        lambda: worker.metric("escalation_ai_false_positive_rate", ai_system="holmesgpt") > 0,
        timeout=30,
    )
    verdicts = len(samples.history_records(dt.datetime.now(tz=dt.UTC))) + 1
    rate = worker.metric("escalation_ai_false_positive_rate", ai_system="holmesgpt")
    assert rate == pytest.approx(1 / verdicts, abs=1e-6)


def test_a_timeout_pages_oncall_and_a_restarted_worker_pages_again(
    settings: Settings, feed: Feed, worker: Worker, start_worker: Callable[..., Worker]
) -> None:
    decision = _decide(settings, feed, _proposal("cert-second", 1))
    assert decision["level"] == 2
    oncall = Reader(settings.bootstrap_servers or "", [settings.topic("oncall")])

    def pages(reader: Reader) -> list[dict]:
        return [v for v in reader.values() if v["decision_id"] == decision["decision_id"]]

    try:
        assert oncall.wait(lambda r: len(pages(r)) >= 1, timeout=30), worker.log_tail()
        first = pages(oncall)[0]
        assert first["reason"] == "approval_timeout"
        assert first["escalation_number"] == 1
        assert set(first["asked"]) == {"alice", "bob", "carol", "dana"}
        worker.kill()  # SIGKILL: the timer state must come back from the table
        restarted = start_worker("w1", store="rocksdb://")  # same data dir
        assert oncall.wait(lambda r: len(pages(r)) >= 2, timeout=60), restarted.log_tail()
        numbers = sorted({p["escalation_number"] for p in pages(oncall)})
        assert numbers[:2] == [1, 2]
    finally:
        oncall.close()
    # The approval stays open: a late approval is still accepted.


def test_abort_inside_the_window_stops_it_and_after_the_window_is_refused(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    inside = _decide(settings, feed, _proposal("deadlock-statefulset", 1))
    assert inside["level"] == 3
    assert inside["abort_window_ends_at"]
    feed.answer("abort", inside["decision_id"], "dana")
    commands = _commands(settings, feed, inside["decision_id"])
    assert [c["type"] for c in commands] == ["abort"]

    late = _decide(settings, feed, _proposal("deadlock-statefulset", 2))
    assert late["level"] == 3
    # The gate judges an answer at the broker's timestamp (LogAppendTime): a producer
    # cannot date it back into the window, so the test waits until the window closed.
    window_end = dt.datetime.fromisoformat(late["abort_window_ends_at"]).timestamp()
    assert wait_until(lambda: time.time() > window_end + 0.5, timeout=30)
    feed.answer("abort", late["decision_id"], "dana", timestamp=window_end - 60)
    worker.wait_metric("escalation_answers_refused_total", 1, reason="abort_window_closed")
    assert _commands(settings, feed, late["decision_id"]) == []


def test_failed_verification_revokes_level_4_until_a_human_requalifies(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    first = _decide(settings, feed, _proposal("oom-restart", 1, service="svc-a"))
    assert first["level"] == 4
    feed.outcome(first, verification="failed")
    with Reader(settings.bootstrap_servers or "", [settings.topic("oncall")]) as oncall:
        assert oncall.wait(
            lambda r: any(v["reason"] == "verification_failed" for v in r.values()), timeout=30
        )
    worker.wait_metric("escalation_state_updates_applied_total", 4, table="requalification")
    second = _decide(settings, feed, _proposal("oom-restart", 2, service="svc-b"))
    assert second["level"] == 3
    revoked = {c["name"]: c for c in second["conditions"] if c["rule"] == "level4_autonomous"}
    assert revoked["requalification_revoked"]["holds"] is False
    feed.control("requalify", user="alice", pattern=BY_NAME["oom-restart"].pattern,
                 action_type="rolling_restart")  # fmt: skip
    worker.wait_metric("escalation_state_updates_applied_total", 5, table="requalification")
    assert _decide(settings, feed, _proposal("oom-restart", 3, service="svc-c"))["level"] == 4


def test_a_burst_on_one_service_trips_the_velocity_guard(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    burst = [_proposal("oom-restart", i, service="burst-api") for i in range(6)]
    feed.proposals(burst)
    with DecisionReader(settings) as reader:
        found = reader.wait_for([p.proposal_id for p in burst])
    levels = [found[p.proposal_id]["level"] for p in burst]
    assert levels == [4, 4, 4, 2, 2, 2]
    assert found[burst[3].proposal_id]["deciding_rule"] == "velocity_guard"


def test_a_freeze_demotes_to_level_1_and_unfreeze_lifts_it(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    feed.control("freeze", user="alice", service="frozen-api", reason="incident in progress")
    worker.wait_metric("escalation_state_updates_applied_total", 1, table="freeze")
    frozen = _decide(settings, feed, _proposal("oom-restart", 1, service="frozen-api"))
    assert frozen["level"] == 1
    assert frozen["context"]["frozen"] is True
    other = _decide(settings, feed, _proposal("oom-restart", 2, service="other-api"))
    assert other["level"] == 4
    feed.control("unfreeze", user="alice", service="frozen-api")
    worker.wait_metric("escalation_state_updates_applied_total", 2, table="freeze")
    assert _decide(settings, feed, _proposal("oom-restart", 3, service="frozen-api"))["level"] == 4
