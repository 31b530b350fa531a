"""Who may sign what: the keyring, signed outcomes and budgets, and that no changed byte
of a signed answer or command is ever accepted."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from signed import cosigned, keyring, signed, signer, wire

from streams import handlers, keys, samples
from streams.errors import InputError, PolicyError
from streams.handlers import Origin
from streams.models import ApprovalResponse, ControlCommand, ErrorBudgetUpdate, Outcome, encode
from streams.models.codec import decode_with_body
from streams.policy.keyring import keyring_yaml, parse_keyring, without

AT = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
ORIGIN = Origin("escalation.outcomes", 0, 5, AT.timestamp())


def _outcome() -> Outcome:
    return Outcome.model_validate(
        {
            "schema_version": 1, "decision_id": "d-1", "proposal_id": "p-1", "pattern": "p",
            "action_type": "a", "ai_system": "holmesgpt", "service": "svc", "level": 4,
            "result": "success", "verification": "passed", "at": AT,
        }
    )  # fmt: skip


@pytest.mark.parametrize(
    ("by", "reason"),
    [
        ("executor-1", None),
        (None, "unsigned"),
        ("alice", "not_an_executor"),
        ("slo-1", "not_an_executor"),
        ("stranger", "unknown_key"),
    ],
)
def test_an_outcome_counts_only_when_an_executor_signed_it(
    by: str | None, reason: str | None
) -> None:
    outcome = _outcome()
    key = keys.generate() if by == "stranger" else by
    body = wire(outcome if key is None else signed(outcome, key))
    effects = handlers.on_signed_outcome(outcome, body, ORIGIN, keyring=keyring())
    if reason is None:
        assert [u.table for u in effects.state] == ["history", "verdicts"]
        return
    assert [d.kind for d in effects.audits] == ["input_refused"]
    assert effects.audits[0].data["reason"] == reason
    assert effects.state == ()
    assert [(c.metric, c.labels) for c in effects.metrics] == [
        ("inputs_refused", ("outcomes", reason))
    ]


@pytest.mark.parametrize(("by", "reason"), [("slo-1", None), ("executor-1", "not_an_slo_source")])
def test_an_error_budget_counts_only_when_an_slo_source_signed_it(
    by: str, reason: str | None
) -> None:
    update = ErrorBudgetUpdate(schema_version=1, service="svc", remaining=0.9, at=AT, source=by)
    effects = handlers.on_signed_budget(update, wire(signed(update, by)), ORIGIN, keyring=keyring())
    if reason is None:
        assert [u.table for u in effects.state] == ["budgets"]
    else:
        assert effects.audits[0].data["reason"] == reason
        assert effects.state == ()


def _answer() -> ApprovalResponse:
    return ApprovalResponse(
        schema_version=1, kind="approve", decision_id="d-1", user="alice", nonce="n-00000001",
        issued_at=AT, expires_at=AT + dt.timedelta(minutes=5), change_record="CHG-1",
    )  # fmt: skip


ANSWER = encode(signed(_answer(), "alice"))
COMMAND = encode(
    cosigned(
        ControlCommand(
            schema_version=1, command="requalify", user="alice", pattern="p", action_type="a",
            at=AT,
        ),
        "alice",
    )
)  # fmt: skip


def _accepted_answer(raw: bytes) -> bool:
    try:
        answer, body = decode_with_body(ApprovalResponse, raw)
    except InputError:
        return False
    verified = keyring().authorize(
        without(body, "signature"), body.get("signature"), user=answer.user, role=answer.kind
    )
    return not isinstance(verified, str)


def _accepted_command(raw: bytes) -> bool:
    try:
        command, body = decode_with_body(ControlCommand, raw)
    except InputError:
        return False
    return not isinstance(handlers.control.signers(command, body, keyring(), _policy()), str)


def _policy():
    from streams.files import read_policy  # noqa: PLC0415
    from streams.settings import Settings  # noqa: PLC0415

    return read_policy(Settings().policy_file)


def test_the_untouched_messages_are_accepted() -> None:
    assert _accepted_answer(ANSWER)
    assert _accepted_command(COMMAND)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_changed_byte_of_a_signed_answer_or_command_is_refused(data: st.DataObject) -> None:
    for raw, accepted in ((ANSWER, _accepted_answer), (COMMAND, _accepted_command)):
        index = data.draw(st.integers(0, len(raw) - 1))
        value = data.draw(st.integers(0, 255).filter(lambda b, i=index, r=raw: b != r[i]))
        changed = raw[:index] + bytes([value]) + raw[index + 1 :]
        if orjson.loads(raw) == _loads(changed):
            continue  # the same JSON value (cannot happen for orjson output; kept honest)
        assert not accepted(changed), (index, value)


def _loads(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def test_a_keyring_error_names_the_file_and_the_field() -> None:
    pem = keys.public_pem(signer("alice").public)
    twice = keyring_yaml(
        version="1", approved_by=["x"], reviewed=AT.date(),
        people=[("alice", pem, ["approve"]), ("alice", keys.public_pem(signer("bob").public), [])],
    )  # fmt: skip
    with pytest.raises(PolicyError, match=r"k.yaml: people\[1\].name: 'alice' is listed twice"):
        parse_keyring(twice, source="k.yaml")
    same_key = keyring_yaml(
        version="1", approved_by=["x"], reviewed=AT.date(),
        people=[("alice", pem, ["approve"]), ("eve", pem, ["approve"])],
    )  # fmt: skip
    with pytest.raises(PolicyError, match=r"people\[1\].public_key: the same key as people\[0\]"):
        parse_keyring(same_key, source="k.yaml")
    bad_role = same_key.replace("- approve", "- rule_the_world", 1)
    with pytest.raises(PolicyError, match=r"k.yaml: people.0.roles.0"):
        parse_keyring(bad_role, source="k.yaml")


def test_the_keyring_digest_is_its_files_sha256_and_decisions_record_it() -> None:
    import hashlib  # noqa: PLC0415

    ring = keyring()
    assert len(ring.digest) == 64
    policy = _policy()
    policy.bind_keyring(ring.digest)
    proposal = samples.stream(1, start=AT)[0][1]

    class Empty:
        def get(self, table: str, key: str) -> None:
            return None

        def values(self, table: str) -> list[object]:
            return []

    decided = handlers.decide(proposal, Empty(), policy, ORIGIN)
    assert decided.decision.keyring_digest == ring.digest
    text = keyring_yaml(version="1", approved_by=["x"], reviewed=AT.date())
    assert parse_keyring(text).digest == hashlib.sha256(text.encode()).hexdigest()


def test_the_shipped_example_keyring_validates() -> None:
    from pathlib import Path  # noqa: PLC0415

    from streams.files import read_keyring  # noqa: PLC0415

    example = Path(__file__).resolve().parents[2] / "deploy" / "keyring.example.yaml"
    ring = read_keyring(example)
    assert set(ring.people) >= {"alice", "bob", "sre-oncall-primary"}
    assert "load_policy" in ring.people["alice"].roles
