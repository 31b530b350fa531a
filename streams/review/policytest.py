# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""A policy's own test cases, run like ``opa test``: YAML tables of proposal, context, expect.

A case file::

    base_proposal: {...}     # optional: deep-merged onto the built-in default proposal
    base_context: {...}      # optional: the same for the context
    cases:
      - name: novel pattern goes to assist only
        proposal: {pattern: never-seen}            # deep-merged onto base_proposal
        context: {history: {seen: 0}}              # deep-merged onto base_context
        expect:
          level: 1
          triggers: [novelty]                       # optional, exact set
          route: assist                             # optional
          change_record_required: false             # optional
          deciding_rule: level1_assist              # optional

Mappings merge key by key; any other value (lists included) replaces; ``null``
sets a field to unknown. The built-in defaults are SPEC section 3's proposal and
section 4's context, which the default policy decides at Level 4.

Parsing is pure (text in, cases out); the command line finds and reads the files.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from streams.errors import InputError
from streams.models.codec import describe_validation_error
from streams.models.context import Context

# Route and Trigger are pydantic field types of Expectation: needed at runtime.
from streams.models.decision import Route, Trigger
from streams.models.proposal import Proposal
from streams.policy.evaluate import evaluate

if TYPE_CHECKING:
    from streams.models.decision import Condition, Decision
    from streams.policy.model import Policy

DEFAULT_PROPOSAL: dict[str, Any] = {
    "schema_version": 1,
    "proposal_id": "p-policy-test",
    "created_at": "2026-11-28T10:00:00Z",
    "source": {"ai_system": "holmesgpt", "model": "llama3.1:70b"},
    "pattern": "oom-kill/stateless-deployment",
    "action": {
        "type": "rolling_restart",
        "target": {
            "service": "checkout-api",
            "namespace": "shop",
            "environment": "production",
            "kind": "Deployment",
        },
        "parameters": {},
        "idempotent": True,
        "reversible": True,
        "rollback_seconds": 60,
    },
    "confidence": {"model": 0.93, "heuristic": 0.90},
    "blast_radius": {
        "services": 1,
        "namespaces": 1,
        "replica_fraction": 0.1,
        "traffic_fraction": 0.05,
    },
    "regulated": [],
    "summary": "checkout-api pods OOMKilled 4x in 10m; restart clears leaked cache",
}
DEFAULT_CONTEXT: dict[str, Any] = {
    "now": "2026-11-28T10:00:05Z",
    "history": {"seen": 12, "successes": 12, "failures": 0},
    "error_budget_remaining": 0.82,
    "ai_false_positive_rate_7d": 0.04,
    "requalified_at": "2026-10-15T00:00:00Z",
    "requalification_revoked": False,
    "recent_autonomous": {"service": 0, "fleet": 2},
    "frozen": False,
}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Expectation(_Strict):
    """What a case expects of the decision; unset fields are not checked."""

    level: Annotated[StrictInt, Field(ge=0, le=4)]
    triggers: tuple[Trigger, ...] | None = None
    route: Route | None = None
    change_record_required: StrictBool | None = None
    deciding_rule: StrictStr | None = None


class _CaseDoc(_Strict):
    name: Annotated[StrictStr, Field(min_length=1)]
    description: StrictStr = ""
    proposal: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    expect: Expectation


