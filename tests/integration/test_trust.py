"""Near-miss novelty and calibrated confidence, learned from outcomes on the real broker."""

from __future__ import annotations

import datetime as dt
from typing import Any

from harness import DecisionReader, Feed, Worker

from streams import samples
from streams.models import HistoryRecord
from streams.settings import Settings

PATTERN = "oom-kill/trust-pattern"


def _now() -> dt.datetime:
    return dt.datetime.now(tz=dt.UTC)


def test_outcomes_teach_signatures_and_calibration(settings: Settings, worker: Worker) -> None:
    """A near miss of a known signature is held at Level 2 (similarity_guard); once the
    AI system's 0.9s prove right only some of the time, its word no longer earns Level 4."""
    feed = Feed(settings)
    scenario = samples.SCENARIOS[0]  # rolling_restart of a Deployment: authorised at L4
    services = [f"svc-{i}" for i in range(5)]  # one service per step: no velocity guard
    for service in services:
        feed.budget(service, 0.9)
    feed.control("requalify", user="alice", pattern=PATTERN, action_type=scenario.action)
    feed.history([HistoryRecord(pattern="other", action_type="noop", outcome="success",
                                ai_system="holmesgpt", at=_now())])  # fmt: skip
    worker.wait_metric("escalation_state_updates_applied_total", 5, table="budgets")
    worker.wait_metric("escalation_state_updates_applied_total", 1, table="requalification")
    worker.wait_metric("escalation_state_updates_applied_total", 1, table="verdicts")

    def decide(step: int, **target: str) -> dict[str, Any]:
        base = samples.proposal(scenario, step, at=_now(), tag="trust-")
        data = base.model_dump(mode="json")
        data["pattern"] = PATTERN
        data["action"]["target"] = {**data["action"]["target"], "service": services[step],
                                    **target}  # fmt: skip
        proposal = type(base).model_validate(data)
        feed.proposals([proposal])
        with DecisionReader(settings) as reader:
            return reader.wait_for([proposal.proposal_id])[proposal.proposal_id]

    first = decide(0)
    assert first["level"] == 1
    for _ in range(10):
        feed.outcome(first)
    worker.wait_metric("escalation_state_updates_applied_total", 10, table="signatures")
    worker.wait_metric("escalation_state_updates_applied_total", 10, table="calibration")

    same = decide(1)
    near = decide(2, kind="StatefulSet")

    assert same["level"] == 4
    assert same["context"]["novelty"]["kind"] == "seen"
    assert (near["level"], near["deciding_rule"]) == (2, "similarity_guard")
    [row] = [c for c in near["conditions"] if c["name"] == "similar_signature"]
    assert row["holds"] is True
    assert row["observed"]["differs"] == ["target_kind"]
    assert row["observed"]["nearest"]["target_kind"] == scenario.kind

    # Twenty more judged proposals at the same reported confidence, on another pattern:
    # twelve right, eight wrong. Calibration is per AI system and model, not per pattern.
    for index in range(20):
        feed.outcome(first, pattern="calibration/elsewhere",
                     result="success" if index < 12 else "failure")  # fmt: skip
    worker.wait_metric("escalation_state_updates_applied_total", 30, table="calibration")

    doubted = decide(3)

    assert doubted["context"]["novelty"]["kind"] == "seen"
    calibrated = doubted["context"]["calibrated_confidence"]
    assert calibrated is not None
    assert calibrated < 0.85
    assert doubted["level"] == 2
    assert "confidence" in doubted["triggers"]
    model = first["proposal"]["source"]["model"] or "*"
    ece = worker.metric(
        "escalation_ai_calibration_error", ai_system="holmesgpt", model=model, measure="ece"
    )
    assert ece > 0.1
