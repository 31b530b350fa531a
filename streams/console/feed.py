"""The console's own consumer: ``state.folded``, then ``audit`` and ``state``, into the view.

A group-less consumer (partitions assigned, no offsets committed): each console
start folds the log again, as the worker's state mirror does. It runs in a thread;
the view is guarded by one lock, held for a batch of records at a time.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from streams.console.view import ConsoleView
    from streams.settings import Settings

log = logging.getLogger(__name__)
BATCH = 500


class Feed:
    """Reads the topics in a thread and folds them into ``view`` under ``lock``."""

    def __init__(
        self, settings: Settings, bootstrap: str, view: ConsoleView, lock: threading.Lock
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.view = view
        self.lock = lock
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-feed", daemon=True)
        self.error: str | None = None
        # table|key -> the ``state`` offset its value from state.folded covers.
        self._covered: dict[str, int] = {}

    def start(self) -> Feed:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._consume()
        except Exception as exc:  # reported on the pages, logged; the console stays up
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("console feed stopped")

    def _consume(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: PLC0415

        from streams.kafka.security import confluent_config  # noqa: PLC0415

        audit, state = self.settings.topic("audit"), self.settings.topic("state")
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"escalation-console-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log_level": 3,
                **confluent_config(self.settings),
            }
        )
        try:
            # The state the gate keeps forever is in state.folded (the latest value of
            # each key, and per partition the offset of ``state`` it covers): read it
            # first, then ``state`` from there, as the worker's mirror does.
            starts = self._folded(consumer)
            partitions = self._partitions(consumer, (audit, state))
            consumer.assign(
                [
                    TopicPartition(
                        t, p, starts.get(p, OFFSET_BEGINNING) if t == state else OFFSET_BEGINNING
                    )
                    for t, p in partitions
                ]
            )
            ends = {}
            for topic, partition in partitions:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                ends[(topic, partition)] = high
            positions: dict[tuple[str, int], int] = {
                (t, p): starts.get(p, 0) if t == state else 0 for t, p in partitions
            }
            while not self._stop.is_set():
                messages = consumer.consume(num_messages=BATCH, timeout=0.2)
                good = [m for m in messages if m.error() is None and m.value()]
                if good:
                    self._apply(good, audit)
                    for m in good:
                        positions[(str(m.topic()), int(m.partition() or 0))] = (
                            int(m.offset() or 0) + 1
                        )
                if not self.ready.is_set() and all(
                    positions[tp] >= end for tp, end in ends.items()
                ):
                    # What the catch-up folded lives long: move it out of the collector's
                    # way, so that a full collection (hundreds of ms over 20,000
                    # decisions) does not stall a page (bench/console.py --freeze-gc).
                    gc.collect()
                    gc.freeze()
                    self.ready.set()
        finally:
            consumer.close()

    def _folded(self, consumer: Any) -> dict[int, int]:
        """Fold ``state.folded`` to its end into the view; per ``state`` partition, the
        offset its marker says the values cover."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition  # noqa: PLC0415

        from streams.topology.snapshot import read_record  # noqa: PLC0415

        topic = self.settings.topic("state.folded")
        partitions = self._partitions(consumer, (topic,))
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for _t, p in partitions
        }
        left = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in left])
        through: dict[int, int] = {}
        while left and not self._stop.is_set():
            for m in consumer.consume(num_messages=BATCH, timeout=0.2):
                if m.error() is not None:
                    continue
                partition, offset = int(m.partition() or 0), int(m.offset() or 0)
                folded = read_record(m.key(), m.value())
                with self.lock:
                    if folded.kind == "marker":
                        through[partition] = folded.through
                    elif folded.kind == "value":
                        self.view.set_value(folded.table, folded.key, folded.value)
                        # Updates of this key below this offset are in the value already.
                        self._covered[f"{folded.table}|{folded.key}"] = folded.through
                    elif folded.kind == "tombstone":
                        self.view.set_value(folded.table, folded.key, None)
                if offset + 1 >= ends[partition]:
                    left.discard(partition)
        consumer.unassign()
        return through

    def _partitions(self, consumer: Any, topics: tuple[str, ...]) -> list[tuple[str, int]]:
        """Every partition of ``topics``, waiting (until stopped) for them to exist."""
        while not self._stop.is_set():
            metadata = consumer.list_topics(timeout=10)
            found = [
                (topic, partition)
                for topic in topics
                if topic in metadata.topics and metadata.topics[topic].error is None
                for partition in metadata.topics[topic].partitions
            ]
            if {t for t, _ in found} == set(topics):
                return found
            time.sleep(1.0)  # the topics are created by `escalation topics create`
        return []

    def _apply(self, messages: list[Any], audit: str) -> None:
        decoded = []
        for m in messages:
            try:
                value = orjson.loads(m.value())
            except orjson.JSONDecodeError:
                value = None
            is_audit = m.topic() == audit
            if not is_audit and isinstance(value, dict) and self._covered:
                covered = self._covered.get(f"{value.get('table')}|{value.get('key')}", -1)
                if int(m.offset() or 0) < covered:
                    continue  # folded into the value read from state.folded
            decoded.append((is_audit, value))
        with self.lock:
            for is_audit, value in decoded:
                if is_audit:
                    self.view.apply_audit(value)
                else:
                    self.view.apply_state(value)
