"""The rules belong to people (issue 12), attacked on the real broker as a proposer with
ordinary Kafka write access would: every attempt is refused, audited and counted, and
the honest path still reaches every level."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from harness import DecisionReader, Feed, Reader, Worker, wait_processed

from streams import keys, samples
from streams.kafka.admin import (
    TIMESTAMP_TYPE,
    admin_client,
    describe_topic_config,
    input_topics,
)
from streams.models import ErrorBudgetUpdate, Proposal, encode
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LOOSER = (ROOT / "policies" / "examples" / "looser-v1.4.yaml").read_text()
L4 = next(s for s in samples.SCENARIOS if s.expected_level == 4)


@pytest.fixture
def feed(settings: Settings, worker: Worker) -> Feed:
    feed = Feed(settings)
    feed.seed_samples(worker)
    return feed


def _audit(settings: Settings, feed: Feed) -> list[dict[str, Any]]:
    wait_processed(settings, feed.sent)
    with Reader(settings.bootstrap_servers or "", [settings.topic("audit")]) as reader:
        reader.read_to_end()
        return [v["event"] for v in reader.values()]


def _burst(service: str, count: int, tag: str) -> list[Proposal]:
    now = dt.datetime.now(tz=dt.UTC)
    out = []
    for i in range(count):
        data = samples.proposal(L4, i, at=now, tag=tag).model_dump(mode="json")
        data["action"]["target"]["service"] = service
        out.append(Proposal.model_validate(data))
    return out


def test_an_ai_system_can_not_load_a_policy_requalify_or_set_a_budget(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    ai = keys.generate("holmesgpt")  # a key of its own: not in the keyring
    alice = feed.ids.person("alice")
    feed.control("reload_policy", user="holmesgpt", signer=ai, policy_yaml=LOOSER)
    feed.control("reload_policy", user="holmesgpt", signer=alice, policy_yaml=LOOSER)
    feed.control("requalify", user="holmesgpt", signer=ai, pattern="p", action_type="a")
    feed.control("freeze", user="alice", signer=ai)  # claims to be alice
    unsigned = ErrorBudgetUpdate(
        schema_version=1, service=L4.service, remaining=1.0, at=dt.datetime.now(tz=dt.UTC)
    )
    feed.send("error-budgets", [encode(unsigned)], key=L4.service)
    by_executor = unsigned.model_copy(update={"source": "dev-executor"})
    from streams.signing import sign  # noqa: PLC0415

    feed.send("error-budgets", [encode(sign(by_executor, feed.ids.executor()))], key=L4.service)
    # One person alone may not load a policy that grants more autonomy.
    feed.control("reload_policy", user="alice", policy_yaml=LOOSER)
    for reason, command in (("unknown_key", "reload_policy"), ("ai_system", "reload_policy"),
                            ("unknown_key", "requalify"), ("unknown_key", "freeze"),
                            ("two_person_rule", "reload_policy")):  # fmt: skip
        worker.wait_metric("escalation_commands_refused_total", 1, reason=reason, command=command)
    worker.wait_metric(
        "escalation_inputs_refused_total", 1, topic="error-budgets", reason="unsigned"
    )
    worker.wait_metric(
        "escalation_inputs_refused_total", 1, topic="error-budgets", reason="not_an_slo_source"
    )
    events = _audit(settings, feed)
    refused = [e["data"]["reason"] for e in events if e["kind"] == "command_refused"]
    assert sorted(refused) == sorted(
        ["unknown_key", "ai_system", "unknown_key", "unknown_key", "two_person_rule"]
    )
    assert sum(e["kind"] == "input_refused" for e in events) == 2
    assert [e for e in events if e["kind"] in {"policy_load", "freeze"}][1:] == []
    # The policy in force is still the reviewed one, and nothing is frozen.
    (decision,) = (
        DecisionReader(settings)
        .wait_for([p.proposal_id for p in feed.proposals(_burst("ai-check", 1, "ai-"))])
        .values()
    )
    assert decision["policy_version"] == "1.3"
    assert decision["context"]["frozen"] is False
    assert decision["keyring_digest"] == feed.ids.keyring_digest()


def test_two_people_load_a_policy_that_grants_more_autonomy(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    feed.control("reload_policy", user="alice", cosigners=("bob",), policy_yaml=LOOSER)
    worker.wait_metric("escalation_policy_info", 1, version="1.4", digest=_sha(LOOSER))
    (load,) = [e for e in _audit(settings, feed) if e["kind"] == "policy_load"][1:]
    assert load["data"]["signed_by"] == ["alice", "bob"]
    assert load["data"]["more_autonomy"] is True


def _sha(text: str) -> str:
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(text.encode()).hexdigest()


def _levels(settings: Settings, proposals: list[Proposal]) -> list[int]:
    with DecisionReader(settings) as reader:
        found = reader.wait_for([p.proposal_id for p in proposals])
    return [found[p.proposal_id]["level"] for p in proposals]


def test_back_dated_records_do_not_slip_past_the_velocity_guard(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    """A proposer stamps its records 11 minutes apart, back in time: the broker's clock
    (LogAppendTime) decides, so the velocity window still sees a burst."""
    service = "dated-api"
    feed.budget(service, 0.9)
    budgets = len(samples.budgets(dt.datetime.now(tz=dt.UTC))) + 1
    worker.wait_metric("escalation_state_updates_applied_total", budgets, table="budgets")
    burst = _burst(service, 8, "dated-")
    start = dt.datetime.now(tz=dt.UTC).timestamp() - 8 * 660
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers,
                         "partitioner": "murmur2_random"})  # fmt: skip
    for i, proposal in enumerate(burst):
        producer.produce(settings.topic("proposals"), encode(proposal), key=service,
                         timestamp=int((start + i * 660) * 1000))  # fmt: skip
    assert producer.flush(30) == 0
    levels = _levels(settings, burst)
    assert sum(level >= 3 for level in levels) == 3, levels
    assert levels[3:] == [2] * 5


def test_a_producer_that_spreads_a_service_over_partitions_is_repartitioned(
    settings: Settings, feed: Feed, worker: Worker
) -> None:
    """kcat's and librdkafka's default partitioner (CRC32) is not murmur2: the gate moves
    each proposal to its service's partition, so the velocity guard still holds."""
    service = "spread-api"
    feed.budget(service, 0.9)
    budgets = len(samples.budgets(dt.datetime.now(tz=dt.UTC))) + 1
    worker.wait_metric("escalation_state_updates_applied_total", budgets, table="budgets")
    burst = _burst(service, 8, "spread-")
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for i, proposal in enumerate(burst):  # every partition in turn
        producer.produce(settings.topic("proposals"), encode(proposal), key=service,
                         partition=i % settings.partitions)  # fmt: skip
    assert producer.flush(30) == 0
    levels = _levels(settings, burst)
    assert sum(level >= 3 for level in levels) == 3, levels
    moved = worker.metric("escalation_proposals_repartitioned_total")
    assert moved == settings.partitions * 2 - 2, moved  # all but the two on its own partition
    events = _audit(settings, feed)
    assert sum(e["kind"] == "proposal_repartitioned" for e in events) == moved


