# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""What a new policy version changes, in words a reviewer reads, and in which direction.

``diff_policies(old, new)`` compares two validated policies field by field. Each
change is classified as granting ``more autonomy`` (fewer decisions reach a human),
``less autonomy``, or ``neutral`` (governance, approvers, timeouts that do not move a
level). A field this module does not know yet is still reported, as neutral, so a
new policy section never changes silently.

Pure: takes ``Policy`` values; the command line reads the files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from streams.policy.model import ActionAuthorisation, Policy

Direction = Literal["more autonomy", "less autonomy", "neutral"]
MORE: Direction = "more autonomy"
LESS: Direction = "less autonomy"
NEUTRAL: Direction = "neutral"

Path_ = tuple[str, ...]
#: How a scalar's change reads: raising it grants more autonomy, less, or neither.
Sense = Literal["up_more", "up_less", "neutral", "true_less"]


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One difference between two policies, as a reviewer would say it."""

    section: str
    path: str
    text: str
    old: Any
    new: Any
    direction: Direction

    @property
    def line(self) -> str:
        """``Level 4 minimum confidence: 0.85 -> 0.8 (more autonomy)``."""
        return f"{self.text} ({self.direction})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "path": self.path,
            "text": self.text,
            "old": _jsonable(self.old),
            "new": _jsonable(self.new),
            "direction": self.direction,
        }


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    """Every change from ``old`` to ``new``, in policy-document order."""

    old_version: str
    new_version: str
    old_digest: str
    new_digest: str
    changes: tuple[PolicyChange, ...]

    def by_direction(self, direction: Direction) -> list[PolicyChange]:
        """The changes classified as ``direction``."""
        return [c for c in self.changes if c.direction == direction]

    @property
    def grants_more_autonomy(self) -> bool:
        """At least one change lets decisions reach a human less often."""
        return any(c.direction == MORE for c in self.changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": {"version": self.old_version, "digest": self.old_digest},
            "new": {"version": self.new_version, "digest": self.new_digest},
            "summary": {
                "changes": len(self.changes),
                "more_autonomy": len(self.by_direction(MORE)),
                "less_autonomy": len(self.by_direction(LESS)),
                "neutral": len(self.by_direction(NEUTRAL)),
            },
            "changes": [c.as_dict() for c in self.changes],
        }

    def to_json(self) -> str:
        """One JSON object (``escalation policy diff --json``)."""
        return orjson.dumps(self.as_dict()).decode()


# Scalars in document order: (path, what a reviewer calls it, how to read a rise).
_SCALARS: tuple[tuple[str, Path_, str, Sense], ...] = (
    ("governance", ("policy", "name"), "Policy name", "neutral"),
    ("governance", ("policy", "version"), "Version", "neutral"),
    ("governance", ("policy", "scope"), "Scope", "neutral"),
    ("governance", ("policy", "last_reviewed"), "Last reviewed", "neutral"),
    ("governance", ("policy", "next_review"), "Next review", "neutral"),
    (
        "thresholds",
        ("thresholds", "assist", "min_confidence"),
        "Level 1 minimum confidence (below it: assist only)",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "assist", "max_false_positive_rate"),
        "Level 1 maximum AI false-positive rate, 7d (above it: assist only)",
        "up_more",
    ),
    (
        "thresholds",
        ("thresholds", "assist", "min_error_budget"),
        "Level 1 error budget freeze line (below it: assist only)",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "min_confidence"),
        "Level 2 minimum confidence (below it: human approval)",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "max_replica_fraction"),
        "Level 2 maximum replica fraction (above it: human approval)",
        "up_more",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "max_services"),
        "Level 2 maximum services touched (above it: human approval)",
        "up_more",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "max_namespaces"),
        "Level 2 maximum namespaces touched (above it: human approval)",
        "up_more",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "max_traffic_fraction"),
        "Level 2 maximum traffic fraction (above it: human approval)",
        "up_more",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "require_reversible"),
        "Level 2 requires a reversible action",
        "true_less",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "max_rollback_seconds"),
        "Level 2 maximum rollback time in seconds (above it: human approval)",
        "up_more",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "min_seen"),
        "Level 2 minimum occurrences (below it: human approval)",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "supervised", "degraded_error_budget"),
        "Level 2 degraded error budget line (at or below it: human approval)",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "autonomous", "min_confidence"),
        "Level 4 minimum confidence",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "autonomous", "min_seen"),
        "Level 4 minimum occurrences",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "autonomous", "consistency"),
        "Level 4 minimum outcome consistency",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "autonomous", "require_idempotent"),
        "Level 4 requires an idempotent action",
        "true_less",
    ),
    (
        "thresholds",
        ("thresholds", "autonomous", "requalification_days"),
        "Level 4 re-qualification valid for (days)",
        "up_more",
    ),
    (
        "thresholds",
        ("thresholds", "conditional", "min_seen"),
        "Level 3 minimum occurrences",
        "up_less",
    ),
    (
        "thresholds",
        ("thresholds", "conditional", "consistency"),
        "Level 3 minimum outcome consistency",
        "up_less",
    ),
    (
        "approval",
        ("approval", "timeout_seconds"),
        "Approval timeout before on-call is paged (seconds)",
        "neutral",
    ),
    ("approval", ("approval", "max_escalations"), "On-call pages per approval", "neutral"),
    (
        "approval",
        ("oncall", "verification_failed"),
        "On-call target of a failed verification",
        "neutral",
    ),
    (
        "approval",
        ("approval", "answer_max_age_seconds"),
        "Oldest signed answer accepted (seconds)",
        "neutral",
    ),
    # A longer abort window gives humans longer to stop a Level 3 action.
    ("timing", ("abort_window_seconds",), "Level 3 abort window (seconds)", "up_less"),
    # A longer window counts more executions against the same limits.
    ("velocity", ("velocity", "window_seconds"), "Velocity guard window (seconds)", "up_less"),
    (
        "velocity",
        ("velocity", "max_per_service"),
        "Velocity guard: autonomous executions per service per window",
        "up_more",
    ),
    (
        "velocity",
        ("velocity", "max_fleet"),
        "Velocity guard: autonomous executions fleet-wide per window",
        "up_more",
    ),
)

# Lists: (section, path, singular noun, direction when an item is added).
_SETS: tuple[tuple[str, Path_, str, Direction], ...] = (
    ("governance", ("policy", "approved_by"), "approved by", NEUTRAL),
    ("trust", ("trusted_ai_systems",), "trusted AI system", MORE),
    (
        "shared infrastructure",
        ("shared_infrastructure",),
        "shared infrastructure (always needs a human)",
        LESS,
    ),
    ("approval", ("approval", "approvers"), "approver", NEUTRAL),
    ("approval", ("approval", "oncall"), "on-call target", NEUTRAL),
)

# The on-call chain is ordered: one line naming both orders (paging, not autonomy).
_CHAIN: Path_ = ("oncall", "chain")

_COVERED: tuple[Path_, ...] = (
    *(path for _, path, _, _ in _SCALARS),
    *(path for _, path, _, _ in _SETS),
    ("regulated",),
    ("thresholds", "autonomous", "actions"),
    _CHAIN,
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple | list | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, tuple | list | set | frozenset):
        return ", ".join(_shown(v) for v in value) if value else "(none)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _get(data: Mapping[str, Any], path: Path_) -> Any:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _scalar_direction(sense: Sense, old: Any, new: Any) -> Direction:
    if sense == "neutral":
        return NEUTRAL
    if sense == "true_less":
        return LESS if new else MORE
    rose = new > old
    if sense == "up_more":
        return MORE if rose else LESS
    return LESS if rose else MORE


def _scalars(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[PolicyChange]:
    out = []
    for section, path, label, sense in _SCALARS:
        a, b = _get(old, path), _get(new, path)
        if a == b:
            continue
        out.append(
            PolicyChange(
                section=section,
                path=".".join(path),
                text=f"{label}: {_shown(a)} -> {_shown(b)}",
                old=a,
                new=b,
                direction=_scalar_direction(sense, a, b),
            )
        )
    return out


def _set_changes(  # noqa: PLR0917 - a private helper called from one loop
    section: str, path: str, noun: str, old: Any, new: Any, added_means: Direction
) -> list[PolicyChange]:
    before, after = list(old or ()), list(new or ())
    removed_means = {MORE: LESS, LESS: MORE, NEUTRAL: NEUTRAL}[added_means]
    label = noun[:1].upper() + noun[1:]
    out = [
        PolicyChange(section, path, f"{label} added: {item}", None, item, added_means)
        for item in after
        if item not in before
    ]
    out += [
        PolicyChange(section, path, f"{label} removed: {item}", item, None, removed_means)
        for item in before
        if item not in after
    ]
    return out


def _sets(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[PolicyChange]:
    out = []
    for section, path, noun, added_means in _SETS:
        out += _set_changes(
            section, ".".join(path), noun, _get(old, path), _get(new, path), added_means
        )
    return out


def _regulated(old: Policy, new: Policy) -> list[PolicyChange]:
    out = []
    for kind in ("services", "namespaces"):
        before: dict[str, tuple[str, ...]] = getattr(old.regulated, kind)
        after: dict[str, tuple[str, ...]] = getattr(new.regulated, kind)
        noun = "service" if kind == "services" else "namespace"
        for name in [*after, *(n for n in before if n not in after)]:
            a, b = before.get(name, ()), after.get(name, ())
            if a == b:
                continue
            path = f"regulated.{kind}.{name}"
            # Any framework in scope decides Level 2: only in/out of scope moves a level.
            if not a and b:
                text = f"Regulated {noun} added: {name} ({_shown(b)})"
                direction = LESS
            elif a and not b:
                text = f"Regulated {noun} removed: {name} (was {_shown(a)})"
                direction = MORE
            else:
                text = f"Regulated {noun} {name} frameworks: {_shown(a)} -> {_shown(b)}"
                direction = NEUTRAL
            out.append(PolicyChange("regulated", path, text, list(a), list(b), direction))
    return out


def _constraint(auth: ActionAuthorisation) -> str:
    parts = []
    if auth.target_kinds is not None:
        parts.append(f"target kinds {_shown(auth.target_kinds)}")
    if auth.excluded_environments:
        parts.append(f"not in {_shown(auth.excluded_environments)}")
    parts += [f"{name} <= {_shown(limit)}" for name, limit in auth.max_parameters.items()]
    return "; ".join(parts) if parts else "no constraint"


def _action_changes(
    name: str, a: ActionAuthorisation, b: ActionAuthorisation
) -> list[PolicyChange]:
    path = f"thresholds.autonomous.actions.{name}"
    out: list[PolicyChange] = []

    def add(field: str, text: str, old: Any, new: Any, direction: Direction) -> None:
        out.append(
            PolicyChange(
                "actions", f"{path}.{field}", f"Level 4 {name}: {text}", old, new, direction
            )
        )

    if a.target_kinds != b.target_kinds:
        if a.target_kinds is None:
            add(
                "target_kinds",
                f"now limited to target kinds {_shown(b.target_kinds)}",
                None,
                b.target_kinds,
                LESS,
            )
        elif b.target_kinds is None:
            add(
                "target_kinds",
                f"no longer limited to target kinds {_shown(a.target_kinds)}",
                a.target_kinds,
                None,
                MORE,
            )
        else:
            for kind in b.target_kinds:
                if kind not in a.target_kinds:
                    add("target_kinds", f"target kind allowed: {kind}", None, kind, MORE)
            for kind in a.target_kinds:
                if kind not in b.target_kinds:
                    add("target_kinds", f"target kind no longer allowed: {kind}", kind, None, LESS)
    for env in b.excluded_environments:
        if env not in a.excluded_environments:
            add("excluded_environments", f"environment excluded: {env}", None, env, LESS)
    for env in a.excluded_environments:
        if env not in b.excluded_environments:
            add("excluded_environments", f"environment no longer excluded: {env}", env, None, MORE)
    for param in [*b.max_parameters, *(p for p in a.max_parameters if p not in b.max_parameters)]:
        before, after = a.max_parameters.get(param), b.max_parameters.get(param)
        if before == after:
            continue
        field = f"max_parameters.{param}"
        if before is None:
            add(field, f"limit added: {param} <= {_shown(after)}", None, after, LESS)
        elif after is None:
            add(field, f"limit removed: {param} <= {_shown(before)}", before, None, MORE)
        else:
            more = after > before
            add(
                field,
                f"{param} limit: {_shown(before)} -> {_shown(after)}",
                before,
                after,
                MORE if more else LESS,
            )
    if a.description != b.description:
        add(
            "description",
            f"description: {a.description!r} -> {b.description!r}",
            a.description,
            b.description,
            NEUTRAL,
        )
    return out


def _actions(old: Policy, new: Policy) -> list[PolicyChange]:
    before = old.thresholds.autonomous.actions
    after = new.thresholds.autonomous.actions
    out: list[PolicyChange] = []
    for name in [*after, *(n for n in before if n not in after)]:
        a, b = before.get(name), after.get(name)
        path = f"thresholds.autonomous.actions.{name}"
        if a is None and b is not None:
            text = f"Level 4 action authorised: {name} ({_constraint(b)})"
            out.append(PolicyChange("actions", path, text, None, name, MORE))
        elif b is None and a is not None:
            text = f"Level 4 action no longer authorised: {name} (was {_constraint(a)})"
            out.append(PolicyChange("actions", path, text, name, None, LESS))
        elif a is not None and b is not None and a != b:
            out += _action_changes(name, a, b)
    return out


def _oncall_chain(old: Policy, new: Policy) -> list[PolicyChange]:
    a = [target.name for target in old.oncall.chain]
    b = [target.name for target in new.oncall.chain]
    path = ".".join(_CHAIN)
    if a == b:
        if old.oncall.chain == new.oncall.chain:
            return []
        before = [target.description for target in old.oncall.chain]
        after = [target.description for target in new.oncall.chain]
        text = f"On-call chain descriptions: {before} -> {after}"
        return [PolicyChange("approval", path, text, before, after, NEUTRAL)]
    text = f"On-call chain (timeouts page in this order): {' -> '.join(a)} => {' -> '.join(b)}"
    return [PolicyChange("approval", path, text, a, b, NEUTRAL)]


def _leaves(data: Any, path: Path_ = ()) -> dict[Path_, Any]:
    if isinstance(data, Mapping) and data:
        out: dict[Path_, Any] = {}
        for key, value in data.items():
            out.update(_leaves(value, (*path, str(key))))
        return out
    return {path: data}


def _others(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[PolicyChange]:
    """Fields no rule above knows: reported as neutral so nothing changes silently."""
    before, after = _leaves(old), _leaves(new)
    out = []
    for path in [*after, *(p for p in before if p not in after)]:
        if any(path[: len(c)] == c for c in _COVERED):
            continue
        a, b = before.get(path), after.get(path)
        if a != b:
            dotted = ".".join(path)
            text = f"{dotted}: {_shown(a)} -> {_shown(b)}"
            out.append(PolicyChange("other", dotted, text, a, b, NEUTRAL))
    return out


_ORDER = (
    "governance",
    "trust",
    "thresholds",
    "actions",
    "shared infrastructure",
    "regulated",
    "approval",
    "timing",
    "velocity",
    "other",
)


def diff_policies(old: Policy, new: Policy) -> PolicyDiff:
    """Every change from ``old`` to ``new``, classified by its effect on autonomy."""
    a, b = old.model_dump(), new.model_dump()
    changes = [
        *_scalars(a, b),
        *_sets(a, b),
        *_actions(old, new),
        *_regulated(old, new),
        *_oncall_chain(old, new),
        *_others(a, b),
    ]
    changes.sort(key=lambda c: _ORDER.index(c.section))  # stable: keeps document order
    return PolicyDiff(
        old_version=old.version,
        new_version=new.version,
        old_digest=old.digest,
        new_digest=new.digest,
        changes=tuple(changes),
    )
