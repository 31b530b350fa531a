# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""parse_policy: the shipped policies load, and every problem names file:line: field."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import pytest

from streams.errors import EscalationError, PolicyError
from streams.policy import parse_policy

POLICIES = Path(__file__).resolve().parents[2] / "policies"
DEFAULT = POLICIES / "escalation-policy.yaml"
# Every policy document in the repository (policies/tests holds test cases, not policies).
SHIPPED = sorted(POLICIES.glob("*.yaml")) + sorted(POLICIES.glob("examples/*.yaml"))
PROBLEM = re.compile(r"^policy\.yaml:\d+: \S")


def _edit(old: str, new: str, *, text: str | None = None) -> tuple[str, int]:
    """The default policy with ``old`` replaced by ``new``, and the line ``old`` was on."""
    text = DEFAULT.read_text() if text is None else text
    assert text.count(old) == 1, f"{old!r} must occur once in the policy"
    line = text[: text.index(old)].count("\n") + 1
    return text.replace(old, new), line


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    for problem in caught.value.problems:
        assert PROBLEM.match(problem), problem
        assert "\n" not in problem
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_policy_loads_with_the_sha256_of_its_bytes(path: Path) -> None:
    raw = path.read_bytes()

    policy = parse_policy(raw, source=str(path))

    assert policy.digest == hashlib.sha256(raw).hexdigest()
    assert policy.source == str(path)
    assert policy.version
    assert policy.policy.next_review > policy.policy.last_reviewed


def test_the_default_and_the_strict_policy_are_shipped() -> None:
    assert {"escalation-policy.yaml", "strict-regulated.yaml"} <= {p.name for p in SHIPPED}


def test_default_policy_is_the_articles_v1_3_as_re_reviewed() -> None:
    policy = parse_policy(DEFAULT.read_bytes())

    assert policy.version == "1.3"
    assert str(policy.policy.last_reviewed) == "2026-11-01"
    assert str(policy.policy.next_review) == "2027-02-01"
    assert policy.trusted_ai_systems == ("holmesgpt",)
    assert sorted(policy.thresholds.autonomous.actions) == [
        "certificate_rotation",
        "log_pipeline_restart",
        "rolling_restart",
        "scale_up",
    ]


def test_strict_policy_is_stricter_than_the_default_everywhere() -> None:
    default = parse_policy(DEFAULT.read_bytes()).thresholds
    strict_policy = parse_policy((POLICIES / "strict-regulated.yaml").read_bytes())
    strict = strict_policy.thresholds

    assert strict.assist.min_confidence > default.assist.min_confidence
    assert strict.supervised.min_confidence > default.supervised.min_confidence
    assert strict.autonomous.min_confidence > default.autonomous.min_confidence
    assert strict.autonomous.min_seen > default.autonomous.min_seen
    assert strict.autonomous.requalification_days == 30
    assert list(strict.autonomous.actions) == ["log_pipeline_restart"]
    assert strict_policy.velocity.max_per_service < 3
    assert strict_policy.velocity.max_fleet < 20
    assert len(strict_policy.approval.approvers) > 4


def test_text_and_bytes_give_the_same_digest() -> None:
    raw = DEFAULT.read_bytes()

    assert parse_policy(raw.decode()).digest == parse_policy(raw).digest


def test_a_changed_byte_changes_the_digest() -> None:
    text, _ = _edit("# Level 0 for any AI system", "# Level 0 for every AI system")

    assert parse_policy(text).digest != parse_policy(DEFAULT.read_bytes()).digest


def test_unknown_key_names_its_line_and_path() -> None:
    text, line = _edit("    min_error_budget: 0.25 ", "    min_error_budgets: 0.25 ")
    _, section = _edit("  assist:\n", "  assist:\n")

    assert sorted(_problems(text)) == [
        # the key it replaced is now missing, reported on its section's line
        f"policy.yaml:{section}: thresholds.assist.min_error_budget is required",
        f"policy.yaml:{line}: thresholds.assist.min_error_budgets is not a known key",
    ]


