"""PURE: what the Slack service knows about one decision, folded from the gate's topics.

A record is a plain JSON dict per decision id (kept in the service's store, so a
restarted service updates the messages it posted before). It starts from the
decision (``decisions.approve`` for Level 2, ``decisions.execute`` for Level 3) and
follows the decision's fate from the gate's own records:

- ``audit``: ``approval_accepted``, ``approval_recorded`` (one of several required
  approvals), ``rejection``, ``abort``, ``timeout_escalation``, ``execute_command``;
- ``decisions.execute``: the ``execute`` and ``abort`` commands;
- ``audit`` ``outcome``: the executor's result, as the gate accepted it;
- the clock (:func:`on_tick`): a Level 3 abort window that ended.

The topics are read by one consumer and may interleave: an answer's audit event can
be read before the decision it answers. Such a record is a *stub* (``view`` is
``None``) that the decision completes; it is never posted on its own.

Nothing here does I/O or reads a clock: times come in as epoch seconds.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

Record = dict[str, Any]

#: Rules that decide when ANY of their conditions holds: a condition that holds is a
#: reason a human is involved. The others decide when ALL hold: a condition that does
#: not hold is what kept the action from more autonomy.
ALL_RULES = frozenset({"level4_autonomous", "level3_conditional"})
CLOSED = frozenset({"approved", "rejected", "aborted", "window_closed"})
ANSWER_KINDS = {"approval_accepted": "approve", "rejection": "reject", "abort": "abort"}
MAX_REASONS = 20


def epoch(instant: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 instant (``None`` passes through)."""
    if not instant:
        return None
    return dt.datetime.fromisoformat(instant).timestamp()


