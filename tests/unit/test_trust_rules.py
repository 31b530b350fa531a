"""The similarity and calibration rules inside evaluate(): context.novelty and
context.calibrated_confidence (absent: the decision is what it always was)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.models import Context, Proposal
from streams.policy import Policy, evaluate

Builder = Callable[..., tuple[Proposal, Context]]

NEAR = {
    "kind": "similar",
    "max_distance": 0.5,
    "distance": 0.3,
    "differs": ["target_kind"],
    "nearest": {"pattern": "oom-kill/stateless-deployment", "target_kind": "StatefulSet"},
}


def _row(decision: Any, name: str) -> dict[str, Any]:
    [row] = [c for c in decision.conditions if c["name"] == name]
    return dict(row)


def test_without_the_new_context_the_decision_is_unchanged(
    make_inputs: Builder, default_policy: Policy
) -> None:
    decision = evaluate(*make_inputs(), default_policy)

    assert decision.level == 4
    names = {c["name"] for c in decision.conditions}
    assert not {"similar_signature", "calibrated_confidence"} & names


def test_a_similar_signature_cannot_reach_level_3_or_4(
    make_inputs: Builder, default_policy: Policy
) -> None:
    decision = evaluate(*make_inputs(None, {"novelty": NEAR}), default_policy)

    assert (decision.level, decision.deciding_rule) == (2, "similarity_guard")
    row = _row(decision, "similar_signature")
    assert row["holds"] is True
    assert row["threshold"] == 0.5
    assert row["observed"]["differs"] == ["target_kind"]
    assert row["observed"]["distance"] == 0.3
    assert "novelty" not in decision.triggers


def test_a_similar_signature_of_an_unseen_pattern_is_supervised_not_assist(
    make_inputs: Builder, default_policy: Policy
) -> None:
    """A pattern name close to a known one: not novel (Level 1) but never above 2."""
    context = {"novelty": NEAR, "history": {"seen": 0, "successes": 0, "failures": 0}}

    decision = evaluate(*make_inputs({"pattern": "oom-kill/stateless-deploy"}, context),
                        default_policy)  # fmt: skip

    assert decision.level == 2
    assert "novelty" not in decision.triggers


def test_a_signature_with_nothing_near_is_novel_even_if_the_pattern_was_seen(
    make_inputs: Builder, default_policy: Policy
) -> None:
    novelty = {**NEAR, "kind": "novel", "distance": 0.6}

    decision = evaluate(*make_inputs(None, {"novelty": novelty}), default_policy)

    assert (decision.level, decision.deciding_rule) == (1, "level1_assist")
    assert "novelty" in decision.triggers
    assert _row(decision, "novelty")["holds"] is True


def test_an_exactly_seen_signature_changes_nothing(
    make_inputs: Builder, default_policy: Policy
) -> None:
    seen = {"kind": "seen", "max_distance": 0.5, "distance": 0.0}

    decision = evaluate(*make_inputs(None, {"novelty": seen}), default_policy)

    assert decision.level == 4
    assert _row(decision, "similar_signature")["holds"] is False


def test_a_system_whose_090s_are_right_60_percent_is_supervised(
    make_inputs: Builder, default_policy: Policy
) -> None:
    decision = evaluate(*make_inputs(None, {"calibrated_confidence": 0.6}), default_policy)

    assert decision.level == 2
    assert "confidence" in decision.triggers
    row = _row(decision, "calibrated_confidence")
    assert (row["observed"], row["operator"], row["threshold"], row["holds"]) == (
        0.6, "<", 0.9, True,
    )  # fmt: skip
    composite = [c for c in decision.conditions if c["name"] == "composite_confidence"]
    assert {c["observed"] for c in composite} == {0.6}


def test_a_calibrated_value_above_the_reported_one_is_not_used(
    make_inputs: Builder, default_policy: Policy
) -> None:
    decision = evaluate(*make_inputs(None, {"calibrated_confidence": 0.99}), default_policy)

    assert decision.level == 4
    assert _row(decision, "calibrated_confidence")["holds"] is False


kinds = st.none() | st.sampled_from(["seen", "similar", "novel"])


@settings(max_examples=300, deadline=None)
@given(
    kinds,
    st.none() | st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.integers(0, 15),
    st.sampled_from([0, 1, 3]),
)
def test_the_two_rules_never_raise_a_level_except_similar_over_novel(  # noqa: PLR0917
    make_inputs: Builder,
    default_policy: Policy,
    kind: str | None,
    calibrated: float | None,
    model: float,
    seen: int,
    recent: int,
) -> None:
    base_context: dict[str, Any] = {
        "history": {"seen": seen, "successes": seen, "failures": 0},
        "recent_autonomous": {"service": recent, "fleet": recent},
    }
    proposal_overrides = {"confidence": {"model": model, "heuristic": None}}
    before = evaluate(*make_inputs(proposal_overrides, base_context), default_policy)
    extra: dict[str, Any] = {"calibrated_confidence": calibrated}
    if kind is not None:
        extra["novelty"] = {**NEAR, "kind": kind}

    after = evaluate(*make_inputs(proposal_overrides, {**base_context, **extra}), default_policy)

    if kind == "similar" and seen == 0:
        # The one move up: a near miss of an unseen pattern is no longer novel
        # (Level 1) but supervised, and a human still approves it.
        assert after.level <= 2
    else:
        assert after.level <= before.level
    if kind == "similar":
        assert after.level <= 2
    if kind == "novel":
        assert after.level <= 1


@pytest.mark.parametrize("kind", ["seen", "similar", "novel"])
def test_the_novelty_in_the_context_survives_the_wire(
    make_inputs: Builder, default_policy: Policy, kind: str
) -> None:
    from streams.models import Decision, decode, encode  # noqa: PLC0415

    decision = evaluate(*make_inputs(None, {"novelty": {**NEAR, "kind": kind}}), default_policy)

    assert decode(Decision, encode(decision)) == decision
