"""PURE: a page to on-call, with its audit event; the end of a decision's pages."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from streams.handlers.effects import AuditDraft, Count, Effects, Send
from streams.models import OncallEscalation, OncallResolution, encode
from streams.state.records import PendingEntry

PageReason = Literal["approval_timeout", "verification_failed"]


def page(
    *,
    reason: PageReason,
    escalation_id: str,
    decision_id: str,
    proposal_id: str,
    service: str,
    pattern: str,
    action_type: str,
    summary: str,
    asked: tuple[str, ...],
    number: int,
    at: dt.datetime,
    target: str | None = None,
    level: int | None = None,
) -> Effects:
    """An escalation on ``oncall`` (keyed by service), audited and counted.

    ``target`` is the step of the policy's on-call chain it pages (``None``: the
    pager's default target).
    """
    escalation = OncallEscalation.model_construct(
        schema_version=1,
        escalation_id=escalation_id,
        decision_id=decision_id,
        proposal_id=proposal_id,
        reason=reason,
        escalation_number=number,
        target=target,
        level=level,
        asked=asked,
        service=service,
        pattern=pattern,
        action_type=action_type,
        summary=summary[:4096],
        at=at,
    )
    audit = AuditDraft(
        "timeout_escalation" if reason == "approval_timeout" else "verification_failed",
        event_id=escalation_id,
        at=at,
        actor="escalation-gate",
        proposal_id=proposal_id,
        decision_id=decision_id,
        data={"escalation": escalation.model_dump(mode="json")},
        fields={"service": service, "pattern": pattern, "reason": reason},
    )
    return Effects(
        sends=(Send("oncall", encode(escalation), service.encode()),),
        audits=(audit,),
        metrics=(Count("oncall", (reason,)),),
    )


def resolve(
    entry: PendingEntry, *, answer: Literal["approve", "reject", "abort"], by: str, at: dt.datetime
) -> Effects:
    """After an escalated approval is answered: an ``OncallResolution`` on ``oncall``,
    keyed by service like the escalations it ends (so it follows them on their
    partition), for the pager to resolve every alert and incident of the decision."""
    resolution = OncallResolution(
        resolution_id=f"{entry['decision_id']}:resolved",
        decision_id=entry["decision_id"],
        proposal_id=entry["proposal_id"],
        service=entry["service"],
        escalations=entry["escalations"],
        answer=answer,
        by=by,
        at=at,
    )
    return Effects(sends=(Send("oncall", encode(resolution), entry["service"].encode()),))
