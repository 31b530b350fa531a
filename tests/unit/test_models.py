# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Wire models: strict, frozen, round-trip through encode/decode, one-line errors."""

from __future__ import annotations

import copy
import math
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError
from sample_messages import AT, CONTEXT, FIXTURES, PROPOSAL, SAMPLES

from streams.errors import InputError
from streams.models import (
    MESSAGES,
    Confidence,
    Context,
    Decision,
    History,
    Proposal,
    decode,
    encode,
)
from streams.models.decision import decision_json
from streams.policy import Policy, evaluate

# (message, dotted path) of every fraction in [0, 1].
FRACTIONS = [
    ("proposal", "confidence.model"),
    ("proposal", "confidence.heuristic"),
    ("proposal", "blast_radius.replica_fraction"),
    ("proposal", "blast_radius.traffic_fraction"),
    ("context", "error_budget_remaining"),
    ("context", "ai_false_positive_rate_7d"),
    ("error-budget-update", "remaining"),
]
INSTANTS = [
    ("proposal", "created_at"),
    ("context", "now"),
    ("context", "requalified_at"),
    ("execute-command", "issued_at"),
    ("oncall-escalation", "at"),
    ("oncall-resolution", "at"),
    ("approval", "issued_at"),
    ("approval", "expires_at"),
    ("outcome", "at"),
    ("error-budget-update", "at"),
    ("control-command", "at"),
    ("history-record", "at"),
    ("audit-event", "event.at"),
    ("dead-letter", "received_at"),
]
IDS = [
    ("proposal", "proposal_id"),
    ("proposal", "source.ai_system"),
    ("proposal", "pattern"),
    ("proposal", "action.type"),
    ("proposal", "action.target.service"),
    ("proposal", "action.target.namespace"),
    ("approval", "decision_id"),
    ("approval", "user"),
    ("outcome", "decision_id"),
    ("error-budget-update", "service"),
    ("control-command", "user"),
    ("audit-event", "event.event_id"),
]
WRONG_TYPES = [
    ("proposal", "action.rollback_seconds", "60"),
    ("proposal", "action.rollback_seconds", 60.0),
    ("proposal", "action.rollback_seconds", True),
    ("proposal", "blast_radius.services", "1"),
    ("proposal", "confidence.model", "0.9"),
    ("proposal", "confidence.model", True),
    ("proposal", "action.idempotent", 1),
    ("proposal", "action.reversible", "true"),
    ("proposal", "regulated", "PCI-DSS"),
    ("proposal", "proposal_id", 123),
    ("context", "history.seen", "12"),
    ("context", "history.seen", 12.0),
    ("context", "frozen", 1),
    ("context", "requalification_revoked", 0),
    ("context", "error_budget_remaining", "0.5"),
    ("approval", "false_positive", 1),
    ("outcome", "suboptimal", "no"),
    ("outcome", "level", "4"),
    ("audit-event", "time", "now"),
]


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def _remove(document: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(document)
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[part]
    del node[last]
    return out


def _refused(name: str, document: dict[str, Any]) -> InputError:
    with pytest.raises(InputError) as caught:
        decode(MESSAGES[name], orjson.dumps(document))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{caught.value.field}: ")
    assert caught.value.kind == "schema"
    return caught.value


@pytest.fixture(scope="module")
def samples(default_policy: Policy) -> dict[str, dict[str, Any]]:
    decision = evaluate(
        Proposal.model_validate(PROPOSAL), Context.model_validate(CONTEXT), default_policy
    )
    return {**SAMPLES, "decision": orjson.loads(encode(decision))}


def test_every_message_has_a_sample(samples: dict[str, dict[str, Any]]) -> None:
    assert set(samples) == set(MESSAGES)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_round_trips_through_encode_and_decode(
    name: str, samples: dict[str, dict[str, Any]]
) -> None:
    model = MESSAGES[name]

    first = decode(model, orjson.dumps(samples[name]))
    again = decode(model, encode(first))

    assert again == first
    assert encode(again) == encode(first)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_refuses_an_unknown_key(name: str, samples: dict[str, dict[str, Any]]) -> None:
    error = _refused(name, {**samples[name], "surprise": 1})

    assert error.field == "surprise"
    assert str(error) == "surprise: Extra inputs are not permitted"


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("proposal", "action.target.cluster"),
        ("proposal", "confidence.calibrated"),
        ("context", "history.skipped"),
        ("audit-event", "event.extra"),
    ],
)
def test_message_refuses_an_unknown_nested_key(
    name: str, path: str, samples: dict[str, dict[str, Any]]
) -> None:
    assert _refused(name, _set(samples[name], path, 1)).field == path


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_is_frozen(name: str, samples: dict[str, dict[str, Any]]) -> None:
    model = decode(MESSAGES[name], orjson.dumps(samples[name]))
    field = next(iter(type(model).model_fields))

    with pytest.raises(ValidationError, match="frozen"):
        setattr(model, field, None)


