"""The worker's one output producer: confluent-kafka, with a delivery barrier.

Every record the gate writes (decisions, audit events, lifecycle entries, state
updates, dead letters, pages) goes through one librdkafka producer. librdkafka
batches and writes to the sockets on its own threads, outside the GIL; the agents
only pay for ``produce()`` (a few microseconds). Faust's aiokafka producer does all
of that in Python on the event loop: see bench/README.md for the measurements.

At-least-once needs one more thing: an input may be acknowledged (its offset
committed) only after everything it caused is on the broker. Agents acknowledge
their input behind ``await sink.delivered()``: a barrier that returns once every
record produced before the call has been acknowledged by the broker (``acks=all``).
Records are numbered as they are produced; the oldest one not yet acknowledged is
the first key of an insertion-ordered dict, so the check is O(1).

Delivery reports are served on the event loop (``poll(0)`` while a barrier waits),
not on a thread of their own: no locks, no hand-over between threads, and no
thread competing with the agents for the GIL.

One producer also keeps the order of each audit chain: records of a partition are
sealed and produced in one order, and the idempotent producer keeps that order on
the broker, retries included. (``confluent_kafka.aio.AIOProducer`` was not used: it
hands batches to a pool of threads, which does not promise that order.)

A delivery that fails for good (librdkafka retries until ``message.timeout.ms``,
unlimited here) is fatal: ``on_fatal`` is called, and the worker exits without
acknowledging the input, which is then processed again after the restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams.errors import DeliveryError
from streams.kafka.admin import producer_config

log = logging.getLogger(__name__)

# How often a waiting barrier serves delivery reports. Reports only acknowledge
# inputs (they never delay an output), so this trades commit lag for CPU.
POLL_INTERVAL = 0.002


class Sink:
    """A confluent-kafka producer shared by every agent of one worker (one event loop)."""

    def __init__(self, bootstrap: str, *, linger_ms: float = 10.0, **overrides: Any) -> None:
        self._config = producer_config(
            bootstrap,
            **{
                "linger.ms": linger_ms,
                # Never give up on a record: a broker that is away for a while delays
                # the gate, it does not lose its output. Inputs wait unacknowledged.
                "message.timeout.ms": 0,
                "queue.buffering.max.messages": 1_000_000,
                **overrides,
            },
        )
        self._producer: Producer | None = None
        self._seq = 0
        self._outstanding: dict[int, None] = {}
        self._failure: DeliveryError | None = None
        self.on_fatal: Callable[[DeliveryError], None] | None = None
        self.produced = 0

    # ------------------------------------------------------------------ life

    def _start(self) -> Producer:
        self._producer = Producer(self._config)
        return self._producer

    def close(self, timeout: float = 10.0) -> int:
        """Flush what is queued (up to ``timeout``); the number left undelivered."""
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout))

    async def flush(self, seconds: float = 10.0) -> int:
        """Wait until nothing is in flight, up to ``seconds``; the number still in flight."""
        producer = self._producer
        if producer is None:
            return 0
        deadline = time.monotonic() + seconds
        while True:
            producer.poll(0)
            self._raise_if_failed()
            if not self._outstanding or time.monotonic() >= deadline:
                return len(self._outstanding)
            await asyncio.sleep(POLL_INTERVAL)

    # ------------------------------------------------------------------ writing

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> None:
        """Queue one record. Raises ``KafkaException`` at once for a record the client
        refuses (too large, say): the caller dead-letters the input that caused it."""
        producer = self._producer or self._start()
        self._raise_if_failed()
        self._seq += 1
        seq = self._seq
        kwargs: dict[str, Any] = {"key": key, "on_delivery": partial(self._delivered, seq)}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, value, **kwargs)
                break
            except BufferError:  # the local queue is full: let librdkafka drain it
                producer.poll(0.01)
        self._outstanding[seq] = None
        self.produced += 1

    async def delivered(self) -> None:
        """Return once every record produced before this call is on the broker."""
        producer = self._producer
        if producer is None:
            return
        target = self._seq
        while True:
            producer.poll(0)
            self._raise_if_failed()
            oldest = next(iter(self._outstanding), None)
            if oldest is None or oldest > target:
                return
            await asyncio.sleep(POLL_INTERVAL)

    # ------------------------------------------------------------------ reports

    def _delivered(self, seq: int, err: KafkaError | None, _msg: Any) -> None:
        """Delivery report, served by ``poll`` on the event loop."""
        self._outstanding.pop(seq, None)
        if err is not None and self._failure is None:
            self._failure = DeliveryError(f"record {seq} not delivered: {err}")
            if self.on_fatal is not None:
                self.on_fatal(self._failure)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure


__all__ = ["DeliveryError", "Sink"]