class _FileDoc(_Strict):
    description: StrictStr = ""
    base_proposal: dict[str, Any] = Field(default_factory=dict)
    base_context: dict[str, Any] = Field(default_factory=dict)
    cases: list[Any] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Case:
    """One test case, its inputs fully built."""

    source: str
    line: int
    name: str
    proposal: Proposal
    context: Context
    expect: Expectation

    @property
    def where(self) -> str:
        """``file.yaml:LINE: case 'NAME'``."""
        return f"{self.source}:{self.line}: case {self.name!r}"


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case and the decision it got; ``mismatches`` is empty when it passed."""

    case: Case
    decision: Decision
    mismatches: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def held(self) -> list[Condition]:
        """The conditions whose statement was true, in evaluation order."""
        return [c for c in self.decision.conditions if c["holds"]]

    @property
    def unmet(self) -> list[Condition]:
        """Conditions of the all-of rules (Level 4, Level 3) that were not met."""
        return [
            c
            for c in self.decision.conditions
            if not c["holds"] and c["rule"] in {"level4_autonomous", "level3_conditional"}
        ]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` onto a copy of ``base``: mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _first_error(exc: ValidationError, prefix: str) -> str:
    error = describe_validation_error(exc)
    field = (
        f"{prefix}.{error.field}"
        if prefix and error.field != "(message)"
        else (prefix or error.field)
    )
    return f"{field}: {error.reason}"


def _case_lines(raw: str) -> list[int]:
    """1-based line of each item of ``cases`` (best effort; 1 when unknown)."""
    try:
        root = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "cases" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def parse_case_file(text: str | bytes, *, source: str) -> list[Case]:
    """Build every case of one file, or raise ``InputError`` naming file and case."""
    raw = text.decode() if isinstance(text, bytes) else text
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{source}:{line}", f"not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(source, f"expected a mapping with 'cases', got {type(data).__name__}")
    try:
        doc = _FileDoc.model_validate(data)
    except ValidationError as exc:
        raise InputError(source, _first_error(exc, "")) from None
    lines = _case_lines(raw)
    base_proposal = deep_merge(DEFAULT_PROPOSAL, doc.base_proposal)
    base_context = deep_merge(DEFAULT_CONTEXT, doc.base_context)
    cases: list[Case] = []
    names: set[str] = set()
    for index, item in enumerate(doc.cases):
        line = lines[index] if index < len(lines) else 1
        label = (
            f"case {item.get('name')!r}"
            if isinstance(item, dict) and isinstance(item.get("name"), str)
            else f"cases[{index}]"
        )
        where = f"{source}:{line}: {label}"
        if not isinstance(item, dict):
            raise InputError(where, f"expected a mapping, got {type(item).__name__}")
        try:
            case = _CaseDoc.model_validate(item)
        except ValidationError as exc:
            raise InputError(where, _first_error(exc, "")) from None
        if case.name in names:
            raise InputError(where, "a case of this name is already defined in this file")
        names.add(case.name)
        try:
            proposal = Proposal.model_validate(deep_merge(base_proposal, case.proposal))
        except ValidationError as exc:
            raise InputError(where, _first_error(exc, "proposal")) from None
        try:
            context = Context.model_validate(deep_merge(base_context, case.context))
        except ValidationError as exc:
            raise InputError(where, _first_error(exc, "context")) from None
        cases.append(Case(source, line, case.name, proposal, context, case.expect))
    return cases


def run_case(case: Case, policy: Policy) -> CaseResult:
    """Decide the case under ``policy`` and compare with what it expects."""
    decision = evaluate(case.proposal, case.context, policy)
    expect = case.expect
    mismatches: list[str] = []
    if decision.level != expect.level:
        mismatches.append(
            f"level: expected {expect.level}, got {decision.level} "
            f"(deciding rule {decision.deciding_rule})"
        )
    if expect.triggers is not None and set(expect.triggers) != set(decision.triggers):
        mismatches.append(
            f"triggers: expected [{', '.join(sorted(expect.triggers))}], "
            f"got [{', '.join(sorted(decision.triggers))}]"
        )
    if expect.route is not None and expect.route != decision.route:
        mismatches.append(f"route: expected {expect.route}, got {decision.route}")
    if (
        expect.change_record_required is not None
        and expect.change_record_required != decision.change_record_required
    ):
        mismatches.append(
            f"change_record_required: expected {str(expect.change_record_required).lower()}, "
            f"got {str(decision.change_record_required).lower()}"
        )
    if expect.deciding_rule is not None and expect.deciding_rule != decision.deciding_rule:
        mismatches.append(
            f"deciding_rule: expected {expect.deciding_rule}, got {decision.deciding_rule}"
        )
    return CaseResult(case, decision, tuple(mismatches))
