"""PURE: state changes only from who may send them (outcomes: executors; error budgets:
SLO sources), checked against the keyring; anything else is refused and audited."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from streams.handlers.effects import AuditDraft, Count, Effects, Origin
from streams.handlers.inputs import on_budget, on_outcome
from streams.models import ErrorBudgetUpdate, Outcome
from streams.policy.keyring import Keyring, without
from streams.policy.model import Oncall


def refused_input(
    origin: Origin, topic: str, reason: str, *, actor: str, data: dict[str, Any]
) -> Effects:
    """An input whose signature or signer the keyring refused: audited, counted, no effect."""
    audit = AuditDraft(
        "input_refused",
        event_id=f"refused:{origin.topic}:{origin.partition}:{origin.offset}",
        at=origin.instant,
        actor=actor,
        data={"topic": topic, "reason": reason, **data},
        fields={"topic": topic, "reason": reason},
    )
    return Effects(audits=(audit,), metrics=(Count("inputs_refused", (topic, reason)),))


def _signed_by(
    body: Mapping[str, Any], keyring: Keyring, kind: Literal["executor", "slo_source"]
) -> str | None:
    verified = keyring.authorize_source(without(body, "signature"), body.get("signature"), kind)
    return verified if isinstance(verified, str) else None


def on_signed_outcome(
    outcome: Outcome,
    body: Mapping[str, Any],
    origin: Origin,
    *,
    keyring: Keyring,
    oncall: Oncall | None = None,
) -> Effects:
    """An outcome changes history, verdicts and re-qualification only when an executor
    of the keyring signed it."""
    reason = _signed_by(body, keyring, "executor")
    if reason is not None:
        return refused_input(
            origin,
            "outcomes",
            reason,
            actor=outcome.executor or f"executor:{outcome.service}",
            data={"decision_id": outcome.decision_id, "service": outcome.service},
        )
    return on_outcome(outcome, origin, oncall)


def on_signed_budget(
    update: ErrorBudgetUpdate, body: Mapping[str, Any], origin: Origin, *, keyring: Keyring
) -> Effects:
    """An error budget counts only when an SLO source of the keyring signed it."""
    reason = _signed_by(body, keyring, "slo_source")
    if reason is not None:
        return refused_input(
            origin,
            "error-budgets",
            reason,
            actor=update.source or "unknown",
            data={"service": update.service},
        )
    return on_budget(update)
