# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""``escalation policy diff``: each change in words, classified by its effect on autonomy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from streams.policy import Policy, parse_policy
from streams.review.cli import policy_diff
from streams.review.diff import PolicyDiff, diff_policies

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "policies" / "escalation-policy.yaml"
LOOSER_POLICY = ROOT / "policies" / "examples" / "looser-v1.4.yaml"
DEFAULT_TEXT = DEFAULT_POLICY.read_text()


def _policy(text: str) -> Policy:
    return parse_policy(text, source="variant.yaml")


def _variant(*replacements: tuple[str, str]) -> Policy:
    """The default policy with text replaced (each replacement must apply)."""
    text = DEFAULT_TEXT
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    return _policy(text)


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return _policy(DEFAULT_TEXT)


@pytest.fixture(scope="module")
def looser_diff(default_policy: Policy) -> PolicyDiff:
    return diff_policies(default_policy, _policy(LOOSER_POLICY.read_text()))


def _lines(diff: PolicyDiff) -> set[str]:
    return {change.line for change in diff.changes}


def _run(*args: str) -> Any:
    return CliRunner().invoke(policy_diff, list(args))


# ----------------------------------------------------------------- default -> looser


def test_the_looser_policy_lists_every_expected_change_classified(
    looser_diff: PolicyDiff,
) -> None:
    assert _lines(looser_diff) == {
        "Version: 1.3 -> 1.4 (neutral)",
        (
            "Scope: production-platform (all services); AI: HolmesGPT + LiteLLM Proxy + Ollama / "
            "GitHub Models -> production-platform (all services); AI: HolmesGPT, k8sgpt + LiteLLM "
            "Proxy + Ollama / GitHub Models (neutral)"
        ),
        "Last reviewed: 2026-11-01 -> 2026-12-01 (neutral)",
        "Next review: 2027-02-01 -> 2027-03-01 (neutral)",
        "Trusted AI system added: k8sgpt (more autonomy)",
        "Level 2 minimum confidence (below it: human approval): 0.85 -> 0.8 (more autonomy)",
        "Level 2 maximum replica fraction (above it: human approval): 0.2 -> 0.25 (more autonomy)",
        "Level 4 minimum confidence: 0.85 -> 0.8 (more autonomy)",
        "Level 4 minimum occurrences: 10 -> 8 (more autonomy)",
        "Level 3 minimum occurrences: 3 -> 2 (more autonomy)",
        "Level 4 scale_up: replicas_delta limit: 2 -> 3 (more autonomy)",
        (
            "Level 4 scale_up: description: 'Scale-up of a single HPA-managed deployment by <= 2 "
            "replicas' -> 'Scale-up of a single HPA-managed deployment by <= 3 replicas' (neutral)"
        ),
        "Level 4 action authorised: cache_flush (target kinds Deployment) (more autonomy)",
        "Shared infrastructure (always needs a human) added: vault (less autonomy)",
        "Regulated namespace added: billing (SOX) (less autonomy)",
        "Approver added: erin (neutral)",
        "Velocity guard: autonomous executions per service per window: 3 -> 4 (more autonomy)",
    }
    assert looser_diff.grants_more_autonomy
    assert (looser_diff.old_version, looser_diff.new_version) == ("1.3", "1.4")


def test_changes_are_grouped_in_policy_document_order(looser_diff: PolicyDiff) -> None:
    sections = [change.section for change in looser_diff.changes]
    order = ["governance", "trust", "thresholds", "actions", "shared infrastructure"]
    order += ["regulated", "approval", "velocity"]
    assert sections == sorted(sections, key=order.index)


def test_the_reverse_diff_flips_every_classified_direction(
    default_policy: Policy, looser_diff: PolicyDiff
) -> None:
    back = diff_policies(_policy(LOOSER_POLICY.read_text()), default_policy)
    flip = {"more autonomy": "less autonomy", "less autonomy": "more autonomy"}
    forward = sorted(flip.get(c.direction, c.direction) for c in looser_diff.changes)
    assert sorted(c.direction for c in back.changes) == forward
    assert "Trusted AI system removed: k8sgpt (less autonomy)" in _lines(back)
    assert (
        "Level 4 action no longer authorised: cache_flush (was target kinds Deployment) "
        "(less autonomy)" in _lines(back)
    )


def test_an_identical_policy_has_no_changes(default_policy: Policy) -> None:
    diff = diff_policies(default_policy, _policy(DEFAULT_TEXT))
    assert diff.changes == ()
    assert not diff.grants_more_autonomy


# -------------------------------------------------------------------- classification


