"""A new policy goes live only if it validates; every decision names the one in force;
a policy past its review date caps autonomy at Level 2 (the article: its authority
derives from human review)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from pathlib import Path

from harness import FAST_POLICY, DecisionReader, Feed, Reader, Worker

from streams import samples
from streams.models import Proposal
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LOOSER = ROOT / "policies" / "examples" / "looser-v1.4.yaml"
L4 = next(s for s in samples.SCENARIOS if s.expected_level == 4)


def _decide(settings: Settings, feed: Feed, number: int, service: str) -> dict:
    base = samples.proposal(L4, number, at=dt.datetime.now(tz=dt.UTC), tag="reload-")
    data = base.model_dump(mode="json")
    data["action"]["target"]["service"] = service
    proposal = Proposal.model_validate(data)
    feed.proposals([proposal])
    with DecisionReader(settings) as reader:
        return reader.wait_for([proposal.proposal_id])[proposal.proposal_id]


def _kinds(settings: Settings, kind: str, count: int) -> list[dict]:
    with Reader(settings.bootstrap_servers or "", [settings.topic("audit")]) as reader:
        reader.wait(
            lambda r: sum(v["event"]["kind"] == kind for v in r.values()) >= count, timeout=30
        )
        return [v["event"] for v in reader.values() if v["event"]["kind"] == kind]


def test_only_a_valid_policy_goes_live_and_decisions_name_it(
    settings: Settings, worker: Worker
) -> None:
    feed = Feed(settings)
    services = [f"reload-{i}" for i in range(3)]
    for service in services:
        feed.budget(service, 0.9)
    feed.seed_samples(worker)
    worker.wait_metric("escalation_state_updates_applied_total", 12, table="budgets")
    before = _decide(settings, feed, 1, services[0])
    assert before["policy_version"] == "1.3"
    assert before["policy_digest"] == hashlib.sha256(FAST_POLICY.read_bytes()).hexdigest()

    text = LOOSER.read_text()
    # v1.4 grants more autonomy than v1.3: two people sign it (the two-person rule).
    feed.control(
        "reload_policy", user="alice", cosigners=("bob",), policy_yaml=text, reason="v1.4 reviewed"
    )
    worker.wait_metric("escalation_state_updates_applied_total", 2, table="policy")
    loads = _kinds(settings, "policy_load", 2)
    loaded = loads[-1]
    assert loaded["data"]["digest"] == hashlib.sha256(text.encode()).hexdigest()
    after = _decide(settings, feed, 2, services[1])
    assert after["policy_version"] == "1.4"
    assert after["policy_digest"] == loaded["data"]["digest"]

    broken = text.replace("min_confidence: 0.60", "min_confidence: 1.60", 1)
    feed.control("reload_policy", user="alice", policy_yaml=broken)
    worker.wait_metric("escalation_policy_reloads_rejected_total", 1)
    rejected = _kinds(settings, "policy_rejected", 1)[0]
    assert any("min_confidence" in line for line in rejected["data"]["problems"])
    still = _decide(settings, feed, 3, services[2])
    assert still["policy_version"] == "1.4"
    worker.wait_metric("escalation_policy_info", 1, version="1.4", digest=loaded["data"]["digest"])


def test_a_policy_past_its_review_date_caps_autonomy_at_level_2(
    settings: Settings, worker: Worker
) -> None:
    feed = Feed(settings)
    feed.budget("stale-api", 0.9)
    feed.seed_samples(worker)
    stale = re.sub(r"last_reviewed: \S+", "last_reviewed: 2026-01-01", FAST_POLICY.read_text())
    stale = re.sub(r"next_review: \S+", "next_review: 2026-04-01", stale)
    stale = stale.replace('version: "1.3"', 'version: "1.3-stale"')
    feed.control("reload_policy", user="alice", policy_yaml=stale)
    worker.wait_metric("escalation_state_updates_applied_total", 2, table="policy")
    decision = _decide(settings, feed, 1, "stale-api")
    assert decision["policy_version"] == "1.3-stale"
    assert decision["level"] == 2
    assert decision["deciding_rule"] == "policy_review_overdue"
    worker.wait_metric("escalation_policy_review_overdue", 1)
    assert "due for review" in worker.log_tail(200)
