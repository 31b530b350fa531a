"""What a record on a decision topic asks of an executor: pure, no I/O, no clock.

``judge(topic, raw, keys, now=..., max_age=...)`` reads one record and returns a value:

- ``Refused(reason, ...)``: never acted on (logged and counted by the service);
- ``Autonomous(action)``: a Level 3/4 decision on ``decisions.execute``: run it;
- ``Approvable(action)``: a Level 2 decision on ``decisions.approve``: remember it,
  run only after the gate's ``execute`` command;
- ``Order(command)``: the gate's ``execute`` (Level 2) or ``abort`` (Level 3) command.

Every record must carry a valid signature of the gate (``streams.keys``) over the
canonical JSON of the rest: unsigned, forged (unknown key), tampered (bad signature)
records are refused before anything is read from them. Then the level: Levels 0 and
1 never execute; Level 2 only after an ``execute`` command; an ``abort`` only for
Level 3. What depends on history (was it run already, was it aborted, is the
approved decision known) is the service's, with its durable ledger.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streams.errors import InputError
from streams.models.codec import parse_json, validate
from streams.models.decision import Decision, ExecuteCommand

if TYPE_CHECKING:
    from streams.keys import PublicKeys

TopicRole = Literal["execute", "approve"]
Reason = Literal[
    "not_json",
    "schema",
    "unsigned",
    "malformed_signature",
    "unknown_key",
    "bad_signature",
    "unknown_type",
    "wrong_topic",
    "level_not_executable",
    "stale",
    "mismatch",
    "abort_outside_window",
]


@dataclass(frozen=True, slots=True)
class Action:
    """One decision's action, with everything a command needs to perform it."""

    decision_id: str
    proposal_id: str
    level: int
    action_type: str
    service: str
    namespace: str
    environment: str
    target_kind: str
    parameters: dict[str, Any]
    pattern: str
    ai_system: str
    abort_window_ends_at: dt.datetime | None = None
    #: What the AI system reported, for the outcome (the gate calibrates from it).
    model: str | None = None
    confidence: float | None = None

    @classmethod
    def of(cls, decision: Decision) -> Action:
        """The action of a decision."""
        action = decision.proposal.action
        return cls(
            decision_id=decision.decision_id,
            proposal_id=decision.proposal_id,
            level=decision.level,
            action_type=action.type,
            service=action.target.service,
            namespace=action.target.namespace,
            environment=action.target.environment,
            target_kind=action.target.kind,
            parameters=dict(action.parameters),
            pattern=decision.proposal.pattern,
            ai_system=decision.proposal.source.ai_system,
            abort_window_ends_at=decision.abort_window_ends_at,
            model=decision.proposal.source.model,
            confidence=decision.proposal.confidence.model,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object (the ledger keeps actions in this form)."""
        out: dict[str, Any] = {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if name != "abort_window_ends_at"
        }
        ends = self.abort_window_ends_at
        out["abort_window_ends_at"] = ends.isoformat() if ends is not None else None
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Action:
        """The inverse of ``to_json``."""
        ends = data.get("abort_window_ends_at")
        return cls(
            **{
                **data,
                "abort_window_ends_at": dt.datetime.fromisoformat(ends) if ends else None,
            }
        )

    def environment_variables(self, *, command_id: str | None = None) -> dict[str, str]:
        """What a command sees: ``ESCALATION_DECISION_ID``, ``..._PARAMETERS`` (JSON), ..."""
        import orjson  # noqa: PLC0415

        variables = {
            "ESCALATION_DECISION_ID": self.decision_id,
            "ESCALATION_PROPOSAL_ID": self.proposal_id,
            "ESCALATION_ACTION_TYPE": self.action_type,
            "ESCALATION_SERVICE": self.service,
            "ESCALATION_NAMESPACE": self.namespace,
            "ESCALATION_ENVIRONMENT": self.environment,
            "ESCALATION_KIND": self.target_kind,
            "ESCALATION_PARAMETERS": orjson.dumps(
                self.parameters, option=orjson.OPT_SORT_KEYS
            ).decode(),
            "ESCALATION_LEVEL": str(self.level),
            "ESCALATION_PATTERN": self.pattern,
        }
        if command_id is not None:
            variables["ESCALATION_COMMAND_ID"] = command_id
        return variables


@dataclass(frozen=True, slots=True)
class Refused:
    """A record an executor must not act on, and why."""

    reason: Reason
    detail: str = ""
    decision_id: str | None = None


@dataclass(frozen=True, slots=True)
class Autonomous:
    """A signed Level 3 or 4 decision: run it (once)."""

    action: Action


@dataclass(frozen=True, slots=True)
class Approvable:
    """A signed Level 2 decision: its action runs after the gate's ``execute`` command."""

    action: Action


@dataclass(frozen=True, slots=True)
class Order:
    """A signed ``execute`` (after an approval) or ``abort`` (inside a window) command."""

    command: ExecuteCommand
    meta: dict[str, str] = field(default_factory=dict)


Verdict = Refused | Autonomous | Approvable | Order


def _age_check(at: dt.datetime, now: dt.datetime | None, max_age: float | None) -> str | None:
    if now is None or max_age is None:
        return None
    age = (now - at).total_seconds()
    if age > max_age:
        return f"issued {age:.0f}s ago, more than the executor's max age of {max_age:g}s"
    return None


def judge(
    topic: TopicRole,
    raw: bytes,
    keys: PublicKeys,
    *,
    now: dt.datetime | None = None,
    max_age: float | None = None,
) -> Verdict:
    """What one record on ``decisions.execute`` or ``decisions.approve`` asks for."""
    try:
        body = parse_json(raw)
    except InputError as exc:
        return Refused("not_json", str(exc))
    if not isinstance(body, dict):
        return Refused("schema", f"expected a JSON object, got {type(body).__name__}")
    claimed = body.get("decision_id")
    decision_id = claimed if isinstance(claimed, str) else None
    refusal = keys.verify(body)
    if refusal is not None:
        return Refused(refusal, f"signature check: {refusal}", decision_id)
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    kind = unsigned.get("type")
    try:
        if kind == "decision":
            return _decision(topic, validate(Decision, unsigned), now, max_age)
        if kind in {"execute", "abort"}:
            return _command(topic, validate(ExecuteCommand, unsigned), now, max_age)
    except InputError as exc:
        return Refused("schema", str(exc), decision_id)
    return Refused("unknown_type", f"type: {kind!r} is not a decision or a command", decision_id)


def _decision(
    topic: TopicRole, decision: Decision, now: dt.datetime | None, max_age: float | None
) -> Verdict:
    did = decision.decision_id
    if decision.level <= 1:
        return Refused("level_not_executable", f"level {decision.level} never executes", did)
    if decision.level == 2:
        if topic != "approve":
            return Refused(
                "level_not_executable", "level 2 runs only after the gate's execute command", did
            )
        return Approvable(Action.of(decision))
    if topic != "execute":
        return Refused(
            "wrong_topic", f"a level {decision.level} decision on decisions.approve", did
        )
    stale = _age_check(decision.decided_at, now, max_age)
    if stale is not None:
        return Refused("stale", stale, did)
    return Autonomous(Action.of(decision))


def _command(
    topic: TopicRole, command: ExecuteCommand, now: dt.datetime | None, max_age: float | None
) -> Verdict:
    did = command.decision_id
    if topic != "execute":
        return Refused("wrong_topic", f"an {command.type} command on decisions.approve", did)
    if command.type == "execute" and command.level != 2:
        return Refused(
            "level_not_executable",
            f"an execute command is for an approved level 2 decision, got level {command.level}",
            did,
        )
    if command.type == "abort" and command.level != 3:
        return Refused(
            "level_not_executable", f"abort is for level 3 only, got level {command.level}", did
        )
    if command.type == "execute":
        stale = _age_check(command.issued_at, now, max_age)
        if stale is not None:
            return Refused("stale", stale, did)
    return Order(command)


def matches(action: Action, command: ExecuteCommand) -> str | None:
    """Why ``command`` is not for ``action`` (None when it is)."""
    for name, mine, theirs in (
        ("decision_id", action.decision_id, command.decision_id),
        ("proposal_id", action.proposal_id, command.proposal_id),
        ("service", action.service, command.service),
        ("action_type", action.action_type, command.action_type),
        ("pattern", action.pattern, command.pattern),
        ("level", action.level, command.level),
    ):
        if mine != theirs:
            return f"{name}: the command says {theirs!r}, the decision {mine!r}"
    return None


def abort_in_window(action: Action, command: ExecuteCommand) -> str | None:
    """Why an abort of an executed action is outside its window (None when inside)."""
    ends = action.abort_window_ends_at
    if ends is None:
        return "the decision has no abort window"
    if command.issued_at > ends:
        return f"issued at {command.issued_at.isoformat()}, the window ended {ends.isoformat()}"
    return None
