"""PURE: input the gate cannot use goes to ``dlq`` with the reason and its original bytes."""

from __future__ import annotations

import base64

from streams.errors import InputError
from streams.handlers.effects import AuditDraft, Count, Effects, Origin, Send
from streams.models import DeadLetter, encode


def dead_letter(origin: Origin, error: Exception, logical_topic: str) -> Effects:
    """The dead letter of one input record, audited and counted.

    ``error`` is the ``InputError`` that refused it (its kind is the reason), or any
    other exception raised while handling it (reason ``processing``).
    """
    reason = error.kind if isinstance(error, InputError) else "processing"
    letter = DeadLetter.model_construct(
        schema_version=1,
        reason=reason,
        error=str(error)[:4000],
        topic=origin.topic,
        partition=origin.partition,
        offset=origin.offset,
        key_b64=base64.b64encode(origin.key).decode() if origin.key else None,
        value_b64=base64.b64encode(origin.value).decode(),
        received_at=origin.instant,
    )
    audit = AuditDraft(
        "dead_letter",
        event_id=f"dlq:{origin.topic}:{origin.partition}:{origin.offset}",
        at=letter.received_at,
        actor="escalation-gate",
        data={
            "reason": reason,
            "error": letter.error,
            "topic": origin.topic,
            "partition": origin.partition,
            "offset": origin.offset,
        },
        fields={"reason": reason},
    )
    return Effects(
        sends=(Send("dlq", encode(letter), origin.key),),
        audits=(audit,),
        metrics=(Count("dead_letters", (reason, logical_topic)),),
    )
