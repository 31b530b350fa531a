"""Wire models of every message the gate reads or writes (pydantic v2, frozen, versioned)."""

from streams.models.audit import AuditBody, AuditEvent, AuditKind
from streams.models.base import SCHEMA_VERSION
from streams.models.codec import canonical_json, decode, encode
from streams.models.context import Context, History, RecentAutonomous
from streams.models.decision import (
    LEVEL_NAMES,
    ROUTES,
    Condition,
    Decision,
    ExecuteCommand,
    OncallEscalation,
    OncallResolution,
    Route,
    Trigger,
)
from streams.models.messages import (
    ApprovalResponse,
    ControlCommand,
    DeadLetter,
    ErrorBudgetUpdate,
    HistoryRecord,
    Outcome,
)
from streams.models.proposal import Action, BlastRadius, Confidence, Proposal, Source, Target

#: Every message with a JSON Schema file in ``schemas/`` (file stem -> model).
MESSAGES = {
    "proposal": Proposal,
    "context": Context,
    "decision": Decision,
    "execute-command": ExecuteCommand,
    "oncall-escalation": OncallEscalation,
    "oncall-resolution": OncallResolution,
    "approval": ApprovalResponse,
    "outcome": Outcome,
    "error-budget-update": ErrorBudgetUpdate,
    "control-command": ControlCommand,
    "history-record": HistoryRecord,
    "audit-event": AuditEvent,
    "dead-letter": DeadLetter,
}

__all__ = [
    "LEVEL_NAMES",
    "MESSAGES",
    "ROUTES",
    "SCHEMA_VERSION",
    "Action",
    "ApprovalResponse",
    "AuditBody",
    "AuditEvent",
    "AuditKind",
    "BlastRadius",
    "Condition",
    "Confidence",
    "Context",
    "ControlCommand",
    "DeadLetter",
    "Decision",
    "ErrorBudgetUpdate",
    "ExecuteCommand",
    "History",
    "HistoryRecord",
    "OncallEscalation",
    "OncallResolution",
    "Outcome",
    "Proposal",
    "RecentAutonomous",
    "Route",
    "Source",
    "Target",
    "Trigger",
    "canonical_json",
    "decode",
    "encode",
]
