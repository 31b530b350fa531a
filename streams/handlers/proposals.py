"""PURE: one proposal in, its decision and every consequence out (SPEC sections 4-6)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from streams.handlers.effects import AuditDraft, Count, Effects, Origin, Send, StateView
from streams.models import Context, Decision, Proposal
from streams.policy import Policy, decision_id_for, evaluate
from streams.state import build_context, lifecycle
from streams.state.records import StateUpdate, history_key, lifecycle_record, velocity_update
from streams.state.trust import trust_inputs

REVIEW_CONDITION = "review_overdue"


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision, what it causes, and whether its policy was past its review date."""

    decision: Decision
    effects: Effects
    policy_overdue: bool


def context_for(
    proposal: Proposal,
    view: StateView,
    policy: Policy,
    origin: Origin,
    decision_id: str,
    *,
    now: dt.datetime | None = None,
) -> Context:
    """The evaluator's context for ``proposal`` from the folded state (SPEC 4).

    ``now`` is ``origin.instant``, for a caller that has it already.
    """
    service = proposal.action.target.service
    hkey = history_key(proposal.pattern, proposal.action.type)
    context = build_context(
        now=origin.instant if now is None else now,
        decision_id=decision_id,
        history=view.get("history", hkey),
        budget=view.get("budgets", service),
        verdicts=view.get("verdicts", proposal.source.ai_system),
        requalification=view.get("requalification", hkey),
        velocity_service=view.get("velocity", service),
        velocity_fleet=_fleet(view),
        freeze={"*": view.get("freeze", "*"), service: view.get("freeze", service)},
        velocity_window_seconds=policy.velocity.window_seconds,
        offset=origin.offset,
    )
    # Near-miss novelty and calibrated confidence (streams/state/trust.py): both None
    # while the state does not hold their tables, and the context is unchanged.
    novelty, calibrated = trust_inputs(proposal, view, policy, seen=context.history.seen)
    if novelty is None and calibrated is None:
        return context
    return context.model_copy(update={"novelty": novelty, "calibrated_confidence": calibrated})


def _fleet(view: StateView) -> Any:
    """The mirror's fleet-wide velocity index (streams/state/fleet.py) where it has
    one, else every ``velocity`` value (the same count, by a scan)."""
    fleet = getattr(view, "fleet", None)
    return fleet if fleet is not None else view.values("velocity")


_NOT_CONDITIONS = {"conditions"}


def _decision_json(decision: Decision) -> dict[str, Any]:
    """``streams.models.decision.decision_json(decision)``, without copying the conditions.

    The same JSON value: ``evaluate`` builds every condition as a fresh dict of JSON
    values for this decision alone, and nothing downstream writes to them (the
    decision topic, the audit event and the lifecycle entry only read and serialise
    them), so the JSON form shares them with the decision instead of copying thirty
    dicts per proposal.
    """
    out = decision.model_dump(mode="json", exclude=_NOT_CONDITIONS)
    out["conditions"] = list(decision.conditions)
    return out


def _overdue(decision: Decision) -> bool:
    # The evaluator judged the review date once; its condition is the last row.
    for condition in reversed(decision.conditions):
        if condition["name"] == REVIEW_CONDITION:
            return bool(condition["holds"])
    return False


def decide(proposal: Proposal, view: StateView, policy: Policy, origin: Origin) -> Decided:
    """Enrich, evaluate and route one proposal; audit it; open its lifecycle entry."""
    now = origin.instant
    service = proposal.action.target.service
    decision_id = decision_id_for(proposal)
    context = context_for(proposal, view, policy, origin, decision_id, now=now)
    decision = evaluate(proposal, context, policy, decision_id=decision_id)
    # Serialised once: the decision topic, the audit event and the lifecycle share it.
    decision_json = _decision_json(decision)
    ai_system = proposal.source.ai_system
    proposal_fields = {
        "service": service,
        "ai_system": ai_system,
        "pattern": proposal.pattern,
        "action_type": proposal.action.type,
    }
    fields = {"level": str(decision.level), "route": decision.route, **proposal_fields}
    received = AuditDraft(
        "proposal_received",
        event_id=f"{decision_id}:received",
        at=now,
        actor=ai_system,
        proposal_id=proposal.proposal_id,
        decision_id=decision_id,
        data={"proposal": decision_json["proposal"]},
        fields=proposal_fields,
    )
    sends = [Send(f"decisions.{decision.route}", None, service.encode(), body=decision_json)]
    audit_data: dict[str, Any] = {"decision": decision_json}
    if decision.level in (2, 3):
        # Only the pending entry travels (about 0.5 KB instead of the 5 KB decision).
        entry = lifecycle.open_entry(decision_json, policy)
        sends.append(Send("lifecycle", lifecycle_record("open", entry), decision_id.encode()))
        if decision.level == 2:
            # The approval request is part of the decision's event: who is asked,
            # until when, and whether a change record is required.
            audit_data["approval"] = {
                "asked": entry["asked"],
                "timeout_at": decision_json["approval_timeout_at"],
                "change_record_required": entry["change_record_required"],
            }
    state: tuple[StateUpdate, ...] = ()
    if decision.level >= 3:
        state = (
            velocity_update(
                service,
                decision_id=decision_id,
                at=now.timestamp(),
                offset=origin.offset,
                window_seconds=policy.velocity.window_seconds,
            ),
        )
    decided = AuditDraft(
        "decision",
        event_id=f"{decision_id}:decision",
        at=now,
        actor="escalation-gate",
        proposal_id=proposal.proposal_id,
        decision_id=decision_id,
        data=audit_data,
        fields=fields,
    )
    counts = (
        Count("decisions", (str(decision.level), decision.route)),
        *(Count("triggers", (trigger,)) for trigger in decision.triggers),
    )
    effects = Effects(sends=tuple(sends), audits=(received, decided), state=state, metrics=counts)
    return Decided(decision, effects, _overdue(decision))
