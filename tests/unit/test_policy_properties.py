# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Safety invariants of evaluate(), over generated proposals and contexts.

Fail toward humans: taking away confidence, knowledge or room for error, or adding
risk, never buys more autonomy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streams.models import ROUTES, Context, Decision, History, Proposal, decode, encode
from streams.policy import Policy, evaluate

PROPERTIES = settings(max_examples=200, deadline=None)
NOW = dt.datetime(2026, 11, 28, 10, 0, 5, tzinfo=dt.UTC)

# Boundaries of both shipped policies, plus anything in [0, 1].
fractions = st.one_of(
    st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.25, 0.4, 0.6, 0.7, 0.75, 0.85, 0.92, 0.95, 1.0]),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
maybe_fractions = st.one_of(st.none(), fractions)
counts = st.one_of(st.sampled_from([0, 1, 2, 3, 9, 10, 25]), st.integers(0, 60))


@st.composite
def proposals(draw: st.DrawFn) -> Proposal:
    action = draw(
        st.sampled_from(
            ["rolling_restart", "scale_up", "certificate_rotation", "log_pipeline_restart", "drain"]
        )
    )
    parameters: dict[str, Any] = {}
    if action == "scale_up" and draw(st.booleans()):
        parameters["replicas_delta"] = draw(st.integers(-3, 5))
    heuristic = draw(maybe_fractions)
    return Proposal.model_validate(
        {
            "schema_version": 1,
            "proposal_id": f"p-{draw(st.integers(0, 10**6))}",
            "created_at": NOW - dt.timedelta(seconds=5),
            "source": {"ai_system": draw(st.sampled_from(["holmesgpt"] * 5 + ["copilot-ops"]))},
            "pattern": draw(st.sampled_from(["oom-kill/stateless-deployment", "tls/expiry"])),
            "action": {
                "type": action,
                "target": {
                    "service": draw(
                        st.sampled_from(["checkout-api", "search", "payments-api", "argocd"])
                    ),
                    "namespace": draw(st.sampled_from(["shop", "platform", "ehr"])),
                    "environment": draw(st.sampled_from(["production", "staging"])),
                    "kind": draw(st.sampled_from(["Deployment", "StatefulSet"])),
                },
                "parameters": parameters,
                "idempotent": draw(st.booleans()),
                "reversible": draw(st.booleans()),
                "rollback_seconds": draw(st.sampled_from([0, 60, 120, 300, 301, 3600])),
            },
            "confidence": {"model": draw(fractions), "heuristic": heuristic},
            "blast_radius": {
                "services": draw(st.integers(1, 3)),
                "namespaces": draw(st.integers(1, 3)),
                "replica_fraction": draw(fractions),
                "traffic_fraction": draw(fractions),
            },
            "regulated": draw(
                st.lists(st.sampled_from(["PCI-DSS", "SOX", "HIPAA"]), unique=True, max_size=2)
            ),
        }
    )


@st.composite
def contexts(draw: st.DrawFn) -> Context:
    seen = draw(counts)
    successes = draw(st.integers(0, seen))
    requalified = draw(st.one_of(st.none(), st.integers(-2, 120)))
    return Context.model_validate(
        {
            "now": NOW
            + dt.timedelta(days=draw(st.sampled_from([0, 0, 0, 65, 80]))),  # past review dates
            "history": {"seen": seen, "successes": successes, "failures": seen - successes},
            "error_budget_remaining": draw(maybe_fractions),
            "ai_false_positive_rate_7d": draw(maybe_fractions),
            "requalified_at": None if requalified is None else NOW - dt.timedelta(requalified),
            "requalification_revoked": draw(st.booleans()),
            "recent_autonomous": {"service": draw(st.integers(0, 4)), "fleet": draw(counts)},
            "frozen": draw(st.sampled_from([False] * 9 + [True])),
        }
    )


policies = st.sampled_from(["default_policy", "strict_policy"])


@pytest.fixture(scope="module")
def both(default_policy: Policy, strict_policy: Policy) -> dict[str, Policy]:
    return {"default_policy": default_policy, "strict_policy": strict_policy}


def _with(model: Any, **changes: Any) -> Any:
    """A copy of a frozen model with ``changes``, validated again."""
    return type(model).model_validate({**model.model_dump(), **changes})


