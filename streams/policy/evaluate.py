# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""``evaluate(proposal, context, policy) -> Decision``: SPEC section 5, rule by rule.

Pure: time comes from ``context.now``; no I/O, no clock, no Kafka. Every condition
of every rule is evaluated and recorded (observed value, operator, threshold,
verdict), so a reviewer can see why a decision was taken and why the others were
not; the first rule that decides, decides.

This runs once per message, so it is written for speed without hiding the rules.
A policy is compiled once per policy object (``_compile``; the plan is kept on the
policy itself and names it): its thresholds become local values of a closure, and
every recorded condition two *template* dicts, one holding and one not, with the
rule, name, operator and threshold filled in. A decision reads its inputs from the
models' ``__dict__``, computes each rule's verdicts as plain boolean expressions (as
SPEC 5 states them), then copies the template of each verdict (``dict.copy`` of a
small dict costs about a third of building one) and sets what it observed. No two
decisions share a dict or a list: templates are copied, list thresholds copied again.
The decision's own attributes are copied the same way from a template per level
(a 21-key dict display costs about twice a copy and the dozen values set after it).
Timestamps are parsed by pydantic, each with a ``TzInfo`` of its own, which
``datetime``'s C code asks for its offset through a slow generic call: the id's
timestamp text (written by orjson) and the review date ask the tzinfo directly
(``_isoformat``, ``_offset``), and the requalification age is rounded without
``round``'s decimal conversion when the answer is plain (``_round_6``); unit tests
hold each to the plain computation. ``bench/evaluate.py`` measures it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from streams.models.decision import LEVEL_NAMES, ROUTES, Condition, Decision, Trigger
from streams.policy.model import QUORUM_BOUNDS

if TYPE_CHECKING:
    from collections.abc import Callable

    from streams.models.context import Context
    from streams.models.proposal import Proposal
    from streams.policy.model import ActionAuthorisation, Policy, Quorum

    #: The extra rows of one action type's Level 4 constraint, and whether all hold.
    AuthorisedCheck = Callable[[str, str, dict[str, Any]], tuple[list[Condition], bool]]
    #: The quorum rows of a decision, and the approvers it needs.
    QuorumCheck = Callable[[int, list[Any], Any], tuple[list[Condition], int]]

_DAY_SECONDS = 86_400.0
_ZERO = dt.timedelta(0)
_UTC = dt.UTC
_sha256 = hashlib.sha256
_dumps = orjson.dumps

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


def _offset(instant: dt.datetime) -> dt.timedelta | None:
    """``instant.utcoffset()``, asked of the tzinfo directly.

    ``datetime``'s C code calls the tzinfo's ``utcoffset`` by name through a generic
    method call; for pydantic's ``TzInfo`` (every parsed timestamp carries its own)
    that costs about ten times the direct call. Same answer for any tzinfo that keeps
    the protocol (a ``timedelta`` or ``None``), which every aware ``Instant`` does.
    """
    tz = instant.tzinfo
    return None if tz is None else tz.utcoffset(instant)


def _isoformat(instant: dt.datetime) -> str:
    """``instant.isoformat()``, about three times cheaper for a UTC instant.

    ``isoformat`` asks the tzinfo for its offset as ``_offset`` explains and formats
    through ``printf``; orjson writes a datetime as the same ISO text (its own code,
    in Rust) except for an offset with seconds, which it cuts to minutes, so it is
    asked only for an instant at offset zero. Anything else is left to ``isoformat``.
    """
    tz = instant.tzinfo
    if tz is not None and tz.utcoffset(instant) == _ZERO:  # ``_offset``, inlined
        try:
            return _dumps(instant)[1:-1].decode()
        except TypeError:  # a datetime subclass: orjson writes only datetime itself
            pass
    return instant.isoformat()


#: Below this many millionths a float is a multiple of ``2**-23``: exact to ``2**-24``.
_ROUNDED_EXACTLY_BELOW = float(2**30)


