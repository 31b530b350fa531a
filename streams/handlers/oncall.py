"""PURE: a page to on-call, with its audit event."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from streams.handlers.effects import AuditDraft, Count, Effects, Send
from streams.models import OncallEscalation, encode

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
) -> Effects:
    """An escalation on ``oncall`` (keyed by service), audited and counted."""
    escalation = OncallEscalation.model_construct(
        schema_version=1,
        escalation_id=escalation_id,
        decision_id=decision_id,
        proposal_id=proposal_id,
        reason=reason,
        escalation_number=number,
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
