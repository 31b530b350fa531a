"""The signatures and calibration tables (streams/state/trust.py) and the decision a
proposal gets once they are folded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import handlers
from streams.handlers.effects import Origin
from streams.models import Context, Proposal
from streams.policy import Policy
from streams.policy.model import SimilarityPolicy
from streams.policy.similarity import Signature, classify
from streams.state.reducers import apply_verdict
from streams.state.trust import (
    MAX_SIGNATURES,
    _classify,
    _index,
    apply_trust_update,
    calibration_errors,
    judged_update,
    novelty_of,
    signature_update,
    trust_inputs,
)

Builder = Callable[..., tuple[Proposal, Context]]

NOW = dt.datetime(2026, 11, 28, 10, 0, 5, tzinfo=dt.UTC)
KEY = "oom-kill/stateless-deployment|rolling_restart"


class View:
    """A folded state with the trust tables (and the SPEC's base state otherwise)."""

    def __init__(self, tables: dict[str, dict[str, Any]]) -> None:
        self.tables = tables

    def get(self, table: str, key: str) -> Any:
        return self.tables.get(table, {}).get(key)

    def values(self, table: str) -> list[Any]:
        return list(self.tables.get(table, {}).values())


class Untracked:
    """A mirror that does not fold the trust tables: KeyError, as the Mirror raises."""

    def get(self, table: str, key: str) -> Any:
        raise KeyError(table)

    def values(self, table: str) -> list[Any]:
        raise KeyError(table)


def _fold(updates: list[dict[str, Any]]) -> Any:
    value = None
    for update in updates:
        value = apply_trust_update(value, update) or value
    return value


def _signatures(make_inputs: Builder, *changes: dict[str, Any]) -> Any:
    sigs = [Signature.of(make_inputs(change)[0]) for change in changes]
    return _fold([signature_update(s) for s in sigs])


def test_a_signature_is_known_once_and_the_table_is_bounded(make_inputs: Builder) -> None:
    proposal, _ = make_inputs()
    signature = Signature.of(proposal)
    value = _fold([signature_update(signature)] * 3)

    assert value == {"known": [signature.as_dict()]}
    many = _fold(
        [
            signature_update(Signature.of(make_inputs({"action": {"parameters": {"n": i}}})[0]))
            for i in range(MAX_SIGNATURES + 5)
        ]
    )
    assert len(many["known"]) == MAX_SIGNATURES
    assert many["known"][-1]["parameters"] == {"n": MAX_SIGNATURES + 4}


@pytest.mark.parametrize(
    "update",
    [
        {"op": "signature", "signature": "x"},
        {"op": "signature", "signature": {"pattern": "p"}},
        {"op": "judged", "confidence": 2.0, "bins": 10},
        {"op": "judged", "confidence": 0.5, "bins": 0},
        {"op": "other"},
    ],
)
def test_unreadable_updates_are_ignored(update: dict[str, Any]) -> None:
    assert apply_trust_update(None, update) is None


def test_judged_updates_fold_into_the_reliability_state() -> None:
    value = _fold([judged_update(0.9, right=i < 6, bins=10) for i in range(10)])

    assert value["bins"][9][:2] == [10, 6]


def test_without_the_tables_nothing_changes(make_inputs: Builder, default_policy: Policy) -> None:
    proposal, _ = make_inputs()

    assert trust_inputs(proposal, Untracked(), default_policy, seen=12) == (None, None)
    assert trust_inputs(proposal, View({}), default_policy, seen=12) == (None, None)


def test_a_near_miss_is_similar_and_names_the_nearest(
    make_inputs: Builder, default_policy: Policy
) -> None:
    known = _signatures(make_inputs, {})
    proposal, _ = make_inputs({"action": {"target": {"kind": "StatefulSet"}}})

    novelty = novelty_of(proposal, [known], default_policy, own=known, seen=12)

    assert novelty is not None
    assert (novelty.kind, novelty.distance, novelty.differs) == ("similar", 0.3, ("target_kind",))
    assert novelty.nearest is not None
    assert novelty.nearest["target_kind"] == "Deployment"


def test_untracked_history_does_not_make_a_seen_pattern_novel(
    make_inputs: Builder, default_policy: Policy
) -> None:
    """History imported before signatures were kept: the old seen == 0 rule decides."""
    other = _signatures(make_inputs, {"pattern": "tls-handshake-storm"})
    proposal, _ = make_inputs()

    assert novelty_of(proposal, [other], default_policy, own=None, seen=12) is None
    tracked = novelty_of(proposal, [other], default_policy, own=other, seen=12)
    assert tracked is not None
    assert tracked.kind == "novel"


def test_untracked_history_does_not_make_a_seen_pattern_similar_to_another(
    make_inputs: Builder, default_policy: Policy
) -> None:
    """A pattern with imported history and a near pattern the gate learned from
    outcomes: the pattern itself was seen, so it is not capped as "similar"."""
    near = _signatures(make_inputs, {"pattern": "oom-kill/stateless-deploymenx"})
    proposal, _ = make_inputs()
    assert novelty_of(proposal, [near], default_policy, own=None, seen=5) is None
    never_seen = novelty_of(proposal, [near], default_policy, own=None, seen=0)
    assert never_seen is not None
    assert never_seen.kind == "similar"


def test_the_handler_caps_a_near_miss_and_calibrates_the_confidence(
    make_inputs: Builder, default_policy: Policy
) -> None:
    proposal, _ = make_inputs({"action": {"target": {"kind": "StatefulSet"}}})
    known = _signatures(make_inputs, {})
    calibration = _fold([judged_update(0.93, right=i < 12, bins=10) for i in range(20)])
    base = {
        "history": {KEY: {"seen": 12, "successes": 12, "failures": 0}},
        "budgets": {"checkout-api": {"remaining": 0.82, "at": 0.0}},
        "verdicts": {"holmesgpt": apply_verdict(None, at=NOW, false_positive=False)},
        "requalification": {KEY: {"requalified_at": NOW.timestamp() - 86_400, "revoked": False}},
        "velocity": {},
        "freeze": {},
    }
    origin = Origin("escalation.proposals", 1, 5, NOW.timestamp(), b"checkout-api", b"{}")

    plain = handlers.decide(proposal, View(base), default_policy, origin).decision
    near = handlers.decide(
        proposal, View({**base, "signatures": {KEY: known}}), default_policy, origin
    ).decision
    doubted = handlers.decide(
        make_inputs()[0],
        View({**base, "signatures": {KEY: known}, "calibration": {"holmesgpt|llama3.1:70b":
                                                                   calibration}}),
        default_policy,
        origin,
    ).decision  # fmt: skip

    assert plain.context.novelty is None
    assert plain.level == 3  # a StatefulSet is not authorised for Level 4
    assert near.level == 2
    assert near.deciding_rule == "similarity_guard"
    assert near.context.novelty is not None
    assert near.context.novelty.kind == "similar"
    assert doubted.context.calibrated_confidence == pytest.approx(0.6)
    assert doubted.context.novelty is not None
    assert doubted.context.novelty.kind == "seen"
    assert doubted.level == 2
    assert "confidence" in doubted.triggers


names = st.sampled_from(["oom-kill/a", "oom-kill/ab", "tls-storm", "hpa-saturation", "x"])
signatures = st.builds(
    Signature,
    pattern=names,
    action_type=st.sampled_from(["rolling_restart", "scale_up"]),
    target_kind=st.sampled_from(["Deployment", "StatefulSet"]),
    namespace=st.sampled_from(["shop", "billing"]),
    environment=st.sampled_from(["production", "staging"]),
    parameters=st.sampled_from([(), (("replicas_delta", "2"),), (("replicas_delta", "3"),)]),
)


@settings(max_examples=300, deadline=None)
@given(signatures, st.lists(signatures, min_size=1, max_size=12))
def test_the_indexed_classification_is_the_reference_one(
    signature: Signature, known: list[Signature]
) -> None:
    policy = SimilarityPolicy()
    value = _fold([signature_update(s) for s in known])

    fast = _classify(signature, _index([value]), policy)
    reference = classify(signature, known, policy)

    assert fast.kind == reference.kind
    assert fast.nearest is not None
    assert reference.nearest is not None
    if reference.kind != "novel":
        assert fast.nearest.distance == pytest.approx(reference.nearest.distance)
        assert fast.nearest.differs == reference.nearest.differs
    else:
        assert fast.nearest.distance >= reference.nearest.distance


def test_calibration_errors_per_ai_system_and_model(default_policy: Policy) -> None:
    value = _fold([judged_update(0.9, right=i < 60) for i in range(100)])

    [(ai_system, model, ece, brier)] = calibration_errors(
        {"holmesgpt|gpt-4.1": value, "k8sgpt|*": None}, default_policy
    )

    assert (ai_system, model) == ("holmesgpt", "gpt-4.1")
    assert ece == pytest.approx(0.3)
    assert brier == pytest.approx(0.33)


def _outcome(**fields: Any) -> Any:
    from streams.models import Outcome  # noqa: PLC0415

    return Outcome.model_validate(
        {
            "schema_version": 1,
            "decision_id": "d-1",
            "proposal_id": "p-1",
            "pattern": "oom-kill/stateless-deployment",
            "action_type": "rolling_restart",
            "ai_system": "holmesgpt",
            "service": "checkout-api",
            "level": 4,
            "result": "success",
            "verification": "passed",
            "at": NOW.isoformat(),
            **fields,
        }
    )


def test_an_outcome_with_the_decisions_signature_teaches_both_tables() -> None:
    from streams.state import apply_update  # noqa: PLC0415

    origin = Origin("escalation.outcomes", 0, 3, NOW.timestamp(), b"k", b"{}")
    outcome = _outcome(target_kind="Deployment", namespace="shop", environment="production",
                       parameters={}, model="gpt-4.1", confidence=0.9, not_needed=True)  # fmt: skip

    updates = {u.table: u for u in handlers.on_outcome(outcome, origin).state}
    signature = apply_update(None, updates["signatures"].record())
    judged = apply_update(None, updates["calibration"].record())

    assert updates["signatures"].key == KEY
    assert signature is not None
    assert signature["known"][0]["target_kind"] == "Deployment"
    assert updates["calibration"].key == "holmesgpt|gpt-4.1"
    assert judged is not None
    assert judged["bins"][90][:2] == [1, 0]  # not needed: the confidence was wrong
    assert apply_update(judged, updates["calibration"].record()) is None  # redelivered


def test_an_outcome_without_them_teaches_neither() -> None:
    origin = Origin("escalation.outcomes", 0, 3, NOW.timestamp(), b"k", b"{}")

    tables = {u.table for u in handlers.on_outcome(_outcome(), origin).state}

    assert not {"signatures", "calibration"} & tables