@pytest.mark.parametrize(
    ("old", "new", "field", "detail"),
    [
        (
            "min_confidence: 0.60 ",
            "min_confidence: high ",
            "thresholds.assist.min_confidence",
            "must be a valid number, got 'high'",
        ),
        (
            "min_confidence: 0.60 ",
            "min_confidence: true ",
            "thresholds.assist.min_confidence",
            "must be a valid number, got True",
        ),
        (
            'version: "1.3"',
            "version: 1.3",
            "policy.version",
            "must be a valid string, got 1.3",
        ),
        (
            "  max_per_service: 3",
            '  max_per_service: "3"',
            "velocity.max_per_service",
            "must be a valid integer, got '3'",
        ),
        (
            "  max_per_service: 3",
            "  max_per_service: 3.5",
            "velocity.max_per_service",
            "must be a valid integer, got 3.5",
        ),
        (
            "trusted_ai_systems: [holmesgpt]",
            "trusted_ai_systems: holmesgpt",
            "trusted_ai_systems",
            "must be a valid tuple, got 'holmesgpt'",
        ),
        (
            "{replicas_delta: 2}",
            "{replicas_delta: true}",
            "thresholds.autonomous.actions.scale_up.max_parameters.replicas_delta",
            "must be a valid number, got True",
        ),
        (
            "{replicas_delta: 2}",
            '{replicas_delta: "2"}',
            "thresholds.autonomous.actions.scale_up.max_parameters.replicas_delta",
            "must be a valid number, got '2'",
        ),
        (
            "  next_review: 2027-02-01",
            "  next_review: next quarter",
            "policy.next_review",
            "got 'next quarter'",
        ),
    ],
    ids=[
        "string_for_fraction",
        "bool_for_fraction",
        "number_for_version",
        "string_for_count",
        "float_for_count",
        "string_for_list",
        "bool_for_parameter_limit",
        "string_for_parameter_limit",
        "text_for_date",
    ],
)
def test_wrong_type_names_its_line_and_field(old: str, new: str, field: str, detail: str) -> None:
    text, line = _edit(old, new)

    (problem,) = _problems(text)

    assert problem.startswith(f"policy.yaml:{line}: {field} ")
    assert detail in problem


@pytest.mark.parametrize(
    ("old", "new", "field", "detail"),
    [
        (
            "    min_confidence: 0.85\n    min_seen: 10",
            "    min_confidence: 1.5\n    min_seen: 10",
            "thresholds.autonomous.min_confidence",
            "must be less than or equal to 1, got 1.5",
        ),
        (
            "max_false_positive_rate: 0.20",
            "max_false_positive_rate: -0.1",
            "thresholds.assist.max_false_positive_rate",
            "must be greater than or equal to 0, got -0.1",
        ),
        (
            "max_false_positive_rate: 0.20",
            "max_false_positive_rate: .nan",
            "thresholds.assist.max_false_positive_rate",
            "must be a finite number",
        ),
        (
            "requalification_days: 90",
            "requalification_days: 0",
            "thresholds.autonomous.requalification_days",
            "must be greater than or equal to 1, got 0",
        ),
        (
            "  max_fleet: 20",
            "  max_fleet: 0",
            "velocity.max_fleet",
            "must be greater than or equal to 1, got 0",
        ),
    ],
    ids=["above_one", "negative", "nan", "zero_days", "zero_fleet"],
)
def test_out_of_range_value_names_its_line_and_field(
    old: str, new: str, field: str, detail: str
) -> None:
    text, line = _edit(old, new)

    (problem,) = _problems(text)

    assert problem.startswith(f"policy.yaml:{line}: {field} ")
    assert detail in problem


def test_duplicate_key_names_the_line_of_the_second() -> None:
    text, line = _edit("  max_fleet: 20", "  max_fleet: 20\n  max_fleet: 200")

    assert _problems(text) == [f"policy.yaml:{line + 1}: velocity.max_fleet is defined twice"]


def test_duplicate_key_is_refused_even_when_both_values_are_valid() -> None:
    text, line = _edit(
        "trusted_ai_systems: [holmesgpt]",
        "trusted_ai_systems: [holmesgpt]\ntrusted_ai_systems: [holmesgpt, copilot]",
    )

    assert _problems(text) == [f"policy.yaml:{line + 1}: trusted_ai_systems is defined twice"]


def test_invalid_yaml_names_its_line() -> None:
    text, line = _edit("approvers: [alice, bob, carol, dana]", "approvers: [alice, bob\n  x: 1")

    (problem,) = _problems(text)

    assert problem.startswith(f"policy.yaml:{line + 1}: not valid YAML: ")


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    assert _problems("- just\n- a list\n") == [
        "policy.yaml:1: the policy must be a mapping, got list"
    ]


def test_an_empty_document_is_refused() -> None:
    assert _problems("# nothing but a comment\n") == [
        "policy.yaml:1: the policy must be a mapping, got NoneType"
    ]


def test_missing_section_is_required() -> None:
    text = DEFAULT.read_text()
    start = text.index("# Velocity guard")
    (problem,) = _problems(text[:start])

    assert problem.endswith(": velocity is required")


def test_level_4_confidence_below_level_2_is_a_contradiction() -> None:
    text, line = _edit(
        "    min_confidence: 0.85\n    min_seen: 10", "    min_confidence: 0.80\n    min_seen: 10"
    )

    assert _problems(text) == [
        (
            f"policy.yaml:{line}: thresholds.autonomous.min_confidence: "
            "Level 4 confidence 0.8 is below Level 2's 0.85"
        )
    ]


def test_level_3_needing_fewer_occurrences_than_level_2_is_a_contradiction() -> None:
    text, line = _edit("    min_seen: 3 ", "    min_seen: 1 ")

    assert _problems(text) == [
        (
            f"policy.yaml:{line}: thresholds.conditional.min_seen: "
            "Level 3 needs 1 occurrences, fewer than Level 2's 2"
        )
    ]


def test_next_review_before_last_review_is_a_contradiction() -> None:
    text, line = _edit("  next_review: 2027-02-01", "  next_review: 2026-10-01")

    assert _problems(text) == [
        (
            f"policy.yaml:{line}: policy.next_review: "
            "next review 2026-10-01 is not after last review 2026-11-01"
        )
    ]


