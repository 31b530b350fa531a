"""The worker's one output producer: confluent-kafka, with a delivery barrier.

Every record the gate writes (decisions, audit events, lifecycle entries, state
updates, dead letters, pages) goes through one librdkafka producer. librdkafka
batches, compresses and writes to the sockets on its own threads, outside the
GIL; the agents only pay for ``produce()`` (a few microseconds). Measured against
Faust's aiokafka producer, which does all of that in Python on the event loop:
see bench/README.md.

At-least-once needs one more thing: an input may be acknowledged (its offset
committed) only after everything it caused is on the broker. Agents process their
input in batches and, before the batch is acknowledged, ``await sink.delivered()``:
a barrier that resolves once every record produced before the call has been
acknowledged by the broker (``acks=all``). Records are numbered as they are
produced; the oldest one not yet acknowledged is the first key of an
insertion-ordered dict, so the barrier check is O(1) per delivery report.

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
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.kafka.admin import producer_config

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """A record could not be written; nothing produced after it can be trusted."""


class Sink:
    """A confluent-kafka producer shared by every agent of one worker."""

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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self._outstanding: dict[int, None] = {}
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._failure: DeliveryError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_fatal: Callable[[DeliveryError], None] | None = None
        self.produced = 0

    # ------------------------------------------------------------------ life

    def start(self) -> None:
        """Create the producer and its delivery-report thread (on the event loop;
        ``produce`` calls it the first time)."""
        if self._producer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._thread = threading.Thread(target=self._poll, name="sink-delivery", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> int:
        """Flush what is queued (up to ``timeout``) and stop; the number left undelivered."""
        if self._producer is None:
            return 0
        left = self._producer.flush(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        return int(left)

    async def flush(self, seconds: float = 10.0) -> int:
        """Wait (off the event loop) until the queue is empty; the number still queued."""
        if self._producer is None:
            return 0
        loop = asyncio.get_running_loop()
        return int(await loop.run_in_executor(None, self._producer.flush, seconds))

    def _poll(self) -> None:
        producer = self._producer
        assert producer is not None  # noqa: S101 - started before the thread
        while not self._stop.is_set():
            producer.poll(0.05)

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
        producer = self._producer
        if producer is None:  # the first record starts the producer, on the event loop
            self.start()
            producer = self._producer
            assert producer is not None  # noqa: S101
        if self._failure is not None:
            raise self._failure
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._outstanding[seq] = None
        kwargs: dict[str, Any] = {"key": key, "on_delivery": partial(self._delivered, seq)}
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, value, **kwargs)
                break
            except BufferError:  # the local queue is full: let librdkafka drain it
                producer.poll(0.01)
            except BaseException:
                with self._lock:
                    self._outstanding.pop(seq, None)
                    self._wake()
                raise
        self.produced += 1

    async def delivered(self) -> None:
        """Return once every record produced before this call is on the broker."""
        if self._failure is not None:
            raise self._failure
        loop = asyncio.get_running_loop()
        with self._lock:
            if not self._outstanding:
                return
            future: asyncio.Future[None] = loop.create_future()
            self._waiters.append((self._seq, future))
        await future

    # ------------------------------------------------------------------ reports

    def _delivered(self, seq: int, err: KafkaError | None, _msg: Any) -> None:
        """Delivery report (the poll thread, or ``flush``)."""
        with self._lock:
            self._outstanding.pop(seq, None)
            if err is not None and self._failure is None:
                self._failure = DeliveryError(f"record {seq} not delivered: {err}")
                self._fail_all()
                return
            self._wake()

    def _wake(self) -> None:
        """Resolve every barrier older than the oldest record in flight (lock held)."""
        oldest = next(iter(self._outstanding), None)
        while self._waiters and (oldest is None or self._waiters[0][0] < oldest):
            _, future = self._waiters.popleft()
            self._call(future.set_result, None, future)

    def _fail_all(self) -> None:
        failure = self._failure
        assert failure is not None  # noqa: S101
        while self._waiters:
            _, future = self._waiters.popleft()
            self._call(future.set_exception, failure, future)
        if self.on_fatal is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_fatal, failure)

    def _call(self, method: Callable[[Any], None], arg: Any, future: asyncio.Future[None]) -> None:
        """Settle ``future`` on its loop (reports arrive on librdkafka's poll thread)."""
        loop = self._loop
        if loop is None:
            return

        def settle() -> None:
            if not future.done():
                method(arg)

        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:  # not on any loop: the poll thread
            on_loop = False
        if on_loop:
            settle()
        else:
            loop.call_soon_threadsafe(settle)


__all__ = ["DeliveryError", "KafkaException", "Sink"]
