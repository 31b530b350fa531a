# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""SPEC section 5, rule by rule and boundary by boundary, from tests/fixtures/*cases*.yaml."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.models import LEVEL_NAMES, ROUTES, Context, Decision, Proposal, decode, encode
from streams.policy import Policy, evaluate, parse_policy

Builder = Callable[..., tuple[Proposal, Context]]
ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
POLICIES = ROOT / "policies"
CASE_FILES = sorted(FIXTURES.glob("policy_cases*.yaml"))
CASE_KEYS = {
    "name",
    "proposal",
    "context",
    "level",
    "route",
    "deciding_rule",
    "triggers",
    "change_record_required",
    "conditions",
}
REQUIRED_KEYS = {"name", "level", "route", "deciding_rule", "triggers", "change_record_required"}
CONDITION_KEYS = {"rule", "name", "observed", "operator", "threshold", "holds"}

# Rules in the order SPEC section 5 applies them, and whether ANY or ALL decides.
ORDER = (
    ("level0_untrusted", any, 0),
    ("level1_assist", any, 1),
    ("regulatory", any, 2),
    ("level2_supervised", any, 2),
    ("level4_autonomous", all, 4),
    ("level3_conditional", all, 3),
)


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def _load_cases() -> list[Any]:
    params = []
    names: set[str] = set()
    for path in CASE_FILES:
        document = yaml.safe_load(path.read_text())
        assert set(document) <= {"policy", "defaults", "cases"}, path.name
        defaults = document.get("defaults", {})
        for case in document["cases"]:
            assert set(case) <= CASE_KEYS, f"{path.name}: {case.get('name')}: unknown keys"
            assert set(case) >= REQUIRED_KEYS, f"{path.name}: {case.get('name')}: missing keys"
            assert case["name"] not in names, f"{path.name}: duplicate case {case['name']}"
            names.add(case["name"])
            for part in ("proposal", "context"):
                case[part] = _merge(defaults.get(part, {}), case.get(part, {}))
            params.append(pytest.param(document["policy"], case, id=case["name"]))
    return params


CASES = _load_cases()


@functools.cache
def _policy(name: str) -> Policy:
    return parse_policy((POLICIES / name).read_bytes(), source=name)


def _holds(decision: Decision, rule: str) -> list[bool]:
    return [c["holds"] for c in decision.conditions if c["rule"] == rule]


def _rule_explained_by_conditions(decision: Decision) -> str:
    """Re-derive the deciding rule from the recorded verdicts alone."""
    level, rule = 2, "default_supervised"
    for name, combine, rule_level in ORDER:
        if combine(_holds(decision, name)):
            level, rule = rule_level, name
            break
    if level >= 3 and any(_holds(decision, "velocity_guard")):
        return "velocity_guard"
    if level >= 3 and any(_holds(decision, "policy_review")):
        return "policy_review_overdue"
    return rule


def _matches(condition: dict[str, Any], expected: dict[str, Any]) -> bool:
    for key, value in expected.items():
        got = condition[key]
        if isinstance(value, float) and isinstance(got, float):
            if got != pytest.approx(value, abs=1e-9):
                return False
        elif got != value or isinstance(got, bool) != isinstance(value, bool):
            return False
    return True


def test_case_files_are_found() -> None:
    assert {"policy_cases.yaml", "policy_cases_strict.yaml"} <= {p.name for p in CASE_FILES}
    assert len(CASES) >= 100


@pytest.mark.parametrize(("policy_name", "case"), CASES)
def test_policy_case(policy_name: str, case: dict[str, Any], make_inputs: Builder) -> None:
    policy = _policy(policy_name)
    proposal, context = make_inputs(case.get("proposal"), case.get("context"))

    decision = evaluate(proposal, context, policy)

    assert decision.level == case["level"]
    assert decision.route == case["route"]
    assert decision.deciding_rule == case["deciding_rule"]
    assert list(decision.triggers) == case["triggers"]
    assert decision.change_record_required is case["change_record_required"]
    for expected in case.get("conditions", []):
        assert set(expected) <= CONDITION_KEYS, expected
        found = [c for c in decision.conditions if _matches(dict(c), expected)]
        assert found, f"no condition matches {expected}; got\n" + "\n".join(
            repr(c) for c in decision.conditions if c["rule"] == expected.get("rule")
        )
    assert _rule_explained_by_conditions(decision) == decision.deciding_rule


