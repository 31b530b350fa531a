"""Sample decisions and commands, as the gate writes them, for testing an executor.

``decision(level, now=...)`` is a real ``evaluate()`` decision of the SPEC's sample
proposal with its level (and route, abort window) set to the one asked for;
``command("execute"|"abort", decision, now=...)`` the gate's command for it. Both are
unsigned JSON objects: sign them with ``streams.keys.Signer.sign`` to play the gate.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from streams.models.decision import LEVEL_NAMES, ROUTES, decision_json

ABORT_WINDOW = dt.timedelta(minutes=5)


def decision(
    level: int,
    *,
    now: dt.datetime,
    decision_id: str | None = None,
    service: str = "checkout-api",
    action_type: str = "rolling_restart",
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A decision of ``level`` for a rolling restart of ``service`` (JSON, unsigned)."""
    from streams.models import Context, Proposal  # noqa: PLC0415
    from streams.policy import evaluate, parse_policy  # noqa: PLC0415
    from streams.settings import _default_policy  # noqa: PLC0415

    proposal_id = f"p-{decision_id or service}-{now.timestamp():.6f}"
    proposal = Proposal.model_validate(
        {
            "schema_version": 1,
            "proposal_id": proposal_id,
            "created_at": now.isoformat(),
            "source": {"ai_system": "holmesgpt", "model": "llama3.1:70b"},
            "pattern": "oom-kill/stateless-deployment",
            "action": {
                "type": action_type,
                "target": {
                    "service": service,
                    "namespace": "shop",
                    "environment": "production",
                    "kind": "Deployment",
                },
                "parameters": parameters or {},
                "idempotent": True,
                "reversible": True,
                "rollback_seconds": 60,
            },
            "confidence": {"model": 0.93, "heuristic": 0.9},
            "blast_radius": {
                "services": 1,
                "namespaces": 1,
                "replica_fraction": 0.1,
                "traffic_fraction": 0.05,
            },
            "regulated": [],
            "summary": f"{service} pods OOMKilled; restart clears leaked cache",
        }
    )
    context = Context.model_validate(
        {
            "now": now.isoformat(),
            "history": {"seen": 12, "successes": 12, "failures": 0},
            "error_budget_remaining": 0.82,
            "ai_false_positive_rate_7d": 0.04,
            "requalified_at": (now - dt.timedelta(days=10)).isoformat(),
            "requalification_revoked": False,
            "recent_autonomous": {"service": 0, "fleet": 0},
            "frozen": False,
        }
    )
    policy_path = _default_policy()
    policy = parse_policy(policy_path.read_bytes(), source=policy_path.name)
    body = decision_json(evaluate(proposal, context, policy, decision_id=decision_id))
    body.update(
        level=level,
        level_name=LEVEL_NAMES[level],
        route=ROUTES[level],
        decided_at=now.isoformat().replace("+00:00", "Z"),
        abort_window_ends_at=(
            (now + ABORT_WINDOW).isoformat().replace("+00:00", "Z") if level == 3 else None
        ),
    )
    return body


def command(
    kind: Literal["execute", "abort"],
    decided: dict[str, Any],
    *,
    now: dt.datetime,
    by: str = "alice",
) -> dict[str, Any]:
    """The gate's ``execute`` or ``abort`` command for ``decided`` (JSON, unsigned)."""
    action = decided["proposal"]["action"]
    return {
        "type": kind,
        "schema_version": 1,
        "command_id": f"{decided['decision_id']}:{kind}",
        "decision_id": decided["decision_id"],
        "proposal_id": decided["proposal_id"],
        "level": decided["level"],
        "by": by,
        "change_record": None,
        "issued_at": now.isoformat().replace("+00:00", "Z"),
        "service": action["target"]["service"],
        "pattern": decided["proposal"]["pattern"],
        "action_type": action["type"],
    }
