# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Re-decide recorded decisions under another policy and report which levels change.

Pure over an iterable of audit records: the command line reads the file or the
audit topic and hands the records in; nothing here reads files, clocks or Kafka,
and nothing is ever written anywhere. Each decision's audit event carries the
proposal and the context it was decided with (SPEC section 7), so replay calls the
same ``evaluate`` the worker calls, with the recorded context.

Records of other kinds are skipped. A malformed record (not JSON, not an audit
event, a decision event without a valid decision) is counted and the first few
positions are kept for the report; it does not stop the replay. The hash chain is
not checked here: that is ``escalation audit verify``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streams.errors import InputError
from streams.models.audit import AuditEvent
from streams.models.codec import parse_json, validate
from streams.models.decision import LEVEL_NAMES, Condition, Decision
from streams.policy.evaluate import evaluate

if TYPE_CHECKING:
    import datetime as dt

    from streams.policy.model import Policy

#: How many malformed records are shown by position; the rest are only counted.
MAX_MALFORMED_SHOWN = 5
LEVELS = tuple(sorted(LEVEL_NAMES))

_DECISION_FIELD = "event.data.decision"

RecordValue = bytes | str | Mapping[str, Any] | AuditEvent


@dataclass(frozen=True, slots=True)
class Record:
    """One audit record and where it came from (``FILE:LINE``, ``topic[p]@offset``)."""

    where: str
    value: RecordValue


@dataclass(frozen=True, slots=True)
class ConditionChange:
    """A condition whose verdict differs between the recorded and the new decision.

    ``old_holds`` or ``new_holds`` is ``None`` when the condition was evaluated under
    only one of the policies (for example a Level 4 constraint of an action type the
    other policy does not authorise).
    """

    rule: str
    name: str
    operator: str
    observed: Any
    old_threshold: Any
    new_threshold: Any
    old_holds: bool | None
    new_holds: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.name,
            "operator": self.operator,
            "observed": self.observed,
            "old_threshold": self.old_threshold,
            "new_threshold": self.new_threshold,
            "old_holds": self.old_holds,
            "new_holds": self.new_holds,
        }


@dataclass(frozen=True, slots=True)
class LevelChange:
    """One decision whose level differs under the new policy."""

    decision_id: str
    proposal_id: str
    decided_at: dt.datetime
    ai_system: str
    pattern: str
    action_type: str
    service: str
    old_level: int
    new_level: int
    old_rule: str
    new_rule: str
    conditions: tuple[ConditionChange, ...]

    @property
    def gains_autonomy(self) -> bool:
        """The new policy would let this action run with less human involvement."""
        return self.new_level > self.old_level

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "proposal_id": self.proposal_id,
            "decided_at": self.decided_at,
            "ai_system": self.ai_system,
            "pattern": self.pattern,
            "action_type": self.action_type,
            "service": self.service,
            "old_level": self.old_level,
            "new_level": self.new_level,
            "direction": "more_autonomy" if self.gains_autonomy else "less_autonomy",
            "old_deciding_rule": self.old_rule,
            "new_deciding_rule": self.new_rule,
            "conditions": [c.as_dict() for c in self.conditions],
        }


def _empty_matrix() -> list[list[int]]:
    return [[0 for _ in LEVELS] for _ in LEVELS]


@dataclass(slots=True)
class ReplayReport:
    """What replay found: the old x new level matrix and every level change.

    ``matrix[old][new]`` counts replayed decisions; its total is ``replayed``.
    ``changes`` lists the decisions that gain autonomy first (largest jump first),
    then those that lose it.
    """

    policy_version: str
    policy_digest: str
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    records: int = 0
    replayed: int = 0
    duplicates: int = 0
    outside_window: int = 0
    other_kinds: int = 0
    malformed: int = 0
    malformed_examples: list[tuple[str, str]] = field(default_factory=list)
    #: Recorded decisions by the policy version they were decided under.
    decided_under: dict[str, int] = field(default_factory=dict)
    #: Decisions whose level stayed but whose deciding rule changed.
    rule_changes: int = 0
    matrix: list[list[int]] = field(default_factory=_empty_matrix)
    changes: list[LevelChange] = field(default_factory=list)

    @property
    def gains(self) -> list[LevelChange]:
        """Changes that grant more autonomy."""
        return [c for c in self.changes if c.gains_autonomy]

    @property
    def losses(self) -> list[LevelChange]:
        """Changes that require more human involvement."""
        return [c for c in self.changes if not c.gains_autonomy]

    @property
    def unchanged(self) -> int:
        """Replayed decisions whose level is the same under the new policy."""
        return sum(self.matrix[level][level] for level in LEVELS)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary; ``to_json`` serialises it."""
        return {
            "policy_version": self.policy_version,
            "policy_digest": self.policy_digest,
            "since": self.since,
            "until": self.until,
            "records": self.records,
            "replayed": self.replayed,
            "unchanged": self.unchanged,
            "more_autonomy": len(self.gains),
            "less_autonomy": len(self.losses),
            "rule_changes": self.rule_changes,
            "duplicates": self.duplicates,
            "outside_window": self.outside_window,
            "other_kinds": self.other_kinds,
            "malformed": self.malformed,
            "malformed_examples": [
                {"where": where, "error": error} for where, error in self.malformed_examples
            ],
            "decided_under": dict(self.decided_under),
            "levels": [LEVEL_NAMES[level] for level in LEVELS],
            "matrix": [list(row) for row in self.matrix],
            "changes": [c.as_dict() for c in self.changes],
        }

    def to_json(self) -> str:
        """One JSON object for machines (``escalation replay --json``)."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_UTC_Z).decode()