def test_input_topics_take_the_brokers_clock_and_older_topics_are_switched(
    settings: Settings, kafka_bootstrap: str, topics: list[str]
) -> None:
    for topic in input_topics(settings):
        assert describe_topic_config(kafka_bootstrap, topic)[TIMESTAMP_TYPE] == "LogAppendTime"
    # A cluster whose topics were created before: `topics create` switches them.
    from confluent_kafka.admin import NewTopic  # noqa: PLC0415

    older = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "old."})
    admin = admin_client(kafka_bootstrap)
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=1, replication_factor=1) for t in input_topics(older)]
    )
    for future in futures.values():
        future.result(timeout=30)
    result = _cli(older, "topics", "create")
    assert result.returncode == 0, result.stderr
    for topic in input_topics(older):
        assert describe_topic_config(kafka_bootstrap, topic)[TIMESTAMP_TYPE] == "LogAppendTime"


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    import os  # noqa: PLC0415

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
           "ESCALATION_TOPIC_PREFIX": settings.topic_prefix}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("unset", "says"),
    [
        ("ESCALATION_GATE_KEY_FILE", "ESCALATION_GATE_KEY_FILE is not set"),
        ("ESCALATION_KEYRING_FILE", "ESCALATION_KEYRING_FILE is not set"),
    ],
)
def test_a_worker_refuses_to_start_without_its_keys(  # noqa: PLR0917 - fixtures
    settings: Settings,
    topics: list[str],
    start_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    unset: str,
    says: str,
) -> None:
    monkeypatch.delenv(unset)
    worker = start_worker("no-keys", ready=False)
    assert worker.process is not None
    assert worker.process.wait(timeout=60) != 0
    assert says in worker.log_tail(), worker.log_tail()


def test_a_worker_refuses_proposals_with_more_partitions_than_its_other_inputs(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    """The lanes read the proposals partitions numbered as the worker's lifecycle
    partitions: a proposals topic grown alone would leave partitions unread."""
    from confluent_kafka.admin import NewTopic  # noqa: PLC0415

    grown = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "grown."})
    admin = admin_client(settings.bootstrap_servers or "")
    futures = admin.create_topics([NewTopic(grown.topic("proposals"), num_partitions=6)])
    for future in futures.values():
        future.result(timeout=30)
    worker = start_worker("grown", ready=False, on=grown)
    assert worker.process is not None
    assert worker.process.wait(timeout=120) == 1
    says = f"{grown.topic('outcomes')} has 4, {grown.topic('proposals')} has 6"
    assert says in worker.log_tail(), worker.log_tail()


def test_signed_answers_and_commands_from_the_command_line(
    settings: Settings, feed: Feed, worker: Worker, tmp_path: Path
) -> None:
    """`escalation policy load --out` and `policy cosign`: the two-person rule by hand."""
    request = tmp_path / "load.json"
    policy = tmp_path / "looser.yaml"
    policy.write_text(LOOSER)
    result = _cli(settings, "policy", "load", str(policy), "--as", "alice", "--out", str(request))
    assert result.returncode == 0, result.stderr
    assert len(orjson.loads(request.read_bytes())["signatures"]) == 1
    result = _cli(settings, "policy", "cosign", str(request), "--as", "bob")
    assert result.returncode == 0, result.stderr
    worker.wait_metric("escalation_policy_info", 1, version="1.4", digest=_sha(LOOSER))
    result = _cli(settings, "freeze", "--as", "nobody-with-a-key")
    assert result.returncode == 2
    assert "no private key for 'nobody-with-a-key'" in result.stderr
