"""PURE: the records the gate keeps its state in, each with one constructor.

- A :class:`StateUpdate` travels on the internal ``state`` topic, keyed ``table|key``;
  every worker folds it with :func:`streams.state.reducers.apply_update`.
- A :class:`PendingEntry` is a Level 2 approval or a Level 3 abort window; the
  ``lifecycle`` topic carries it in a :class:`LifecycleRecord` (``open`` when the
  decision is taken, ``entry`` with the whole new entry at each change).

The worker, the command line, the demo and the tests all build these records here,
so a record's shape is written down once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from streams.models import HistoryRecord
from streams.models.codec import canonical_json
from streams.state.reducers import STATE_SCHEMA_VERSION

Table = Literal[
    "history",
    "verdicts",
    "budgets",
    "requalification",
    "freeze",
    "velocity",
    "policy",
    "signatures",
    "calibration",
]


def history_key(pattern: str, action_type: str) -> str:
    """Table key of the per-(pattern, action type) state."""
    return f"{pattern}|{action_type}"


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """One update of one table key, as it travels on ``state``.

    ``apply_now``: the worker that sends it folds it into its own state at once
    instead of when it comes back from the log (the velocity guard must see a burst
    as it happens; the update's id makes the fold from the log a no-op).
    """

    table: Table
    key: str
    body: Mapping[str, Any]
    apply_now: bool = field(default=False, compare=False)

    def record(self) -> dict[str, Any]:
        """The JSON object on the log: ``{"v", "table", "key", "op", ...}``.

        ``v`` is the schema version (``reducers.STATE_SCHEMA_VERSION``): a record
        without one was written before versions existed and reads as version 1; a
        worker leaves a record of a newer version alone rather than guess at it.
        """
        return {"v": STATE_SCHEMA_VERSION, "table": self.table, "key": self.key, **self.body}

    def kafka_key(self) -> bytes:
        """``table|key``: every update of one key lands on one partition, in order."""
        return f"{self.table}|{self.key}".encode()

    def value(self) -> bytes:
        """The record's canonical JSON."""
        return canonical_json(self.record())


def _with_id(body: dict[str, Any], update_id: str | None) -> dict[str, Any]:
    if update_id is not None:
        body["id"] = update_id
    return body


def outcome_update(
    pattern: str, action_type: str, *, success: bool, update_id: str, at: float | None = None
) -> StateUpdate:
    """One more occurrence of a pattern and action, and how it went."""
    body: dict[str, Any] = {"op": "outcome", "success": success}
    if at is not None:
        body["at"] = at
    return StateUpdate("history", history_key(pattern, action_type), _with_id(body, update_id))


def verdict_update(
    ai_system: str, *, false_positive: bool, at: float, update_id: str | None
) -> StateUpdate:
    """A human verdict on one of an AI system's proposals (its false-positive rate)."""
    body = {"op": "verdict", "false_positive": false_positive, "at": at}
    return StateUpdate("verdicts", ai_system, _with_id(body, update_id))


def signature_update(
    pattern: str, action_type: str, signature: Mapping[str, Any], *, update_id: str | None
) -> StateUpdate:
    """A signature of this pattern and action had an outcome: it is known (similarity)."""
    body = {"op": "signature", "signature": dict(signature)}
    return StateUpdate("signatures", history_key(pattern, action_type), _with_id(body, update_id))


def judged_update(
    ai_system: str, model: str | None, *, confidence: float, right: bool, update_id: str | None
) -> StateUpdate:
    """One judged proposal of an AI system and model at its reported confidence."""
    from streams.policy.calibration import STATE_BINS, calibration_key  # noqa: PLC0415

    body = {"op": "judged", "confidence": confidence, "right": right, "bins": STATE_BINS}
    return StateUpdate("calibration", calibration_key(ai_system, model), _with_id(body, update_id))


def budget_update(service: str, *, remaining: float, at: float) -> StateUpdate:
    """A service's error budget (latest wins)."""
    return StateUpdate("budgets", service, {"op": "budget", "remaining": remaining, "at": at})


def requalification_update(
    pattern: str,
    action_type: str,
    *,
    op: Literal["requalify", "revoke"],
    user: str,
    at: float,
    reason: str,
) -> StateUpdate:
    """A human re-qualifies an automation, or a revocation (human or outcome)."""
    body = {"op": op, "user": user, "at": at, "reason": reason}
    return StateUpdate("requalification", history_key(pattern, action_type), body)


def freeze_update(
    service: str, *, op: Literal["freeze", "unfreeze"], user: str, at: float
) -> StateUpdate:
    """The operator kill switch for one service, or ``*`` for the fleet."""
    return StateUpdate("freeze", service, {"op": op, "user": user, "at": at})


def velocity_update(
    service: str, *, decision_id: str, at: float, offset: int, window_seconds: int
) -> StateUpdate:
    """An autonomous execution, for the velocity guard (idempotent by decision id)."""
    body = {
        "op": "autonomous",
        "id": decision_id,
        "decision_id": decision_id,
        "at": at,
        "offset": offset,
        "window_seconds": window_seconds,
    }
    return StateUpdate("velocity", service, body, apply_now=True)


def policy_update(*, yaml: str, digest: str, by: str) -> StateUpdate:
    """The policy in force (validated before it is stored)."""
    return StateUpdate(
        "policy", "current", {"op": "policy", "yaml": yaml, "digest": digest, "by": by}
    )


def history_updates(record: HistoryRecord) -> tuple[StateUpdate, StateUpdate]:
    """The updates that seed one past incident (``escalation history import``).

    Their ids derive from the record's content, so importing a file twice folds once.
    """
    at = record.at.timestamp()
    digest = hashlib.sha256(canonical_json(record.model_dump(mode="json"))).hexdigest()[:24]
    update_id = f"import:{digest}"
    return (
        outcome_update(
            record.pattern,
            record.action_type,
            success=record.outcome == "success",
            at=at,
            update_id=update_id,
        ),
        verdict_update(
            record.ai_system,
            false_positive=record.verdict != "true_positive",
            at=at,
            update_id=update_id,
        ),
    )


def import_updates(records: Sequence[HistoryRecord]) -> tuple[StateUpdate, ...]:
    """The updates of one batch of past incidents (an ``import_history`` command).

    One update per (pattern, action type) with the batch's counts, one per AI system
    with its verdicts by hour: a batch of 500 incidents over a few AI systems is a few
    updates, not a thousand. Their id derives from the batch's content, so importing
    the same file again (the same batches) folds nothing: each key keeps the ids of
    the batches it folded (``reducers.IMPORT_PREFIX``).
    """
    body = b"\n".join(canonical_json(r.model_dump(mode="json")) for r in records)
    update_id = f"import:{hashlib.sha256(body).hexdigest()[:24]}"
    counts: dict[str, dict[str, int]] = {}
    buckets: dict[str, dict[str, list[int]]] = {}
    for record in records:
        key = history_key(record.pattern, record.action_type)
        count = counts.setdefault(key, {"seen": 0, "successes": 0, "failures": 0})
        success = record.outcome == "success"
        count["seen"] += 1
        count["successes" if success else "failures"] += 1
        hour = str(int(record.at.timestamp()) // 3600 * 3600)
        bucket = buckets.setdefault(record.ai_system, {}).setdefault(hour, [0, 0])
        bucket[0] += 1
        bucket[1] += 1 if record.verdict != "true_positive" else 0
    history = [
        StateUpdate("history", key, {"op": "outcomes", **count, "id": update_id})
        for key, count in counts.items()
    ]
    verdicts = [
        StateUpdate("verdicts", ai_system, {"op": "verdicts", "buckets": hours, "id": update_id})
        for ai_system, hours in buckets.items()
    ]
    return (*history, *verdicts)


class Approver(TypedDict):
    """One of the approvals a Level 2 decision with a quorum has gathered."""

    user: str
    at: float
    change_record: str | None


class PendingEntry(TypedDict):
    """A Level 2 decision waiting for a human, or a Level 3 one inside its abort window."""

    decision_id: str
    proposal_id: str
    level: int
    status: str  # open, approved, rejected, aborted
    service: str
    pattern: str
    action_type: str
    ai_system: str
    model: NotRequired[str | None]
    confidence: NotRequired[float]
    change_record_required: bool
    summary: str
    opened_at: float
    escalations: int
    nonces: list[str]
    asked: list[str]
    max_escalations: int
    timeout_seconds: float
    timeout_at: NotRequired[float]
    abort_window_ends_at: NotRequired[float]
    version: NotRequired[int]
    answered_by: NotRequired[str]
    answered_at: NotRequired[float]
    change_record: NotRequired[str | None]
    false_positive: NotRequired[bool]
    approvals_required: NotRequired[int]  # different approvers needed (default 1)
    approvals: NotRequired[list[Approver]]  # gathered so far, in order


class LifecycleRecord(TypedDict):
    """One record of the ``lifecycle`` log, keyed by decision id."""

    type: Literal["open", "entry"]
    entry: PendingEntry


def lifecycle_record(kind: Literal["open", "entry"], entry: PendingEntry) -> bytes:
    """The bytes of a lifecycle record."""
    record: LifecycleRecord = {"type": kind, "entry": entry}
    return orjson.dumps(record)
