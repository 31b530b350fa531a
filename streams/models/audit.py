"""Audit events: a Splunk HTTP Event Collector envelope around a hash-chained body."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue

from streams.models.base import Count, Id, Instant, StrictFloat, StrictStr, WireModel

AuditKind = Literal[
    "policy_load",
    "policy_rejected",
    "proposal_received",
    "decision",
    # Written by earlier versions (the request is now part of a Level 2 decision's
    # event, ``data.approval``); kept so that their trails still decode and verify.
    "approval_requested",
    "approval_accepted",
    "approval_recorded",  # one of several approvals a quorum needs (the decision stays open)
    "rejection",
    "answer_refused",
    "execute_command",
    "abort",
    "timeout_escalation",
    "outcome",
    "verification_failed",
    "requalification",
    "requalification_revoked",
    "freeze",
    "unfreeze",
    "dead_letter",
    # A signed list of chain heads (streams/audit/checkpoint.py): what verify checks
    # the trail against, so an edit with every later hash recomputed is still caught.
    "checkpoint",
    # A signed command or input whose signature or signer the keyring refused.
    "command_refused",
    "input_refused",
    "history_import",
    # A proposal on a partition that is not its service's, re-produced to the right one.
    "proposal_repartitioned",
]

Sha256Hex = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class AuditBody(WireModel):
    """What happened, linked to the previous event of the same chain by its hash.

    ``hash`` is the sha256 of the canonical JSON of this body (its JSON form, sorted
    keys, no whitespace) with this field left out: it covers every other field, and
    nothing of the envelope, so the body verifies on its own (as Splunk's ``_raw``).
    ``prev_hash`` is the previous event's ``hash`` (64 zeros for the first event of
    a chain). ``event_id`` is deterministic, so a redelivered input produces an event
    with the same id.
    """

    schema_version: Literal[1] = 1
    kind: AuditKind
    event_id: Id
    chain: Id
    seq: Count
    prev_hash: Sha256Hex
    hash: Sha256Hex
    at: Instant
    proposal_id: Id | None = None
    decision_id: Id | None = None
    actor: Id
    data: dict[str, JsonValue] = Field(default_factory=dict)


class AuditEvent(WireModel):
    """One record on ``audit``: the HEC envelope Splunk Connect for Kafka forwards as is.

    ``time``, ``host``, ``source``, ``sourcetype``, ``index`` and ``fields`` are
    metadata derived from the body for Splunk (``time`` is ``event.at``; ``fields``
    are indexed copies of what people search by). They are not covered by the
    hash: the chain protects the body, ``event``.
    """

    time: Annotated[StrictFloat, Field(ge=0, allow_inf_nan=False)]
    host: Id
    source: Id
    sourcetype: Id
    index: Id
    event: AuditBody
    fields: dict[str, StrictStr] = Field(default_factory=dict)