def _round_6(value: float) -> float:
    """``round(value, 6)``, without its decimal conversion when the answer is plain.

    ``round`` with digits writes the value's exact decimal expansion (``dtoa``) and
    reads it back, a third of a decision's age computation. For a positive value
    whose product with ``1e6`` is below ``2**30`` and whose fraction is more than
    ``0.001`` from a half, that product (within ``2**-24`` of the exact one) names the
    nearest whole number of millionths, and dividing it by ``1e6`` gives the float
    nearest that decimal, which is what ``round`` returns. ``%`` and ``-`` are exact
    there. Near a tie, for large, negative or zero values, ``round`` decides.
    """
    scaled = value * 1e6
    if 0.0 < scaled < _ROUNDED_EXACTLY_BELOW:
        fraction = scaled % 1.0
        if fraction < 0.499:
            return (scaled - fraction) / 1e6
        if fraction > 0.501:
            return (scaled - fraction + 1.0) / 1e6
    return round(value, 6)


def _decision_id(  # noqa: PLR0913, PLR0917 - the six parts of the id, in order
    proposal_id: str,
    ai_system: str,
    created_at: dt.datetime,
    pattern: str,
    action_type: str,
    service: str,
) -> str:
    key = (
        f"{proposal_id}\x1f{ai_system}\x1f{_isoformat(created_at)}\x1f{pattern}\x1f"
        f"{action_type}\x1f{service}"
    )
    # The first 16 bytes in hex: the first 32 characters of ``hexdigest()``.
    return "d-" + _sha256(key.encode()).hexdigest()[:32]


def decision_id_for(proposal: Proposal) -> str:
    """Deterministic id: the same proposal decided twice gets the same id."""
    action = proposal.action
    return _decision_id(
        proposal.proposal_id,
        proposal.source.ai_system,
        proposal.created_at,
        proposal.pattern,
        action.type,
        action.target.service,
    )


def _template(rule: str, name: str, operator: str, threshold: Any) -> Condition:
    """A condition with everything but what a decision observes and its verdict.

    The key order is the order every decision records (and serialises) a condition in.
    """
    return {
        "rule": rule,
        "name": name,
        "observed": None,
        "operator": operator,
        "threshold": threshold,
        "holds": False,
    }


def _outcomes(rule: str, name: str, operator: str, threshold: Any) -> tuple[Condition, Condition]:
    """A condition's template twice: once holding, once not (``observed`` still unset)."""
    holds = _template(rule, name, operator, threshold)
    holds["holds"] = True
    return holds, _template(rule, name, operator, threshold)


def _filled(template: Condition, *, observed: bool, holds: bool) -> Condition:
    """``template`` with what it observed and its verdict (known at compile time)."""
    condition = template.copy()
    condition["observed"] = observed
    condition["holds"] = holds
    return condition


_DECISION_FIELDS = frozenset(Decision.model_fields)
_new_model = Decision.__new__
# The four slots ``BaseModel`` declares, set through their descriptors (``__set__``
# of a slot is about half the cost of ``object.__setattr__`` by name).
_slots = BaseModel.__dict__
_set_dict = _slots["__dict__"].__set__
_set_fields_set = _slots["__pydantic_fields_set__"].__set__
_set_extra = _slots["__pydantic_extra__"].__set__
_set_private = _slots["__pydantic_private__"].__set__


#: The triggers of a decision, by ``confidence + 2 * blast_radius + 4 * novelty +
#: 8 * regulatory`` (each 0 or 1), in that order.
_TRIGGER_ORDER: tuple[Trigger, ...] = ("confidence", "blast_radius", "novelty", "regulatory")
_TRIGGERS: tuple[tuple[Trigger, ...], ...] = tuple(
    tuple(name for bit, name in enumerate(_TRIGGER_ORDER) if mask >> bit & 1) for mask in range(16)
)


