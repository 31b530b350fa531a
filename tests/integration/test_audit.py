"""The audit trail on the real broker: complete, in order, append-only, verifiable."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from harness import DecisionReader, Feed, Reader, Worker

from streams import keys, samples
from streams.audit import verify_records
from streams.kafka.admin import describe_topic_config
from streams.models import Proposal
from streams.settings import Settings

BY_NAME = {s.name: s for s in samples.SCENARIOS}
# Events of one proposal live on up to two chains (its own partition, and its decision
# id's for the answers); at the same instant they are ordered by cause.
CAUSAL = ["proposal_received", "decision", "approval_accepted",
          "rejection", "answer_refused", "abort", "execute_command", "timeout_escalation",
          "outcome", "verification_failed"]  # fmt: skip


def _in_order(trail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(trail, key=lambda e: (e["at"], CAUSAL.index(e["kind"]), e["seq"]))


def _proposal(name: str, number: int, service: str | None = None) -> Proposal:
    p = samples.proposal(BY_NAME[name], number, at=dt.datetime.now(tz=dt.UTC), tag="audit-")
    if service is None:
        return p
    data = p.model_dump(mode="json")
    data["action"]["target"]["service"] = service
    return Proposal.model_validate(data)


def _audit(settings: Settings, reader: Reader) -> list[dict[str, Any]]:
    return reader.values(settings.topic("audit"))


def test_the_audit_topic_is_append_only_with_unlimited_retention(
    settings: Settings, topics: list[str]
) -> None:
    config = describe_topic_config(settings.bootstrap_servers or "", settings.topic("audit"))
    assert config["cleanup.policy"] == "delete"
    assert config["retention.ms"] == "-1"
    assert config["retention.bytes"] == "-1"


def test_a_mixed_stream_leaves_a_complete_ordered_verifiable_trail(
    settings: Settings, worker: Worker
) -> None:
    feed = Feed(settings)
    feed.seed_samples(worker)
    stream = [p for _, p in samples.stream(20, start=dt.datetime.now(tz=dt.UTC), tag="mix-")]
    approved = _proposal("wide-blast", 100)
    rejected = _proposal("wide-blast", 101)
    ignored = _proposal("cert-second", 102)  # nobody answers: on-call is paged
    aborted = _proposal("deadlock-statefulset", 103)
    executed = _proposal("log-gateway", 104)
    feed.proposals([*stream, approved, rejected, ignored, aborted, executed])
    with DecisionReader(settings) as reader:
        decided = reader.wait_for([p.proposal_id for p in [*stream, approved, rejected, ignored,
                                                            aborted, executed]])  # fmt: skip
    did = {pid: d["decision_id"] for pid, d in decided.items()}
    feed.answer("approve", did[approved.proposal_id], "alice")
    feed.answer("reject", did[rejected.proposal_id], "bob", false_positive=True)
    feed.answer(
        "approve", did[rejected.proposal_id], "mallory", signer=keys.generate("mallory")
    )  # refused
    feed.answer("abort", did[aborted.proposal_id], "dana")
    feed.outcome(decided[executed.proposal_id])
    feed.control("freeze", user="alice", service="payments-api")
    feed.control("unfreeze", user="alice", service="payments-api")
    feed.control("requalify", user="carol", pattern="x", action_type="y")
    feed.raw("proposals", [b"not json"], key=b"k")

    wanted = {
        "policy_load", "proposal_received", "decision",
        "approval_accepted", "execute_command", "rejection", "answer_refused", "abort",
        "timeout_escalation", "outcome", "freeze", "unfreeze", "requalification", "dead_letter",
    }  # fmt: skip
    with Reader(settings.bootstrap_servers or "", [settings.topic("audit")]) as reader:
        paged = ("timeout_escalation", ignored.proposal_id)
        ok = reader.wait(
            # Every kind, and the page for the ignored proposal itself (other approvals of
            # the stream time out too, on other partitions, a little earlier or later).
            lambda r: (
                wanted <= {v["event"]["kind"] for v in _audit(settings, r)}
                and paged
                in {(v["event"]["kind"], v["event"]["proposal_id"]) for v in _audit(settings, r)}
            ),
            timeout=60,
        )
        events = _audit(settings, reader)
        raw = [m.value() for m in reader.messages]
    assert ok, wanted - {v["event"]["kind"] for v in events}

    report = verify_records(raw)
    assert report.ok, [f.line() for f in report.errors]

    by_proposal: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in events:
        body = record["event"]
        if body.get("proposal_id"):
            by_proposal[body["proposal_id"]].append(body)
        assert record["time"] == pytest.approx(dt.datetime.fromisoformat(body["at"]).timestamp())
        assert record["fields"]["kind"] == body["kind"]
        assert record["sourcetype"] == "escalation:audit"
        assert record["index"] == settings.audit_index
    for pid, decision in decided.items():
        trail = by_proposal[pid]
        kinds = [e["kind"] for e in _in_order(trail)]
        assert kinds[:2] == ["proposal_received", "decision"], (pid, kinds)
        first = {e["kind"]: e for e in trail}
        assert first["decision"]["data"]["decision"]["context"]["now"]
        assert first["decision"]["decision_id"] == decision["decision_id"]
        if decision["level"] == 2:  # the approval request is part of the decision event
            request = first["decision"]["data"]["approval"]
            assert request["asked"]
            assert request["timeout_at"] == decision["approval_timeout_at"]
    trail = _in_order(by_proposal[approved.proposal_id])
    kinds = [e["kind"] for e in trail]
    assert kinds.index("approval_accepted") < kinds.index("execute_command")
    assert kinds.index("decision") < kinds.index("approval_accepted")
    assert "rejection" in [e["kind"] for e in by_proposal[rejected.proposal_id]]
    assert "answer_refused" in [e["kind"] for e in by_proposal[rejected.proposal_id]]
    assert "abort" in [e["kind"] for e in by_proposal[aborted.proposal_id]]
    assert "timeout_escalation" in [e["kind"] for e in by_proposal[ignored.proposal_id]]
    assert "outcome" in [e["kind"] for e in by_proposal[executed.proposal_id]]

    # The command line verifies the same topic.
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
           "ESCALATION_TOPIC_PREFIX": settings.topic_prefix}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "audit", "verify", "--topic"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK"), result.stdout


def test_a_restarted_worker_continues_the_chain(
    settings: Settings, worker: Worker, start_worker: Callable[..., Worker]
) -> None:
    feed = Feed(settings)
    feed.seed_samples(worker)
    first = [p for _, p in samples.stream(10, start=dt.datetime.now(tz=dt.UTC), tag="r1-")]
    feed.proposals(first)
    with DecisionReader(settings) as reader:
        reader.wait_for([p.proposal_id for p in first])
    worker.kill()
    start_worker("w2")
    second = [p for _, p in samples.stream(10, start=dt.datetime.now(tz=dt.UTC), tag="r2-")]
    feed.proposals(second)
    with DecisionReader(settings) as reader:
        reader.wait_for([p.proposal_id for p in second])
    with Reader(settings.bootstrap_servers or "", [settings.topic("audit")]) as reader:
        assert reader.wait(
            lambda r: sum(v["event"]["kind"] == "decision" for v in _audit(settings, r)) >= 20
        )
        raw = [m.value() for m in reader.messages]
    report = verify_records(raw)
    assert report.ok, [f.line() for f in report.errors]
    inputs = ("proposals", "outcomes", "error-budgets", "control", "lifecycle", "approvals")
    chains = {orjson.loads(r)["event"]["chain"] for r in raw}
    # Chains are named by the input partition they seal, and each writer's checkpoints
    # go on a chain of its own (docs/audit-and-splunk.md).
    assert {c for c in chains if not c.startswith("checkpoint:")} <= {
        f"{t}:{i}" for t in inputs for i in range(4)
    }
    assert any(c.startswith("checkpoint:") for c in chains)