@pytest.mark.parametrize(("name", "path"), FRACTIONS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_fraction_refuses_nan_and_infinity(name: str, path: str, value: float) -> None:
    """JSON cannot carry them (orjson refuses), so they are tried as Python values."""
    with pytest.raises(ValidationError) as caught:
        MESSAGES[name].model_validate(_set(SAMPLES[name], path, value))

    (error,) = caught.value.errors()
    assert ".".join(str(p) for p in error["loc"]) == path


@pytest.mark.parametrize(("name", "path"), FRACTIONS)
@pytest.mark.parametrize("value", [-0.01, 1.01, -1e-12, 2.0])
def test_fraction_refuses_values_outside_zero_to_one(name: str, path: str, value: float) -> None:
    error = _refused(name, _set(SAMPLES[name], path, value))

    assert error.field == path
    assert error.reason.endswith(f", got {value!r}")


@pytest.mark.parametrize(("name", "path"), FRACTIONS)
@pytest.mark.parametrize("value", [0, 0.0, 1, 1.0])
def test_fraction_accepts_its_bounds(name: str, path: str, value: float) -> None:
    decode(MESSAGES[name], orjson.dumps(_set(SAMPLES[name], path, value)))


def test_nan_in_json_text_is_not_json() -> None:
    raw = orjson.dumps(PROPOSAL).replace(b'"model":0.93', b'"model":NaN')

    with pytest.raises(InputError) as caught:
        decode(Proposal, raw)

    assert caught.value.kind == "not_json"


@pytest.mark.parametrize(("name", "path"), IDS)
def test_id_refuses_empty(name: str, path: str) -> None:
    error = _refused(name, _set(SAMPLES[name], path, ""))

    assert error.field == path
    assert "at least 1 character" in error.reason


@pytest.mark.parametrize(("name", "path", "value"), WRONG_TYPES)
def test_wrong_type_is_refused_naming_the_field(name: str, path: str, value: Any) -> None:
    error = _refused(name, _set(SAMPLES[name], path, value))

    assert error.field == path
    assert error.reason.endswith(f", got {value!r}")


@pytest.mark.parametrize(("name", "path"), INSTANTS)
def test_naive_datetime_is_refused(name: str, path: str) -> None:
    error = _refused(name, _set(SAMPLES[name], path, "2026-11-28T10:00:05"))

    assert error.field == path
    assert "timezone" in error.reason


@pytest.mark.parametrize(
    ("name", "path"),
    [("proposal", "action.target"), ("proposal", "confidence.model"), ("context", "now")],
)
def test_missing_field_is_named(name: str, path: str) -> None:
    error = _refused(name, _remove(SAMPLES[name], path))

    assert str(error) == f"{path}: field required"


def test_decode_names_the_first_error_and_counts_the_rest() -> None:
    document = _set(_set(PROPOSAL, "confidence.model", 2.0), "pattern", "")

    error = _refused("proposal", document)

    assert error.field == "pattern"
    assert str(error).endswith("(and 1 more error)")


def test_decode_names_list_items_by_index() -> None:
    error = _refused("proposal", _set(PROPOSAL, "regulated", ["SOX", ""]))

    assert error.field == "regulated[1]"


def test_decode_refuses_a_json_value_that_is_not_an_object() -> None:
    with pytest.raises(InputError) as caught:
        decode(Proposal, b"[1, 2]")

    assert str(caught.value) == "(message): expected a JSON object, got list"


def test_decode_refuses_bytes_that_are_not_json() -> None:
    with pytest.raises(InputError) as caught:
        decode(Proposal, b'{"schema_version": 1,')

    assert caught.value.kind == "not_json"
    assert "\n" not in str(caught.value)


def test_decode_refuses_a_message_over_the_size_limit() -> None:
    raw = orjson.dumps(PROPOSAL)

    with pytest.raises(InputError) as caught:
        decode(Proposal, raw, max_bytes=len(raw) - 1)

    assert caught.value.kind == "too_large"
    assert decode(Proposal, raw, max_bytes=len(raw)).proposal_id == "p-000123"


def test_unknown_schema_version_is_refused() -> None:
    assert _refused("proposal", _set(PROPOSAL, "schema_version", 2)).field == "schema_version"


def test_history_refuses_more_outcomes_than_occurrences() -> None:
    error = _refused(
        "context", _set(CONTEXT, "history", {"seen": 2, "successes": 2, "failures": 1})
    )

    assert "successes + failures must not exceed seen" in str(error)


def test_proposal_refuses_a_framework_listed_twice() -> None:
    error = _refused("proposal", _set(PROPOSAL, "regulated", ["SOX", "SOX"]))

    assert "regulated lists a framework twice" in str(error)


def test_blast_radius_counts_at_least_one_service() -> None:
    assert _refused("proposal", _set(PROPOSAL, "blast_radius.services", 0)).field == (
        "blast_radius.services"
    )


@pytest.mark.parametrize(
    ("command", "missing"), [("requalify", "pattern"), ("revoke", "action_type")]
)
def test_control_command_requalify_and_revoke_need_pattern_and_action(
    command: str, missing: str
) -> None:
    document = _remove({**SAMPLES["control-command"], "command": command}, missing)

    assert "needs pattern and action_type" in str(_refused("control-command", document))


def test_control_command_reload_needs_the_policy_text() -> None:
    document = {**SAMPLES["control-command"], "command": "reload_policy"}

    assert "reload_policy needs policy_yaml" in str(_refused("control-command", document))


def test_context_defaults_to_unknown_state() -> None:
    context = Context.model_validate({"now": AT})

    assert context.history == History(seen=0, successes=0, failures=0)
    assert context.error_budget_remaining is None
    assert context.ai_false_positive_rate_7d is None
    assert context.requalified_at is None
    assert context.frozen is False


@pytest.mark.parametrize(
    ("model", "heuristic", "composite"), [(0.93, 0.9, 0.9), (0.7, 0.95, 0.7), (0.8, None, 0.8)]
)
def test_composite_confidence_is_the_minimum(
    model: float, heuristic: float | None, composite: float
) -> None:
    assert Confidence(model=model, heuristic=heuristic).composite == composite


def test_decision_from_evaluate_serialises_like_a_validated_one(
    samples: dict[str, dict[str, Any]], default_policy: Policy
) -> None:
    """evaluate() builds a Decision without validation; it must equal a validated one."""
    built = evaluate(
        Proposal.model_validate(PROPOSAL), Context.model_validate(CONTEXT), default_policy
    )
    validated = Decision.model_validate_json(encode(built))

    assert validated == built
    assert encode(validated) == encode(built)
    assert validated.model_dump() == built.model_dump()
    assert built.model_fields_set == set(Decision.model_fields)
    assert isinstance(built, BaseModel)
    assert set(built.__dict__) == set(Decision.model_fields)


def _recorded_decisions() -> list[Decision]:
    out = []
    for line in (FIXTURES / "audit-recorded.jsonl").read_bytes().splitlines():
        body = orjson.loads(line)["event"]
        if body["kind"] == "decision":
            out.append(Decision.model_validate(body["data"]["decision"]))
    return out


@pytest.mark.parametrize("decision", _recorded_decisions(), ids=lambda d: d.proposal_id)
def test_decision_json_equals_pydantics_json_dump(decision: Decision) -> None:
    fast = decision_json(decision)
    assert fast == decision.model_dump(mode="json")
    assert orjson.dumps(fast, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        decision.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS
    )