@pytest.mark.parametrize(("policy_name", "case"), CASES)
def test_policy_case_decision_is_a_complete_value(
    policy_name: str, case: dict[str, Any], make_inputs: Builder
) -> None:
    """Every decision names its policy, timers and reasons, and survives the wire."""
    policy = _policy(policy_name)
    proposal, context = make_inputs(case.get("proposal"), case.get("context"))

    decision = evaluate(proposal, context, policy)

    assert decision.level_name == LEVEL_NAMES[decision.level]
    assert decision.route == ROUTES[decision.level]
    assert decision.policy_version == policy.version
    assert decision.policy_digest == policy.digest
    assert decision.decided_at == context.now
    assert decision.proposal == proposal
    assert decision.context == context
    assert decision.notify_humans is (decision.level != 4)
    if decision.level == 3:
        window = dt.timedelta(seconds=policy.abort_window_seconds)
        assert decision.abort_window_ends_at == context.now + window
    else:
        assert decision.abort_window_ends_at is None
    if decision.level == 2:
        timeout = dt.timedelta(seconds=policy.approval.timeout_seconds)
        assert decision.approval_timeout_at == context.now + timeout
    else:
        assert decision.approval_timeout_at is None
    keys = [(c["rule"], c["name"]) for c in decision.conditions]
    assert len(keys) == len(set(keys)), "a condition is recorded twice"
    for condition in decision.conditions:
        assert set(condition) == CONDITION_KEYS
        assert type(condition["holds"]) is bool
    assert decode(Decision, encode(decision)) == decision


def test_policy_digest_is_the_sha256_of_the_file(default_policy: Policy) -> None:
    expected = hashlib.sha256((POLICIES / "escalation-policy.yaml").read_bytes()).hexdigest()
    assert default_policy.digest == expected
    assert default_policy.version == "1.3"


def test_level_4_decision_is_silent_and_level_3_opens_an_abort_window(
    make_inputs: Builder, default_policy: Policy
) -> None:
    l4 = evaluate(*make_inputs(), default_policy)
    l3 = evaluate(*make_inputs(None, {"history": {"seen": 5, "successes": 5}}), default_policy)

    assert (l4.level, l4.notify_humans, l4.abort_window_ends_at) == (4, False, None)
    assert l3.level == 3
    assert l3.notify_humans is True
    assert l3.abort_window_ends_at == dt.datetime(2026, 11, 28, 10, 5, 5, tzinfo=dt.UTC)


def test_level_2_decision_sets_the_approval_timeout(
    make_inputs: Builder, default_policy: Policy
) -> None:
    decision = evaluate(*make_inputs({"confidence": {"model": 0.7}}), default_policy)

    assert decision.approval_timeout_at == dt.datetime(2026, 11, 28, 10, 10, 5, tzinfo=dt.UTC)


def test_decision_id_is_the_same_for_a_redelivered_proposal(
    make_inputs: Builder, default_policy: Policy
) -> None:
    first = evaluate(*make_inputs(), default_policy)
    again = evaluate(*make_inputs(None, {"now": "2026-11-28T11:00:00Z"}), default_policy)
    other = evaluate(*make_inputs({"proposal_id": "p-000124"}), default_policy)

    assert first.decision_id == again.decision_id
    assert first.decision_id.startswith("d-")
    assert other.decision_id != first.decision_id


def test_decisions_do_not_share_mutable_condition_values(
    make_inputs: Builder, default_policy: Policy
) -> None:
    """Two decisions never share a list, so changing one decision cannot change another."""
    first = evaluate(*make_inputs(), default_policy)
    second = evaluate(*make_inputs(), default_policy)

    for a, b in zip(first.conditions, second.conditions, strict=True):
        assert a is not b
        for key in ("observed", "threshold"):
            if isinstance(a[key], list):
                assert a[key] is not b[key]
