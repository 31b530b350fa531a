"""One valid message of every wire schema, shared by the model and fuzz tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
AT = "2026-11-28T10:00:05Z"
HASH = "ab" * 32


def _fixture(name: str) -> dict[str, Any]:
    value = orjson.loads((FIXTURES / name).read_bytes())
    assert isinstance(value, dict)
    return value


PROPOSAL = _fixture("proposal.json")
CONTEXT = _fixture("context.json")

#: One valid message per schema (the decision is added from evaluate(), below).
SAMPLES: dict[str, dict[str, Any]] = {
    "proposal": PROPOSAL,
    "context": CONTEXT,
    "execute-command": {
        "type": "execute",
        "schema_version": 1,
        "command_id": "c-1",
        "decision_id": "d-1",
        "proposal_id": "p-000123",
        "level": 2,
        "by": "alice",
        "change_record": "CHG-1042",
        "issued_at": AT,
        "service": "checkout-api",
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
    },
    "oncall-escalation": {
        "schema_version": 1,
        "escalation_id": "e-1",
        "decision_id": "d-1",
        "proposal_id": "p-000123",
        "reason": "approval_timeout",
        "escalation_number": 2,
        "asked": ["alice", "bob"],
        "service": "checkout-api",
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
        "summary": "no answer in 10 minutes",
        "at": AT,
    },
    "oncall-resolution": {
        "type": "resolved",
        "schema_version": 1,
        "resolution_id": "d-1:resolved",
        "decision_id": "d-1",
        "proposal_id": "p-000123",
        "service": "checkout-api",
        "escalations": 2,
        "answer": "approve",
        "by": "alice",
        "at": AT,
    },
    "approval": {
        "schema_version": 1,
        "kind": "approve",
        "decision_id": "d-1",
        "user": "alice",
        "channel": "slack",
        "change_record": "CHG-1042",
        "false_positive": False,
        "reason": "looks right",
        "nonce": "n-12345678",
        "issued_at": AT,
        "expires_at": "2026-11-28T10:15:05Z",
        "signature": {"alg": "ed25519", "key_id": "0f1e2d3c4b5a6978", "sig": "c2lnbmF0dXJl"},
    },
    "outcome": {
        "schema_version": 1,
        "decision_id": "d-1",
        "proposal_id": "p-000123",
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
        "ai_system": "holmesgpt",
        "service": "checkout-api",
        "level": 4,
        "result": "success",
        "verification": "passed",
        "suboptimal": False,
        "not_needed": False,
        "at": AT,
    },
    "error-budget-update": {
        "schema_version": 1,
        "service": "checkout-api",
        "remaining": 0.5,
        "slo": "availability-99.9",
        "at": AT,
    },
    "control-command": {
        "schema_version": 1,
        "command": "requalify",
        "user": "carol",
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
        "reason": "quarterly review",
        "at": AT,
    },
    "history-record": {
        "schema_version": 1,
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
        "outcome": "success",
        "ai_system": "holmesgpt",
        "verdict": "true_positive",
        "service": "checkout-api",
        "level": 2,
        "at": "2026-06-01T08:00:00Z",
    },
    "audit-event": {
        "time": 1795860005.0,
        "host": "gate-0",
        "source": "escalation-gate",
        "sourcetype": "escalation:decision",
        "index": "sre_audit",
        "event": {
            "schema_version": 1,
            "kind": "decision",
            "event_id": "a-1",
            "chain": "main",
            "seq": 0,
            "prev_hash": "0" * 64,
            "hash": HASH,
            "at": AT,
            "proposal_id": "p-000123",
            "decision_id": "d-1",
            "actor": "gate",
            "data": {"level": 4, "triggers": [], "nested": {"ok": True, "n": None}},
        },
        "fields": {"level": "4"},
    },
    "dead-letter": {
        "schema_version": 1,
        "reason": "schema",
        "error": "confidence.model: Input should be a valid number",
        "topic": "escalation.proposals",
        "partition": 0,
        "offset": 42,
        "key_b64": None,
        "value_b64": "e30=",
        "received_at": AT,
    },
}
