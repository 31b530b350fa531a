"""Publish to Kafka and learn when the broker has the record (its delivery report).

The HTTP intake answers 202 only after the broker acknowledged the proposal
(``acks=all``, idempotent producer): ``await publisher.send(...)`` resolves when
librdkafka's delivery report arrives, and raises when the record could not be
written within ``timeout``. Delivery reports are served by one polling thread and
handed to the event loop that waits on them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from confluent_kafka import KafkaException, Producer

from streams.errors import EscalationError
from streams.kafka.admin import producer_config


class PublishError(EscalationError, RuntimeError):
    """The broker did not acknowledge a record in time."""


class Publisher:
    """A confluent-kafka producer whose sends are awaitable delivery reports."""

    def __init__(self, bootstrap: str, *, timeout: float = 30.0, **overrides: Any) -> None:
        self._producer = Producer(
            producer_config(
                bootstrap,
                **{"linger.ms": 2, "message.timeout.ms": int(timeout * 1000), **overrides},
            )
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="ingest-delivery", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> tuple[int, int]:
        """Produce one record; ``(partition, offset)`` once the broker acknowledged it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()

        def settle(err: Any, msg: Any) -> None:
            if err is not None:
                outcome: Any = PublishError(f"{topic}: not acknowledged: {err}")
            else:
                outcome = (msg.partition(), msg.offset())
            loop.call_soon_threadsafe(_resolve, done, outcome)

        try:
            self._producer.produce(topic, value=value, key=key, on_delivery=settle)
        except (BufferError, KafkaException) as exc:
            raise PublishError(f"{topic}: cannot produce: {exc}") from None
        return await done

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop polling."""
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout)


def _resolve(done: asyncio.Future[tuple[int, int]], outcome: Any) -> None:
    if done.done():
        return
    if isinstance(outcome, BaseException):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)
