# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""``evaluate(proposal, context, policy) -> Decision``: SPEC section 5, rule by rule.

Pure: time comes from ``context.now``; no I/O, no clock, no Kafka. Every condition
of every rule is evaluated and recorded (observed value, operator, threshold,
verdict), so a reviewer can see why a decision was taken and why the others were
not; the first rule that decides, decides.

This runs once per message, so it is written for speed without hiding the rules:
each rule's verdicts are plain boolean expressions, the recorded conditions are rows
turned into dicts in one comprehension, and what depends only on the policy is
computed once per policy object (``_Plan``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.models.decision import LEVEL_NAMES, ROUTES, Condition, Decision, Trigger
from streams.policy.model import QUORUM_BOUNDS

if TYPE_CHECKING:
    from streams.models.context import Context
    from streams.models.proposal import Proposal
    from streams.policy.model import ActionAuthorisation, Policy, Quorum

_DAY_SECONDS = 86_400.0
_ZERO = dt.timedelta(0)

R0 = "level0_untrusted"
R1 = "level1_assist"
RG = "regulatory"
R2 = "level2_supervised"
R4 = "level4_autonomous"
R3 = "level3_conditional"
RV = "velocity_guard"
RR = "policy_review"
RS = "similarity_guard"
RC = "calibration"
RQ = "approval_quorum"

Row = tuple[str, str, Any, str, Any, bool]


def decision_id_for(proposal: Proposal) -> str:
    """Deterministic id: the same proposal decided twice gets the same id."""
    key = (
        f"{proposal.proposal_id}\x1f{proposal.source.ai_system}\x1f"
        f"{proposal.created_at.isoformat()}\x1f{proposal.pattern}\x1f"
        f"{proposal.action.type}\x1f{proposal.action.target.service}"
    )
    return "d-" + hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What ``evaluate`` needs from one policy object, as plain values.

    Built once per policy object (policies are frozen; the loader sets the digest
    before anyone sees one). Tuples here are copied into fresh lists per decision, so
    no two decisions share a mutable value.
    """

    policy: Policy
    version: str
    digest: str
    keyring_digest: str
    trusted: frozenset[str]
    trusted_list: tuple[str, ...]
    shared: frozenset[str]
    shared_list: tuple[str, ...]
    actions_sorted: tuple[str, ...]
    requalification: dt.timedelta
    next_review: dt.date
    next_review_text: str
    abort_window: dt.timedelta
    approval_timeout: dt.timedelta

    @classmethod
    def of(cls, policy: Policy) -> _Plan:
        autonomous = policy.thresholds.autonomous
        return cls(
            policy=policy,
            version=policy.version,
            digest=policy.digest,
            keyring_digest=policy.keyring_digest,
            trusted=frozenset(policy.trusted_ai_systems),
            trusted_list=policy.trusted_ai_systems,
            shared=frozenset(policy.shared_infrastructure),
            shared_list=policy.shared_infrastructure,
            actions_sorted=tuple(sorted(autonomous.actions)),
            requalification=dt.timedelta(days=autonomous.requalification_days),
            next_review=policy.policy.next_review,
            next_review_text=policy.policy.next_review.isoformat(),
            abort_window=dt.timedelta(seconds=policy.abort_window_seconds),
            approval_timeout=dt.timedelta(seconds=policy.approval.timeout_seconds),
        )


def _plan_for(policy: Policy) -> _Plan:
    """The policy's plan, built on first use and kept on the (frozen) policy itself.

    A plan names its policy: a copy of a policy (``model_copy`` copies private
    attributes) gets a plan of its own.
    """
    plan = policy.evaluation_plan
    if not isinstance(plan, _Plan) or plan.policy is not policy:
        plan = _Plan.of(policy)
        policy.keep_evaluation_plan(plan)
    return plan


_DECISION_FIELDS = frozenset(Decision.model_fields)
_new_model = Decision.__new__
_set = object.__setattr__


def _new_decision(values: dict[str, Any]) -> Decision:
    """``Decision.model_construct(**values)`` without its per-field loop.

    ``values`` names every field (a unit test holds it to that). Same attributes as
    ``model_construct`` sets; ``evaluate`` built the values from validated inputs.
    """
    decision = _new_model(Decision)
    _set(decision, "__dict__", values)
    _set(decision, "__pydantic_fields_set__", set(_DECISION_FIELDS))
    _set(decision, "__pydantic_extra__", None)
    _set(decision, "__pydantic_private__", None)
    return decision


def _authorised_rows(
    authorisation: ActionAuthorisation, target_kind: str, environment: str, parameters: Any
) -> list[Row]:
    """The Level 4 constraint of one authorised action type, as condition rows."""
    rows: list[Row] = []
    kinds = authorisation.target_kinds
    if kinds is not None:
        rows.append((R4, "target_kind", target_kind, "in", list(kinds), target_kind in kinds))
    excluded = authorisation.excluded_environments
    if excluded:
        rows.append(
            (
                R4,
                "target_environment",
                environment,
                "not in",
                list(excluded),
                environment not in excluded,
            )
        )
    for parameter, limit in authorisation.max_parameters.items():
        value = parameters.get(parameter)
        # A bound is on a magnitude: a negative ``replicas_delta`` is a scale-down,
        # not a small scale-up, and must not ride on the scale-up authorisation.
        within = (
            isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= limit
        )
        rows.append((R4, f"parameters.{parameter}", value, "in", [0, limit], within))
    return rows


def _quorum_rows(
    quorums: tuple[Quorum, ...], *, level: int, frameworks: list[str], blast: Any
) -> tuple[list[Row], int]:
    """The condition rows of the policy's quorums, and the approvers a decision needs."""
    rows: list[Row] = []
    required = 1
    for quorum in quorums:
        name = quorum.name
        checks: list[Row] = []
        if quorum.regulated:
            checks.append((RQ, f"{name}.regulated", frameworks, "non-empty", [], bool(frameworks)))
        for bound in QUORUM_BOUNDS:
            limit = getattr(quorum, bound)
            if limit is not None:
                field = bound.removesuffix("_above")
                observed = getattr(blast, field)
                checks.append((RQ, f"{name}.{field}", observed, ">", limit, observed > limit))
        rows += checks
        if level == 2 and any(row[5] for row in checks):
            required = max(required, quorum.approvers)
    return rows, required


def evaluate(
    proposal: Proposal, context: Context, policy: Policy, *, decision_id: str | None = None
) -> Decision:
    """Decide the automation level of ``proposal`` under ``policy`` given ``context``.

    ``decision_id`` is ``decision_id_for(proposal)``, for a caller that has it already.
    """
    plan = _plan_for(policy)
    t = policy.thresholds
    a, s, au, c = t.assist, t.supervised, t.autonomous, t.conditional
    action = proposal.action
    target = action.target
    blast = proposal.blast_radius
    history = context.history
    seen = history.seen
    reported = proposal.confidence.composite
    # Calibrated confidence (streams/policy/calibration.py) only ever lowers it.
    calibrated = context.calibrated_confidence
    confidence = reported if calibrated is None or calibrated >= reported else calibrated
    budget = context.error_budget_remaining
    fp_rate = context.ai_false_positive_rate_7d
    # The verdict uses the exact ratio; the record shows it rounded for people.
    ratio = history.successes / seen if seen > 0 else None
    shown_ratio = round(ratio, 6) if ratio is not None else None
    ai_system = proposal.source.ai_system
    service = target.service

    # Rule 1: Level 0 for an AI system the policy does not trust.
    untrusted = ai_system not in plan.trusted

    # Rule 2: Level 1 (assist only) when ANY holds. Unknown values are left to rule
    # 4, which demands a human for them.
    assist_confidence = confidence < a.min_confidence
    assist_fp = fp_rate is not None and fp_rate > a.max_false_positive_rate
    # Near misses (streams/policy/similarity.py): a similar signature is not novel but
    # cannot reach Level 3 or 4; a signature with nothing near it is novel.
    signature = context.novelty
    similar = signature is not None and signature.kind == "similar"
    novel = (seen == 0 and not similar) or (signature is not None and signature.kind == "novel")
    assist_budget = budget is not None and budget < a.min_error_budget
    frozen = context.frozen
    assist = assist_confidence or assist_fp or novel or assist_budget or frozen

    # Rule 3: the regulatory boundary, from the proposal or the policy's lists.
    from_policy = policy.regulated_frameworks(service, target.namespace)
    frameworks = (
        sorted({*proposal.regulated, *from_policy}) if from_policy or proposal.regulated else []
    )
    regulated = bool(frameworks)

    # Rule 4: Level 2 when ANY holds.
    low_confidence = confidence < s.min_confidence
    wide_replicas = blast.replica_fraction > s.max_replica_fraction
    many_services = blast.services > s.max_services
    many_namespaces = blast.namespaces > s.max_namespaces
    wide_traffic = blast.traffic_fraction > s.max_traffic_fraction
    irreversible = s.require_reversible and not action.reversible
    slow_rollback = action.rollback_seconds > s.max_rollback_seconds
    blast_radius = (
        wide_replicas
        or many_services
        or many_namespaces
        or wide_traffic
        or irreversible
        or slow_rollback
    )
    few_seen = seen < s.min_seen
    degraded = budget is not None and a.min_error_budget <= budget <= s.degraded_error_budget
    budget_unknown = budget is None
    fp_unknown = fp_rate is None
    shared = service in plan.shared
    supervised = (
        low_confidence
        or blast_radius
        or few_seen
        or degraded
        or budget_unknown
        or fp_unknown
        or shared
    )

    # Rule 5: Level 4 when ALL hold.
    authorisation = au.actions.get(action.type)
    requalified_at = context.requalified_at
    if requalified_at is None:
        age_days, fresh = None, False
    else:
        age = context.now - requalified_at
        age_days = round(age.total_seconds() / _DAY_SECONDS, 6)
        fresh = _ZERO <= age <= plan.requalification
    autonomous_rows: list[Row] = [
        (R4, "history_seen", seen, ">=", au.min_seen, seen >= au.min_seen),
        (
            R4,
            "outcome_consistency",
            shown_ratio,
            ">=",
            au.consistency,
            ratio is not None and ratio >= au.consistency,
        ),
        (
            R4,
            "composite_confidence",
            confidence,
            ">=",
            au.min_confidence,
            confidence >= au.min_confidence,
        ),
        (
            R4,
            "idempotent",
            action.idempotent,
            "==",
            True,
            action.idempotent or not au.require_idempotent,
        ),
        (
            R4,
            "action_authorised",
            action.type,
            "in",
            list(plan.actions_sorted),
            authorisation is not None,
        ),
    ]
    if authorisation is not None:
        autonomous_rows += _authorised_rows(
            authorisation, target.kind, target.environment, action.parameters
        )
    autonomous_rows += [
        (R4, "requalified_days_ago", age_days, "<=", au.requalification_days, fresh),
        (
            R4,
            "requalification_revoked",
            context.requalification_revoked,
            "==",
            False,
            not context.requalification_revoked,
        ),
    ]
    autonomous = all(row[5] for row in autonomous_rows)

    # Rule 6: Level 3 when ALL hold.
    conditional_seen = seen >= c.min_seen
    conditional_consistent = ratio is not None and ratio >= c.consistency

    if untrusted:
        level, rule = 0, R0
    elif assist:
        level, rule = 1, R1
    elif regulated:
        level, rule = 2, RG
    elif supervised:
        level, rule = 2, R2
    elif autonomous:
        level, rule = 4, R4
    elif conditional_seen and conditional_consistent:
        level, rule = 3, R3
    else:
        level, rule = 2, "default_supervised"

    # Rule 8: the velocity guard (checked for every decision, applied to 3 and 4).
    v = policy.velocity
    recent = context.recent_autonomous
    too_fast_service = recent.service >= v.max_per_service
    too_fast_fleet = recent.fleet >= v.max_fleet
    if level >= 3 and (too_fast_service or too_fast_fleet):
        level, rule = 2, RV

    # A policy past its review date has lost its authority for autonomy.
    now = context.now
    today = now.astimezone(dt.UTC).date()
    overdue = today > plan.next_review
    if level >= 3 and similar:
        level, rule = 2, RS
    if level >= 3 and overdue:
        level, rule = 2, "policy_review_overdue"

    # The two-person rule: the largest quorum that applies to a Level 2 decision sets
    # how many different people must approve it.
    quorum_rows, approvals_required = _quorum_rows(
        policy.approval.quorums, level=level, frameworks=frameworks, blast=blast
    )

    rows: list[Row] = [
        (R0, "ai_system_untrusted", ai_system, "not in", list(plan.trusted_list), untrusted),
        (R1, "composite_confidence", confidence, "<", a.min_confidence, assist_confidence),
        (R1, "ai_false_positive_rate_7d", fp_rate, ">", a.max_false_positive_rate, assist_fp),
        (R1, "novelty", seen, "==", 0, novel),
        (R1, "error_budget_remaining", budget, "<", a.min_error_budget, assist_budget),
        (R1, "frozen", frozen, "==", True, frozen),
        (RG, "regulated_frameworks", frameworks, "non-empty", [], regulated),
        (R2, "composite_confidence", confidence, "<", s.min_confidence, low_confidence),
        (
            R2,
            "replica_fraction",
            blast.replica_fraction,
            ">",
            s.max_replica_fraction,
            wide_replicas,
        ),
        (R2, "services", blast.services, ">", s.max_services, many_services),
        (R2, "namespaces", blast.namespaces, ">", s.max_namespaces, many_namespaces),
        (
            R2,
            "traffic_fraction",
            blast.traffic_fraction,
            ">",
            s.max_traffic_fraction,
            wide_traffic,
        ),
        (R2, "reversible", action.reversible, "==", False, irreversible),
        (
            R2,
            "rollback_seconds",
            action.rollback_seconds,
            ">",
            s.max_rollback_seconds,
            slow_rollback,
        ),
        (R2, "history_seen", seen, "<", s.min_seen, few_seen),
        (
            R2,
            "error_budget_degraded",
            budget,
            "in",
            [a.min_error_budget, s.degraded_error_budget],
            degraded,
        ),
        (R2, "error_budget_unknown", budget, "is", None, budget_unknown),
        (R2, "ai_false_positive_rate_unknown", fp_rate, "is", None, fp_unknown),
        (R2, "shared_infrastructure", service, "in", list(plan.shared_list), shared),
        *autonomous_rows,
        (R3, "history_seen", seen, ">=", c.min_seen, conditional_seen),
        (R3, "outcome_consistency", shown_ratio, ">=", c.consistency, conditional_consistent),
        (
            RV,
            "recent_autonomous_service",
            recent.service,
            ">=",
            v.max_per_service,
            too_fast_service,
        ),
        (RV, "recent_autonomous_fleet", recent.fleet, ">=", v.max_fleet, too_fast_fleet),
        (RR, "review_overdue", today.isoformat(), ">", plan.next_review_text, overdue),
        *quorum_rows,
    ]
    if calibrated is not None:
        rows.append((RC, "calibrated_confidence", calibrated, "<", reported, calibrated < reported))
    if signature is not None:
        shown = signature.model_dump(mode="json")
        rows.append((RS, "similar_signature", shown, "<=", signature.max_distance, similar))
    conditions: list[Condition] = [
        {
            "rule": rule_name,
            "name": name,
            "observed": observed,
            "operator": operator,
            "threshold": threshold,
            "holds": holds,
        }
        for rule_name, name, observed, operator, threshold, holds in rows
    ]

    triggers: list[Trigger] = []
    if low_confidence:
        triggers.append("confidence")
    if blast_radius:
        triggers.append("blast_radius")
    if novel:
        triggers.append("novelty")
    if regulated:
        triggers.append("regulatory")

    return _new_decision(
        {
            "type": "decision",
            "schema_version": 1,
            "decision_id": decision_id or decision_id_for(proposal),
            "proposal_id": proposal.proposal_id,
            "level": level,
            "level_name": LEVEL_NAMES[level],
            "route": ROUTES[level],
            "deciding_rule": rule,
            "triggers": tuple(triggers),
            "change_record_required": level == 2 and regulated,
            "conditions": tuple(conditions),
            "policy_version": plan.version,
            "policy_digest": plan.digest,
            "keyring_digest": plan.keyring_digest,
            "decided_at": now,
            "abort_window_ends_at": now + plan.abort_window if level == 3 else None,
            "approval_timeout_at": now + plan.approval_timeout if level == 2 else None,
            "approvals_required": approvals_required,
            "notify_humans": level != 4,
            "proposal": proposal,
            "context": context,
        }
    )
