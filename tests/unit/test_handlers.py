"""SPEC section 6 as data: every handler of streams/handlers (cases: fixtures/handler_cases.yaml).

The handlers are pure: each case builds the input, the state and the instant, calls the
handler once and checks the whole returned effect set (nothing is emitted anywhere).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from sample_messages import SAMPLES
from signed import cosigned, keyring, signed, wire

from streams import handlers, keys, samples
from streams.errors import InputError
from streams.files import read_policy
from streams.handlers import Effects, Origin, Send
from streams.models import ApprovalResponse, ControlCommand, Outcome, decode
from streams.policy import Policy
from streams.settings import Settings
from streams.state import apply_update
from streams.state.records import (
    PendingEntry,
    budget_update,
    history_updates,
    requalification_update,
)

ROOT = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((ROOT / "tests" / "fixtures" / "handler_cases.yaml").read_text())
BASE = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
POLICY_FILE = Settings().policy_file


@pytest.fixture(scope="module")
def policy() -> Policy:
    return read_policy(POLICY_FILE)


def at(seconds: float) -> dt.datetime:
    return BASE + dt.timedelta(seconds=seconds)


def origin(topic: str = "escalation.approvals", *, now: float = 0.0, offset: int = 7) -> Origin:
    return Origin(topic, 2, offset, at(now).timestamp(), b"k", b"{}")


def entry(policy: Policy, **overrides: Any) -> PendingEntry:
    base: dict[str, Any] = {
        "decision_id": "d-1",
        "proposal_id": "p-1",
        "level": 2,
        "status": "open",
        "service": "checkout-api",
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
        "ai_system": "holmesgpt",
        "change_record_required": False,
        "summary": "pods OOMKilled",
        "opened_at": at(-60).timestamp(),
        "escalations": 0,
        "nonces": [],
        "asked": list(policy.approval.approvers),
        "max_escalations": policy.approval.max_escalations,
        "timeout_seconds": float(policy.approval.timeout_seconds),
        "timeout_at": at(0).timestamp(),
        "version": 1,
    }
    for key, value in overrides.items():
        base[key] = at(value).timestamp() if key.endswith("_at") else value
    if base["level"] == 3:
        del base["timeout_at"]
    return base  # type: ignore[return-value]


def answer(**overrides: Any) -> ApprovalResponse:
    fields: dict[str, Any] = {
        "schema_version": 1,
        "kind": "approve",
        "decision_id": "d-1",
        "user": "alice",
        "nonce": "nonce-0042",
        "issued_at": 0,
        "expires_at": 300,
    }
    fields.update(overrides)
    for key in ("issued_at", "expires_at"):
        fields[key] = at(fields[key])
    return ApprovalResponse.model_validate(fields)


def kinds(effects: Effects) -> list[str]:
    return [draft.kind for draft in effects.audits]


def topics(effects: Effects) -> list[str]:
    return [send.topic for send in effects.sends]


@pytest.mark.parametrize("case", CASES["answers"], ids=lambda c: c["name"])
def test_an_answer(case: dict[str, Any], policy: Policy) -> None:
    held = (
        None
        if "entry" in case and case["entry"] is None
        else entry(policy, **case.get("entry") or {})
    )
    given = answer(**case.get("answer", {}))
    by = case.get("sign", given.user)
    if by == "none":
        body = wire(given)
    elif by == "tampered":
        body = {**wire(signed(given, given.user)), "reason": "changed after signing"}
    else:
        key = keys.generate(by) if by in {"stranger", "slack-readonly"} else by
        body = wire(signed(given, key))
    effects = handlers.on_answer(
        given, body, held, policy=policy, keyring=keyring(), origin=origin()
    )
    expect = case["expect"]
    if "refused" in expect:
        reason = expect["refused"]
        assert kinds(effects) == ["answer_refused"]
        assert effects.audits[0].data["reason"] == reason
        assert effects.sends == ()
        assert effects.state == ()
        assert [(c.metric, c.labels) for c in effects.metrics] == [("answers_refused", (reason,))]
        if held is not None and expect.get("remembers_nonce", True):
            # An authentic, new answer is remembered even when refused (replays fail).
            (new,) = effects.entries
            assert new["status"] == held["status"]
            assert given.nonce in new["nonces"]
            assert new["version"] == held["version"] + 1
        else:
            assert effects.entries == ()
        return
    assert kinds(effects) == expect["audits"]
    assert topics(effects) == expect["sends"]
    (new,) = effects.entries
    assert held is not None
    assert new["status"] == expect["status"]
    assert new["answered_by"] == given.user
    assert new["version"] == held["version"] + 1
    assert [(c.metric, c.labels) for c in effects.metrics] == [("answers_accepted", (given.kind,))]
    signer = effects.audits[0].data["signed_by"]
    assert signer["kind"] == expect.get("signed_by", "person")
    commands = [orjson.loads(s.value) for s in effects.sends if s.topic == "decisions.execute"]
    assert [c["type"] for c in commands] == expect.get("commands", [])
    resolutions = [orjson.loads(s.value) for s in effects.sends if s.topic == "oncall"]
    if "resolution" in expect:
        (resolution,) = resolutions
        assert resolution["type"] == "resolved"
        assert resolution["resolution_id"] == "d-1:resolved"
        assert resolution["service"] == held["service"]
        assert {k: resolution[k] for k in expect["resolution"]} == expect["resolution"]
        (send,) = [s for s in effects.sends if s.topic == "oncall"]
        assert send.key == held["service"].encode()  # the partition of its escalations
    else:
        assert resolutions == []
    for command in commands:
        assert command["command_id"] == f"d-1:{command['type']}"
        assert command["by"] == given.user
        assert command["change_record"] == given.change_record
    judged = [x for x in effects.state if x.table == "calibration"]
    assert len(judged) == expect.get("calibration", 0)
    assert all(
        x.body["right"] is False and x.key == f"{held['ai_system']}|llama3.1" for x in judged
    )
    if "verdicts" in expect:
        verdicts = [u for u in effects.state if u.table == "verdicts"]
        assert len(verdicts) == expect["verdicts"]
        assert all(u.key == held["ai_system"] and u.body["false_positive"] for u in verdicts)


@pytest.mark.parametrize("case", CASES["timeouts"], ids=lambda c: c["name"])
def test_a_timeout(case: dict[str, Any], policy: Policy) -> None:
    held = entry(policy, **case.get("entry", {}))
    effects = handlers.on_timeout(held, at(case["now"]), policy.oncall)
    number = case["expect"]["page"]
    if number is None:
        assert effects is None
        return
    assert effects is not None
    (page,) = [orjson.loads(s.value) for s in effects.sends]
    assert topics(effects) == ["oncall"]
    assert page["escalation_number"] == number
    assert page["escalation_id"] == f"d-1:timeout:{number}"
    assert page["reason"] == "approval_timeout"
    assert page["target"] == case["expect"]["target"]
    assert page["level"] == 2
    assert tuple(page["asked"]) == tuple(policy.approval.approvers)
    assert kinds(effects) == ["timeout_escalation"]
    (new,) = effects.entries
    assert new["status"] == "open"  # escalating asks more humans, it never decides
    assert new["escalations"] == number
    assert new["timeout_at"] == at(case["expect"]["next_timeout_at"]).timestamp()


@pytest.mark.parametrize("case", CASES["outcomes"], ids=lambda c: c["name"])
def test_an_outcome(case: dict[str, Any], policy: Policy) -> None:
    # The shared sample (a clean Level 4 success of checkout-api), with the case's changes.
    fields = {**SAMPLES["outcome"], "at": BASE, **case.get("outcome", {})}
    outcome = Outcome.model_validate(fields)
    effects = handlers.on_outcome(outcome, origin("escalation.outcomes"), policy.oncall)
    expect = case["expect"]
    for page in (orjson.loads(s.value) for s in effects.sends if s.topic == "oncall"):
        assert page["target"] == expect["target"]
        assert page["level"] == outcome.level
    assert [u.table for u in effects.state] == expect["state"]
    assert kinds(effects) == expect["audits"]
    assert topics(effects) == expect["sends"]
    history, verdict = effects.state[0], effects.state[1]
    if "success" in expect:
        assert history.body["success"] is expect["success"]
    assert verdict.body["false_positive"] is expect.get("false_positive", False)
    # Redelivered, the same outcome record gives the same update ids (folded once).
    assert history.body["id"] == "escalation.outcomes:2:7:history"
    assert verdict.body["id"] == "escalation.outcomes:2:7:verdicts"


GATE = keys.generate("escalation-gate")
LOOSER = (ROOT / "policies" / "examples" / "looser-v1.4.yaml").read_text()
TEXTS = {
    "@default": POLICY_FILE.read_text(),
    "@looser": LOOSER,
    "@pinned": LOOSER + "keyring_sha256: " + "ab" * 32 + "\n",
}


@pytest.mark.parametrize("case", CASES["control"], ids=lambda c: c["name"])
def test_a_control_command(case: dict[str, Any], policy: Policy) -> None:
    fields = {"schema_version": 1, "user": "alice", "at": BASE, **case["command"]}
    fields["policy_yaml"] = TEXTS.get(fields.get("policy_yaml"), fields.get("policy_yaml"))
    if fields.get("records") == "@two":
        fields["records"] = [r.model_dump(mode="json") for r in samples.history_records(BASE)[:2]]
    command = ControlCommand.model_validate({k: v for k, v in fields.items() if v is not None})
    by = case.get("sign", [command.user])
    if by == "none":
        body = wire(command)
    elif by == "tampered":
        body = {**wire(cosigned(command, command.user)), "reason": "changed after signing"}
    elif by == "gate":
        body = wire(cosigned(command, GATE))
    else:
        body = wire(cosigned(command, *by))
    effects = handlers.on_control(
        command,
        body,
        origin("escalation.control"),
        keyring=keyring(),
        policy=policy,
        gate_keys=keys.PublicKeys([GATE.public]),
        policy_stored=case.get("stored", True),
    )
    expect = case["expect"]
    assert effects.audits[0].event_id == "control:2:7"
    assert effects.sends == ()
    if "refused" in expect:
        reason = expect["refused"]
        assert kinds(effects) == ["command_refused"]
        assert effects.audits[0].data["reason"] == reason
        assert effects.state == ()
        assert [(c.metric, c.labels) for c in effects.metrics] == [
            ("commands_refused", (reason, command.command))
        ]
        return
    assert kinds(effects) == [expect["audit"]]
    assert effects.audits[0].at == origin().instant  # the gate's instant, not the command's
    assert [u.table for u in effects.state] == expect["state"]
    if "key" in expect:
        assert effects.state[0].key == expect["key"]
    assert [c.metric for c in effects.metrics] == expect.get("counts", [])
    if "signed_by" in expect:
        assert effects.audits[0].data["signed_by"] == expect["signed_by"]


def test_a_budget_is_a_state_update_and_nothing_else() -> None:
    update = samples.budgets(BASE)[0]
    effects = handlers.on_budget(update)
    (only,) = effects.state
    assert (only.table, only.key) == ("budgets", update.service)
    assert only.body["remaining"] == update.remaining
    assert (effects.sends, effects.audits, effects.metrics) == ((), (), ())


class _NoState:
    """A view with no state at all."""

    def get(self, table: str, key: str) -> Any:
        return None

    def values(self, table: str) -> list[Any]:
        return []


def test_a_proposal_is_decided_routed_audited_and_opens_its_entry(
    policy: Policy,
) -> None:
    (scenario, proposal), *_ = samples.stream(1, start=BASE)
    decided = handlers.decide(proposal, _NoState(), policy, origin("escalation.proposals"))
    decision = decided.decision
    # No state at all: fail toward humans (novelty, unknown budget and rates).
    assert decision.level == 1
    assert topics(decided.effects) == ["decisions.assist"]
    assert kinds(decided.effects) == ["proposal_received", "decision"]
    assert decided.effects.audits[1].data["decision"]["decision_id"] == decision.decision_id
    assert decided.effects.state == ()
    assert decided.policy_overdue is False
    assert ("decisions", ("1", "assist")) in [(c.metric, c.labels) for c in decided.effects.metrics]
    del scenario


def test_a_decision_record_is_serialised_only_when_read(policy: Policy) -> None:
    (_, proposal), *_ = samples.stream(1, start=BASE)
    decided = handlers.decide(proposal, _NoState(), policy, origin("escalation.proposals"))
    (send,) = [s for s in decided.effects.sends if s.topic.startswith("decisions.")]
    # The shell signs and serialises ``body`` itself: no bytes made here for nothing.
    assert send.encoded is None
    assert send.body is not None
    assert orjson.loads(send.value) == send.body
    assert orjson.loads(send.value)["decision_id"] == decided.decision.decision_id


def test_a_record_without_bytes_or_body_is_refused() -> None:
    with pytest.raises(ValueError, match=r"decisions\.execute needs encoded bytes or a body"):
        Send("decisions.execute", None)


def test_a_level_3_or_4_decision_counts_for_the_velocity_guard_at_once(
    policy: Policy,
) -> None:
    state = _rich_state(policy)
    proposal = next(p for s, p in samples.stream(40, start=BASE) if s.expected_level == 4)
    decided = handlers.decide(proposal, state, policy, origin("escalation.proposals", offset=11))
    assert decided.decision.level == 4
    (velocity,) = decided.effects.state
    assert velocity.apply_now
    assert velocity.body["decision_id"] == decided.decision.decision_id
    assert velocity.body["offset"] == 11


def test_a_level_2_decision_records_its_approval_request(policy: Policy) -> None:
    state = _rich_state(policy)
    proposal = next(p for s, p in samples.stream(40, start=BASE) if s.expected_level == 2)
    decided = handlers.decide(proposal, state, policy, origin("escalation.proposals"))
    assert decided.decision.level == 2
    assert topics(decided.effects) == ["decisions.approve", "lifecycle"]
    approval = decided.effects.audits[1].data["approval"]
    assert approval["asked"] == list(policy.approval.approvers)
    opened = orjson.loads(decided.effects.sends[1].value)
    assert opened["type"] == "open"
    assert opened["entry"]["decision_id"] == decided.decision.decision_id


def test_a_policy_past_its_review_date_is_reported_once_per_decision(
    policy: Policy,
) -> None:
    late = origin("escalation.proposals", now=0)
    late = Origin(late.topic, 0, 0, dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp())
    proposal = samples.stream(1, start=BASE)[0][1]
    assert handlers.decide(proposal, _rich_state(policy), policy, late).policy_overdue


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InputError("action", "field required"), "schema"),
        (InputError("", "not JSON", kind="not_json"), "not_json"),
        (RuntimeError("bug"), "processing"),
    ],
)
def test_a_dead_letter_keeps_the_original_bytes_and_the_reason(
    error: Exception, reason: str
) -> None:
    source = Origin("escalation.proposals", 1, 99, BASE.timestamp(), b"svc", b"\xff not json")
    effects = handlers.dead_letter(source, error, "proposals")
    (letter,) = [orjson.loads(s.value) for s in effects.sends]
    assert topics(effects) == ["dlq"]
    assert letter["reason"] == reason
    assert (letter["topic"], letter["partition"], letter["offset"]) == (
        "escalation.proposals",
        1,
        99,
    )
    assert letter["value_b64"] == "/yBub3QganNvbg=="
    assert kinds(effects) == ["dead_letter"]
    assert [(c.metric, c.labels) for c in effects.metrics] == [
        ("dead_letters", (reason, "proposals"))
    ]


def test_a_decoded_message_is_typed() -> None:
    """``decode`` is generic: mypy strict sees ``Outcome``, not ``Any`` (a misspelt
    field such as ``outcome.succesful`` fails type checking)."""
    raw = orjson.dumps(
        {
            "schema_version": 1, "decision_id": "d", "proposal_id": "p", "pattern": "x",
            "action_type": "a", "ai_system": "s", "service": "v", "level": 4,
            "result": "success", "at": "2026-12-01T00:00:00Z",
        }
    )  # fmt: skip
    outcome: Outcome = decode(Outcome, raw)
    assert outcome.successful


def _rich_state(policy: Policy) -> Any:
    """The sample history, budgets and re-qualifications, folded as the mirror would."""
    tables: dict[str, dict[str, Any]] = {}

    def fold(update: Any) -> None:
        table = tables.setdefault(update.table, {})
        new = apply_update(table.get(update.key), update.record())
        if new is not None:
            table[update.key] = new

    for record in samples.history_records(BASE):
        for update in history_updates(record):
            fold(update)
    for budget in samples.budgets(BASE):
        fold(budget_update(budget.service, remaining=budget.remaining, at=budget.at.timestamp()))
    for command in samples.requalifications(BASE):
        assert command.pattern
        assert command.action_type
        fold(
            requalification_update(
                command.pattern, command.action_type, op="requalify", user="alice",
                at=command.at.timestamp(), reason="",
            )
        )  # fmt: skip
    del policy

    class View:
        def get(self, table: str, key: str) -> Any:
            return tables.get(table, {}).get(key)

        def values(self, table: str) -> list[Any]:
            return list(tables.get(table, {}).values())

    return View()
