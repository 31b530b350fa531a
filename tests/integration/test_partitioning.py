"""The command line (confluent-kafka) and the workers (aiokafka under Faust) must put
the same key on the same partition, or per-key order is lost."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer

from streams.kafka.admin import producer_config
from streams.settings import Settings

KEYS = ["control", "checkout-api", "history|oom-kill/x|rolling_restart", "d-5e27", "ü-ñ", "a" * 300]


def test_confluent_and_aiokafka_partition_keys_alike(settings: Settings, topics: list[str]) -> None:
    topic = settings.topic("proposals")
    bootstrap = settings.bootstrap_servers or ""
    confluent: dict[str, int] = {}
    producer = Producer(producer_config(bootstrap))

    def remember(key: str):
        def delivered(err, msg) -> None:
            assert err is None
            confluent[key] = msg.partition()

        return delivered

    for key in KEYS:
        producer.produce(topic, value=b"{}", key=key.encode(), on_delivery=remember(key))
    assert producer.flush(30) == 0

    async def with_aiokafka() -> dict[str, int]:
        aio = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await aio.start()
        try:
            return {
                key: (await aio.send_and_wait(topic, b"{}", key=key.encode())).partition
                for key in KEYS
            }
        finally:
            await aio.stop()

    assert asyncio.run(with_aiokafka()) == confluent
    assert len(set(confluent.values())) > 1  # the keys do spread: the test can fail
