"""The two-person rule (policy ``approval.quorums``): the policy sets how many different
people must approve a class of Level 2 decisions; the pure lifecycle counts them;
one rejection rejects; explain, the decision and the audit show it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from policy_inputs import DEFAULT_POLICY, STRICT_POLICY, build_inputs, load_policy
from signed import keyring, signed, wire

from streams.handlers.answers import on_answer
from streams.handlers.effects import Origin
from streams.models import ApprovalResponse
from streams.models.decision import decision_json
from streams.policy import Policy, evaluate, parse_policy
from streams.state import lifecycle

NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
STRICT = load_policy(STRICT_POLICY)
QUORUM_YAML = """
  quorums:
    - name: two-person-regulated
      approvers: 2
      regulated: true
    - name: three-for-the-fleet
      approvers: 3
      services_above: 3
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    """The default policy with two quorums added to its approval section."""
    raw = DEFAULT_POLICY.read_text()
    anchor = "  answer_max_age_seconds:"
    assert raw.count(anchor) == 1
    return parse_policy(raw.replace(anchor, QUORUM_YAML.lstrip("\n") + anchor))


def decide(policy: Policy, **proposal: Any) -> dict[str, Any]:
    p, c = build_inputs(proposal, {"now": NOW.isoformat()})
    return decision_json(evaluate(p, c, policy))


REGULATED = {"regulated": ["PCI-DSS"]}
WIDE = {"blast_radius": {"services": 4}}
WIDE_REGULATED = {"regulated": ["SOX"], "blast_radius": {"services": 4}}


@pytest.mark.parametrize(
    ("proposal", "level", "required"),
    [
        ({}, 4, 1),  # Level 4: no approval at all
        ({"blast_radius": {"replica_fraction": 0.4}}, 2, 1),  # Level 2, no quorum applies
        (REGULATED, 2, 2),
        (WIDE, 2, 3),
        (WIDE_REGULATED, 2, 3),  # the largest applying quorum wins
    ],
)
def test_the_decision_says_how_many_approvers_it_needs(
    policy: Policy, proposal: dict[str, Any], level: int, required: int
) -> None:
    decision = decide(policy, **proposal)
    assert (decision["level"], decision["approvals_required"]) == (level, required)
    rows = [c for c in decision["conditions"] if c["rule"] == "approval_quorum"]
    assert {c["name"] for c in rows} == {
        "two-person-regulated.regulated",
        "three-for-the-fleet.services",
    }


def test_a_policy_without_quorums_adds_no_conditions(default_policy: Policy) -> None:
    decision = decide(default_policy, **REGULATED)
    assert decision["approvals_required"] == 1
    assert not [c for c in decision["conditions"] if c["rule"] == "approval_quorum"]


def test_the_shipped_strict_policy_asks_two_people_for_a_regulated_action() -> None:
    assert decide(STRICT, **REGULATED)["approvals_required"] == 2


# The lifecycle is told whether the signature verified; any non-empty one will do here
# (the HMAC hex string of before the keyring, or the Ed25519 signature object).
_SIGNATURE: Any = (
    "ab" * 32
    if ApprovalResponse.model_fields["signature"].annotation is str
    else {"alg": "ed25519", "key_id": "0123456789abcdef", "sig": "c2ln"}
)


def answer(user: str, kind: str = "approve", number: int = 0, **fields: Any) -> ApprovalResponse:
    return ApprovalResponse.model_validate(
        {
            "schema_version": 1,
            "kind": kind,
            "decision_id": "d-quorum",
            "user": user,
            "nonce": f"nonce-{user}-{kind}-{number:04d}",
            "issued_at": NOW,
            "expires_at": NOW + dt.timedelta(minutes=5),
            "signature": _SIGNATURE,
            **fields,
        }
    )