@pytest.mark.parametrize(
    ("replacement", "line"),
    [
        (
            ("min_confidence: 0.60", "min_confidence: 0.65"),
            "Level 1 minimum confidence (below it: assist only): 0.6 -> 0.65 (less autonomy)",
        ),
        (
            ("max_false_positive_rate: 0.20", "max_false_positive_rate: 0.30"),
            (
                "Level 1 maximum AI false-positive rate, 7d (above it: assist only): 0.2 -> 0.3 "
                "(more autonomy)"
            ),
        ),
        (
            ("min_confidence: 0.85          # confidence", "min_confidence: 0.80 #"),
            "Level 2 minimum confidence (below it: human approval): 0.85 -> 0.8 (more autonomy)",
        ),
        (
            ("max_replica_fraction: 0.20", "max_replica_fraction: 0.30"),
            (
                "Level 2 maximum replica fraction (above it: human approval): 0.2 -> 0.3 "
                "(more autonomy)"
            ),
        ),
        (
            ("max_rollback_seconds: 300", "max_rollback_seconds: 120"),
            (
                "Level 2 maximum rollback time in seconds (above it: human approval): 300 -> 120 "
                "(less autonomy)"
            ),
        ),
        (
            ("require_reversible: true", "require_reversible: false"),
            "Level 2 requires a reversible action: yes -> no (more autonomy)",
        ),
        (
            ("degraded_error_budget: 0.75", "degraded_error_budget: 0.80"),
            (
                "Level 2 degraded error budget line (at or below it: human approval): 0.75 -> 0.8 "
                "(less autonomy)"
            ),
        ),
        (
            ("consistency: 0.90             # successes / seen", "consistency: 0.95"),
            "Level 4 minimum outcome consistency: 0.9 -> 0.95 (less autonomy)",
        ),
        (
            ("requalification_days: 90", "requalification_days: 180"),
            "Level 4 re-qualification valid for (days): 90 -> 180 (more autonomy)",
        ),
        (
            ("abort_window_seconds: 300", "abort_window_seconds: 120"),
            "Level 3 abort window (seconds): 300 -> 120 (more autonomy)",
        ),
        (
            ("max_fleet: 20", "max_fleet: 10"),
            "Velocity guard: autonomous executions fleet-wide per window: 20 -> 10 (less autonomy)",
        ),
        (
            ("timeout_seconds: 600", "timeout_seconds: 300"),
            "Approval timeout before on-call is paged (seconds): 600 -> 300 (neutral)",
        ),
        (
            ("trusted_ai_systems: [holmesgpt]", "trusted_ai_systems: []"),
            "Trusted AI system removed: holmesgpt (less autonomy)",
        ),
        (
            ("[argocd, prometheus, istio]", "[argocd, prometheus]"),
            "Shared infrastructure (always needs a human) removed: istio (more autonomy)",
        ),
        (
            ("    ledger: [SOX]\n", ""),
            "Regulated service removed: ledger (was SOX) (more autonomy)",
        ),
        (
            ("ledger: [SOX]", "ledger: [SOX, PCI-DSS]"),
            "Regulated service ledger frameworks: SOX -> SOX, PCI-DSS (neutral)",
        ),
        (
            ("        target_kinds: [Deployment]\n", ""),
            "Level 4 rolling_restart: no longer limited to target kinds Deployment (more autonomy)",
        ),
        (
            ("target_kinds: [Deployment]", "target_kinds: [Deployment, StatefulSet]"),
            "Level 4 rolling_restart: target kind allowed: StatefulSet (more autonomy)",
        ),
        (
            ("excluded_environments: [production]", "excluded_environments: [production, staging]"),
            "Level 4 certificate_rotation: environment excluded: staging (less autonomy)",
        ),
        (
            ("max_parameters: {replicas_delta: 2}", "max_parameters: {replicas_delta: 1}"),
            "Level 4 scale_up: replicas_delta limit: 2 -> 1 (less autonomy)",
        ),
        (
            ("max_parameters: {replicas_delta: 2}", "max_parameters: {}"),
            "Level 4 scale_up: limit removed: replicas_delta <= 2 (more autonomy)",
        ),
        (
            (
                (
                    "      log_pipeline_restart:\n        description: Log pipeline gateway "
                    "restart (telemetry outage, no production impact)\n"
                ),
                "",
            ),
            (
                "Level 4 action no longer authorised: log_pipeline_restart (was no constraint) "
                "(less autonomy)"
            ),
        ),
        (
            ("approved_by: [SRE Lead, VP Engineering]", "approved_by: [SRE Lead]"),
            "Approved by removed: VP Engineering (neutral)",
        ),
        (
            ("oncall: [sre-oncall-primary, sre-oncall-secondary]", "oncall: [sre-oncall-primary]"),
            "On-call target removed: sre-oncall-secondary (neutral)",
        ),
        (
            ("    - name: sre-manager\n", "    - name: incident-commander\n"),
            (
                "On-call chain (timeouts page in this order): sre-oncall-primary -> "
                "sre-oncall-secondary -> sre-manager => sre-oncall-primary -> "
                "sre-oncall-secondary -> incident-commander (neutral)"
            ),
        ),
        (
            ("description: the SRE engineering manager on duty", "description: the duty manager"),
            (
                'On-call chain descriptions: ["the SRE on-call rotation\'s primary", '
                "\"the SRE on-call rotation's secondary\", 'the SRE engineering manager on duty']"
                ' -> ["the SRE on-call rotation\'s primary", "the SRE on-call rotation\'s '
                "secondary\", 'the duty manager'] (neutral)"
            ),
        ),
        (
            (
                "  verification_failed: sre-oncall-primary",
                "  verification_failed: sre-oncall-secondary",
            ),
            (
                "On-call target of a failed verification: sre-oncall-primary -> "
                "sre-oncall-secondary (neutral)"
            ),
        ),
    ],
)
def test_a_single_change_is_said_in_words_and_classified(
    default_policy: Policy, replacement: tuple[str, str], line: str
) -> None:
    diff = diff_policies(default_policy, _variant(replacement))
    assert [change.line for change in diff.changes] == [line]


