"""A read model of the state tables on every worker.

Each state table is an ordinary Faust ``Table`` (changelogged, RocksDB), written by
exactly one agent per key: state updates are repartitioned through the internal
``state`` topic by their table key, so there are no concurrent writers. But a
proposal on partition 3 needs history that was written on partition 1, so every
worker also tails every partition of those tables' changelog topics with its own
group-less consumer and keeps the latest value per key. That is what Faust's
``GlobalTable`` promises; we do not use it because of its open multi-worker bugs
(faust-streaming issue 283, robinhood/faust 475/541/716: standby partitions not
applied, infinite recovery loops).

Until the mirror has caught up with the high watermarks it saw at start, the
proposal agent waits: deciding on partial state would be nondeterministic (and,
with state missing, only ever more conservative).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

Listener = Callable[[str, str, Any], None]


class Mirror:
    """The latest value of every key of a set of changelog topics, in memory."""

    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        # topics: table name -> changelog topic name
        self.bootstrap = bootstrap
        self.topics = topics
        self.by_topic = {topic: name for name, topic in topics.items()}
        self.data: dict[str, dict[str, Any]] = {name: {} for name in topics}
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self.on_applied: Callable[[str], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def get(self, table: str, key: str) -> Any:
        """The latest value, or ``None``."""
        return self.data[table].get(key)

    def values(self, table: str) -> list[Any]:
        """Every value of a table (for fleet-wide sums)."""
        return list(self.data[table].values())

    def put(self, table: str, key: str, value: Any) -> None:
        """Apply a local write at once (read-your-writes); the changelog repeats it later."""
        self._apply(table, key, value)

    def _apply(self, table: str, key: str, value: Any) -> None:
        if value is None:
            self.data[table].pop(key, None)
        else:
            self.data[table][key] = value
        for listener in self.listeners:
            listener(table, key, value)

    async def start(self) -> None:
        """Start tailing; returns at once (``ready`` is set once caught up)."""
        self._task = asyncio.create_task(self._supervise(), name="state-mirror")

    async def stop(self) -> None:
        """Stop tailing and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # The changelog topics are created by the worker at start; wait for them.
        while True:
            cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
            missing = [t for t in self.topics.values() if not cluster.partitions_for_topic(t)]
            if not missing:
                return [
                    TopicPartition(topic, p)
                    for topic in self.topics.values()
                    for p in sorted(cluster.partitions_for_topic(topic) or ())
                ]
            log.info("state mirror waiting for topics %s", missing)
            await asyncio.sleep(0.5)

    async def _supervise(self) -> None:
        # The mirror must outlive broker restarts: on any error, log and start over
        # from the beginning of the changelogs (values are idempotent: latest wins).
        delay = 0.5
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state mirror failed; restarting in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        self._consumer = consumer
        await consumer.start()
        try:
            tps = await self._partitions(consumer)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp, end in ends.items() if end > 0}
            if not pending:
                self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=2000)
                for tp, records in batches.items():
                    table = self.by_topic[tp.topic]
                    for record in records:
                        self._apply_record(table, record.key, record.value)
                        if self.on_applied is not None:
                            self.on_applied(table)
                if pending:
                    for tp in list(pending):
                        if await consumer.position(tp) >= ends[tp]:
                            pending.discard(tp)
                    if not pending:
                        log.info("state mirror caught up")
                        self.ready.set()
        finally:
            await consumer.stop()

    def _apply_record(self, table: str, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        try:
            name = str(orjson.loads(key))
            decoded = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            log.warning(
                "state mirror: unreadable value for %s[%s]; treating as absent", table, name
            )
            decoded = None
        self._apply(table, name, decoded)
