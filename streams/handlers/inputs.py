"""PURE: outcomes, error budgets and operator commands in, state updates and audit out."""

from __future__ import annotations

from streams.handlers.effects import AuditDraft, Effects, Origin
from streams.handlers.oncall import page
from streams.models import ErrorBudgetUpdate, Outcome
from streams.policy.model import Oncall
from streams.state.records import (
    StateUpdate,
    budget_update,
    judged_update,
    outcome_update,
    requalification_update,
    signature_update,
    verdict_update,
)


def on_outcome(outcome: Outcome, origin: Origin, oncall: Oncall | None = None) -> Effects:
    """Fold an executor's report into history, AI verdicts and re-qualification (SPEC 6).

    A failed verification pages on-call; an autonomous action (Level 3 or 4) that was
    not a clean success revokes its automation's re-qualification.
    """
    at = outcome.at.timestamp()
    state: list[StateUpdate] = [
        outcome_update(
            outcome.pattern,
            outcome.action_type,
            success=outcome.successful,
            update_id=origin.update_id("history"),
        ),
        verdict_update(
            outcome.ai_system,
            false_positive=outcome.not_needed,
            at=at,
            update_id=origin.update_id("verdicts"),
        ),
    ]
    effects = Effects()
    if outcome.verification == "failed":
        effects += page(
            reason="verification_failed",
            escalation_id=f"{outcome.decision_id}:verification",
            decision_id=outcome.decision_id,
            proposal_id=outcome.proposal_id,
            service=outcome.service,
            pattern=outcome.pattern,
            action_type=outcome.action_type,
            summary=f"verification failed after {outcome.action_type} on {outcome.service}",
            asked=(),
            number=1,
            at=outcome.at,
            target=oncall.verification_target if oncall is not None else None,
            level=outcome.level,
        )
    state += _trust_updates(outcome, origin)
    if outcome.level >= 3 and not outcome.successful:
        state.append(
            requalification_update(
                outcome.pattern,
                outcome.action_type,
                op="revoke",
                user="escalation-gate",
                at=at,
                reason=f"suboptimal outcome of {outcome.decision_id}",
            )
        )
    audit = AuditDraft(
        "outcome",
        event_id=f"{outcome.decision_id}:outcome:{origin.offset}",
        at=outcome.at,
        actor=f"executor:{outcome.service}",
        proposal_id=outcome.proposal_id,
        decision_id=outcome.decision_id,
        data={"outcome": outcome.model_dump(mode="json")},
        fields={
            "level": str(outcome.level),
            "service": outcome.service,
            "ai_system": outcome.ai_system,
            "pattern": outcome.pattern,
            "result": outcome.result,
            "verification": outcome.verification,
        },
    )
    # The state updates come first, as they did when each was sent on the spot.
    return Effects(state=tuple(state)) + effects + Effects(audits=(audit,))


def _trust_updates(outcome: Outcome, origin: Origin) -> list[StateUpdate]:
    """What the outcome teaches (streams/state/trust.py): its signature is known, and its
    AI system's reported confidence was right (a clean success) or wrong. Only when the
    executor copied the decision's signature and confidence into the outcome."""
    out: list[StateUpdate] = []
    if outcome.target_kind and outcome.namespace and outcome.environment:
        signature = {
            "pattern": outcome.pattern,
            "action_type": outcome.action_type,
            "target_kind": outcome.target_kind,
            "namespace": outcome.namespace,
            "environment": outcome.environment,
            "parameters": outcome.parameters or {},
        }
        out.append(
            signature_update(
                outcome.pattern,
                outcome.action_type,
                signature,
                update_id=origin.update_id("signatures"),
            )
        )
    if outcome.confidence is not None:
        out.append(
            judged_update(
                outcome.ai_system,
                outcome.model,
                confidence=outcome.confidence,
                right=outcome.successful and not outcome.not_needed,
                update_id=origin.update_id("calibration"),
            )
        )
    return out


def on_budget(update: ErrorBudgetUpdate) -> Effects:
    """A service's error budget from the SLO source."""
    return Effects(
        state=(budget_update(update.service, remaining=update.remaining, at=update.at.timestamp()),)
    )
