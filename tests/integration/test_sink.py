"""The output producer's delivery barrier and failure path, on the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from streams.errors import DeliveryError
from streams.kafka.admin import CLIENT_LOG, admin_client
from streams.kafka.sink import Sink

DEADLINE = 30.0


def _topic(bootstrap: str, *, partitions: int = 2, config: dict[str, str] | None = None) -> str:
    name = f"t-sink-{uuid.uuid4().hex[:8]}"
    admin = admin_client(bootstrap)  # kept alive until the futures resolve
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})]
    )
    for future in futures.values():
        future.result(timeout=DEADLINE)
    return name


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    group = f"probe-{uuid.uuid4().hex}"
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "logger": CLIENT_LOG})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=DEADLINE)[1]
            for p in range(partitions)
        ]
    finally:
        consumer.close()


def test_delivered_returns_once_every_earlier_record_is_on_the_broker(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    # A long linger: without the barrier, nothing would be sent for a second.
    sink = Sink(kafka_bootstrap, linger_ms=1000)

    async def run() -> int:
        for number in range(500):
            sink.produce(topic, b"x" * 100, key=str(number).encode())
        await asyncio.wait_for(sink.delivered(), timeout=DEADLINE)
        return sink.produced

    assert asyncio.run(run()) == 500
    # Right after the barrier, without any further wait, the broker holds all 500.
    assert sum(_end_offsets(kafka_bootstrap, topic, 2)) == 500
    assert sink.close() == 0


def test_an_explicit_partition_is_kept(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, partitions=3)
    sink = Sink(kafka_bootstrap)

    async def run() -> None:
        for _ in range(7):
            sink.produce(topic, b"audit", key=b"p2", partition=2)
        await asyncio.wait_for(sink.delivered(), timeout=DEADLINE)

    asyncio.run(run())
    assert _end_offsets(kafka_bootstrap, topic, 3) == [0, 0, 7]


def test_a_record_the_client_refuses_raises_at_once_and_blocks_nothing(
    kafka_bootstrap: str,
) -> None:
    topic = _topic(kafka_bootstrap)
    sink = Sink(kafka_bootstrap, **{"message.max.bytes": 10_000})

    async def run() -> None:
        with pytest.raises(KafkaException):
            sink.produce(topic, b"x" * 20_000)
        sink.produce(topic, b"small")
        await asyncio.wait_for(sink.delivered(), timeout=DEADLINE)

    asyncio.run(run())
    assert sum(_end_offsets(kafka_bootstrap, topic, 2)) == 1


def test_a_record_the_broker_refuses_is_fatal(kafka_bootstrap: str) -> None:
    # The broker's limit for this topic is below the record; the client's is not.
    topic = _topic(kafka_bootstrap, config={"max.message.bytes": "2000"})
    sink = Sink(kafka_bootstrap, linger_ms=0)
    fatal: list[DeliveryError] = []
    sink.on_fatal = fatal.append

    async def run() -> None:
        sink.produce(topic, b"x" * 50_000)
        with pytest.raises(DeliveryError, match="not delivered"):
            await asyncio.wait_for(sink.delivered(), timeout=DEADLINE)
        # Nothing may be produced after a lost record: the worker must restart.
        with pytest.raises(DeliveryError):
            sink.produce(topic, b"after")

    asyncio.run(run())
    assert len(fatal) == 1


def test_held_records_reach_the_broker_in_order_after_the_block(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, partitions=1)
    sink = Sink(kafka_bootstrap, linger_ms=0)

    async def run() -> list[int]:
        with sink.held():
            for number in range(50):
                sink.produce(topic, str(number).encode(), partition=0)
            # Held: librdkafka has none of them yet, and the barrier counts them.
            assert sink._producer is not None
            assert len(sink._producer) == 0
        await asyncio.wait_for(sink.delivered(), timeout=DEADLINE)
        return _end_offsets(kafka_bootstrap, topic, 1)

    assert asyncio.run(run()) == [50]
    consumer = Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": uuid.uuid4().hex, "logger": CLIENT_LOG}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        values: list[int] = []
        deadline = time.monotonic() + DEADLINE
        while len(values) < 50:
            assert time.monotonic() < deadline
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                values.append(int(message.value()))
    finally:
        consumer.close()
    assert values == list(range(50))


def test_a_held_record_the_client_would_refuse_raises_at_once(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap)
    sink = Sink(kafka_bootstrap, **{"message.max.bytes": 10_000})

    async def run() -> None:
        with sink.held():
            with pytest.raises(KafkaException, match=r"message\.max\.bytes"):
                sink.produce(topic, b"x" * 9_990, key=b"twenty-bytes-of-key")
            sink.produce(topic, b"small")
        await asyncio.wait_for(sink.delivered(), timeout=DEADLINE)

    asyncio.run(run())
    assert sum(_end_offsets(kafka_bootstrap, topic, 2)) == 1


def test_serve_takes_the_delivery_reports_without_a_barrier(kafka_bootstrap: str) -> None:
    """``serve`` (the lanes' decider, after each hand-over) takes the reports that
    arrived, so the commit's barrier does not find a second's worth at once."""
    topic = _topic(kafka_bootstrap, partitions=1)
    sink = Sink(kafka_bootstrap, linger_ms=0)
    for number in range(20):
        sink.produce(topic, str(number).encode(), partition=0)
    assert len(sink._outstanding) == 20
    # Until the broker has acknowledged them all, the reports wait in librdkafka.
    deadline = time.monotonic() + DEADLINE
    while _end_offsets(kafka_bootstrap, topic, 1) != [20]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert len(sink._outstanding) == 20  # nobody served them
    while sink._outstanding:
        assert time.monotonic() < deadline
        sink.serve()
        time.sleep(0.01)
    assert sink.close() == 0
