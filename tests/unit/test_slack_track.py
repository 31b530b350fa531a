"""The pure core of the Slack service: what a record becomes after each of the gate's
records, what the message shows, and who may answer."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from policy_inputs import DEFAULT_POLICY, build_inputs, load_policy

from streams import keys
from streams.models.decision import decision_json
from streams.policy import evaluate
from streams.slack import blocks, track
from streams.slack.answers import KeyringRoles, nonce_for, signed_answer

POLICY = load_policy(DEFAULT_POLICY)
NOW = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)


def decision(**proposal: Any) -> dict[str, Any]:
    p, c = build_inputs(proposal, {"now": NOW.isoformat()})
    return decision_json(evaluate(p, c, POLICY))


L2 = decision(blast_radius={"replica_fraction": 0.4})
L3 = decision(action={"target": {"kind": "StatefulSet"}})
L4 = decision()


def audit(kind: str, **data: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "decision_id": L2["decision_id"],
        "actor": data.get("user", "escalation-gate"),
        "at": "2026-12-01T10:02:00+00:00",
        "data": data,
    }


def opened(d: dict[str, Any] = L2) -> track.Record:
    record = track.on_decision(None, d, "C0CHAN")
    assert record is not None
    return record


def test_the_levels_are_what_these_tests_assume() -> None:
    assert (L2["level"], L3["level"], L4["level"]) == (2, 3, 4)


@pytest.mark.parametrize(("d", "opens"), [(L2, True), (L3, True), (L4, False)])
def test_only_level_2_and_3_open_a_record(d: dict[str, Any], opens: bool) -> None:
    assert (track.on_decision(None, d, "C0CHAN") is not None) == opens


def test_a_redelivered_decision_keeps_the_first_record() -> None:
    first = {**opened(), "posted": {"channel": "C0CHAN", "ts": "1.0001"}}
    assert track.on_decision(first, L2, "C0OTHER") == first


def test_an_answer_read_before_its_decision_is_kept_and_completed() -> None:
    stub = track.on_audit(None, audit("rejection", user="bob", false_positive=True))
    assert stub is not None
    assert stub["view"] is None
    record = track.on_decision(stub, L2, "C0CHAN")
    assert record is not None
    assert record["status"] == "rejected"
    assert record["answer"]["false_positive"] is True
    assert not track.has_buttons(record)


@pytest.mark.parametrize(
    ("kind", "data", "status", "buttons"),
    [
        ("approval_accepted", {"user": "alice", "change_record": "CHG-1"}, "approved", False),
        ("rejection", {"user": "bob"}, "rejected", False),
        ("abort", {"user": "bob"}, "aborted", False),
        ("timeout_escalation", {"escalation": {"escalation_number": 1}}, "open", True),
        ("approval_recorded", {"user": "alice"}, "open", True),
        ("execute_command", {"command": "execute", "by": "alice"}, "open", True),
    ],
)
def test_each_audit_event_moves_the_record(
    kind: str, data: dict[str, Any], status: str, buttons: bool
) -> None:
    record = track.on_audit(opened(), audit(kind, **data))
    assert record is not None
    assert record["status"] == status
    assert track.has_buttons(record) == buttons


def test_events_that_are_not_about_a_decisions_fate_change_nothing() -> None:
    assert track.on_audit(opened(), audit("proposal_received")) is None
    assert track.on_audit(None, audit("timeout_escalation")) is None
    assert track.on_outcome(None, {"result": "success"}) is None
    assert track.on_command(None, {"type": "execute"}) is None


def test_a_repeated_timeout_or_command_is_recorded_once() -> None:
    once = track.on_audit(
        opened(), audit("timeout_escalation", escalation={"escalation_number": 1})
    )
    assert once is not None
    again = track.on_audit(once, audit("timeout_escalation", escalation={"escalation_number": 1}))
    assert again == once
    cmd = {"type": "execute", "by": "alice", "issued_at": "2026-12-01T10:03:00+00:00"}
    executed = track.on_command(once, cmd)
    assert executed is not None
    assert track.on_command(executed, cmd) == executed


def test_the_abort_window_closes_on_the_tick_after_it_ends() -> None:
    record = opened(L3)
    ends = dt.datetime.fromisoformat(L3["abort_window_ends_at"]).timestamp()
    assert track.on_tick(record, ends - 0.5) is None
    closed = track.on_tick(record, ends)
    assert closed is not None
    assert closed["status"] == "window_closed"
    assert not track.has_buttons(closed)
    assert track.on_tick(opened(L2), ends + 10_000) is None  # Level 2 has no abort window


@pytest.mark.parametrize(
    ("events", "action", "person", "says"),
    [
        ([], "approve", "alice", None),
        ([("approval_accepted", {"user": "carol"})], "approve", "bob", "Already approved by carol"),
        ([("rejection", {"user": "carol"})], "reject", "bob", "Already rejected by carol"),
        ([("approval_recorded", {"user": "alice"})], "approve", "alice", "already approved"),
        ([("approval_recorded", {"user": "alice"})], "approve", "bob", None),
        ([], "abort", "alice", "no abort window"),
    ],
)
def test_a_click_on_a_stale_button_says_who_answered_and_when(
    events: list[tuple[str, dict[str, Any]]], action: track.Action, person: str, says: str | None
) -> None:
    record: track.Record | None = opened()
    for kind, data in events:
        record = track.on_audit(record, audit(kind, **data))
    why = track.stale(record, action, person)
    if says is None:
        assert why is None
    else:
        assert why is not None
        assert says in why
        if "by" in says:
            assert "2026-12-01 10:02:00 UTC" in why


def test_a_click_on_an_unknown_decision_is_stale() -> None:
    assert track.stale(None, "approve", "alice") is not None


def test_the_message_shows_the_proposal_the_ai_the_reasons_and_the_deadline() -> None:
    text, content = blocks.message(opened())
    assert text.startswith("Approval needed: rolling_restart on checkout-api")
    body = "\n".join(
        [b["text"]["text"] for b in content if "text" in b]
        + [f["text"] for b in content for f in b.get("fields", [])]
    )
    assert "holmesgpt" in body
    assert "model 0.93 · heuristic 0.9 → *0.9*" in body
    assert "`replica_fraction` 0.4 &gt; 0.2" in body
    deadline = int(dt.datetime.fromisoformat(L2["approval_timeout_at"]).timestamp())
    assert f"<!date^{deadline}^" in body
    assert [e["action_id"] for e in content[-1]["elements"]] == [
        blocks.APPROVE,
        blocks.REJECT,
        blocks.REJECT_FP,
    ]


def test_a_huge_summary_stays_inside_slacks_limits() -> None:
    huge = decision(blast_radius={"replica_fraction": 0.4}, summary="<&>" * 1300)
    _text, content = blocks.message(opened(huge))
    assert len(content) <= 50
    for block in content:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if "text" in block:
            assert len(block["text"]["text"]) <= 3000
        assert len(block.get("fields", [])) <= 10
    assert "<&>" not in str(content), "mrkdwn control characters are escaped"


def test_the_change_record_modal_requires_an_input() -> None:
    modal = blocks.change_record_modal(opened(), {"decision_id": L2["decision_id"]})
    assert modal["type"] == "modal"
    assert len(modal["title"]["text"]) <= 24
    (field,) = [b for b in modal["blocks"] if b["type"] == "input"]
    assert field["block_id"] == blocks.CHANGE_RECORD_BLOCK
    assert "optional" not in field


def test_keyring_roles() -> None:
    roles = KeyringRoles({"alice": frozenset({"approve"})})
    assert roles.may("alice", "approve")
    assert not roles.may("alice", "abort")
    assert not roles.may("bob", "approve")


def test_keyring_roles_are_limited_to_what_the_slack_channel_relays() -> None:
    @dataclass
    class Holder:
        roles: frozenset[str]

    people = {"alice": Holder(frozenset({"approve", "freeze", "load_policy"}))}
    roles = KeyringRoles.of(people, relays=frozenset({"approve", "reject", "abort"}))
    assert roles.may("alice", "approve")
    assert not roles.may("alice", "freeze")  # not something Slack relays


def test_the_answer_names_the_person_and_the_slack_channel_and_is_signed() -> None:
    signer = keys.generate("slack")
    answer = signed_answer(
        "approve", L2["decision_id"], "alice", nonce=nonce_for("v0=abc"), now=NOW, signer=signer
    )
    assert (answer.user, answer.channel, answer.kind) == ("alice", "slack", "approve")
    assert answer.signature is not None
    assert answer.signature.key_id == signer.key_id
    assert keys.PublicKeys([signer.public]).verify(answer.model_dump(mode="json")) is None
    assert nonce_for("v0=abc") == nonce_for("v0=abc") != nonce_for("v0=abd")


def test_the_pure_modules_import_no_slack_or_kafka_client() -> None:
    code = (
        "import sys, streams.slack.track, streams.slack.blocks; "
        "bad = [m for m in ('slack_sdk', 'slack_bolt', 'confluent_kafka', 'faust') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_preview_page_draws_the_blocks_and_escapes_what_the_ai_wrote() -> None:
    from streams.slack.preview import page, sample_page  # noqa: PLC0415

    evil = decision(
        blast_radius={"replica_fraction": 0.4}, summary="<script>alert(1)</script> *bold*"
    )
    html = page([("10:00", blocks.message(opened(evil))[1], False)], "sre")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<b>bold</b>" in html
    assert "Reject as false positive" in sample_page()