# Each case: the decision's proposal, then answers in order with the reason each gets.
CASES: list[tuple[str, dict[str, Any], list[tuple[ApprovalResponse, str]], str, list[str]]] = [
    (
        "two different approvers approve",
        REGULATED,
        [
            (answer("alice", change_record="CHG-1"), "approval_recorded"),
            (answer("bob", change_record="CHG-1"), "approved"),
        ],
        "approved",
        ["alice", "bob"],
    ),
    (
        "the same person twice is not two people",
        REGULATED,
        [
            (answer("alice", change_record="CHG-1"), "approval_recorded"),
            (answer("alice", number=1, change_record="CHG-1"), "already_approved_by_this_person"),
        ],
        "open",
        ["alice"],
    ),
    (
        "one rejection rejects, even after an approval",
        REGULATED,
        [
            (answer("alice", change_record="CHG-1"), "approval_recorded"),
            (answer("bob", kind="reject"), "rejected"),
            (answer("carol", change_record="CHG-1"), "already_rejected"),
        ],
        "rejected",
        ["alice"],
    ),
    (
        "every approver names the same change record",
        REGULATED,
        [
            (answer("alice", change_record="CHG-1"), "approval_recorded"),
            (answer("bob", change_record="CHG-2"), "change_record_mismatch"),
            (answer("bob", number=1), "change_record_missing"),
            (answer("carol", change_record="CHG-1"), "approved"),
        ],
        "approved",
        ["alice", "carol"],
    ),
    (
        "three people for a fleet-wide action",
        WIDE,
        [
            (answer("alice"), "approval_recorded"),
            (answer("bob"), "approval_recorded"),
            (answer("carol"), "approved"),
            (answer("dana"), "already_approved"),
        ],
        "approved",
        ["alice", "bob", "carol"],
    ),
    (
        "on-call may reject but does not count as an approver",
        WIDE,
        [
            (answer("sre-oncall-primary"), "not_an_approver"),
            (answer("alice"), "approval_recorded"),
            (answer("sre-oncall-primary", kind="reject"), "rejected"),
        ],
        "rejected",
        ["alice"],
    ),
    (
        "a single-approver decision is unchanged",
        {"blast_radius": {"replica_fraction": 0.4}},
        [(answer("alice"), "approved")],
        "approved",
        [],
    ),
]


@pytest.mark.parametrize(
    ("proposal", "answers", "status", "approvers"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_lifecycle_counts_different_approvers(
    policy: Policy,
    proposal: dict[str, Any],
    answers: list[tuple[ApprovalResponse, str]],
    status: str,
    approvers: list[str],
) -> None:
    decision = {**decide(policy, **proposal), "decision_id": "d-quorum"}
    entry: lifecycle.Entry | None = lifecycle.open_entry(decision, policy)
    commands: list[str] = []
    for given, reason in answers:
        verdict = lifecycle.judge_answer(entry, given, policy=policy, now=NOW, refusal=None)
        assert verdict.reason == reason, given.user
        if verdict.entry is not None:
            entry = verdict.entry
        commands += verdict.commands
    assert entry is not None
    assert entry["status"] == status
    assert [a["user"] for a in entry.get("approvals", [])] == approvers
    assert commands == (["execute"] if status == "approved" else [])


def test_the_audit_names_each_approval_and_the_last_settles_it(policy: Policy) -> None:
    decision = {**decide(policy, **REGULATED), "decision_id": "d-quorum"}
    entry = lifecycle.open_entry(decision, policy)
    origin = Origin(topic="approvals", partition=0, offset=7, timestamp=NOW.timestamp())
    first = on_answer(
        (given := answer("alice", change_record="CHG-1")),
        wire(signed(given, "alice")),
        entry,
        policy=policy,
        keyring=keyring(),
        origin=origin,
    )
    (recorded,) = first.audits
    assert recorded.kind == "approval_recorded"
    assert recorded.data["approvers"] == ["alice"]
    assert recorded.data["approvals_required"] == 2
    assert not first.sends, "nothing is executed after one approval"
    (entry,) = first.entries
    second = on_answer(
        (given := answer("bob", change_record="CHG-1")),
        wire(signed(given, "bob")),
        entry,
        policy=policy,
        keyring=keyring(),
        origin=origin,
    )
    assert [a.kind for a in second.audits] == ["approval_accepted", "execute_command"]
    assert second.audits[0].data["approvers"] == ["alice", "bob"]
    (send,) = second.sends
    assert orjson.loads(send.value)["change_record"] == "CHG-1"
