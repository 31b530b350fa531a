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

Delivery reports are served on the event loop (``poll(0)`` after each of the lanes'
hand-overs, ``serve``, and while a barrier waits), not on a thread of their own: no
locks, no hand-over between threads, and no thread competing with the agents for the
GIL.

One producer also keeps the order of each audit chain: records of a partition are
sealed and produced in one order, and the idempotent producer keeps that order on
the broker, retries included. (``confluent_kafka.aio.AIOProducer`` was not used: it
hands batches to a pool of threads, which does not promise that order.)

Records can be held and handed to librdkafka together (``held``): the lanes' decider
holds what one slice of decisions produces (about 5 ms). A ``produce()`` into an
empty partition queue wakes librdkafka's broker thread, and at a decision's pace
(4.3 records over a dozen topic-partitions, one decision every 0.7 ms) nearly every
call did: 56 us of wall clock per call against 8 us for calls in a burst, measured
on this machine's broker (bench/README.md). A held record is checked at once for
what the client would refuse at once (its size against ``message.max.bytes``), so
the caller still dead-letters the input that caused it; anything else refused at
hand-over is fatal, as a lost delivery is.

A delivery that fails for good (librdkafka retries until ``message.timeout.ms``,
unlimited here) is fatal: ``on_fatal`` is called, and the worker exits without
acknowledging the input, which is then processed again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.errors import DeliveryError
from streams.kafka.admin import producer_config

log = logging.getLogger(__name__)

# librdkafka's default ``message.max.bytes``.
MAX_BYTES = 1_000_000

# How often a waiting barrier serves delivery reports. Reports only acknowledge
# inputs (they never delay an output), so this trades commit lag for CPU.
POLL_INTERVAL = 0.002


class Sink:
    """A confluent-kafka producer shared by every agent of one worker (one event loop)."""

    def __init__(self, bootstrap: str, *, linger_ms: float = 2.0, **overrides: Any) -> None:
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
        self._max_bytes = int(self._config.get("message.max.bytes", MAX_BYTES))
        # Records produced inside ``held``: (topic, value, produce() arguments).
        self._held: list[tuple[str, bytes, dict[str, Any]]] | None = None
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
        if self._held is not None:
            size = len(value) + (len(key) if key else 0)
            if size > self._max_bytes:
                raise KafkaException(
                    KafkaError(
                        KafkaError.MSG_SIZE_TOO_LARGE,
                        f"{topic}: a record of {size} bytes, above message.max.bytes "
                        f"{self._max_bytes}",
                    )
                )
            self._held.append((topic, value, kwargs))
        else:
            self._hand_over(producer, topic, value, kwargs)
        self._outstanding[seq] = None
        self.produced += 1

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Records produced inside are handed to librdkafka together on leaving, in
        the order produced (see the module's docstring). Nested: the outermost wins."""
        if self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                producer = self._producer or self._start()  # started by produce()
                try:
                    for topic, value, kwargs in held:
                        self._hand_over(producer, topic, value, kwargs)
                except KafkaException as exc:
                    self._fail(DeliveryError(f"a held record was refused: {exc}"))

    def _hand_over(
        self, producer: Producer, topic: str, value: bytes, kwargs: dict[str, Any]
    ) -> None:
        while True:
            try:
                producer.produce(topic, value, **kwargs)
            except BufferError:  # the local queue is full: let librdkafka drain it
                producer.poll(0.01)
            else:
                return

    def serve(self) -> None:
        """Serve the delivery reports that arrived since the last call (on the event
        loop). The lanes' decider calls it after each hand-over, so reports are taken
        a few dozen at a time: served only by the commit's barrier, a second's worth
        at 2,000 decisions/s (about 9,000 reports, 3 us each) held the loop 25 ms at
        once (bench/README.md)."""
        if self._producer is not None:
            self._producer.poll(0)

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
        if err is not None:
            self._fail(DeliveryError(f"record {seq} not delivered: {err}"))

    def _fail(self, failure: DeliveryError) -> None:
        if self._failure is None:
            self._failure = failure
            if self.on_fatal is not None:
                self.on_fatal(failure)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure


__all__ = ["DeliveryError", "Sink"]
