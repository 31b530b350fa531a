"""The gate's state on every worker: a fold of the ``state`` log.

State updates (outcomes, verdicts, budgets, re-qualifications, freezes, autonomous
executions, policy loads) are produced to the ``state`` topic keyed by their table
key. Every worker reads every partition of that topic from the beginning with its
own group-less consumer and folds each update into its tables with the pure
reducers of ``streams.state``. Every worker therefore holds the same state, and a
proposal on partition 3 sees history that arrived on partition 1.

Why not Faust tables and ``GlobalTable``: a table's changelog is written by the
worker that owns the source partition, and across rebalances we measured both lost
and repeated changelog writes (the same 55 history updates gave 54 or 63
changelog records with two workers joining); ``GlobalTable`` has open multi-worker
bugs (faust-streaming issue 283; robinhood/faust 475, 541, 716). A log that every
worker folds has no owner to lose, and the reducers drop redelivered updates by id.

Until the fold has caught up with the end offsets it saw at start, the proposal
agent waits: deciding on partial state would be nondeterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.state import TABLES, apply_update

log = logging.getLogger(__name__)

Listener = Callable[[str, str, Any], None]


class Mirror:
    """Tables (name -> key -> value) folded from the ``state`` topic."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.data: dict[str, dict[str, Any]] = {name: {} for name in TABLES}
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self.on_applied: Callable[[str], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def get(self, table: str, key: str) -> Any:
        """The current value, or ``None``."""
        return self.data[table].get(key)

    def values(self, table: str) -> list[Any]:
        """Every value of a table (for fleet-wide sums)."""
        return list(self.data[table].values())

    def apply(self, update: dict[str, Any]) -> bool:
        """Fold one update; True if it changed state (False: unknown, invalid or repeated).

        The worker also calls this for its own writes before they come back from the
        log (read-your-writes); the repeat is then dropped by the update's id.
        """
        table, key = update.get("table"), update.get("key")
        if table not in self.data or not isinstance(key, str):
            return False
        new = apply_update(self.data[table].get(key), update)
        if new is None:
            return False
        self.data[table][key] = new
        if self.on_applied is not None:
            self.on_applied(table)
        for listener in self.listeners:
            listener(table, key, new)
        return True

    async def start(self) -> None:
        """Start folding; returns at once (``ready`` is set once caught up)."""
        self._task = asyncio.create_task(self._supervise(), name="state-mirror")

    async def stop(self) -> None:
        """Stop folding and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _supervise(self) -> None:
        # Outlive broker restarts: on an error, log and resume from where the fold is.
        delay = 0.5
        positions: dict[TopicPartition, int] = {}
        while True:
            try:
                await self._run(positions)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state fold failed; resuming in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while True:
            cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
            partitions = cluster.partitions_for_topic(self.topic)
            if partitions:
                return [TopicPartition(self.topic, p) for p in sorted(partitions)]
            log.info("state fold waiting for topic %s", self.topic)
            await asyncio.sleep(0.5)

    async def _run(self, positions: dict[TopicPartition, int]) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        await consumer.start()
        try:
            tps = await self._partitions(consumer)
            consumer.assign(tps)
            for tp in tps:
                if tp in positions:
                    consumer.seek(tp, positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > positions.get(tp, 0)}
            if not pending:
                self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=5000)
                for tp, records in batches.items():
                    for record in records:
                        self._apply_record(record.value)
                        positions[tp] = record.offset + 1
                if pending:
                    pending = {tp for tp in pending if positions.get(tp, 0) < ends[tp]}
                    if not pending:
                        log.info("state fold caught up")
                        self.ready.set()
        finally:
            await consumer.stop()

    def _apply_record(self, value: bytes | None) -> None:
        try:
            update = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            log.warning("state fold: unreadable update skipped")
            return
        if isinstance(update, dict):
            self.apply(update)
