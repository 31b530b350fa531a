"""The secure local broker for integration tests: ``kafka up --secure`` as a module fixture.

``SecureCluster.start(tmp)`` starts a LocalKafka with SASL/SCRAM and the
StandardAuthorizer, provisions every principal and ACL (streams.kafka.acls), and
creates the gate's topics as the gate's principal. ``as_(principal)`` gives the
Settings of one principal (its client properties file).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from streams.kafka import acls
from streams.kafka.admin import CLIENT_LOG, create_topics, producer_config
from streams.kafka.launcher import LocalKafka
from streams.kafka.security import confluent_config
from streams.settings import Settings

AI_SYSTEMS = ("holmesgpt",)


@dataclass
class SecureCluster:
    kafka: LocalKafka
    base: Settings
    files: dict[str, Path]

    @classmethod
    def start(cls, directory: Path) -> SecureCluster:
        kafka = LocalKafka(directory / "kafka", cache_dir=Settings().kafka_cache_dir, secure=True)
        kafka.start()
        prefix = f"s-{uuid.uuid4().hex[:8]}."
        base = Settings(
            KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
            topic_prefix=prefix,
            data_dir=directory / "data",
            store="memory://",
            metrics_port=0,
        )
        files = acls.provision(kafka, base, AI_SYSTEMS)
        cluster = cls(kafka, base, files)
        create_topics(cluster.as_(acls.GATE), timeout=60)
        return cluster

    def fresh(self) -> SecureCluster:
        """The same broker under a new topic prefix: its ACLs added, its topics created
        (the principals and their credentials stay), so test modules do not share topics."""
        prefix = f"s-{uuid.uuid4().hex[:8]}."
        base = self.base.model_copy(update={"topic_prefix": prefix})
        files = acls.provision(self.kafka, base, AI_SYSTEMS)
        cluster = SecureCluster(self.kafka, base, files)
        create_topics(cluster.as_(acls.GATE), timeout=60)
        return cluster

    def stop(self) -> None:
        self.kafka.stop()

    def as_(self, principal: str, **overrides: Any) -> Settings:
        """The settings of ``principal`` (its credentials file), on this cluster."""
        return self.base.model_copy(
            update={"kafka_client_properties": self.files[principal], **overrides}
        )


def produce_as(
    settings: Settings, topic: str, values: list[bytes], *, key: bytes = b"k", timeout: float = 60
) -> list[KafkaError | None]:
    """Produce ``values`` as the settings' principal; each record's delivery error (or None)."""
    assert settings.bootstrap_servers
    producer = Producer(
        producer_config(
            settings.bootstrap_servers,
            **{"linger.ms": 0, "message.timeout.ms": int(timeout * 1000)},
            **confluent_config(settings),
        )
    )
    errors: list[KafkaError | None] = []
    for value in values:
        producer.produce(topic, value, key=key, on_delivery=lambda e, _m: errors.append(e))
    producer.flush(timeout + 5)
    assert len(errors) == len(values), "a delivery report is missing"
    return errors


def read_as(
    settings: Settings,
    topic: str,
    *,
    until: Any = None,
    min_count: int = 1,
    timeout: float = 60,
) -> tuple[list[Any], KafkaError | None]:
    """Read ``topic`` from the beginning as the settings' principal (no group membership).

    Stops at ``min_count`` records, or once ``until(message)`` is true, or at an error
    (returned), or at the deadline.
    """
    assert settings.bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"escalation-audit-verify-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": CLIENT_LOG,
            **confluent_config(settings),
        }
    )
    consumer.assign([TopicPartition(topic, p, -2) for p in range(settings.partitions)])
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                # librdkafka looks up the (unused) group's coordinator even for an
                # assigned consumer: principals without a group see that refused.
                if error.code() in {
                    KafkaError._PARTITION_EOF,
                    KafkaError.GROUP_AUTHORIZATION_FAILED,
                }:
                    continue
                return found, error
            found.append(message)
            if (until is not None and until(message)) or (
                until is None and len(found) >= min_count
            ):
                break
    finally:
        consumer.close()
    return found, None


def topic_error(settings: Settings, topic: str, *, timeout: float = 30) -> KafkaError | None:
    """The broker's answer for ``topic`` in a metadata request as the settings' principal.

    A consumer must see a topic (Describe, implied by Read) to fetch from it; a
    principal without Read is told TOPIC_AUTHORIZATION_FAILED here.
    """
    assert settings.bootstrap_servers
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": "unused",
            "logger": CLIENT_LOG,
            **confluent_config(settings),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    finally:
        consumer.close()
    error = metadata.topics[topic].error
    return error if isinstance(error, KafkaError) else None
