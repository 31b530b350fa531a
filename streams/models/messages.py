"""Input messages other than proposals: approvals, outcomes, budgets, control, history."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue, model_validator

from streams.models.base import Bool, Fraction, Id, Instant, Level, StrictStr, Text, WireModel


class Signature(WireModel):
    """An Ed25519 signature over the canonical JSON of the message without it (streams/keys.py)."""

    alg: Literal["ed25519"]
    key_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    sig: Annotated[StrictStr, Field(min_length=1, max_length=128)]


class ApprovalResponse(WireModel):
    """A human's answer on ``approvals``: approve, reject or abort, signed.

    ``signature`` is the Ed25519 signature (streams/keys.py) of the person named in
    ``user``, or of a machine channel of the keyring (Slack, the console) that verified
    that person; it covers the canonical JSON of every other field.
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
    signature: Signature | None = None


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
    #: The rest of the proposal's signature and what its AI system reported, copied
    #: from the decision: the gate learns known signatures and calibrates confidence
    #: from them (streams/state/trust.py). Absent: the outcome teaches neither.
    target_kind: Id | None = None
    namespace: Id | None = None
    environment: Id | None = None
    parameters: dict[str, JsonValue] | None = None
    model: Id | None = None
    confidence: Fraction | None = None
    signature: Signature | None = None

    @property
    def successful(self) -> bool:
        """A success whose verification did not fail and that was not suboptimal."""
        return self.result == "success" and self.verification != "failed" and not self.suboptimal


class ErrorBudgetUpdate(WireModel):
    """Per-service SLO state on ``error-budgets``, signed by an SLO source of the keyring."""

    schema_version: Literal[1]
    service: Id
    remaining: Fraction
    slo: Id | None = None
    at: Instant
    source: Id | None = None
    signature: Signature | None = None


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


MAX_IMPORT_RECORDS = 500  # past incidents per import_history command


class ControlCommand(WireModel):
    """An operator command on ``control``, signed by the people who give it.

    ``signatures`` are Ed25519 signatures (streams/keys.py) over the canonical JSON of
    every other field: one per person; a policy that grants more autonomy needs two.
    """

    schema_version: Literal[1]
    command: Literal["freeze", "unfreeze", "requalify", "revoke", "reload_policy", "import_history"]
    user: Id
    service: Id | None = None
    pattern: Id | None = None
    action_type: Id | None = None
    policy_yaml: Annotated[StrictStr, Field(max_length=200_000)] | None = None
    records: Annotated[tuple[HistoryRecord, ...], Field(max_length=MAX_IMPORT_RECORDS)] = ()
    reason: Text = ""
    at: Instant
    signatures: Annotated[tuple[Signature, ...], Field(max_length=8)] = ()

    @model_validator(mode="after")
    def _arguments(self) -> ControlCommand:
        if self.command in {"requalify", "revoke"} and not (self.pattern and self.action_type):
            msg = f"{self.command} needs pattern and action_type"
            raise ValueError(msg)
        if self.command == "reload_policy" and not self.policy_yaml:
            msg = "reload_policy needs policy_yaml"
            raise ValueError(msg)
        if self.command == "import_history" and not self.records:
            msg = "import_history needs records"
            raise ValueError(msg)
        return self


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
