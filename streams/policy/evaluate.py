"""``evaluate(proposal, context, policy) -> Decision``: SPEC section 5, rule by rule.

Pure: time comes from ``context.now``; no I/O, no clock, no Kafka. Every condition
of every rule is evaluated and recorded (observed value, operator, threshold,
verdict), so a reviewer can see why a decision was taken and why the others were
not; the first rule that decides, decides.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import TYPE_CHECKING, Any

from streams.models.decision import LEVEL_NAMES, ROUTES, Condition, Decision, Trigger

if TYPE_CHECKING:
    from streams.models.context import Context
    from streams.models.proposal import Proposal
    from streams.policy.model import Policy

_DAY = 86_400.0
_new_decision = Decision.model_construct


def decision_id_for(proposal: Proposal) -> str:
    """Deterministic id: the same proposal decided twice gets the same id."""
    key = "\x1f".join(
        (
            proposal.proposal_id,
            proposal.source.ai_system,
            proposal.created_at.isoformat(),
            proposal.pattern,
            proposal.action.type,
            proposal.action.target.service,
        )
    )
    return "d-" + hashlib.sha256(key.encode()).hexdigest()[:32]


class _Rule:
    """Collects the conditions of one rule as they are evaluated."""

    __slots__ = ("conditions", "name")

    def __init__(self, name: str, conditions: list[Condition]) -> None:
        self.name = name
        self.conditions = conditions

    def check(self, name: str, observed: Any, operator: str, threshold: Any, holds: bool) -> bool:  # noqa: FBT001
        self.conditions.append(
            {
                "rule": self.name,
                "name": name,
                "observed": observed,
                "operator": operator,
                "threshold": threshold,
                "holds": holds,
            }
        )
        return holds


def _lt(value: float | None, threshold: float) -> bool:
    return value is not None and value < threshold


def _gt(value: float | None, threshold: float) -> bool:
    return value is not None and value > threshold


def evaluate(proposal: Proposal, context: Context, policy: Policy) -> Decision:  # noqa: PLR0914
    """Decide the automation level of ``proposal`` under ``policy`` given ``context``."""
    t = policy.thresholds
    action = proposal.action
    target = action.target
    blast = proposal.blast_radius
    history = context.history
    seen = history.seen
    confidence = proposal.confidence.composite
    budget = context.error_budget_remaining
    fp_rate = context.ai_false_positive_rate_7d
    ratio = round(history.successes / seen, 6) if seen > 0 else None
    conditions: list[Condition] = []

    # Rule 1: Level 0 for an AI system the policy does not trust.
    r0 = _Rule("level0_untrusted", conditions)
    untrusted = r0.check(
        "ai_system_untrusted",
        proposal.source.ai_system,
        "not in",
        list(policy.trusted_ai_systems),
        proposal.source.ai_system not in policy.trusted_ai_systems,
    )

    # Rule 2: Level 1 (assist only) when ANY holds. ``_lt``/``_gt`` leave unknown
    # values to rule 4, which demands a human for them.
    a = t.assist
    r1 = _Rule("level1_assist", conditions)
    assist = [
        r1.check(
            "composite_confidence", confidence, "<", a.min_confidence, confidence < a.min_confidence
        ),
        r1.check(
            "ai_false_positive_rate_7d",
            fp_rate,
            ">",
            a.max_false_positive_rate,
            _gt(fp_rate, a.max_false_positive_rate),
        ),
        r1.check("novelty", seen, "==", 0, seen == 0),
        r1.check(
            "error_budget_remaining", budget, "<", a.min_error_budget, _lt(budget, a.min_error_budget)
        ),
        r1.check("frozen", context.frozen, "==", True, context.frozen),
    ]

    # Rule 3: the regulatory boundary, from the proposal or the policy's lists.
    frameworks = sorted(
        set(proposal.regulated) | set(policy.regulated_frameworks(target.service, target.namespace))
    )
    regulated = _Rule("regulatory", conditions).check(
        "regulated_frameworks", frameworks, "non-empty", [], bool(frameworks)
    )

    # Rule 4: Level 2 when ANY holds.
    s = t.supervised
    r2 = _Rule("level2_supervised", conditions)
    low_confidence = r2.check(
        "composite_confidence", confidence, "<", s.min_confidence, confidence < s.min_confidence
    )
    blast_radius = [
        r2.check(
            "replica_fraction",
            blast.replica_fraction,
            ">",
            s.max_replica_fraction,
            blast.replica_fraction > s.max_replica_fraction,
        ),
        r2.check("services", blast.services, ">", s.max_services, blast.services > s.max_services),
        r2.check(
            "namespaces",
            blast.namespaces,
            ">",
            s.max_namespaces,
            blast.namespaces > s.max_namespaces,
        ),
        r2.check(
            "traffic_fraction",
            blast.traffic_fraction,
            ">",
            s.max_traffic_fraction,
            blast.traffic_fraction > s.max_traffic_fraction,
        ),
        r2.check(
            "reversible",
            action.reversible,
            "==",
            False,
            s.require_reversible and not action.reversible,
        ),
        r2.check(
            "rollback_seconds",
            action.rollback_seconds,
            ">",
            s.max_rollback_seconds,
            action.rollback_seconds > s.max_rollback_seconds,
        ),
    ]
    supervised = [
        low_confidence,
        *blast_radius,
        r2.check("history_seen", seen, "<", s.min_seen, seen < s.min_seen),
        r2.check(
            "error_budget_degraded",
            budget,
            "in",
            [a.min_error_budget, s.degraded_error_budget],
            budget is not None and a.min_error_budget <= budget <= s.degraded_error_budget,
        ),
        r2.check("error_budget_unknown", budget, "is", None, budget is None),
        r2.check("ai_false_positive_rate_unknown", fp_rate, "is", None, fp_rate is None),
        r2.check(
            "shared_infrastructure",
            target.service,
            "in",
            list(policy.shared_infrastructure),
            target.service in policy.shared_infrastructure,
        ),
    ]

    # Rule 5: Level 4 when ALL hold.
    au = t.autonomous
    r4 = _Rule("level4_autonomous", conditions)
    authorisation = au.actions.get(action.type)
    autonomous = [
        r4.check("history_seen", seen, ">=", au.min_seen, seen >= au.min_seen),
        r4.check(
            "outcome_consistency", ratio, ">=", au.consistency, ratio is not None and ratio >= au.consistency
        ),
        r4.check(
            "composite_confidence", confidence, ">=", au.min_confidence, confidence >= au.min_confidence
        ),
        r4.check(
            "idempotent", action.idempotent, "==", True, action.idempotent or not au.require_idempotent
        ),
        r4.check(
            "action_authorised", action.type, "in", sorted(au.actions), authorisation is not None
        ),
    ]
    if authorisation is not None:
        if authorisation.target_kinds is not None:
            autonomous.append(
                r4.check(
                    "target_kind",
                    target.kind,
                    "in",
                    list(authorisation.target_kinds),
                    target.kind in authorisation.target_kinds,
                )
            )
        if authorisation.excluded_environments:
            autonomous.append(
                r4.check(
                    "target_environment",
                    target.environment,
                    "not in",
                    list(authorisation.excluded_environments),
                    target.environment not in authorisation.excluded_environments,
                )
            )
        for parameter, limit in authorisation.max_parameters.items():
            value = action.parameters.get(parameter)
            within = (
                isinstance(value, int | float) and not isinstance(value, bool) and value <= limit
            )
            autonomous.append(
                r4.check(f"parameters.{parameter}", value, "<=", limit, within)
            )
    age_days: float | None = None
    if context.requalified_at is not None:
        age_days = round((context.now - context.requalified_at).total_seconds() / _DAY, 3)
    autonomous += [
        r4.check(
            "requalified_days_ago",
            age_days,
            "<=",
            au.requalification_days,
            age_days is not None and 0 <= age_days <= au.requalification_days,
        ),
        r4.check(
            "requalification_revoked",
            context.requalification_revoked,
            "==",
            False,
            not context.requalification_revoked,
        ),
    ]

    # Rule 6: Level 3 when ALL hold.
    c = t.conditional
    r3 = _Rule("level3_conditional", conditions)
    conditional = [
        r3.check("history_seen", seen, ">=", c.min_seen, seen >= c.min_seen),
        r3.check(
            "outcome_consistency", ratio, ">=", c.consistency, ratio is not None and ratio >= c.consistency
        ),
    ]

    if untrusted:
        level, rule = 0, "level0_untrusted"
    elif any(assist):
        level, rule = 1, "level1_assist"
    elif regulated:
        level, rule = 2, "regulatory"
    elif any(supervised):
        level, rule = 2, "level2_supervised"
    elif all(autonomous):
        level, rule = 4, "level4_autonomous"
    elif all(conditional):
        level, rule = 3, "level3_conditional"
    else:
        level, rule = 2, "default_supervised"

    # Rule 8: the velocity guard (checked for every decision, applied to 3 and 4).
    v = policy.velocity
    rv = _Rule("velocity_guard", conditions)
    too_fast = [
        rv.check(
            "recent_autonomous_service",
            context.recent_autonomous.service,
            ">=",
            v.max_per_service,
            context.recent_autonomous.service >= v.max_per_service,
        ),
        rv.check(
            "recent_autonomous_fleet",
            context.recent_autonomous.fleet,
            ">=",
            v.max_fleet,
            context.recent_autonomous.fleet >= v.max_fleet,
        ),
    ]
    if level >= 3 and any(too_fast):
        level, rule = 2, "velocity_guard"

    # A policy past its review date has lost its authority for autonomy.
    today = context.now.astimezone(dt.UTC).date()
    overdue = _Rule("policy_review", conditions).check(
        "review_overdue",
        today.isoformat(),
        ">",
        policy.policy.next_review.isoformat(),
        today > policy.policy.next_review,
    )
    if level >= 3 and overdue:
        level, rule = 2, "policy_review_overdue"

    triggers: list[Trigger] = []
    if low_confidence:
        triggers.append("confidence")
    if any(blast_radius):
        triggers.append("blast_radius")
    if seen == 0:
        triggers.append("novelty")
    if regulated:
        triggers.append("regulatory")

    now = context.now
    return _new_decision(
        type="decision",
        schema_version=1,
        decision_id=decision_id_for(proposal),
        proposal_id=proposal.proposal_id,
        level=level,
        level_name=LEVEL_NAMES[level],
        route=ROUTES[level],
        deciding_rule=rule,
        triggers=tuple(triggers),
        change_record_required=level == 2 and regulated,
        conditions=tuple(conditions),
        policy_version=policy.version,
        policy_digest=policy.digest,
        decided_at=now,
        abort_window_ends_at=(
            now + dt.timedelta(seconds=policy.abort_window_seconds) if level == 3 else None
        ),
        approval_timeout_at=(
            now + dt.timedelta(seconds=policy.approval.timeout_seconds) if level == 2 else None
        ),
        notify_humans=level != 4,
        proposal=proposal,
        context=context,
    )
