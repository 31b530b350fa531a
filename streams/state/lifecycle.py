"""PURE rules of the lifecycle after a decision (SPEC section 6).

A pending entry (``streams.state.records.PendingEntry``) is keyed by decision id. Its
log is the internal
``lifecycle`` topic (partitioned by decision id, like the answers on ``approvals``):
an ``open`` record when a Level 2 or 3 decision is taken, and an ``entry`` record
with the whole new entry, one ``version`` higher, each time an answer or a timeout
changes it. The worker that owns a partition holds its entries in memory, folded
from that log (:func:`fold`). These functions judge a human's answer against an
entry and decide when a timeout escalates; the agent stores the new entry and sends
what the result says.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, cast

from streams.models import ApprovalResponse
from streams.policy import Policy
from streams.state.records import PendingEntry

Entry = PendingEntry
MAX_NONCES = 64  # answers remembered per decision for replay detection
CLOCK_SKEW_SECONDS = 60


@dataclass(frozen=True)
class Judgement:
    """What an answer does: accepted (with the new entry), or refused with a reason."""

    accepted: bool
    reason: str
    entry: Entry | None = None
    commands: tuple[str, ...] = field(default_factory=tuple)  # "execute" / "abort"
    false_positive: bool = False


def open_entry(decision: dict[str, Any], policy: Policy) -> Entry:
    """The pending entry of a Level 2 (approval) or Level 3 (abort window) decision.

    ``decision`` is the decision in JSON form, as it travels on the lifecycle topic.
    """
    proposal = decision["proposal"]
    action = proposal["action"]
    entry: PendingEntry = {
        "decision_id": decision["decision_id"],
        "proposal_id": decision["proposal_id"],
        "level": decision["level"],
        "status": "open",
        "service": action["target"]["service"],
        "pattern": proposal["pattern"],
        "action_type": action["type"],
        "ai_system": proposal["source"]["ai_system"],
        # What the AI system said of itself: a false-positive rejection teaches the
        # calibration (streams/policy/calibration.py) that this confidence was wrong.
        "model": proposal["source"].get("model"),
        "confidence": proposal["confidence"]["model"],
        "change_record_required": decision["change_record_required"],
        "summary": proposal.get("summary", ""),
        "opened_at": _epoch(decision["decided_at"]),
        "escalations": 0,
        "nonces": [],
        "asked": list(policy.approval.approvers),
        "max_escalations": policy.approval.max_escalations,
        "timeout_seconds": policy.approval.timeout_seconds,
    }
    if int(decision.get("approvals_required") or 1) > 1:
        entry["approvals_required"] = int(decision["approvals_required"])
        entry["approvals"] = []
    if decision.get("approval_timeout_at"):
        entry["timeout_at"] = _epoch(decision["approval_timeout_at"])
    if decision.get("abort_window_ends_at"):
        entry["abort_window_ends_at"] = _epoch(decision["abort_window_ends_at"])
    return entry


def _epoch(instant: str) -> float:
    return dt.datetime.fromisoformat(instant).timestamp()


def _refuse(reason: str, entry: Entry | None = None) -> Judgement:
    return Judgement(accepted=False, reason=reason, entry=entry)


def judge_answer(
    entry: Entry | None,
    answer: ApprovalResponse,
    *,
    policy: Policy,
    now: dt.datetime,
    refusal: str | None,
) -> Judgement:
    """Accept or refuse a human's answer. A refused answer changes nothing but nonces.

    ``refusal`` is why the keyring refused the answer's signature or signer (``None``:
    signed by the person it names, or by a channel that may relay it for them).
    """
    if refusal is not None:
        return _refuse("ai_system_cannot_answer" if refusal == "ai_system" else refusal)
    if entry is None:
        return _refuse("unknown_decision")
    if answer.nonce in entry["nonces"]:
        return _refuse("replayed")
    # From here the answer is authentic and new: remember its nonce even if refused.
    remembered = entry.copy()
    remembered["nonces"] = [*entry["nonces"], answer.nonce][-MAX_NONCES:]
    skew = dt.timedelta(seconds=CLOCK_SKEW_SECONDS)
    max_age = dt.timedelta(seconds=policy.approval.answer_max_age_seconds)
    if now > answer.expires_at or now - answer.issued_at > max_age:
        return _refuse("expired", remembered)
    if answer.issued_at > now + skew:
        return _refuse("issued_in_future", remembered)
    if answer.user == entry["ai_system"] or answer.user in policy.trusted_ai_systems:
        return _refuse("ai_system_cannot_answer", remembered)
    allowed = set(policy.approval.approvers) | set(policy.approval.oncall)
    if answer.kind == "approve" and answer.user not in policy.approval.approvers:
        return _refuse("not_an_approver", remembered)
    if answer.kind != "approve" and answer.user not in allowed:
        return _refuse("not_an_approver", remembered)
    if entry["status"] != "open":
        return _refuse(f"already_{entry['status']}", remembered)
    answered = remembered.copy()
    answered["answered_by"] = answer.user
    answered["answered_at"] = now.timestamp()
    if answer.kind == "approve":
        if entry["level"] != 2:
            return _refuse("not_awaiting_approval", remembered)
        if entry["change_record_required"] and not answer.change_record:
            return _refuse("change_record_missing", remembered)
        required = entry.get("approvals_required", 1)
        if required > 1:
            return _count_approval(
                entry, answer, remembered=remembered, answered=answered, now=now, required=required
            )
        answered["status"] = "approved"
        answered["change_record"] = answer.change_record
        return Judgement(True, "approved", answered, ("execute",))
    if answer.kind == "reject":
        if entry["level"] != 2:
            return _refuse("not_awaiting_approval", remembered)
        answered["status"] = "rejected"
        answered["false_positive"] = answer.false_positive
        return Judgement(True, "rejected", answered, (), false_positive=answer.false_positive)
    # abort
    if entry["level"] != 3:
        return _refuse("not_abortable", remembered)
    if now.timestamp() > float(entry.get("abort_window_ends_at", 0.0)):
        return _refuse("abort_window_closed", remembered)
    answered["status"] = "aborted"
    return Judgement(True, "aborted", answered, ("abort",))


def _count_approval(
    entry: Entry,
    answer: ApprovalResponse,
    *,
    remembered: Entry,
    answered: Entry,
    now: dt.datetime,
    required: int,
) -> Judgement:
    """One approval of a decision that needs ``required`` different people.

    It is recorded and the decision stays open until the last one; the same person
    twice is refused, and every approver must name the first approver's change record.
    """
    approvals = list(entry.get("approvals", []))
    if any(given["user"] == answer.user for given in approvals):
        return _refuse("already_approved_by_this_person", remembered)
    first = next((given["change_record"] for given in approvals if given["change_record"]), None)
    if entry["change_record_required"] and first is not None and answer.change_record != first:
        return _refuse("change_record_mismatch", remembered)
    approvals.append(
        {"user": answer.user, "at": now.timestamp(), "change_record": answer.change_record}
    )
    if len(approvals) < required:
        recorded = remembered.copy()
        recorded["approvals"] = approvals
        return Judgement(True, "approval_recorded", recorded)
    answered["approvals"] = approvals
    answered["status"] = "approved"
    answered["change_record"] = first or answer.change_record
    return Judgement(True, "approved", answered, ("execute",))


def due_escalation(entry: Entry | None, now: dt.datetime) -> Entry | None:
    """The entry after one more on-call escalation, if one is due now; else ``None``.

    The approval stays open: escalating asks more humans, it never decides.
    """
    if not entry or entry.get("status") != "open" or entry.get("level") != 2:
        return None
    if "timeout_at" not in entry or now.timestamp() < float(entry["timeout_at"]):
        return None
    if entry["escalations"] >= entry["max_escalations"]:
        return None
    escalated = entry.copy()
    escalated["escalations"] = entry["escalations"] + 1
    escalated["timeout_at"] = entry["timeout_at"] + entry["timeout_seconds"]
    return escalated


def is_open_approval(entry: Entry) -> bool:
    """An approval still waiting for a human that may escalate again."""
    return (
        entry["status"] == "open"
        and entry["level"] == 2
        and "timeout_at" in entry
        and entry["escalations"] < entry["max_escalations"]
    )


def next_version(old: Entry | None, new: Entry) -> Entry:
    """``new`` as the successor of ``old``: one version higher, for :func:`fold`."""
    successor = new.copy()
    successor["version"] = (old.get("version", 0) if old is not None else 0) + 1
    return successor


def fold(pending: dict[str, Entry], record: Any) -> Entry | None:
    """Apply one ``lifecycle`` record to ``pending``; the entry it stored, or ``None``.

    ``open`` stores its entry unless one exists (a redelivered decision keeps the
    first); ``entry`` stores its entry when its version is newer than the one held (a
    worker reads its own updates back after applying them). Anything else (the
    ``tick`` records of earlier versions, unreadable values) changes nothing.
    """
    if not isinstance(record, dict):
        return None
    entry = record.get("entry")
    if not isinstance(entry, dict) or not isinstance(entry.get("decision_id"), str):
        return None
    decision_id = entry["decision_id"]
    kind = record.get("type")
    held = pending.get(decision_id)
    if kind == "open":
        if held is not None:
            return None
    elif kind == "entry":
        if held is not None and held.get("version", 0) >= int(entry.get("version", 0)):
            return None
    else:
        return None
    # The gate's own log: an entry it wrote with open_entry / next_version.
    stored = cast("Entry", entry)
    pending[decision_id] = stored
    return stored
