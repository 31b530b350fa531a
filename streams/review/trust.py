# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""What the similarity and calibration rules would have changed over a recorded stream.

Pure over an iterable of audit records, in stream order (like ``replay``): decisions
are remembered by id; an outcome of a decision makes its signature known (the gate
has history for it) and judges its AI system's reported confidence (a clean success
is right; a failure, a suboptimal or not-needed outcome is wrong); a rejection
marked false-positive is wrong too. Each decision is checked against what was known
*before* it:

- **similarity** (``streams/policy/similarity.py``): a *similar* proposal is capped
  at Level 2; a proposal with no known signature near it is novel (Level 1), once
  the stream has signatures for its (pattern, action type), or when it was never
  seen at all;
- **calibration** (``streams/policy/calibration.py``): the composite confidence
  becomes ``min(model, heuristic, calibrated)`` and the decision is re-evaluated.

Both rules only ever lower a level. The report lists every decision whose level
would change, with the reason (the nearest known signature, what differs and the
distance; or the reported and calibrated confidence), and the final reliability
table of every AI system and model (``escalation calibration``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streams.errors import InputError
from streams.policy.calibration import (
    Bin,
    brier_score,
    calibrated,
    calibration_key,
    composite,
    expected_calibration_error,
    record,
    reliability,
)
from streams.policy.evaluate import evaluate
from streams.policy.similarity import Novelty, Signature, classify
from streams.review.replay import Record, RecordValue, _decision_of, _decode_event

if TYPE_CHECKING:
    from streams.models.decision import Decision
    from streams.policy.model import Policy


@dataclass(frozen=True, slots=True)
class TrustChange:
    """One decision the similarity or calibration rule would have decided lower."""

    decision_id: str
    proposal_id: str
    ai_system: str
    pattern: str
    action_type: str
    old_level: int
    new_level: int
    rules: tuple[str, ...]
    reported: float
    calibrated: float | None
    novelty: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "proposal_id": self.proposal_id,
            "ai_system": self.ai_system,
            "pattern": self.pattern,
            "action_type": self.action_type,
            "old_level": self.old_level,
            "new_level": self.new_level,
            "rules": list(self.rules),
            "reported_confidence": self.reported,
            "calibrated_confidence": self.calibrated,
            "novelty": self.novelty,
        }


@dataclass(slots=True)
class TrustReport:
    """Decisions seen, what each rule would have changed, and the reliability tables."""

    policy_version: str
    bins: int = 10
    records: int = 0
    decisions: int = 0
    judged: int = 0
    malformed: int = 0
    by_rule: dict[str, int] = field(default_factory=lambda: {"similarity": 0, "calibration": 0})
    changes: list[TrustChange] = field(default_factory=list)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tables(self, policy: Policy) -> dict[str, list[Bin]]:
        """The reliability table of every AI system and model, by calibration key."""
        c = policy.calibration
        return {
            key: reliability(state, bins=c.bins, min_samples=c.min_samples)
            for key, state in sorted(self.calibration.items())
        }

    def as_dict(self, policy: Policy) -> dict[str, Any]:
        c = policy.calibration
        return {
            "policy_version": self.policy_version,
            "records": self.records,
            "decisions": self.decisions,
            "judged": self.judged,
            "malformed": self.malformed,
            "changed": len(self.changes),
            "by_rule": dict(self.by_rule),
            "changes": [ch.as_dict() for ch in self.changes],
            "calibration": {
                key: {
                    "ece": expected_calibration_error(state, bins=c.bins),
                    "brier": brier_score(state, bins=c.bins),
                    "bins": [
                        b.as_dict()
                        for b in reliability(state, bins=c.bins, min_samples=c.min_samples)
                    ],
                }
                for key, state in sorted(self.calibration.items())
            },
        }

    def to_json(self, policy: Policy) -> str:
        return orjson.dumps(self.as_dict(policy)).decode()


@dataclass(slots=True)
class _Known:
    signatures: set[Signature] = field(default_factory=set)
    keys: set[tuple[str, str]] = field(default_factory=set)

    def add(self, signature: Signature) -> None:
        self.signatures.add(signature)
        self.keys.add((signature.pattern, signature.action_type))


