"""Time passes on the real broker: retention deletes, compaction compacts, every worker
restarts, and what the gate knew is still in force (issue 14).

The module runs its own broker (not the session's): the broker checks retention every
half second and its cleaner wakes every half second, so that shortened topic configs
really delete and compact within the test. The topics' retention and segment times
are shortened on the broker (``incremental_alter_configs``), as an operator's
retention running for a week would.

On the layout before ``state.folded`` this test fails: the fleet's freeze, the
re-qualification, history, verdicts and the loaded policy are gone after the restart
(README, Reliability).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from harness import FAST_POLICY, DecisionReader, Feed, Worker

from streams import samples
from streams.kafka.admin import CLIENT_LOG, admin_client
from streams.kafka.launcher import LocalKafka, render_properties, server_properties
from streams.models import Proposal
from streams.settings import Settings
from streams.testing import wait_until

FAST_CLOCK = {
    "log.retention.check.interval.ms": "500",
    "log.cleaner.backoff.ms": "500",
    "log.segment.delete.delay.ms": "0",
    "log.cleaner.min.compaction.lag.ms": "0",
    "log.initial.task.delay.ms": "0",
}
# What a week of retention and a busy cleaner do, in seconds (the broker's minimum
# segment.ms is 1 ms; its default deletion delay is a minute, set to 0 above).
SHORT = {
    "retention.ms": "1000",
    "segment.ms": "500",
    "delete.retention.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "file.delete.delay.ms": "0",
}
SHORTENED = ("state", "state.folded", "control", "outcomes", "error-budgets", "proposals")
L4 = next(s for s in samples.SCENARIOS if s.expected_level == 4 and s.requalify)
FROZEN = "checkout-api"


class FastClockKafka(LocalKafka):
    """The project's broker, with retention checks and the cleaner on a short clock."""

    def _write_config(self) -> None:
        properties = {
            **server_properties(
                broker_port=self.port, controller_port=self.controller_port, log_dirs=self.log_dirs
            ),
            **FAST_CLOCK,
        }
        self.config_file.write_text(render_properties(properties), encoding="utf-8")


@pytest.fixture(scope="module")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's own broker (overrides the session's)."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("this test needs a broker of its own, with a short retention clock")
    kafka = FastClockKafka(
        tmp_path_factory.mktemp("kafka-fast"), cache_dir=Settings().kafka_cache_dir
    )
    kafka.start()
    try:
        yield kafka.bootstrap_servers
    finally:
        kafka.stop()


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "retention-probe",
            "enable.auto.commit": False,
            "logger": CLIENT_LOG,
        }
    )


def _watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    consumer = _consumer(bootstrap)
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            return {}
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in metadata.topics[topic].partitions
        }
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str) -> list[tuple[int, int, bytes | None, bytes | None]]:
    """Every record left in ``topic``: (partition, offset, key, value)."""
    marks = _watermarks(bootstrap, topic)
    consumer = _consumer(bootstrap)
    out: list[tuple[int, int, bytes | None, bytes | None]] = []
    try:
        wanted = {p: high for p, (low, high) in marks.items() if high > low}
        consumer.assign([TopicPartition(topic, p, marks[p][0]) for p in wanted])
        done: dict[int, int] = dict.fromkeys(wanted, -1)
        deadline = time.monotonic() + 60
        while any(done[p] < wanted[p] - 1 for p in wanted) and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=0.5):
                if m.error() is None:
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
                    done[m.partition()] = m.offset()
        return out
    finally:
        consumer.close()


def _folded_through(bootstrap: str, topic: str) -> dict[int, int]:
    """The latest marker of each partition of ``state.folded``."""
    markers: dict[int, int] = {}
    for partition, _offset, key, value in _read_all(bootstrap, topic):
        if key == b"_marker" and value:
            markers[partition] = int(orjson.loads(value)["through"])
    return markers


def _shorten(bootstrap: str, topics: list[str]) -> None:
    admin = admin_client(bootstrap)
    resources = [
        ConfigResource(
            ResourceType.TOPIC,
            topic,
            incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                for name, value in SHORT.items()
            ],
        )
        for topic in topics
    ]
    for resource, future in admin.incremental_alter_configs(resources).items():
        future.result(timeout=30)
        del resource


def _proposal(number: int, service: str) -> Proposal:
    base = samples.proposal(L4, number, at=dt.datetime.now(tz=dt.UTC), tag="retention-")
    data = base.model_dump(mode="json")
    data["action"]["target"]["service"] = service
    return Proposal.model_validate(data)


def _decide(settings: Settings, feed: Feed, proposal: Proposal) -> dict[str, Any]:
    feed.proposals([proposal])
    with DecisionReader(settings) as reader:
        return reader.wait_for([proposal.proposal_id], timeout=120)[proposal.proposal_id]


def _policy_version(worker: Worker) -> str | None:
    """The version ``escalation_policy_info`` names (the policy in force)."""
    for (name, labels), value in worker.metrics().items():
        if name == "escalation_policy_info" and value == 1:
            return dict(labels).get("version")
    return None


def _known(context: dict[str, Any]) -> dict[str, Any]:
    """What the context says the gate knows (not the instant, not the velocity count)."""
    return {k: v for k, v in context.items() if k not in {"now", "recent_autonomous"}}


