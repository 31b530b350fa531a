"""Audit records as the worker writes them, for the console's benchmark and unit tests.

A proposal of :mod:`streams.samples` is decided by the real ``evaluate`` and sealed
onto a chain with the real ``seal_json``, so what the view folds is byte for byte
what it reads from the audit topic. PURE: the caller passes the instant.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streams import samples
from streams.audit.chain import ChainHead, seal_json
from streams.models import Context, History
from streams.models.decision import decision_json
from streams.policy.evaluate import evaluate

if TYPE_CHECKING:
    from streams.policy.model import Policy

BY_NAME = {s.name: s for s in samples.SCENARIOS}


@dataclass
class Chains:
    """Seals events onto chains ``p0``..``pN`` as one worker per partition would."""

    policy: Policy
    partitions: int = 4
    heads: dict[str, ChainHead] = field(default_factory=dict)

    def seal(self, partition: int, kind: Any, **fields: Any) -> dict[str, Any]:
        chain = f"p{partition}"
        head = self.heads.get(chain) or ChainHead.empty(chain)
        record, self.heads[chain] = seal_json(
            head, kind=kind, host="escalation-gate", index="escalation", fields={}, **fields
        )
        value: dict[str, Any] = orjson.loads(record)
        return value

    def decide(
        self, scenario: str, number: int, at: dt.datetime, *, seen: int = 12, tag: str = ""
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """A decision of one sample scenario and its ``proposal_received`` and ``decision``
        audit records (with the approval request of a Level 2 decision)."""
        proposal = samples.proposal(BY_NAME[scenario], number, at=at, tag=tag)
        context = Context(
            now=at,
            history=History(seen=seen, successes=seen),
            error_budget_remaining=0.9,
            ai_false_positive_rate_7d=0.02,
        )
        decision = decision_json(evaluate(proposal, context, self.policy))
        partition = zlib.crc32(proposal.action.target.service.encode()) % self.partitions
        ids = {"proposal_id": proposal.proposal_id, "decision_id": decision["decision_id"]}
        received = self.seal(
            partition,
            "proposal_received",
            event_id=f"{decision['decision_id']}:received",
            actor=proposal.source.ai_system,
            at=at,
            data={"proposal": decision["proposal"]},
            **ids,
        )
        data: dict[str, Any] = {"decision": decision}
        if decision["level"] == 2:
            data["approval"] = {
                "asked": list(self.policy.approval.approvers),
                "timeout_at": decision["approval_timeout_at"],
                "change_record_required": decision["change_record_required"],
            }
        decided = self.seal(
            partition,
            "decision",
            event_id=f"{decision['decision_id']}:decision",
            actor="escalation-gate",
            at=at,
            data=data,
            **ids,
        )
        return decision, [received, decided]

    def answer(
        self, decision: dict[str, Any], kind: str, user: str, at: dt.datetime
    ) -> list[dict[str, Any]]:
        """The audit records of an accepted answer (and its command to executors)."""
        partition = int(self._partition(decision))
        ids = {"proposal_id": decision["proposal_id"], "decision_id": decision["decision_id"]}
        audit_kind = {"approve": "approval_accepted", "reject": "rejection", "abort": "abort"}[kind]
        out = [
            self.seal(
                partition,
                audit_kind,
                event_id=f"{decision['decision_id']}:{kind}",
                actor=user,
                at=at,
                data={"kind": kind, "user": user, "channel": "console", "false_positive": False},
                **ids,
            )
        ]
        if kind in {"approve", "abort"}:
            command = "execute" if kind == "approve" else "abort"
            out.append(
                self.seal(
                    partition,
                    "execute_command",
                    event_id=f"{decision['decision_id']}:{command}_command",
                    actor=user,
                    at=at,
                    data={"command": command, "by": user, "change_record": None},
                    **ids,
                )
            )
        return out

    def _partition(self, decision: dict[str, Any]) -> int:
        service: str = decision["proposal"]["action"]["target"]["service"]
        return zlib.crc32(service.encode()) % self.partitions
