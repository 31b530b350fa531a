"""PURE: outcomes, error budgets and operator commands in, state updates and audit out."""

from __future__ import annotations

from typing import Any

from streams.errors import PolicyError
from streams.handlers.effects import AuditDraft, Count, Effects, Origin
from streams.handlers.oncall import page
from streams.models import AuditKind, ControlCommand, ErrorBudgetUpdate, Outcome
from streams.policy import parse_policy
from streams.policy.model import Oncall
from streams.state.records import (
    StateUpdate,
    budget_update,
    freeze_update,
    outcome_update,
    policy_update,
    requalification_update,
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


def on_budget(update: ErrorBudgetUpdate) -> Effects:
    """A service's error budget from the SLO source."""
    return Effects(
        state=(budget_update(update.service, remaining=update.remaining, at=update.at.timestamp()),)
    )


def on_control(command: ControlCommand, origin: Origin) -> Effects:
    """Freeze, unfreeze, re-qualify, revoke, or reload the policy; audited either way.

    A policy that does not parse and validate is refused (audited, counted) and never
    stored: the policy in force stays.
    """
    at = command.at.timestamp()
    data: dict[str, Any] = {"command": command.model_dump(mode="json", exclude={"policy_yaml"})}
    state: tuple[StateUpdate, ...] = ()
    counts: tuple[Count, ...] = ()
    kind: AuditKind
    # == rather than `in`: mypy narrows the Literal of the command only this way.
    if command.command == "freeze" or command.command == "unfreeze":  # noqa: PLR1714
        kind = command.command
        state = (
            freeze_update(command.service or "*", op=command.command, user=command.user, at=at),
        )
    elif command.command == "requalify" or command.command == "revoke":  # noqa: PLR1714
        assert command.pattern is not None  # noqa: S101 - the model guarantees it
        assert command.action_type is not None  # noqa: S101
        kind = "requalification" if command.command == "requalify" else "requalification_revoked"
        state = (
            requalification_update(
                command.pattern,
                command.action_type,
                op=command.command,
                user=command.user,
                at=at,
                reason=command.reason,
            ),
        )
    else:
        text = command.policy_yaml or ""
        try:
            policy = parse_policy(text, source=f"control:{command.user}")
        except Exception as exc:  # any failure to parse is a rejection, never a crash
            kind = "policy_rejected"
            data["problems"] = (
                exc.problems if isinstance(exc, PolicyError) else [f"{type(exc).__name__}"]
            )
            counts = (Count("policy_rejected"),)
        else:
            kind = "policy_load"
            data.update(version=policy.version, digest=policy.digest)
            state = (policy_update(yaml=text, digest=policy.digest, by=command.user),)
    audit = AuditDraft(
        kind,
        event_id=f"control:{origin.partition}:{origin.offset}",
        at=command.at,
        actor=command.user,
        data=data,
        fields={"service": command.service or "*", "command": command.command},
    )
    return Effects(audits=(audit,), state=state, metrics=counts)