def test_trusted_ai_system_may_not_be_an_approver() -> None:
    text, line = _edit(
        "approvers: [alice, bob, carol, dana]", "approvers:\n    - alice\n    - holmesgpt"
    )

    assert _problems(text) == [
        (
            f"policy.yaml:{line + 2}: approval.approvers[1]: "
            "'holmesgpt' is a trusted AI system; an AI system may never approve"
        )
    ]


def test_every_problem_is_reported_at_once() -> None:
    text, first = _edit("min_confidence: 0.60 ", "min_confidence: 2 ")
    text, second = _edit("  max_fleet: 20", "  max_fleet: -1", text=text)

    problems = _problems(text)

    assert [p.split(":")[1] for p in problems] == [str(first), str(second)]


def test_the_source_is_named_in_every_problem() -> None:
    text, line = _edit("  max_fleet: 20", "  max_fleet: -1")

    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policies/new.yaml")

    assert caught.value.problems[0].startswith(f"policies/new.yaml:{line}: velocity.max_fleet ")
    assert isinstance(caught.value, EscalationError)
    assert isinstance(caught.value, ValueError)


def test_nested_aliases_are_refused_in_linear_time() -> None:
    """A policy reloaded from ``control`` cannot stall the gate with a YAML alias bomb."""
    bomb = ['x-a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    bomb += [f"x-a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 30)]
    text, line = _edit('  scope: "production', '  scope: *a29\n  x_scope: "production')
    text = "\n".join(bomb) + "\n" + text

    started = time.perf_counter()
    problems = _problems(text)
    elapsed = time.perf_counter() - started

    assert elapsed < 2.0
    scope = next(p for p in problems if ": policy.scope " in p)
    assert scope.startswith(f"policy.yaml:{line + len(bomb)}: policy.scope must be a valid string")
    assert len(scope) < 200


# ------------------------------------------------------------------ the on-call chain


def test_the_shipped_chains_walk_primary_then_secondary_then_up() -> None:
    default = parse_policy(DEFAULT.read_bytes())
    strict = parse_policy((POLICIES / "strict-regulated.yaml").read_bytes())

    assert [default.oncall.target(n) for n in (1, 2, 3)] == [
        "sre-oncall-primary",
        "sre-oncall-secondary",
        "sre-manager",
    ]
    assert default.oncall.verification_target == "sre-oncall-primary"
    assert strict.oncall.target(4) == "incident-commander"
    assert len(strict.oncall.chain) <= strict.approval.max_escalations


def test_past_the_end_of_the_chain_the_last_target_is_paged_again() -> None:
    policy = parse_policy(DEFAULT.read_bytes())

    assert policy.oncall.target(7) == "sre-manager"


def test_a_policy_without_an_oncall_section_still_pages_someone() -> None:
    text = DEFAULT.read_text()
    start, end = text.index("\noncall:\n"), text.index("\n# Level 3: the human may abort")

    policy = parse_policy(text[:start] + text[end:])

    assert policy.oncall.target(1) == "oncall"
    assert policy.oncall.verification_target == "oncall"


def test_an_empty_chain_names_its_line() -> None:
    text = DEFAULT.read_text()
    start, end = text.index("  chain:\n"), text.index("  verification_failed:")
    line = text[:start].count("\n") + 1

    (problem,) = _problems(text[:start] + "  chain: []\n" + text[end:])

    assert problem.startswith(f"policy.yaml:{line}: oncall.chain ")
    assert "at least 1 item" in problem


def test_a_target_without_a_name_is_refused() -> None:
    text, line = _edit(
        "    - name: sre-manager\n      description: the SRE engineering manager on duty\n",
        "    - description: nobody\n",
    )

    (problem,) = _problems(text)

    assert problem == f"policy.yaml:{line}: oncall.chain[2].name is required"


def test_an_unknown_key_in_a_chain_step_is_refused() -> None:
    text, line = _edit("    - name: sre-manager\n", "    - name: sre-manager\n      pager: 555\n")

    (problem,) = _problems(text)

    assert problem == f"policy.yaml:{line + 1}: oncall.chain[2].pager is not a known key"


def test_a_target_twice_in_the_chain_is_a_contradiction() -> None:
    text, line = _edit("    - name: sre-manager\n", "    - name: sre-oncall-primary\n")

    assert _problems(text) == [
        f"policy.yaml:{line}: oncall.chain[2].name: 'sre-oncall-primary' is already in the chain"
    ]


def test_a_chain_longer_than_the_escalations_is_a_contradiction() -> None:
    text, line = _edit("  max_escalations: 3 ", "  max_escalations: 2 ")
    manager = text.index("    - name: sre-manager")
    manager_line = text[:manager].count("\n") + 1

    assert _problems(text) == [
        (
            f"policy.yaml:{manager_line}: oncall.chain[2]: the chain has 3 targets but "
            "approval.max_escalations is 2: 'sre-manager' would never be paged"
        )
    ]
    assert line < manager_line