def _regulated(proposal: Proposal, policy: Policy) -> bool:
    target = proposal.action.target
    return bool(proposal.regulated or policy.regulated_frameworks(target.service, target.namespace))


@PROPERTIES
@given(proposal=proposals(), context=contexts(), name=policies, factor=st.floats(0.0, 1.0))
def test_lowering_confidence_never_raises_the_level(
    both: dict[str, Policy], *, proposal: Proposal, context: Context, name: str, factor: float
) -> None:
    policy = both[name]
    confidence = proposal.confidence
    lower = _with(
        proposal,
        confidence={
            "model": confidence.model * factor,
            "heuristic": None if confidence.heuristic is None else confidence.heuristic * factor,
        },
    )

    assert lower.confidence.composite <= confidence.composite
    assert evaluate(lower, context, policy).level <= evaluate(proposal, context, policy).level


@PROPERTIES
@given(
    proposal=proposals(),
    context=contexts(),
    name=policies,
    more=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 600)),
    fractions_at_least=st.tuples(fractions, fractions),
    lose_reversibility=st.booleans(),
)
def test_widening_the_blast_radius_never_raises_the_level(
    both: dict[str, Policy],
    *,
    proposal: Proposal,
    context: Context,
    name: str,
    more: tuple[int, int, int],
    fractions_at_least: tuple[float, float],
    lose_reversibility: bool,
) -> None:
    policy = both[name]
    blast, action = proposal.blast_radius, proposal.action
    more_services, more_namespaces, slower_rollback = more
    replicas, traffic = fractions_at_least
    wider = _with(
        proposal,
        blast_radius={
            "services": blast.services + more_services,
            "namespaces": blast.namespaces + more_namespaces,
            "replica_fraction": max(blast.replica_fraction, replicas),
            "traffic_fraction": max(blast.traffic_fraction, traffic),
        },
        action={
            **action.model_dump(),
            "rollback_seconds": action.rollback_seconds + slower_rollback,
            "reversible": action.reversible and not lose_reversibility,
        },
    )

    assert evaluate(wider, context, policy).level <= evaluate(proposal, context, policy).level


@PROPERTIES
@given(
    proposal=proposals(),
    context=contexts(),
    name=policies,
    framework=st.sampled_from(["PCI-DSS", "NERC-CIP", "DORA"]),
)
def test_adding_a_regulated_framework_never_raises_the_level(
    both: dict[str, Policy], *, proposal: Proposal, context: Context, name: str, framework: str
) -> None:
    policy = both[name]
    regulated = _with(proposal, regulated=sorted({*proposal.regulated, framework}))

    after = evaluate(regulated, context, policy)

    assert after.level <= evaluate(proposal, context, policy).level
    assert after.level <= 2


@PROPERTIES
@given(
    proposal=proposals(),
    context=contexts(),
    name=policies,
    forget_history=st.booleans(),
    forget_requalification=st.booleans(),
)
def test_forgetting_history_or_requalification_never_raises_the_level(
    both: dict[str, Policy],
    *,
    proposal: Proposal,
    context: Context,
    name: str,
    forget_history: bool,
    forget_requalification: bool,
) -> None:
    policy = both[name]
    changes: dict[str, Any] = {}
    if forget_history:
        changes["history"] = History()
    if forget_requalification:
        changes["requalified_at"] = None
    unknown = context.model_copy(update=changes)

    assert evaluate(proposal, unknown, policy).level <= evaluate(proposal, context, policy).level


@PROPERTIES
@given(
    proposal=proposals(),
    context=contexts(),
    name=policies,
    forget_budget=st.booleans(),
    forget_fp_rate=st.booleans(),
)
def test_unknown_budget_or_false_positive_rate_is_never_autonomous(
    both: dict[str, Policy],
    *,
    proposal: Proposal,
    context: Context,
    name: str,
    forget_budget: bool,
    forget_fp_rate: bool,
) -> None:
    """Unknown state never raises the level, except as SPEC section 5 words it.

    An exhausted budget or a high false-positive rate decides Level 1, while an
    unknown one is a Level 2 condition (rule 4): forgetting the value that made a
    decision Level 1 gives Level 2, a human approval. Never more.
    """
    policy = both[name]
    changes: dict[str, Any] = {}
    if forget_budget:
        changes["error_budget_remaining"] = None
    if forget_fp_rate:
        changes["ai_false_positive_rate_7d"] = None
    unknown = context.model_copy(update=changes)

    before = evaluate(proposal, context, policy)
    after = evaluate(proposal, unknown, policy)

    if changes:
        assert after.level <= 2
    if after.level > before.level:
        assert (before.level, after.level) == (1, 2)
        held = {c["name"] for c in before.conditions if c["rule"] == "level1_assist" and c["holds"]}
        assert held <= {"ai_false_positive_rate_7d", "error_budget_remaining"}