def _authorised_check(authorisation: ActionAuthorisation) -> AuthorisedCheck | None:
    """The Level 4 constraint of one authorised action type, compiled once.

    ``None`` when the authorisation constrains nothing (no rows, always holds).
    """
    kinds = authorisation.target_kinds
    excluded = authorisation.excluded_environments
    limits = tuple(
        (parameter, *_outcomes(R4, f"parameters.{parameter}", "in", None), limit)
        for parameter, limit in authorisation.max_parameters.items()
    )
    if kinds is None and not excluded and not limits:
        return None
    kind_holds, kind_fails = _outcomes(R4, "target_kind", "in", None)
    environment_holds, environment_fails = _outcomes(R4, "target_environment", "not in", None)
    # ``isinstance`` against a tuple: ``int | float`` would build a union every call.
    numbers = (int, float)

    def check(
        target_kind: str, environment: str, parameters: dict[str, Any]
    ) -> tuple[list[Condition], bool]:
        rows: list[Condition] = []
        ok = True
        if kinds is not None:
            ok = target_kind in kinds
            row = (kind_holds if ok else kind_fails).copy()
            row["observed"] = target_kind
            row["threshold"] = [*kinds]
            rows.append(row)
        if excluded:
            held = environment not in excluded
            row = (environment_holds if held else environment_fails).copy()
            row["observed"] = environment
            row["threshold"] = [*excluded]
            rows.append(row)
            ok = ok and held
        for parameter, holds, fails, limit in limits:
            value = parameters.get(parameter)
            # A bound is on a magnitude: a negative ``replicas_delta`` is a scale-down,
            # not a small scale-up, and must not ride on the scale-up authorisation.
            held = (
                isinstance(value, numbers) and not isinstance(value, bool) and 0 <= value <= limit
            )
            row = (holds if held else fails).copy()
            row["observed"] = value
            row["threshold"] = [0, limit]
            rows.append(row)
            ok = ok and held
        return rows, ok

    return check


def _quorum_check(quorums: tuple[Quorum, ...]) -> QuorumCheck | None:
    """The policy's quorums (the two-person rule), compiled once; ``None`` without any."""
    if not quorums:
        return None
    compiled = []
    for quorum in quorums:
        name = quorum.name
        regulated = (
            _template(RQ, f"{name}.regulated", "non-empty", None) if quorum.regulated else None
        )
        bounds = []
        for bound in QUORUM_BOUNDS:
            limit = getattr(quorum, bound)
            if limit is not None:
                field = bound.removesuffix("_above")
                bounds.append((field, _template(RQ, f"{name}.{field}", ">", limit), limit))
        compiled.append((quorum.approvers, regulated, tuple(bounds)))

    def check(level: int, frameworks: list[Any], blast: Any) -> tuple[list[Condition], int]:
        rows: list[Condition] = []
        required = 1
        for approvers, regulated, bounds in compiled:
            applies = False
            if regulated is not None:
                row = regulated.copy()
                row["observed"] = frameworks
                row["threshold"] = []
                row["holds"] = held = bool(frameworks)
                rows.append(row)
                applies = held
            for field, template, limit in bounds:
                observed = getattr(blast, field)
                row = template.copy()
                row["observed"] = observed
                row["holds"] = held = observed > limit
                rows.append(row)
                applies = applies or held
            if level == 2 and applies:
                required = max(required, approvers)
        return rows, required

    return check


@dataclass(frozen=True, slots=True)
class _Plan:
    """A policy compiled for ``evaluate``: the policy it was compiled from, and the
    function that decides under it."""

    policy: Policy
    run: Callable[[Proposal, Context, str | None], Decision]