def blocking_conditions(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conditions that stood between the proposal and more autonomy."""
    out = []
    for c in conditions:
        failed = not c.get("holds") if c.get("rule") in ALL_RULES else bool(c.get("holds"))
        if failed:
            out.append({k: c.get(k) for k in ("rule", "name", "observed", "operator", "threshold")})
    return out


def view_of(decision: dict[str, Any]) -> dict[str, Any]:
    """What a message shows of a decision (a decision is ~5 KB; this is a fraction)."""
    proposal = decision["proposal"]
    action = proposal["action"]
    confidence = proposal.get("confidence", {})
    composite = confidence.get("model")
    if confidence.get("heuristic") is not None and composite is not None:
        composite = min(composite, confidence["heuristic"])
    return {
        "action_type": action["type"],
        "target": action["target"],
        "parameters": action.get("parameters", {}),
        "reversible": action.get("reversible"),
        "rollback_seconds": action.get("rollback_seconds"),
        "pattern": proposal["pattern"],
        "summary": proposal.get("summary", ""),
        "ai_system": proposal["source"]["ai_system"],
        "model": proposal["source"].get("model"),
        "confidence": {
            "model": confidence.get("model"),
            "heuristic": confidence.get("heuristic"),
            "composite": composite,
        },
        "blast_radius": proposal.get("blast_radius", {}),
        "regulated": list(proposal.get("regulated", [])),
        "triggers": list(decision.get("triggers", [])),
        "deciding_rule": decision.get("deciding_rule"),
        "reasons": blocking_conditions(list(decision.get("conditions", [])))[:MAX_REASONS],
        "change_record_required": bool(decision.get("change_record_required")),
        "approvals_required": int(decision.get("approvals_required") or 1),
        "decided_at": epoch(decision.get("decided_at")),
        "approval_timeout_at": epoch(decision.get("approval_timeout_at")),
        "abort_window_ends_at": epoch(decision.get("abort_window_ends_at")),
        "policy_version": decision.get("policy_version"),
    }


def _stub(decision_id: str) -> Record:
    return {
        "decision_id": decision_id,
        "view": None,
        "status": "open",
        "approvals": [],
        "answer": None,
        "escalations": [],
        "commands": [],
        "outcome": None,
        "posted": None,
        "rendered": None,
    }


def on_decision(record: Record | None, decision: dict[str, Any], channel: str) -> Record | None:
    """A Level 2 or 3 decision: the record it opens (a redelivery keeps the first).

    ``None`` for every other level (Level 4 stays silent; 0 and 1 ask nobody).
    """
    if decision.get("type", "decision") != "decision" or decision.get("level") not in (2, 3):
        return None
    if record is not None and record.get("view") is not None:
        return record
    base = record if record is not None else _stub(decision["decision_id"])
    return {
        **base,
        "proposal_id": decision["proposal_id"],
        "level": decision["level"],
        "service": decision["proposal"]["action"]["target"]["service"],
        "channel": channel,
        "view": view_of(decision),
    }


def on_audit(record: Record | None, body: dict[str, Any]) -> Record | None:
    """The record after one of the gate's audit events; ``None`` when it is not about a
    Level 2 or 3 decision's fate."""
    kind = body.get("kind")
    decision_id = body.get("decision_id")
    if not isinstance(decision_id, str):
        return None
    data = body.get("data") or {}
    at = epoch(body.get("at"))
    if kind in ANSWER_KINDS or kind == "approval_recorded":
        base = record if record is not None else _stub(decision_id)
        user = str(data.get("user") or body.get("actor"))
        entry = {"user": user, "at": at, "channel": data.get("channel")}
        approvals = list(base["approvals"])
        if kind in {"approval_accepted", "approval_recorded"} and all(
            a["user"] != user for a in approvals
        ):
            approvals.append(entry)
        new = {**base, "approvals": approvals}
        if kind == "approval_recorded":
            return new
        status = {"approve": "approved", "reject": "rejected", "abort": "aborted"}
        answer_kind = ANSWER_KINDS[kind]
        return {
            **new,
            "status": status[answer_kind],
            "answer": {
                **entry,
                "kind": answer_kind,
                "false_positive": bool(data.get("false_positive")),
                "change_record": data.get("change_record"),
            },
        }
    if record is None:
        return None
    if kind == "timeout_escalation":
        escalation = data.get("escalation") or {}
        number = int(escalation.get("escalation_number", len(record["escalations"]) + 1))
        if any(e["number"] == number for e in record["escalations"]):
            return record
        return {**record, "escalations": [*record["escalations"], {"number": number, "at": at}]}
    if kind == "execute_command":
        return _with_command(record, str(data.get("command")), str(data.get("by")), at)
    return None


def _with_command(record: Record, command: str, by: str, at: float | None) -> Record:
    if any(c["type"] == command for c in record["commands"]):
        return record
    return {**record, "commands": [*record["commands"], {"type": command, "by": by, "at": at}]}


def on_command(record: Record | None, command: dict[str, Any]) -> Record | None:
    """An ``execute`` or ``abort`` command on ``decisions.execute``."""
    if record is None or command.get("type") not in {"execute", "abort"}:
        return None
    return _with_command(
        record, command["type"], str(command.get("by")), epoch(command.get("issued_at"))
    )


def on_outcome(record: Record | None, outcome: dict[str, Any]) -> Record | None:
    """An executor's outcome of a decision we posted."""
    if record is None:
        return None
    return {
        **record,
        "outcome": {
            "result": outcome.get("result"),
            "verification": outcome.get("verification"),
            "suboptimal": bool(outcome.get("suboptimal")),
            "not_needed": bool(outcome.get("not_needed")),
            "at": epoch(outcome.get("at")),
        },
    }


def on_tick(record: Record, now: float) -> Record | None:
    """A Level 3 record whose abort window ended by ``now``: its buttons go."""
    view = record.get("view")
    if view is None or record.get("level") != 3 or record["status"] != "open":
        return None
    ends = view.get("abort_window_ends_at")
    if ends is None or now < float(ends):
        return None
    return {**record, "status": "window_closed", "closed_at": float(ends)}


def has_buttons(record: Record) -> bool:
    """Whether the message still offers an answer."""
    return record.get("view") is not None and record["status"] not in CLOSED


Action = Literal["approve", "reject", "reject_false_positive", "abort"]


def stale(record: Record | None, action: Action, person: str) -> str | None:
    """Why a click on this record's button cannot be answered, or ``None`` if it can."""
    if record is None or record.get("view") is None:
        return "This decision is not known to the Slack service (expired or never posted)."
    answer = record.get("answer")
    if record["status"] in {"approved", "rejected", "aborted"} and answer:
        verb = {"approve": "approved", "reject": "rejected", "abort": "aborted"}[answer["kind"]]
        return f"Already {verb} by {answer['user']} at {when(answer['at'])}; nothing changed."
    if record["status"] == "window_closed":
        return f"The abort window closed at {when(record.get('closed_at'))}; nothing changed."
    if action == "abort" and record.get("level") != 3:
        return "This decision has no abort window."
    if action != "abort" and record.get("level") != 2:
        return "This decision is not waiting for an approval."
    if action == "approve" and any(a["user"] == person for a in record["approvals"]):
        mine = next(a for a in record["approvals"] if a["user"] == person)
        return (
            f"You ({person}) already approved at {when(mine['at'])}; "
            "a different person must give the next approval."
        )
    return None


def when(at: float | None) -> str:
    """An instant as people read it in a message: ``2026-12-01 21:46:22 UTC``."""
    if at is None:
        return "an unknown time"
    return dt.datetime.fromtimestamp(float(at), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def expired(record: Record, now: float, retention_seconds: float) -> bool:
    """A record old enough to forget (the gate forgets its entries after a week)."""
    view = record.get("view") or {}
    opened = view.get("decided_at") or record.get("seen_at")
    return opened is not None and now - float(opened) > retention_seconds