def test_raising_a_level_1_or_2_minimum_confidence_is_less_autonomy(
    default_policy: Policy,
) -> None:
    stricter = _variant(
        ("min_confidence: 0.60", "min_confidence: 0.70"),
        ("min_confidence: 0.85          # confidence", "min_confidence: 0.90 #"),
        ("min_confidence: 0.85\n    min_seen: 10", "min_confidence: 0.90\n    min_seen: 10"),
    )
    diff = diff_policies(default_policy, stricter)
    assert [c.direction for c in diff.changes] == ["less autonomy"] * 3
    assert not diff.grants_more_autonomy


# ------------------------------------------------------------------------ the command


def test_the_command_prints_each_change_and_a_summary() -> None:
    result = _run(str(DEFAULT_POLICY), str(LOOSER_POLICY))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith(f"Policy 1.3 ({DEFAULT_POLICY}) -> 1.4 ({LOOSER_POLICY})")
    assert "  Level 4 minimum confidence: 0.85 -> 0.8 (more autonomy)\n" in out
    assert "thresholds:\n" in out
    assert out.rstrip().endswith("17 changes: 9 more autonomy, 2 less autonomy, 6 neutral")


def test_the_command_prints_one_json_object_with_json() -> None:
    result = _run(str(DEFAULT_POLICY), str(LOOSER_POLICY), "--json")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["summary"] == {
        "changes": 17,
        "more_autonomy": 9,
        "less_autonomy": 2,
        "neutral": 6,
    }
    assert data["old"]["version"] == "1.3"
    assert data["new"]["file"] == str(LOOSER_POLICY)
    change = next(c for c in data["changes"] if c["path"] == "policy.next_review")
    assert change == {
        "section": "governance",
        "path": "policy.next_review",
        "text": "Next review: 2027-02-01 -> 2027-03-01",
        "old": "2027-02-01",
        "new": "2027-03-01",
        "direction": "neutral",
    }


def test_fail_on_more_autonomy_exits_1_only_when_a_change_grants_more_autonomy(
    tmp_path: Path,
) -> None:
    stricter_file = tmp_path / "stricter.yaml"
    stricter_file.write_text(
        DEFAULT_TEXT.replace('version: "1.3"', 'version: "1.3.1"').replace(
            "min_confidence: 0.60", "min_confidence: 0.65"
        )
    )
    looser = _run(str(DEFAULT_POLICY), str(LOOSER_POLICY), "--fail-on-more-autonomy")
    back = _run(str(LOOSER_POLICY), str(DEFAULT_POLICY), "--fail-on-more-autonomy")
    stricter = _run(str(DEFAULT_POLICY), str(stricter_file), "--fail-on-more-autonomy")
    same = _run(str(DEFAULT_POLICY), str(DEFAULT_POLICY), "--fail-on-more-autonomy")
    assert looser.exit_code == 1
    assert "(more autonomy)" in looser.stdout
    assert back.exit_code == 1  # dropping vault and billing from scope grants autonomy
    assert stricter.exit_code == 0, stricter.output
    assert "0 more autonomy, 1 less autonomy, 1 neutral" in stricter.stdout
    assert same.exit_code == 0
    assert "no changes" in same.stdout
    assert _run(str(DEFAULT_POLICY), str(LOOSER_POLICY)).exit_code == 0


def test_an_invalid_policy_prints_its_problems_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_TEXT.replace("min_seen: 3 ", "min_seen: 1 "))
    result = _run(str(DEFAULT_POLICY), str(bad))
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{bad}:")
    assert "thresholds.conditional.min_seen" in line


def test_an_unreadable_policy_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _run(str(DEFAULT_POLICY), str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "missing.yaml: cannot read policy" in line