def _compile(policy: Policy) -> _Plan:
    """Compile ``policy`` into the function that decides under it (see the module doc).

    Policies are immutable governance documents: what is read here is read once.
    """
    t = policy.thresholds
    a, s, au, c = t.assist, t.supervised, t.autonomous, t.conditional
    velocity = policy.velocity

    # Thresholds, as locals of the closure below.
    assist_min_confidence = a.min_confidence
    assist_max_fp = a.max_false_positive_rate
    assist_min_budget = a.min_error_budget
    supervised_min_confidence = s.min_confidence
    max_replica_fraction = s.max_replica_fraction
    max_services = s.max_services
    max_namespaces = s.max_namespaces
    max_traffic_fraction = s.max_traffic_fraction
    require_reversible = s.require_reversible
    max_rollback_seconds = s.max_rollback_seconds
    supervised_min_seen = s.min_seen
    degraded_budget = s.degraded_error_budget
    autonomous_min_seen = au.min_seen
    autonomous_consistency = au.consistency
    autonomous_min_confidence = au.min_confidence
    require_idempotent = au.require_idempotent
    requalification = dt.timedelta(days=au.requalification_days)
    authorised = {name: _authorised_check(rule) for name, rule in au.actions.items()}
    actions_sorted = tuple(sorted(au.actions))
    conditional_min_seen = c.min_seen
    conditional_consistency = c.consistency
    max_per_service = velocity.max_per_service
    max_fleet = velocity.max_fleet
    trusted = frozenset(policy.trusted_ai_systems)
    trusted_list = policy.trusted_ai_systems
    shared = frozenset(policy.shared_infrastructure)
    shared_list = policy.shared_infrastructure
    regulated_services = policy.regulated.services
    regulated_namespaces = policy.regulated.namespaces
    quorums = _quorum_check(policy.approval.quorums)
    next_review = policy.policy.next_review
    abort_window = dt.timedelta(seconds=policy.abort_window_seconds)
    approval_timeout = dt.timedelta(seconds=policy.approval.timeout_seconds)
    version, digest, keyring_digest = policy.version, policy.digest, policy.keyring_digest

    # The templates of every recorded condition, in the order a decision records them:
    # one per verdict (``_outcomes``), so a decision copies the one that applies and
    # sets what it observed. A list threshold gets a fresh copy per decision.
    t_untrusted_holds, t_untrusted_fails = _outcomes(R0, "ai_system_untrusted", "not in", None)
    t_assist_confidence_holds, t_assist_confidence_fails = _outcomes(
        R1, "composite_confidence", "<", assist_min_confidence
    )
    t_assist_fp_holds, t_assist_fp_fails = _outcomes(
        R1, "ai_false_positive_rate_7d", ">", assist_max_fp
    )
    t_novelty_holds, t_novelty_fails = _outcomes(R1, "novelty", "==", 0)
    t_assist_budget_holds, t_assist_budget_fails = _outcomes(
        R1, "error_budget_remaining", "<", assist_min_budget
    )
    # A condition that observes a boolean and whose verdict follows from it alone has
    # both outcomes filled in: a decision copies the one it observed.
    t_frozen = _template(R1, "frozen", "==", True)
    t_frozen_yes = _filled(t_frozen, observed=True, holds=True)
    t_frozen_no = _filled(t_frozen, observed=False, holds=False)
    t_regulated_holds, t_regulated_fails = _outcomes(RG, "regulated_frameworks", "non-empty", None)
    t_low_confidence_holds, t_low_confidence_fails = _outcomes(
        R2, "composite_confidence", "<", supervised_min_confidence
    )
    t_replicas_holds, t_replicas_fails = _outcomes(
        R2, "replica_fraction", ">", max_replica_fraction
    )
    t_services_holds, t_services_fails = _outcomes(R2, "services", ">", max_services)
    t_namespaces_holds, t_namespaces_fails = _outcomes(R2, "namespaces", ">", max_namespaces)
    t_traffic_holds, t_traffic_fails = _outcomes(R2, "traffic_fraction", ">", max_traffic_fraction)
    t_reversible = _template(R2, "reversible", "==", False)
    t_reversible_yes = _filled(t_reversible, observed=True, holds=False)
    t_reversible_no = _filled(t_reversible, observed=False, holds=require_reversible)
    t_rollback_holds, t_rollback_fails = _outcomes(
        R2, "rollback_seconds", ">", max_rollback_seconds
    )
    t_few_seen_holds, t_few_seen_fails = _outcomes(R2, "history_seen", "<", supervised_min_seen)
    t_degraded_holds, t_degraded_fails = _outcomes(R2, "error_budget_degraded", "in", None)
    t_budget_unknown_holds, t_budget_unknown_fails = _outcomes(
        R2, "error_budget_unknown", "is", None
    )
    t_fp_unknown_holds, t_fp_unknown_fails = _outcomes(
        R2, "ai_false_positive_rate_unknown", "is", None
    )
    t_shared_holds, t_shared_fails = _outcomes(R2, "shared_infrastructure", "in", None)
    t_auto_seen_holds, t_auto_seen_fails = _outcomes(R4, "history_seen", ">=", autonomous_min_seen)
    t_auto_consistency_holds, t_auto_consistency_fails = _outcomes(
        R4, "outcome_consistency", ">=", autonomous_consistency
    )
    t_auto_confidence_holds, t_auto_confidence_fails = _outcomes(
        R4, "composite_confidence", ">=", autonomous_min_confidence
    )
    t_idempotent = _template(R4, "idempotent", "==", True)
    t_idempotent_yes = _filled(t_idempotent, observed=True, holds=True)
    t_idempotent_no = _filled(t_idempotent, observed=False, holds=not require_idempotent)
    t_authorised_holds, t_authorised_fails = _outcomes(R4, "action_authorised", "in", None)
    t_requalified_holds, t_requalified_fails = _outcomes(
        R4, "requalified_days_ago", "<=", au.requalification_days
    )
    t_revoked = _template(R4, "requalification_revoked", "==", False)
    t_revoked_yes = _filled(t_revoked, observed=True, holds=False)
    t_revoked_no = _filled(t_revoked, observed=False, holds=True)
    t_cond_seen_holds, t_cond_seen_fails = _outcomes(R3, "history_seen", ">=", conditional_min_seen)
    t_cond_consistency_holds, t_cond_consistency_fails = _outcomes(
        R3, "outcome_consistency", ">=", conditional_consistency
    )
    t_fast_service_holds, t_fast_service_fails = _outcomes(
        RV, "recent_autonomous_service", ">=", max_per_service
    )
    t_fast_fleet_holds, t_fast_fleet_fails = _outcomes(
        RV, "recent_autonomous_fleet", ">=", max_fleet
    )
    t_review_holds, t_review_fails = _outcomes(RR, "review_overdue", ">", next_review.isoformat())
    t_calibrated = _template(RC, "calibrated_confidence", "<", None)
    t_similar = _template(RS, "similar_signature", "<=", None)
    # A decision's attributes, in the order of ``Decision``'s fields: one template per
    # level, with what the level and the policy decide filled in, copied per decision.
    decision_templates: tuple[dict[str, Any], ...] = tuple(
        {
            "type": "decision",
            "schema_version": 1,
            "decision_id": "",
            "proposal_id": "",
            "level": level,
            "level_name": LEVEL_NAMES[level],
            "route": ROUTES[level],
            "deciding_rule": "",
            "triggers": (),
            "change_record_required": False,
            "conditions": (),
            "policy_version": version,
            "policy_digest": digest,
            "keyring_digest": keyring_digest,
            "decided_at": None,
            "abort_window_ends_at": None,
            "approval_timeout_at": None,
            "approvals_required": 1,
            "notify_humans": level != 4,
            "proposal": None,
            "context": None,
        }
        for level in sorted(LEVEL_NAMES)
    )
    # The last UTC date decided on, whether the review is overdue on it, and its review
    # condition filled in (replaced whole, never mutated; a decision copies the row).
    review_day: tuple[dt.date | None, bool, Condition] = (None, False, t_review_fails)

    def run(proposal: Proposal, context: Context, decision_id: str | None) -> Decision:
        # Fields are read from each model's ``__dict__`` (where pydantic keeps them):
        # ``BaseModel`` defines ``__getattr__``, and an attribute read through that
        # hook costs about three dict reads.
        p = proposal.__dict__
        x = context.__dict__
        action = p["action"].__dict__
        target = action["target"].__dict__
        blast_model = p["blast_radius"]
        blast = blast_model.__dict__
        history = x["history"].__dict__
        seen = history["seen"]
        confidences = p["confidence"].__dict__
        reported = confidences["model"]
        heuristic = confidences["heuristic"]
        # The composite is min(model, heuristic) (``Confidence.composite``).
        if heuristic is not None and heuristic < reported:
            reported = heuristic
        # Calibrated confidence (streams/policy/calibration.py) only ever lowers it.
        calibrated = x["calibrated_confidence"]
        confidence = reported if calibrated is None or calibrated >= reported else calibrated
        budget = x["error_budget_remaining"]
        fp_rate = x["ai_false_positive_rate_7d"]
        # The verdict uses the exact ratio; the record shows it rounded for people.
        ratio: float | None
        shown_ratio: float | None
        if seen > 0:
            successes = history["successes"]
            if successes == seen:
                ratio = shown_ratio = 1.0
            else:
                ratio = successes / seen
                shown_ratio = round(ratio, 6)
        else:
            ratio = shown_ratio = None
        ai_system = p["source"].__dict__["ai_system"]
        service = target["service"]
        action_type = action["type"]
        proposal_id = p["proposal_id"]

        # Rule 1: Level 0 for an AI system the policy does not trust.
        untrusted = ai_system not in trusted

        # Rule 2: Level 1 (assist only) when ANY holds. Unknown values are left to
        # rule 4, which demands a human for them.
        assist_confidence = confidence < assist_min_confidence
        assist_fp = fp_rate is not None and fp_rate > assist_max_fp
        # Near misses (streams/policy/similarity.py): a similar signature is not novel
        # but cannot reach Level 3 or 4; a signature with nothing near it is novel.
        signature = x["novelty"]
        if signature is None:
            similar = False
            novel = seen == 0
        else:
            similar = signature.kind == "similar"
            novel = (seen == 0 and not similar) or signature.kind == "novel"
        assist_budget = budget is not None and budget < assist_min_budget
        frozen = x["frozen"]
        assist = assist_confidence or assist_fp or novel or assist_budget or frozen

        # Rule 3: the regulatory boundary, from the proposal or the policy's lists.
        from_policy = regulated_services.get(service, ()) + regulated_namespaces.get(
            target["namespace"], ()
        )
        from_proposal = p["regulated"]
        frameworks: list[Any] = (
            sorted({*from_proposal, *from_policy}) if from_policy or from_proposal else []
        )
        regulated = bool(frameworks)

        # Rule 4: Level 2 when ANY holds.
        low_confidence = confidence < supervised_min_confidence
        replica_fraction = blast["replica_fraction"]
        wide_replicas = replica_fraction > max_replica_fraction
        services = blast["services"]
        many_services = services > max_services
        namespaces = blast["namespaces"]
        many_namespaces = namespaces > max_namespaces
        traffic_fraction = blast["traffic_fraction"]
        wide_traffic = traffic_fraction > max_traffic_fraction
        reversible = action["reversible"]
        irreversible = require_reversible and not reversible
        rollback_seconds = action["rollback_seconds"]
        slow_rollback = rollback_seconds > max_rollback_seconds
        blast_radius = (
            wide_replicas
            or many_services
            or many_namespaces
            or wide_traffic
            or irreversible
            or slow_rollback
        )
        few_seen = seen < supervised_min_seen
        budget_unknown = budget is None
        degraded = budget is not None and assist_min_budget <= budget <= degraded_budget
        fp_unknown = fp_rate is None
        is_shared = service in shared
        supervised = (
            low_confidence
            or blast_radius
            or few_seen
            or degraded
            or budget_unknown
            or fp_unknown
            or is_shared
        )

        # Rule 5: Level 4 when ALL hold.
        auto_seen = seen >= autonomous_min_seen
        auto_consistent = ratio is not None and ratio >= autonomous_consistency
        auto_confident = confidence >= autonomous_min_confidence
        idempotent = action["idempotent"]
        idempotent_ok = idempotent or not require_idempotent
        is_authorised = action_type in authorised
        check = authorised.get(action_type)
        if check is None:
            authorised_rows: list[Condition] = []
            authorised_ok = True
        else:
            authorised_rows, authorised_ok = check(
                target["kind"], target["environment"], action["parameters"]
            )
        now = x["now"]
        requalified_at = x["requalified_at"]
        if requalified_at is None:
            age_days, fresh = None, False
        else:
            age = now - requalified_at
            age_days = _round_6(age.total_seconds() / _DAY_SECONDS)
            fresh = _ZERO <= age <= requalification
        revoked = x["requalification_revoked"]
        autonomous = (
            auto_seen
            and auto_consistent
            and auto_confident
            and idempotent_ok
            and is_authorised
            and authorised_ok
            and fresh
            and not revoked
        )

        # Rule 6: Level 3 when ALL hold.
        conditional_seen = seen >= conditional_min_seen
        conditional_consistent = ratio is not None and ratio >= conditional_consistency

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
        recent = x["recent_autonomous"].__dict__
        recent_service = recent["service"]
        recent_fleet = recent["fleet"]
        too_fast_service = recent_service >= max_per_service
        too_fast_fleet = recent_fleet >= max_fleet
        if level >= 3 and (too_fast_service or too_fast_fleet):
            level, rule = 2, RV

        # A policy past its review date has lost its authority for autonomy.
        # The UTC date: ``now.astimezone(UTC).date()``, without building the datetime,
        # from the offset asked of the tzinfo directly (``_offset``, inlined).
        tz = now.tzinfo
        offset = None if tz is None else tz.utcoffset(now)
        if offset is None:
            today = now.astimezone(_UTC).date()
        else:
            today = (now - offset).date() if offset else now.date()
        nonlocal review_day
        day, overdue, review = review_day
        if day != today:
            overdue = today > next_review
            review = (t_review_holds if overdue else t_review_fails).copy()
            review["observed"] = today.isoformat()
            review_day = (today, overdue, review)
        if level >= 3 and similar:
            level, rule = 2, RS
        if level >= 3 and overdue:
            level, rule = 2, "policy_review_overdue"

        # The conditions, in SPEC order: copy each template, record what was seen.
        c0 = (t_untrusted_holds if untrusted else t_untrusted_fails).copy()
        c0["observed"] = ai_system
        c0["threshold"] = [*trusted_list]
        c1 = (t_assist_confidence_holds if assist_confidence else t_assist_confidence_fails).copy()
        c1["observed"] = confidence
        c2 = (t_assist_fp_holds if assist_fp else t_assist_fp_fails).copy()
        c2["observed"] = fp_rate
        c3 = (t_novelty_holds if novel else t_novelty_fails).copy()
        c3["observed"] = seen
        c4 = (t_assist_budget_holds if assist_budget else t_assist_budget_fails).copy()
        c4["observed"] = budget
        c5 = (t_frozen_yes if frozen else t_frozen_no).copy()
        c6 = (t_regulated_holds if regulated else t_regulated_fails).copy()
        c6["observed"] = frameworks
        c6["threshold"] = []
        c7 = (t_low_confidence_holds if low_confidence else t_low_confidence_fails).copy()
        c7["observed"] = confidence
        c8 = (t_replicas_holds if wide_replicas else t_replicas_fails).copy()
        c8["observed"] = replica_fraction
        c9 = (t_services_holds if many_services else t_services_fails).copy()
        c9["observed"] = services
        c10 = (t_namespaces_holds if many_namespaces else t_namespaces_fails).copy()
        c10["observed"] = namespaces
        c11 = (t_traffic_holds if wide_traffic else t_traffic_fails).copy()
        c11["observed"] = traffic_fraction
        c12 = (t_reversible_yes if reversible else t_reversible_no).copy()
        c13 = (t_rollback_holds if slow_rollback else t_rollback_fails).copy()
        c13["observed"] = rollback_seconds
        c14 = (t_few_seen_holds if few_seen else t_few_seen_fails).copy()
        c14["observed"] = seen
        c15 = (t_degraded_holds if degraded else t_degraded_fails).copy()
        c15["observed"] = budget
        c15["threshold"] = [assist_min_budget, degraded_budget]
        c16 = (t_budget_unknown_holds if budget_unknown else t_budget_unknown_fails).copy()
        c16["observed"] = budget
        c17 = (t_fp_unknown_holds if fp_unknown else t_fp_unknown_fails).copy()
        c17["observed"] = fp_rate
        c18 = (t_shared_holds if is_shared else t_shared_fails).copy()
        c18["observed"] = service
        c18["threshold"] = [*shared_list]
        c19 = (t_auto_seen_holds if auto_seen else t_auto_seen_fails).copy()
        c19["observed"] = seen
        c20 = (t_auto_consistency_holds if auto_consistent else t_auto_consistency_fails).copy()
        c20["observed"] = shown_ratio
        c21 = (t_auto_confidence_holds if auto_confident else t_auto_confidence_fails).copy()
        c21["observed"] = confidence
        c22 = (t_idempotent_yes if idempotent else t_idempotent_no).copy()
        c23 = (t_authorised_holds if is_authorised else t_authorised_fails).copy()
        c23["observed"] = action_type
        c23["threshold"] = [*actions_sorted]
        c24 = (t_requalified_holds if fresh else t_requalified_fails).copy()
        c24["observed"] = age_days
        c25 = (t_revoked_yes if revoked else t_revoked_no).copy()
        c26 = (t_cond_seen_holds if conditional_seen else t_cond_seen_fails).copy()
        c26["observed"] = seen
        c27 = (
            t_cond_consistency_holds if conditional_consistent else t_cond_consistency_fails
        ).copy()
        c27["observed"] = shown_ratio
        c28 = (t_fast_service_holds if too_fast_service else t_fast_service_fails).copy()
        c28["observed"] = recent_service
        c29 = (t_fast_fleet_holds if too_fast_fleet else t_fast_fleet_fails).copy()
        c29["observed"] = recent_fleet
        c30 = review.copy()
        conditions: tuple[Condition, ...] = (
            c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17,
            c18, c19, c20, c21, c22, c23, *authorised_rows, c24, c25, c26, c27, c28, c29, c30,
        )  # fmt: skip

        # The two-person rule: the largest quorum that applies to a Level 2 decision
        # sets how many different people must approve it.
        approvals_required = 1
        if quorums is not None:
            quorum_rows, approvals_required = quorums(level, frameworks, blast_model)
            conditions += tuple(quorum_rows)
        if calibrated is not None:
            row = t_calibrated.copy()
            row["observed"] = calibrated
            row["threshold"] = reported
            row["holds"] = calibrated < reported
            conditions += (row,)
        if signature is not None:
            row = t_similar.copy()
            row["observed"] = signature.model_dump(mode="json")
            row["threshold"] = signature.max_distance
            row["holds"] = similar
            conditions += (row,)

        triggers = _TRIGGERS[low_confidence + 2 * blast_radius + 4 * novel + 8 * regulated]

        # ``Decision.model_construct(**values)`` without its per-field loop: the same
        # four attributes, every field named (a unit test holds it to that); the values
        # come from validated inputs. The level's template holds what the level and
        # the policy decide; the rest is set in place, so the order stays the fields'.
        values = decision_templates[level].copy()
        values["decision_id"] = decision_id or _decision_id(
            proposal_id, ai_system, p["created_at"], p["pattern"], action_type, service
        )
        values["proposal_id"] = proposal_id
        values["deciding_rule"] = rule
        values["triggers"] = triggers
        values["conditions"] = conditions
        values["decided_at"] = now
        if level == 3:
            values["abort_window_ends_at"] = now + abort_window
        elif level == 2:
            values["approval_timeout_at"] = now + approval_timeout
            if regulated:
                values["change_record_required"] = True
        if approvals_required != 1:
            values["approvals_required"] = approvals_required
        values["proposal"] = proposal
        values["context"] = context
        decision = _new_model(Decision)
        _set_dict(decision, values)
        _set_fields_set(decision, set(_DECISION_FIELDS))
        _set_extra(decision, None)
        _set_private(decision, None)
        return decision

    return _Plan(policy, run)


def _plan_for(policy: Policy) -> _Plan:
    """The policy's compiled plan, built on first use and kept on the policy itself.

    A plan names its policy: a copy of a policy (``model_copy`` copies private
    attributes) gets a plan of its own, and ``Policy.bind_keyring`` drops the plan.
    """
    plan = policy.evaluation_plan
    if not isinstance(plan, _Plan) or plan.policy is not policy:
        plan = _compile(policy)
        policy.keep_evaluation_plan(plan)
    return plan


def evaluate(
    proposal: Proposal, context: Context, policy: Policy, *, decision_id: str | None = None
) -> Decision:
    """Decide the automation level of ``proposal`` under ``policy`` given ``context``.

    ``decision_id`` is ``decision_id_for(proposal)``, for a caller that has it already.
    """
    # The plan's slot read directly: ``Policy.evaluation_plan`` goes through pydantic's
    # ``__getattr__`` for private attributes, a measurable share of a decision.
    private = policy.__pydantic_private__
    plan = private.get("_plan") if private else None
    if plan is None or plan.policy is not policy:
        plan = _plan_for(policy)
    return plan.run(proposal, context, decision_id)