def _decode_event(value: RecordValue) -> AuditEvent:
    if isinstance(value, AuditEvent):
        return value
    obj = value if isinstance(value, Mapping) else parse_json(value)
    if isinstance(obj, Mapping):
        obj = dict(obj)
    return validate(AuditEvent, obj)


def _decision_of(event: AuditEvent) -> Decision:
    raw = event.event.data.get("decision")
    if raw is None:
        raise InputError(_DECISION_FIELD, "field required")
    try:
        return validate(Decision, raw)
    except InputError as exc:
        raise InputError(f"{_DECISION_FIELD}.{exc.field}", exc.reason) from None


def _condition_changes(
    old: Iterable[Condition], new: Iterable[Condition]
) -> tuple[ConditionChange, ...]:
    before = {(c["rule"], c["name"]): c for c in old}
    after = {(c["rule"], c["name"]): c for c in new}
    out: list[ConditionChange] = []
    # Keep the evaluator's order (new decision first, then conditions only the old had).
    for key in [*after, *(k for k in before if k not in after)]:
        b, a = before.get(key), after.get(key)
        if b is not None and a is not None and b["holds"] == a["holds"]:
            continue
        shown = a if a is not None else b
        assert shown is not None  # noqa: S101 - one of the two exists by construction
        out.append(
            ConditionChange(
                rule=key[0],
                name=key[1],
                operator=shown["operator"],
                observed=shown["observed"],
                old_threshold=None if b is None else b["threshold"],
                new_threshold=None if a is None else a["threshold"],
                old_holds=None if b is None else b["holds"],
                new_holds=None if a is None else a["holds"],
            )
        )
    return tuple(out)


def _aware(name: str, value: dt.datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise InputError(name, f"must carry a timezone, got {value.isoformat()}")


def replay(
    records: Iterable[Record | RecordValue],
    new_policy: Policy,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> ReplayReport:
    """Re-evaluate every recorded decision in ``[since, until]`` under ``new_policy``.

    ``records`` are audit records (JSON bytes or text, decoded objects or
    ``AuditEvent``), optionally wrapped in ``Record`` to say where each came from.
    The window applies to each decision's ``decided_at`` and is inclusive. A
    decision id seen again (an at-least-once redelivery) is counted as a duplicate
    and the first occurrence is kept.
    """
    _aware("since", since)
    _aware("until", until)
    report = ReplayReport(
        policy_version=new_policy.version,
        policy_digest=new_policy.digest,
        since=since,
        until=until,
    )
    seen: set[str] = set()
    decided_under: Counter[str] = Counter()
    gains: list[tuple[int, int, LevelChange]] = []
    losses: list[tuple[int, int, LevelChange]] = []
    for number, item in enumerate(records, start=1):
        report.records += 1
        where, value = (
            (item.where, item.value) if isinstance(item, Record) else (f"#{number}", item)
        )
        try:
            event = _decode_event(value)
            if event.event.kind != "decision":
                report.other_kinds += 1
                continue
            old = _decision_of(event)
        except InputError as exc:
            report.malformed += 1
            if len(report.malformed_examples) < MAX_MALFORMED_SHOWN:
                report.malformed_examples.append((where, str(exc)))
            continue
        if old.decision_id in seen:
            report.duplicates += 1
            continue
        seen.add(old.decision_id)
        if (since is not None and old.decided_at < since) or (
            until is not None and old.decided_at > until
        ):
            report.outside_window += 1
            continue

        new = evaluate(old.proposal, old.context, new_policy)
        report.replayed += 1
        decided_under[old.policy_version] += 1
        report.matrix[old.level][new.level] += 1
        if new.level == old.level:
            if new.deciding_rule != old.deciding_rule:
                report.rule_changes += 1
            continue
        target = old.proposal.action.target
        change = LevelChange(
            decision_id=old.decision_id,
            proposal_id=old.proposal_id,
            decided_at=old.decided_at,
            ai_system=old.proposal.source.ai_system,
            pattern=old.proposal.pattern,
            action_type=old.proposal.action.type,
            service=target.service,
            old_level=old.level,
            new_level=new.level,
            old_rule=old.deciding_rule,
            new_rule=new.deciding_rule,
            conditions=_condition_changes(old.conditions, new.conditions),
        )
        jump = abs(new.level - old.level)
        # Largest jump first, then stream order: the riskiest change is read first.
        (gains if change.gains_autonomy else losses).append((-jump, report.replayed, change))
    report.changes = [c for *_, c in sorted(gains, key=_order)] + [
        c for *_, c in sorted(losses, key=_order)
    ]
    report.decided_under = dict(sorted(decided_under.items()))
    return report


def _order(entry: tuple[int, int, LevelChange]) -> tuple[int, int]:
    return entry[0], entry[1]
