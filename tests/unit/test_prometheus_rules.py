# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Prometheus rules: valid for promtool, tested by promtool, and about metrics the gate exports.

promtool comes with Debian's ``prometheus`` package. Without it the promtool checks
skip on a workstation but fail in CI (``CI`` set), where it must be installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.metrics import Metrics
from streams.oncall.metrics import PagerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "rules.yml"
RULE_TESTS = DEPLOY / "rules.test.yml"
CONFIG = DEPLOY / "prometheus.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "promtool is not installed: CI must install it (apt-get install prometheus)"
            )
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, cwd=DEPLOY, timeout=120
    )


@pytest.fixture(scope="module")
def groups() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    assert isinstance(document["groups"], list)
    return document["groups"]


@pytest.fixture(scope="module")
def rules(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"]]


def alert(rules: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [r for r in rules if r.get("alert") == name]
    assert len(found) == 1, name
    return found[0]


def test_promtool_checks_the_rules() -> None:
    result = run("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    """The alerts fire when they should and stay quiet when they should (rules.test.yml)."""
    result = run("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_prometheus_config() -> None:
    result = run("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_articles_recording_rule(rules: list[dict[str, Any]]) -> None:
    found = [r for r in rules if r.get("record") == "holmesgpt:false_positive_rate:rate7d"]
    assert len(found) == 1
    assert found[0]["expr"] == (
        'max by (ai_system) (escalation_ai_false_positive_rate{ai_system="holmesgpt"})'
    )


def test_the_articles_false_positive_alert(rules: list[dict[str, Any]]) -> None:
    rule = alert(rules, "HolmesGPTFalsePositiveRateHigh")
    assert rule["expr"] == "holmesgpt:false_positive_rate:rate7d > 0.20"
    assert rule["for"] == "1d"
    assert rule["labels"] == {"severity": "ticket", "domain": "ai_ops_quality"}
    assert "HolmesGPT" in rule["annotations"]["summary"]


@pytest.mark.parametrize(
    ("name", "expr"),
    [
        ("EscalationPolicyReviewOverdue", "escalation_policy_review_overdue == 1"),
        ("EscalationGateDeadLetters", "rate(escalation_dead_letters_total[5m]) > 0"),
        ("EscalationOncallEscalations", "increase(escalation_oncall_escalations_total[15m]) > 0"),
        ("EscalationGateDown", 'up{job="escalation-gate"} == 0'),
        ("EscalationPagerNotPaging", "escalation_pager_ready == 0"),
        (
            "EscalationPagerDeliveriesFailing",
            'increase(escalation_pager_deliveries_total{result!="ok"}[15m]) > 0',
        ),
    ],
)
def test_operational_alerts(rules: list[dict[str, Any]], name: str, expr: str) -> None:
    assert alert(rules, name)["expr"] == expr


def test_every_alert_has_a_severity_a_domain_and_a_summary(rules: list[dict[str, Any]]) -> None:
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 5
    for rule in alerts:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["labels"]["domain"], rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]


def test_every_metric_the_rules_use_is_one_the_gate_exports(
    rules: list[dict[str, Any]],
) -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    PagerMetrics(registry)
    exported = set()
    for family in registry.collect():
        exported |= {sample.name for sample in family.samples}
        # A labelled metric has no samples until used: name it by its type.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        exported |= {family.name + s for s in suffixes.get(family.type, [""])}
    recorded = {r["record"] for r in rules if "record" in r}
    used = set()
    for rule in rules:
        used |= set(re.findall(r"\b(escalation_[a-z_]+)\b", rule["expr"]))
    assert used
    assert used <= exported, used - exported
    for rule in rules:
        for name in re.findall(r"\b([a-z_]+:[a-z_0-9:]+)\b", rule["expr"]):
            assert name in recorded, f"{name} is used but not recorded"


def test_the_scrape_config_targets_the_worker_and_loads_the_rules() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [RULES.name]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["escalation-gate"]["static_configs"][0]["targets"] == ["worker:9464"]
