"""Input messages other than proposals: approvals, outcomes, budgets, control, history."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from streams.models.base import Bool, Fraction, Id, Instant, Level, StrictStr, Text, WireModel


class ApprovalResponse(WireModel):
    """A human's answer on ``approvals``: approve, reject or abort, signed.

    ``signature`` is the hex HMAC-SHA256 of the canonical JSON of every other field
    with the approval channel's secret (held by the gate's settings, never sent).
    """

    schema_version: Literal[1]
    kind: Literal["approve", "reject", "abort"]
    decision_id: Id
    user: Id
    channel: Id = "cli"
    change_record: Id | None = None
    false_positive: Bool = False
    reason: Text = ""
    nonce: Annotated[StrictStr, Field(min_length=8, max_length=128)]
    issued_at: Instant
    expires_at: Instant
    signature: Annotated[StrictStr, Field(min_length=0, max_length=128)] = ""


class Signature(WireModel):
    """An Ed25519 signature over the canonical JSON of the message without it (streams/keys.py)."""

    alg: Literal["ed25519"]
    key_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    sig: Annotated[StrictStr, Field(min_length=1, max_length=128)]


class Outcome(WireModel):
    """An executor's report after running (and verifying) an action.

    ``signature`` is the executor's own Ed25519 signature (``streams.keys``), so the
    gate can tell an executor's outcome from anything else written to ``outcomes``.
    """

    schema_version: Literal[1]
    decision_id: Id
    proposal_id: Id
    pattern: Id
    action_type: Id
    ai_system: Id
    service: Id
    level: Level
    result: Literal["success", "failure"]
    verification: Literal["passed", "failed", "skipped"] = "skipped"
    suboptimal: Bool = False
    not_needed: Bool = False
    at: Instant
    executor: Id | None = None
    duration_seconds: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    detail: Text = ""
    signature: Signature | None = None

    @property
    def successful(self) -> bool:
        """A success whose verification did not fail and that was not suboptimal."""
        return self.result == "success" and self.verification != "failed" and not self.suboptimal


class ErrorBudgetUpdate(WireModel):
    """Per-service SLO state on ``error-budgets``."""

    schema_version: Literal[1]
    service: Id
    remaining: Fraction
    slo: Id | None = None
    at: Instant


class ControlCommand(WireModel):
    """An operator command on ``control``."""

    schema_version: Literal[1]
    command: Literal["freeze", "unfreeze", "requalify", "revoke", "reload_policy"]
    user: Id
    service: Id | None = None
    pattern: Id | None = None
    action_type: Id | None = None
    policy_yaml: Annotated[StrictStr, Field(max_length=200_000)] | None = None
    reason: Text = ""
    at: Instant

    @model_validator(mode="after")
    def _arguments(self) -> ControlCommand:
        if self.command in {"requalify", "revoke"} and not (self.pattern and self.action_type):
            msg = f"{self.command} needs pattern and action_type"
            raise ValueError(msg)
        if self.command == "reload_policy" and not self.policy_yaml:
            msg = "reload_policy needs policy_yaml"
            raise ValueError(msg)
        return self


class HistoryRecord(WireModel):
    """One past incident for ``escalation history import``."""

    schema_version: Literal[1] = 1
    pattern: Id
    action_type: Id
    outcome: Literal["success", "failure"]
    ai_system: Id
    verdict: Literal["true_positive", "false_positive", "not_needed"] = "true_positive"
    service: Id | None = None
    level: Level | None = None
    at: Instant


class DeadLetter(WireModel):
    """Rejected input on ``dlq``: why, and the original bytes with where they came from."""

    schema_version: Literal[1] = 1
    reason: Literal["not_json", "schema", "too_large", "processing"]
    error: Text
    topic: StrictStr
    partition: int
    offset: int
    key_b64: StrictStr | None = None
    value_b64: StrictStr
    received_at: Instant