def test_a_week_of_retention_and_compaction_forgets_nothing(
    settings: Settings, topics: list[str], start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    bootstrap = settings.bootstrap_servers or ""
    env = {"ESCALATION_STATE_SNAPSHOT_SECONDS": "0.5"}
    workers = [start_worker(name, env=env) for name in ("w1", "w2")]
    feed = Feed(settings)
    feed.seed_samples(*workers)
    # A human's policy, a fleet-wide freeze of one service, verdicts of an AI system.
    loaded = tmp_path / "policy-v1.9.yaml"
    loaded.write_text(FAST_POLICY.read_text().replace('version: "1.3"', 'version: "1.9"'))
    feed.control("reload_policy", user="alice", policy_yaml=loaded.read_text(), reason="v1.9")
    feed.control("freeze", user="alice", service=FROZEN, reason="incident in progress")
    for w in workers:
        w.wait_metric("escalation_state_updates_applied_total", 1, timeout=90, table="freeze")
        assert wait_until(lambda w=w: _policy_version(w) == "1.9", timeout=90), w.log_tail()
    before = _decide(settings, feed, _proposal(1, FROZEN))
    other = _decide(settings, feed, _proposal(2, "search-api"))
    assert before["policy_version"] == "1.9", before["deciding_rule"]
    assert before["context"]["frozen"] is True
    assert before["level"] == 1
    assert before["context"]["history"]["seen"] > 0
    assert before["context"]["requalified_at"] is not None
    assert before["context"]["ai_false_positive_rate_7d"] is not None
    assert other["context"]["frozen"] is False

    state, folded = settings.topic("state"), settings.topic("state.folded")
    # Every record of `state` lands where the workers expect its key: Kafka's murmur2,
    # which the mirror uses to find a pruned key's owner (Mirror.partition_of).
    from aiokafka.partitioner import murmur2  # noqa: PLC0415

    raw = _read_all(bootstrap, state)
    assert raw
    for partition, _offset, key, _value in raw:
        assert (murmur2(key) & 0x7FFFFFFF) % settings.partitions == partition

    # Time passes: a week of retention in a second, compaction as soon as it may.
    _shorten(
        bootstrap, [settings.topic(name) for name in SHORTENED if settings.topic(name) in topics]
    )
    state_ends = {p: high for p, (_low, high) in _watermarks(bootstrap, state).items()}

    def aged() -> bool:
        # Activity goes on (budgets change), so segments roll and the cleaner works.
        feed.budget("search-api", 0.9)
        marks = _watermarks(bootstrap, state)
        deleted = all(low >= state_ends[p] for p, (low, _high) in marks.items())
        if folded not in topics:
            return deleted  # the layout before state.folded: nothing to compact
        kept = _read_all(bootstrap, folded)
        written = sum(high - low for low, high in _watermarks(bootstrap, folded).values())
        return deleted and len(kept) < written  # the cleaner removed superseded values

    assert wait_until(aged, timeout=120, interval=1.0), _watermarks(bootstrap, state)
    if folded in topics:
        # The owners' markers cover everything `state` held before it was deleted.
        through = _folded_through(bootstrap, folded)
        assert all(through.get(p, 0) >= end for p, end in state_ends.items()), through

    # Every worker dies; new ones start on what the broker kept.
    for w in workers:
        w.kill()
    restarted = [start_worker(f"{w.name}-again", env=env) for w in workers]
    after = _decide(settings, feed, _proposal(3, FROZEN))
    assert after["context"]["frozen"] is True, "the freeze was lifted by retention"
    assert after["level"] == 1
    assert after["policy_version"] == "1.9"
    assert _known(after["context"]) == _known(before["context"])
    # Both new workers hold the policy a human loaded, read back from the state.
    for w in restarted:
        assert wait_until(lambda w=w: _policy_version(w) == "1.9", timeout=60), w.log_tail()


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state-log-c6d95d7.jsonl"


@pytest.mark.slow
def test_a_worker_takes_over_a_state_log_written_before_state_folded(
    settings: Settings, topics: list[str], start_worker: Callable[..., Worker]
) -> None:
    """The recorded `state` of c6d95d7 on the broker; a new worker decides on it, writes
    state.folded, and after retention deleted the old records a restart still does."""
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.kafka.admin import producer_config  # noqa: PLC0415

    bootstrap = settings.bootstrap_servers or ""
    state, folded = settings.topic("state"), settings.topic("state.folded")
    producer = Producer(producer_config(bootstrap))
    for line in FIXTURE.read_bytes().splitlines():
        record = orjson.loads(line)
        producer.produce(state, key=record["key"].encode(), value=orjson.dumps(record["value"]))
    assert producer.flush(30) == 0
    env = {"ESCALATION_STATE_SNAPSHOT_SECONDS": "0.5"}
    worker = start_worker("upgraded", env=env)
    feed = Feed(settings)
    assert wait_until(lambda: _policy_version(worker) == "1.7", timeout=90), worker.log_tail()
    before = _decide(settings, feed, _proposal(11, FROZEN))
    assert before["context"]["frozen"] is True
    assert before["context"]["history"] == {"seen": 43, "successes": 42, "failures": 1}
    assert before["context"]["requalified_at"] is not None
    assert before["context"]["error_budget_remaining"] == 0.9
    ends = {p: high for p, (_low, high) in _watermarks(bootstrap, state).items()}
    assert wait_until(
        lambda: all(_folded_through(bootstrap, folded).get(p, 0) >= e for p, e in ends.items()),
        timeout=60,
    )
    _shorten(bootstrap, [state])
    assert wait_until(
        lambda: all(low >= ends[p] for p, (low, _h) in _watermarks(bootstrap, state).items()),
        timeout=120,
        interval=1.0,
    )
    worker.kill()
    again = start_worker("upgraded-again", env=env)
    after = _decide(settings, feed, _proposal(12, FROZEN))
    assert _known(after["context"]) == _known(before["context"])
    assert _policy_version(again) == "1.7"
