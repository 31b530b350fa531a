# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""``escalation policy test``: the default policy's own cases, and how failures read."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from streams.errors import InputError
from streams.policy import Policy, parse_policy
from streams.review.cli import policy_test
from streams.review.policytest import parse_case_file, run_case
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "policies" / "tests"
DEFAULT_POLICY = ROOT / "policies" / "escalation-policy.yaml"
LOOSER_POLICY = ROOT / "policies" / "examples" / "looser-v1.4.yaml"


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return parse_policy(DEFAULT_POLICY.read_bytes(), source=str(DEFAULT_POLICY))


def _shipped_cases() -> list[Any]:
    cases = []
    for path in sorted(CASES.glob("*.yaml")):
        cases += parse_case_file(path.read_bytes(), source=str(path))
    return cases


def _run(*args: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(policy_test, list(args), **kwargs)


def _write(tmp_path: Path, text: str, name: str = "cases.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ------------------------------------------------------------------ the shipped cases


def test_the_shipped_cases_pass_under_the_default_policy() -> None:
    result = _run(str(CASES), "--policy", str(DEFAULT_POLICY))
    assert result.exit_code == 0, result.output
    passed = len(_shipped_cases())
    assert f"{passed} passed, 0 failed" in result.stdout


def test_the_shipped_cases_reach_every_level_and_name_every_trigger() -> None:
    cases = _shipped_cases()
    assert len(cases) >= 20
    assert {case.expect.level for case in cases} == {0, 1, 2, 3, 4}
    named = {t for case in cases for t in (case.expect.triggers or ())}
    assert named == {"confidence", "blast_radius", "novelty", "regulatory"}
    rules = {case.expect.deciding_rule for case in cases}
    assert {
        "level0_untrusted",
        "level1_assist",
        "regulatory",
        "level2_supervised",
        "level4_autonomous",
        "level3_conditional",
        "default_supervised",
        "velocity_guard",
    } <= rules


def test_the_shipped_cases_are_decided_before_the_policy_is_due_for_review(
    default_policy: Policy,
) -> None:
    for case in _shipped_cases():
        assert case.context.now.astimezone(dt.UTC).date() <= default_policy.policy.next_review


def test_the_settings_policy_is_used_without_policy_option() -> None:
    """Under the looser v1.4 the default policy's cases fail: the option really matters."""
    looser = Settings(policy_file=LOOSER_POLICY)
    result = _run(str(CASES), obj=looser)
    assert result.exit_code == 1
    assert "(policy 1.4," in result.stdout


def test_verbose_lists_passing_cases() -> None:
    result = _run(str(CASES), "--policy", str(DEFAULT_POLICY), "-v")
    assert result.exit_code == 0
    assert "PASS " in result.stdout
    assert "case 'an AI system the policy does not trust is manual'" in result.stdout


# -------------------------------------------------------------------------- failures


def test_a_wrong_case_fails_with_exit_1_and_prints_the_conditions_that_held(
    tmp_path: Path,
) -> None:
    _write(
        tmp_path,
        """\
        cases:
          - name: a novel pattern is autonomous (wrong on purpose)
            context: {history: {seen: 0, successes: 0, failures: 0}}
            expect: {level: 4, triggers: [], route: execute}
          - name: the base case is autonomous
            expect: {level: 4}
        """,
    )
    result = _run(str(tmp_path), "--policy", str(DEFAULT_POLICY))
    assert result.exit_code == 1
    out = result.stdout
    assert "FAIL " in out
    assert "cases.yaml:2: case 'a novel pattern is autonomous (wrong on purpose)'" in out
    assert "level: expected 4, got 1 (deciding rule level1_assist)" in out
    assert "triggers: expected [], got [novelty]" in out
    assert "route: expected execute, got assist" in out
    assert "conditions that held:" in out
    assert "level1_assist.novelty: observed 0 == 0" in out
    assert "level2_supervised.history_seen: observed 0 < 2" in out
    assert "not met (Level 4 / Level 3 need all of these):" in out
    assert "level4_autonomous.history_seen: observed 0 >= 10" in out
    assert out.rstrip().splitlines()[-1].startswith("1 passed, 1 failed")


def test_triggers_are_compared_as_an_exact_set(default_policy: Policy, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        cases:
          - name: two triggers, one expected
            proposal: {confidence: {model: 0.70}, blast_radius: {services: 2}}
            expect: {level: 2, triggers: [confidence]}
          - name: same set in another order
            proposal: {confidence: {model: 0.70}, blast_radius: {services: 2}}
            expect: {level: 2, triggers: [blast_radius, confidence]}
        """,
    )
    first, second = (
        run_case(c, default_policy) for c in parse_case_file(path.read_text(), source="x")
    )
    assert first.mismatches == ("triggers: expected [confidence], got [blast_radius, confidence]",)
    assert second.passed


def test_change_record_and_deciding_rule_are_checked(
    default_policy: Policy, tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        """\
        cases:
          - name: regulated
            proposal: {regulated: [SOX]}
            expect: {level: 2, change_record_required: false, deciding_rule: level2_supervised}
        """,
    )
    [case] = parse_case_file(path.read_text(), source="x")
    assert run_case(case, default_policy).mismatches == (
        "change_record_required: expected false, got true",
        "deciding_rule: expected level2_supervised, got regulatory",
    )


# ----------------------------------------------------------------------- case inputs


def test_case_overrides_merge_onto_the_file_base_which_merges_onto_the_default(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path,
        """\
        base_proposal:
          action: {target: {service: cart-api}}
        base_context:
          history: {seen: 4}
        cases:
          - name: merged
            proposal: {action: {target: {namespace: store}}}
            context: {history: {successes: 4}, error_budget_remaining: null}
            expect: {level: 2}
        """,
    )
    [case] = parse_case_file(path.read_text(), source="x")
    target = case.proposal.action.target
    assert (target.service, target.namespace, target.kind) == ("cart-api", "store", "Deployment")
    assert case.proposal.action.type == "rolling_restart"
    history = case.context.history
    assert (history.seen, history.successes, history.failures) == (4, 4, 0)
    assert case.context.error_budget_remaining is None
    assert case.context.ai_false_positive_rate_7d == 0.04


# ------------------------------------------------------------------ invalid case files


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            """\
            cases:
              - name: bad confidence
                proposal: {confidence: {model: high}}
                expect: {level: 1}
            """,
            "cases.yaml:2: case 'bad confidence': proposal.confidence.model:",
        ),
        (
            """\
            cases:
              - name: naive now
                context: {now: "2026-11-28T10:00:00"}
                expect: {level: 4}
            """,
            "cases.yaml:2: case 'naive now': context.now:",
        ),
        (
            """\
            cases:
              - name: typo in expect
                expect: {levle: 4}
            """,
            "cases.yaml:2: case 'typo in expect': expect.level: field required",
        ),
        (
            """\
            cases:
              - name: unknown trigger
                expect: {level: 4, triggers: [speed]}
            """,
            "case 'unknown trigger': expect.triggers[0]:",
        ),
        (
            """\
            cases:
              - name: twice
                expect: {level: 4}
              - name: twice
                expect: {level: 4}
            """,
            "cases.yaml:4: case 'twice': a case of this name is already defined",
        ),
        (
            """\
            cases:
              - expect: {level: 4}
            """,
            "cases.yaml:2: cases[0]: name: field required",
        ),
        ("cases: []\n", "cases.yaml: cases:"),
        ("cases: [\n", "cases.yaml:2: not valid YAML"),
        ("- just a list\n", "cases.yaml: expected a mapping with 'cases', got list"),
        ("kases: []\n", "cases.yaml: cases: field required"),
    ],
)
def test_an_invalid_case_file_is_one_line_naming_file_and_case_with_exit_2(
    tmp_path: Path, text: str, message: str
) -> None:
    _write(tmp_path, text)
    result = _run(str(tmp_path), "--policy", str(DEFAULT_POLICY))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_parse_case_file_raises_input_error() -> None:
    with pytest.raises(InputError, match=r"x\.yaml: expected a mapping"):
        parse_case_file("3", source="x.yaml")


def test_a_directory_without_case_files_exits_2(tmp_path: Path) -> None:
    result = _run(str(tmp_path), "--policy", str(DEFAULT_POLICY))
    assert result.exit_code == 2
    assert "no *.yaml case files" in result.stderr


def test_a_missing_directory_exits_2(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "nope"), "--policy", str(DEFAULT_POLICY))
    assert result.exit_code == 2
    assert "no such file or directory" in result.stderr


def test_a_single_case_file_may_be_given_instead_of_a_directory() -> None:
    result = _run(str(CASES / "default-policy.yaml"), "--policy", str(DEFAULT_POLICY))
    assert result.exit_code == 0, result.output


def test_an_invalid_policy_prints_its_problems_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("policy: {}\n")
    result = _run(str(CASES), "--policy", str(bad))
    assert result.exit_code == 2
    assert all(line.startswith(f"{bad}:") for line in result.stderr.strip().splitlines())
