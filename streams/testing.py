"""Helpers for tests against a real broker: produce, consume from the beginning, wait.

Every wait here polls a condition until a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.cimpl import TopicPartition

from streams.kafka.admin import CLIENT_LOG, admin_client, producer_config
from streams.kafka.sink import Sink

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from confluent_kafka import Message

Value = bytes | str | Mapping[str, Any] | Sequence[Any]
_POLL_S = 0.2


def encode(value: Value | None) -> bytes | None:
    """bytes as they are, str as UTF-8, anything else as JSON (orjson)."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[Value],
    key: bytes | str | None = None,
    *,
    headers: Mapping[str, bytes | str] | None = None,
    timeout: float = 30.0,
) -> int:
    """Send ``values`` (in order, all with ``key``) and flush; return how many were sent.

    Raises ``KafkaException`` if any message is not acknowledged within ``timeout``.
    """
    producer = Producer(
        producer_config(bootstrap, **{"linger.ms": 0, "log.connection.close": False})
    )
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error)

    count = 0
    for value in values:
        producer.produce(
            topic,
            value=encode(value),
            key=encode(key),
            headers=dict(headers) if headers else None,
            on_delivery=on_delivery,
        )
        count += 1
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining:
        raise KafkaException(
            KafkaError(KafkaError._MSG_TIMED_OUT, f"{remaining} message(s) to {topic} not sent")  # noqa: SLF001
        )
    if failures:
        raise KafkaException(failures[0])
    return count


def wait_for_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> int:
    """Wait until ``topic`` exists with leaders; return its partition count (0 on timeout)."""
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return 0
        try:
            metadata = admin.list_topics(topic, timeout=min(2.0, remaining))
        except KafkaException:
            continue  # list_topics waited up to its timeout: this loop polls
        found = metadata.topics.get(topic)
        if (
            found is not None
            and found.error is None
            and found.partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        ):
            return len(found.partitions)
        _pause(min(_POLL_S, remaining))


def consume_all(
    bootstrap: str,
    topic: str,
    *,
    min_count: int,
    timeout: float = 30.0,
    where: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """Messages of ``topic`` from the beginning, until ``min_count`` arrived or ``timeout``.

    Returns what arrived (possibly fewer than ``min_count``: the test asserts). Reads
    every partition (no consumer group, nothing committed), so it can be called many
    times on the same topic; waits for the topic to be created if it does not exist
    yet. ``where`` keeps only the messages it accepts. Order is per partition.
    """
    deadline = time.monotonic() + timeout
    partitions = wait_for_topic(bootstrap, topic, timeout=timeout)
    if partitions == 0:
        return []
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"streams-testing-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "logger": CLIENT_LOG,
            "log.connection.close": False,
        }
    )
    received: list[Message] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        while len(received) < min_count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for message in consumer.consume(
                num_messages=max(1, min_count - len(received)), timeout=min(0.5, remaining)
            ):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    continue
                if where is None or where(message):
                    received.append(message)
    finally:
        consumer.close()
    return received


def json_values(messages: Iterable[Message]) -> list[Any]:
    """The JSON-decoded values of ``messages`` (tombstones skipped)."""
    return [orjson.loads(value) for m in messages if (value := m.value()) is not None]


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 30.0, interval: float = 0.05
) -> bool:
    """Poll ``condition`` every ``interval`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        _pause(min(interval, remaining))


def _pause(seconds: float) -> None:
    # The interval between two checks of a condition that has a deadline.
    threading.Event().wait(seconds)


__all__ = [
    "consume_all",
    "encode",
    "json_values",
    "produce",
    "wait_for_topic",
    "wait_until",
]


class OfflineSink(Sink):
    """The worker's ``Sink`` on no broker, keeping what it hands over to librdkafka.

    Nothing listens at ``127.0.0.1:1``: the records stay queued in librdkafka (quietly,
    ``log_level=0``). ``records`` is every record handed over, as (topic, value), in
    order, unless ``keep`` is false (a benchmark's timed passes).
    """

    def __init__(self, *, keep: bool = True) -> None:
        super().__init__("127.0.0.1:1", log_level=0)
        self.keep = keep
        self.records: list[tuple[str, bytes]] = []

    def _hand_over(self, producer: Any, topic: str, value: bytes, kwargs: dict[str, Any]) -> None:
        if self.keep:
            self.records.append((topic, value))
        super()._hand_over(producer, topic, value, kwargs)