def novelty_cap(novelty: Novelty, *, seen: int, tracked: bool) -> int | None:
    """The level the similarity rule allows at most (``None``: no cap).

    ``tracked``: the gate has signatures for this (pattern, action type), so a
    signature with nothing near it is novel although the pattern was seen (state
    from before signatures were kept, such as ``history import``, is not).
    """
    if novelty.kind == "similar":
        return 2
    if novelty.kind == "novel" and (tracked or seen == 0):
        return 1
    return None


def _recalibrated(decision: Decision, policy: Policy, value: float | None, base: int) -> int:
    proposal = decision.proposal
    if value is None or value >= proposal.confidence.composite:
        return base
    lowered = composite(proposal.confidence.model, proposal.confidence.heuristic, value)
    honest = proposal.model_copy(
        update={"confidence": proposal.confidence.model_copy(update={"model": lowered})}
    )
    return evaluate(honest, decision.context, policy).level


def fold_trust(records: Iterable[Record | RecordValue], policy: Policy) -> TrustReport:
    """Walk the recorded stream and report what the two rules would have changed."""
    report = TrustReport(policy_version=policy.version, bins=policy.calibration.bins)
    known = _Known()
    decisions: dict[str, Decision] = {}
    for item in records:
        report.records += 1
        value = item.value if isinstance(item, Record) else item
        try:
            event = _decode_event(value)
            kind = event.event.kind
            if kind == "decision":
                decision = _decision_of(event)
            elif kind in {"outcome", "rejection"}:
                _judge(event.event.decision_id, event.event.data, kind, decisions, known, report)
                continue
            else:
                continue
        except InputError:
            report.malformed += 1
            continue
        if decision.decision_id in decisions:
            continue
        decisions[decision.decision_id] = decision
        report.decisions += 1
        _check(decision, policy, known, report)
    return report


def _judge(  # noqa: PLR0917 - one call site, the fold's state passed as it is
    decision_id: str | None,
    data: dict[str, Any],
    kind: str,
    decisions: dict[str, Decision],
    known: _Known,
    report: TrustReport,
) -> None:
    decision = decisions.get(str(decision_id))
    if decision is None:
        return
    if kind == "outcome":
        # The worker records the Outcome under data.outcome; older trails had it flat.
        nested = data.get("outcome")
        outcome = nested if isinstance(nested, dict) else data
        known.add(Signature.of(decision.proposal))
        right = (
            outcome.get("result") == "success"
            and outcome.get("verification") != "failed"
            and not outcome.get("suboptimal")
            and not outcome.get("not_needed")
        )
    else:
        if not data.get("false_positive"):
            return
        right = False
    source = decision.proposal.source
    key = calibration_key(source.ai_system, source.model)
    report.calibration[key] = record(
        report.calibration.get(key),
        confidence=decision.proposal.confidence.model,
        right=right,
        bins=report.bins,
    )
    report.judged += 1


def _check(decision: Decision, policy: Policy, known: _Known, report: TrustReport) -> None:
    proposal = decision.proposal
    signature = Signature.of(proposal)
    novelty = classify(signature, known.signatures, policy.similarity)
    cap = novelty_cap(
        novelty,
        seen=decision.context.history.seen,
        tracked=(signature.pattern, signature.action_type) in known.keys,
    )
    c = policy.calibration
    key = calibration_key(proposal.source.ai_system, proposal.source.model)
    value = calibrated(
        report.calibration.get(key),
        proposal.confidence.model,
        bins=c.bins,
        min_samples=c.min_samples,
    )
    # The level under this policy without the two rules: what they change is theirs.
    base = evaluate(proposal, decision.context, policy).level
    by_calibration = _recalibrated(decision, policy, value, base)
    by_similarity = base if cap is None else min(base, cap)
    new_level = min(by_calibration, by_similarity)
    if new_level >= base:
        return
    rules = tuple(
        name
        for name, level in (("similarity", by_similarity), ("calibration", by_calibration))
        if level < base
    )
    for name in rules:
        report.by_rule[name] += 1
    report.changes.append(
        TrustChange(
            decision_id=decision.decision_id,
            proposal_id=decision.proposal_id,
            ai_system=proposal.source.ai_system,
            pattern=proposal.pattern,
            action_type=proposal.action.type,
            old_level=base,
            new_level=new_level,
            rules=rules,
            reported=proposal.confidence.composite,
            calibrated=value,
            novelty=novelty.as_dict() if "similarity" in rules else None,
        )
    )
