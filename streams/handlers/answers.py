"""PURE: a human's answer, or an approval's timeout, against its pending entry (SPEC 6)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Literal

from streams.handlers.effects import AuditDraft, Count, Effects, Origin, Send
from streams.handlers.oncall import page, resolve
from streams.models import ApprovalResponse, AuditKind, ExecuteCommand, encode
from streams.policy import Policy
from streams.policy.keyring import Keyring, without
from streams.policy.model import Oncall
from streams.state import lifecycle
from streams.state.records import PendingEntry, judged_update, verdict_update

ACCEPTED_KINDS: dict[str, AuditKind] = {
    "approve": "approval_accepted",
    "reject": "rejection",
    "abort": "abort",
}


def command(
    kind: Literal["execute", "abort"],
    entry: PendingEntry,
    answer: ApprovalResponse,
    now: dt.datetime,
) -> Effects:
    """An ``execute`` (after an approval) or ``abort`` command on ``decisions.execute``."""
    body = ExecuteCommand(
        type=kind,
        command_id=f"{entry['decision_id']}:{kind}",
        decision_id=entry["decision_id"],
        proposal_id=entry["proposal_id"],
        level=entry["level"],
        by=answer.user,
        change_record=answer.change_record,
        issued_at=now,
        service=entry["service"],
        pattern=entry["pattern"],
        action_type=entry["action_type"],
    )
    audit = AuditDraft(
        "execute_command",
        event_id=f"{entry['decision_id']}:{kind}_command",
        at=now,
        actor=answer.user,
        decision_id=entry["decision_id"],
        proposal_id=entry["proposal_id"],
        data={"command": kind, "by": answer.user, "change_record": answer.change_record},
        fields={"service": entry["service"], "command": kind},
    )
    return Effects(
        sends=(Send("decisions.execute", encode(body), entry["service"].encode()),),
        audits=(audit,),
    )


def on_answer(
    answer: ApprovalResponse,
    body: Mapping[str, Any],
    entry: PendingEntry | None,
    *,
    policy: Policy,
    keyring: Keyring,
    origin: Origin,
) -> Effects:
    """Judge an approve / reject / abort; what it changes, sends and audits.

    ``body`` is the answer's JSON object as it came off the wire: its signature must
    verify over it, by the person in ``user`` or a channel that may relay the answer
    for them (the keyring). A refused answer changes nothing but the nonces its entry
    remembers, and is audited with its reason and counted.
    """
    now = origin.instant
    signed = keyring.authorize(
        without(body, "signature"),
        body.get("signature"),
        user=answer.user,
        role=answer.kind,
        ai_systems=policy.trusted_ai_systems,
    )
    verdict = lifecycle.judge_answer(
        entry, answer, policy=policy, now=now, refusal=signed if isinstance(signed, str) else None
    )
    entries = () if verdict.entry is None else (lifecycle.next_version(entry, verdict.entry),)
    base = {
        "kind": answer.kind,
        "user": answer.user,
        "channel": answer.channel,
        "change_record": answer.change_record,
        "nonce": answer.nonce,
    }
    if not verdict.accepted or verdict.entry is None:
        refused = AuditDraft(
            "answer_refused",
            event_id=f"{answer.decision_id}:refused:{answer.nonce}:{origin.offset}",
            at=now,
            actor=answer.user,
            decision_id=answer.decision_id,
            proposal_id=entry["proposal_id"] if entry else None,
            data={**base, "reason": verdict.reason},
            fields={"reason": verdict.reason, "kind": answer.kind},
        )
        return Effects(
            audits=(refused,),
            entries=entries,
            metrics=(Count("answers_refused", (verdict.reason,)),),
        )
    new = verdict.entry
    assert not isinstance(signed, str)  # noqa: S101 - judge_answer refused those
    data: dict[str, Any] = {
        **base,
        "false_positive": answer.false_positive,
        "reason": answer.reason,
        # Whose key signed it: the person's own, or the channel that verified them.
        "signed_by": {
            "key_id": signed.key_id,
            "kind": signed.holder.kind,
            "name": signed.holder.name,
        },
    }
    audit_kind: AuditKind = ACCEPTED_KINDS[answer.kind]
    event_id = f"{answer.decision_id}:{answer.kind}"
    if "approvals_required" in new:
        # The two-person rule: who approved so far, of how many (the last one settles it).
        data["approvers"] = [given["user"] for given in new.get("approvals", [])]
        data["approvals_required"] = new["approvals_required"]
        if verdict.reason == "approval_recorded":
            audit_kind = "approval_recorded"
            event_id = f"{answer.decision_id}:approve:{answer.user}"
    accepted = AuditDraft(
        audit_kind,
        event_id=event_id,
        at=now,
        actor=answer.user,
        decision_id=answer.decision_id,
        proposal_id=new["proposal_id"],
        data=data,
        fields={"service": new["service"], "pattern": new["pattern"], "kind": answer.kind},
    )
    effects = Effects(
        audits=(accepted,),
        entries=entries,
        metrics=(Count("answers_accepted", (answer.kind,)),),
    )
    if verdict.false_positive:
        learned = [
            verdict_update(
                new["ai_system"], false_positive=True, at=now.timestamp(), update_id=None
            )
        ]
        if "confidence" in new:
            # A human judged the proposal wrong at the confidence its AI system reported.
            learned.append(
                judged_update(
                    new["ai_system"],
                    new.get("model"),
                    confidence=new["confidence"],
                    right=False,
                    update_id=f"{answer.decision_id}:false_positive",
                )
            )
        effects += Effects(state=tuple(learned))
    for kind in verdict.commands:
        effects += command("abort" if kind == "abort" else "execute", new, answer, now)
    if new["status"] in {"approved", "rejected"} and new.get("escalations", 0) > 0:
        effects += resolve(new, answer=answer.kind, by=answer.user, at=now)
    return effects


def on_timeout(
    entry: PendingEntry | None, at: dt.datetime, oncall: Oncall | None = None
) -> Effects | None:
    """Page on-call for an approval whose timeout passed; ``None`` when none is due.

    The approval stays open: escalating asks more humans, it never decides. Each
    escalation pages the next target of the policy's on-call chain.
    """
    escalated = lifecycle.due_escalation(entry, at)
    if escalated is None or entry is None:
        return None
    decision_id = entry["decision_id"]
    number = escalated["escalations"]
    return Effects(entries=(lifecycle.next_version(entry, escalated),)) + page(
        reason="approval_timeout",
        escalation_id=f"{decision_id}:timeout:{number}",
        decision_id=decision_id,
        proposal_id=entry["proposal_id"],
        service=entry["service"],
        pattern=entry["pattern"],
        action_type=entry["action_type"],
        summary=f"no answer to approval of {entry['action_type']} on {entry['service']}"
        f" ({entry['summary']})",
        asked=tuple(entry["asked"]),
        number=number,
        at=at,
        target=oncall.target(number) if oncall is not None else None,
        level=entry["level"],
    )
