"""The gate's topics with their configurations, and the admin calls the CLI and tests use.

``create_topics`` is idempotent: a topic that already exists is left as it is (its
partitions and configs are not altered, so an operator's deliberate change survives a
second ``escalation topics create``), with one exception: input topics created before
are switched to ``message.timestamp.type=LogAppendTime`` (the gate's clock).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # re-exported, but not in __all__
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from streams.errors import KafkaLauncherError
from streams.kafka.security import confluent_config

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from streams.settings import Settings

log = logging.getLogger(__name__)

# librdkafka logs through this logger instead of writing to stderr.
CLIENT_LOG = logging.getLogger("streams.kafka.librdkafka")

DAY_MS = 24 * 60 * 60 * 1000
DLQ_RETENTION_MS = 30 * DAY_MS
LIFECYCLE_RETENTION_MS = 7 * DAY_MS
STATE_UPDATES_RETENTION_MS = 7 * DAY_MS
ADMIN_TIMEOUT_S = 30.0
TIMESTAMP_TYPE = "message.timestamp.type"


@dataclass(frozen=True)
class TopicSpec:
    """One of the gate's topics, by logical name (the full name adds the prefix)."""

    name: str
    direction: Literal["in", "out", "internal"]
    purpose: str
    # None: settings.partitions.
    partitions: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)

    def full_name(self, settings: Settings) -> str:
        return settings.topic(self.name)

    def partition_count(self, settings: Settings) -> int:
        return settings.partitions if self.partitions is None else self.partitions

    def topic_config(self, settings: Settings) -> dict[str, str]:
        resolved = dict(self.config)
        if self.direction == "in":
            # The broker stamps every input record: the instant the gate judges a
            # proposal, answer or command at is never the producer's (streams/handlers).
            resolved[TIMESTAMP_TYPE] = "LogAppendTime"
        if self.name == "audit":
            # Two in-sync copies of every audit event when the cluster has them; a
            # single-node cluster (the local broker) can only promise one.
            resolved["min.insync.replicas"] = str(min(2, settings.replication_factor))
        return resolved


FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("proposals", "in", "remediations proposed by AI systems"),
    TopicSpec("approvals", "in", "approve / reject / abort responses of humans"),
    TopicSpec("outcomes", "in", "execution and verification results of executors"),
    TopicSpec("error-budgets", "in", "per-service SLO / error budget state"),
    # Operator commands (freeze, unfreeze, requalify, policy reload) are a total order:
    # producers key them all "control", so they share one partition. The topic still
    # has the common partition count so the worker's tables stay co-partitioned with
    # it. Kept forever: a freeze must not age out of the topic while it is in force.
    TopicSpec("control", "in", "operator commands", config=FOREVER),
    TopicSpec("decisions.execute", "out", "levels 3 and 4: executors act"),
    TopicSpec("decisions.approve", "out", "level 2: a human must approve first"),
    TopicSpec("decisions.assist", "out", "level 1: context for a human, no action"),
    TopicSpec("decisions.manual", "out", "level 0: humans work from raw telemetry"),
    TopicSpec("oncall", "out", "escalations to the on-call human"),
    # Internal: state updates keyed by table key, folded by every worker. They are
    # needed only until the partition's owner has written their fold to state.folded
    # (every few seconds), so a week is a wide margin, not a lifetime: nothing the gate
    # knows lives only here (streams/topology/snapshot.py).
    TopicSpec(
        "state",
        "internal",
        "state updates keyed by table key",
        config={"cleanup.policy": "delete", "retention.ms": str(STATE_UPDATES_RETENTION_MS)},
    ),
    # The latest folded value of every table key (and a marker per partition), written
    # by the owner of its state partition into the same partition number: compacted,
    # never deleted by age, so a freeze or a re-qualification lasts as long as it holds.
    # A worker starts from it instead of from the beginning of state.
    TopicSpec(
        "state.folded",
        "internal",
        "latest folded state value per table key",
        config={"cleanup.policy": "compact", **FOREVER},
    ),
    # The log of pending approvals and abort windows (streams/topology/pending.py): the
    # latest entry of each decision survives compaction; a week after its last change
    # an entry is gone, and a late answer to it is refused as unknown.
    TopicSpec(
        "lifecycle",
        "internal",
        "pending approvals and abort windows by decision id",
        config={"cleanup.policy": "compact,delete", "retention.ms": str(LIFECYCLE_RETENTION_MS)},
    ),
    # Append-only and unlimited: the immutable audit trail Splunk ingests.
    TopicSpec(
        "audit", "out", "hash-chained audit events", config={"cleanup.policy": "delete", **FOREVER}
    ),
    TopicSpec(
        "dlq",
        "out",
        "rejected input with the reason and the original bytes",
        config={"cleanup.policy": "delete", "retention.ms": str(DLQ_RETENTION_MS)},
    ),
)


