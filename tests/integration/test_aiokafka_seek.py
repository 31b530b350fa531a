"""The aiokafka behaviour the gate's transport works around (streams/topology/transport.py),
pinned on the real broker: ``seek_to_committed`` does not move a partition the group
has never committed on, so records fetched and then dropped stay skipped, while a
seek to the beginning fetches them again. If aiokafka changes this, this test says
so, and the workaround can go."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from streams.kafka.admin import producer_config
from streams.settings import Settings

DEADLINE = 30.0


async def _positions(bootstrap: str, topic: str) -> tuple[int, object, int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"seek-probe-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        fetched: list[object] = []
        async with asyncio.timeout(DEADLINE):
            while not fetched:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                fetched.extend(batch.get(tp, []))
        after_fetch = await consumer.position(tp)
        committed = (await consumer.seek_to_committed())[tp]
        after_seek = await consumer.position(tp)
        await consumer.seek_to_beginning(tp)
        return after_fetch, committed, after_seek, await consumer.position(tp)
    finally:
        await consumer.stop()


def test_seek_to_committed_leaves_a_never_committed_partition_where_it_is(
    settings: Settings, topics: list[str]
) -> None:
    topic = settings.topic("error-budgets")
    assert topic in topics
    bootstrap = settings.bootstrap_servers or ""
    producer = Producer(producer_config(bootstrap))
    producer.produce(topic, b"{}", key=b"k", partition=0)
    assert producer.flush(DEADLINE) == 0

    after_fetch, committed, after_seek, after_beginning = asyncio.run(_positions(bootstrap, topic))

    assert (after_fetch, committed) == (1, None)
    assert after_seek == 1, "aiokafka now seeks uncommitted partitions: the workaround can go"
    assert after_beginning == 0