@PROPERTIES
@given(
    proposal=proposals(), context=contexts(), name=policies, rates=st.tuples(fractions, fractions)
)
def test_raising_the_false_positive_rate_never_raises_the_level(
    both: dict[str, Policy],
    *,
    proposal: Proposal,
    context: Context,
    name: str,
    rates: tuple[float, float],
) -> None:
    policy = both[name]
    low, high = sorted(rates)
    better = context.model_copy(update={"ai_false_positive_rate_7d": low})
    worse = context.model_copy(update={"ai_false_positive_rate_7d": high})

    assert evaluate(proposal, worse, policy).level <= evaluate(proposal, better, policy).level


@PROPERTIES
@given(
    proposal=proposals(),
    context=contexts(),
    name=policies,
    ai_system=st.text(min_size=1, max_size=20),
)
def test_an_untrusted_ai_system_always_gets_level_0(
    both: dict[str, Policy], *, proposal: Proposal, context: Context, name: str, ai_system: str
) -> None:
    policy = both[name]
    assume(ai_system not in policy.trusted_ai_systems)
    untrusted = _with(proposal, source={"ai_system": ai_system})

    decision = evaluate(untrusted, context, policy)

    assert (decision.level, decision.route) == (0, "manual")
    assert decision.change_record_required is False


@PROPERTIES
@given(proposal=proposals(), context=contexts(), name=policies)
def test_decision_invariants(
    both: dict[str, Policy], *, proposal: Proposal, context: Context, name: str
) -> None:
    """Regulated is never above 2; change record iff Level 2 and regulated; routes match."""
    policy = both[name]

    decision = evaluate(proposal, context, policy)

    regulated = _regulated(proposal, policy)
    if regulated:
        assert decision.level <= 2
    assert decision.change_record_required is (decision.level == 2 and regulated)
    assert decision.route == ROUTES[decision.level]
    assert decision.notify_humans is (decision.level != 4)
    if context.frozen or context.history.seen == 0:
        assert decision.level <= 1


@PROPERTIES
@given(proposal=proposals(), context=contexts(), name=policies)
def test_triggers_match_their_definitions(
    both: dict[str, Policy], *, proposal: Proposal, context: Context, name: str
) -> None:
    policy = both[name]
    s = policy.thresholds.supervised
    blast, action = proposal.blast_radius, proposal.action
    expected = []
    if proposal.confidence.composite < s.min_confidence:
        expected.append("confidence")
    if (
        blast.replica_fraction > s.max_replica_fraction
        or blast.services > s.max_services
        or blast.namespaces > s.max_namespaces
        or blast.traffic_fraction > s.max_traffic_fraction
        or (s.require_reversible and not action.reversible)
        or action.rollback_seconds > s.max_rollback_seconds
    ):
        expected.append("blast_radius")
    if context.history.seen == 0:
        expected.append("novelty")
    if _regulated(proposal, policy):
        expected.append("regulatory")

    assert list(evaluate(proposal, context, policy).triggers) == expected


@PROPERTIES
@given(proposal=proposals(), context=contexts(), other_context=contexts(), name=policies)
def test_evaluate_is_deterministic_and_the_decision_id_depends_only_on_the_proposal(
    both: dict[str, Policy],
    *,
    proposal: Proposal,
    context: Context,
    other_context: Context,
    name: str,
) -> None:
    policy = both[name]
    other_policy = both["strict_policy" if name == "default_policy" else "default_policy"]

    first = evaluate(proposal, context, policy)

    assert evaluate(proposal, context, policy) == first
    assert evaluate(proposal, other_context, other_policy).decision_id == first.decision_id
    assert decode(Decision, encode(first)) == first