def topic_spec(name: str) -> TopicSpec:
    """The spec of a logical topic name such as ``audit``."""
    for spec in TOPICS:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in TOPICS)
    raise KeyError(f"unknown topic {name!r}; known: {known}")


def producer_config(bootstrap: str, **overrides: Any) -> dict[str, Any]:
    """confluent-kafka producer settings that partition keys as the Faust workers do.

    librdkafka's default partitioner hashes keys with CRC32; Java clients and aiokafka
    (under Faust) use murmur2. Without this, the same key (a service, ``control``, a
    state key) could land on different partitions depending on who produced it, and
    per-key order would be lost.
    """
    return {
        "bootstrap.servers": bootstrap,
        "partitioner": "murmur2_random",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "logger": CLIENT_LOG,
        **overrides,
    }


def admin_client(bootstrap: str, **overrides: Any) -> AdminClient:
    """An AdminClient that reconnects quickly and logs through ``logging``, not stderr."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "log.connection.close": False,
        "logger": CLIENT_LOG,
    }
    config.update(overrides)
    return AdminClient(config)


def wait_for_broker(bootstrap: str, timeout: float = 30.0, **overrides: Any) -> int:
    """Wait until the cluster answers a metadata request; return its number of brokers.

    ``overrides``: client settings, e.g. ``**confluent_config(settings)`` (security).
    """
    deadline = time.monotonic() + timeout
    admin = admin_client(bootstrap, **overrides)
    last_error = "no answer"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaLauncherError(
                f"Kafka at {bootstrap} did not answer within {timeout:g}s: {last_error}"
            )
        try:
            metadata = admin.list_topics(timeout=min(2.0, remaining))
        except KafkaException as exc:
            # list_topics itself waits up to its timeout: this loop polls, no sleep.
            last_error = str(exc.args[0]) if exc.args else repr(exc)
            continue
        if metadata.brokers:
            return len(metadata.brokers)


def create_topics(
    settings: Settings, bootstrap: str | None = None, *, timeout: float = ADMIN_TIMEOUT_S
) -> list[str]:
    """Create every topic of ``TOPICS`` that is missing; return all full names, in order.

    ``bootstrap`` defaults to ``settings.bootstrap_servers``. A topic that already
    exists is fine; any other failure raises ``KafkaLauncherError`` naming the topic.
    """
    servers = bootstrap or settings.bootstrap_servers
    if not servers:
        msg = "bootstrap_servers: no Kafka cluster given (set KAFKA_BOOTSTRAP_SERVERS)"
        raise KafkaLauncherError(msg)
    new_topics = [
        NewTopic(
            spec.full_name(settings),
            num_partitions=spec.partition_count(settings),
            replication_factor=settings.replication_factor,
            config=spec.topic_config(settings),
        )
        for spec in TOPICS
    ]
    admin = admin_client(servers, **confluent_config(settings))
    futures = admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout)
    created: list[str] = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            reason = error.str() if isinstance(error, KafkaError) else repr(exc)
            raise KafkaLauncherError(f"topic {name}: could not be created: {reason}") from exc
        created.append(name)
    if created:
        log.info("created topics %s", ", ".join(created))
    enforce_gate_clock(settings, servers, skip=created)
    return [topic.topic for topic in new_topics]


def input_topics(settings: Settings) -> list[str]:
    """The full names of the topics the gate reads from producers other than itself."""
    return [spec.full_name(settings) for spec in TOPICS if spec.direction == "in"]


def _timestamp_type(settings: Settings, bootstrap: str, topic: str, *, want: str | None) -> str:
    """The topic's timestamp type; waits (30 s) out a topic the broker does not know yet
    and, with ``want``, a config change it has not applied yet (both are eventual)."""
    deadline = time.monotonic() + 30.0
    while True:
        try:
            value = describe_topic_config(bootstrap, topic, settings=settings).get(
                TIMESTAMP_TYPE, ""
            )
        except KafkaLauncherError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        if want is None or value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def enforce_gate_clock(
    settings: Settings, bootstrap: str, *, skip: Iterable[str] = ()
) -> list[str]:
    """Switch input topics created before (CreateTime) to LogAppendTime; those changed.

    ``skip``: topics just created (with the right config already).
    """
    from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry  # noqa: PLC0415

    admin = admin_client(bootstrap, **confluent_config(settings))
    changed = []
    for topic in input_topics(settings):
        if topic in set(skip):
            continue
        if _timestamp_type(settings, bootstrap, topic, want=None) == "LogAppendTime":
            continue
        entry = ConfigEntry(
            TIMESTAMP_TYPE, "LogAppendTime", incremental_operation=AlterConfigOpType.SET
        )
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
        try:
            admin.incremental_alter_configs([resource])[resource].result(timeout=ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaLauncherError(
                f"topic {topic}: could not set {TIMESTAMP_TYPE}=LogAppendTime: {exc}"
            ) from exc
        _timestamp_type(settings, bootstrap, topic, want="LogAppendTime")
        log.warning("topic %s switched to %s=LogAppendTime", topic, TIMESTAMP_TYPE)
        changed.append(topic)
    return changed


def check_gate_clock(settings: Settings, bootstrap: str) -> None:
    """Refuse to run when an input topic lets producers set record timestamps."""
    wrong = [
        topic
        for topic in input_topics(settings)
        if _timestamp_type(settings, bootstrap, topic, want="LogAppendTime") != "LogAppendTime"
    ]
    if wrong:
        msg = (
            f"{', '.join(wrong)}: {TIMESTAMP_TYPE} is not LogAppendTime, so producers would "
            "set the instant the gate judges their records at; run `escalation topics create`"
        )
        raise KafkaLauncherError(msg)


def describe_topic_config(
    bootstrap: str,
    topic: str,
    *,
    timeout: float = ADMIN_TIMEOUT_S,
    settings: Settings | None = None,
) -> dict[str, str]:
    """Every config of ``topic`` (explicit and default) as the broker reports it."""
    admin = admin_client(bootstrap, **(confluent_config(settings) if settings else {}))
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(
            timeout=timeout
        )
    except KafkaException as exc:
        raise KafkaLauncherError(f"topic {topic}: could not describe configs: {exc}") from exc
    return {name: entry.value for name, entry in entries.items() if entry.value is not None}


def partition_counts(
    bootstrap: str,
    topics: Iterable[str],
    *,
    timeout: float = ADMIN_TIMEOUT_S,
    settings: Settings | None = None,
) -> dict[str, int]:
    """Partitions of each existing topic among ``topics`` (missing topics are left out)."""
    config = confluent_config(settings) if settings else {}
    metadata = admin_client(bootstrap, **config).list_topics(timeout=timeout)
    return {
        name: len(metadata.topics[name].partitions)
        for name in topics
        if name in metadata.topics and metadata.topics[name].error is None
    }
