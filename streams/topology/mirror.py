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
worker folds has no owner to lose, and the reducers drop redelivered updates by id
(per key, a watermark per input partition: streams/state/reducers.py).

A worker does not fold ``state`` from its beginning: it first reads the compacted
``state.folded`` (the latest value of every live key, written by each partition's
owner: ``streams/topology/snapshot.py``), then folds ``state`` from each partition's
last marker. A restart costs the live keys and the updates of the last few seconds,
not the whole history, and no update has to outlive the topic's retention. Only the
latest value of each key is written, and only by one worker, so the changelog
problems above do not arise: two writers of one key in a rebalance write the same
fold, and a reader skips what a value already folds (its ``through`` offset).

Until the fold has caught up with the end offsets it saw at start, the proposal
agent waits: deciding on partial state would be nondeterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from streams.state import TABLES, apply_update
from streams.state.fleet import FleetWindow
from streams.state.reducers import PRUNED, STATE_SCHEMA_VERSION, prune
from streams.topology.snapshot import read_record

log = logging.getLogger(__name__)

Listener = Callable[[str, str, Any], None]


class Mirror:
    """Tables (name -> key -> value) folded from the ``state`` topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        client: Mapping[str, Any] | None = None,
        folded_topic: str | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.folded_topic = folded_topic or f"{topic}.folded"
        # aiokafka security options (streams.kafka.security.aiokafka_config).
        self.client = dict(client or {})
        self.data: dict[str, dict[str, Any]] = {name: {} for name in TABLES}
        # The fleet-wide velocity count's index (streams/state/fleet.py), kept in step
        # with every change of the velocity table below.
        self.fleet = FleetWindow()
        self.ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self.on_applied: Callable[[str], None] | None = None
        self._task: asyncio.Task[None] | None = None
        # ``state`` partition -> the next offset to fold.
        self.positions: dict[int, int] = {}
        # ``state`` partition -> the marker read from ``state.folded`` at start.
        self.folded_through: dict[int, int] = {}
        # ``state`` partition -> (table, key) -> offset of its last change, oldest first.
        self.changed: dict[int, OrderedDict[tuple[str, str], int]] = {}
        self.partitions = 0
        self.loaded = 0  # values read from ``state.folded`` at start
        self.folded = 0  # updates folded from ``state`` since start
        self.skipped_newer = 0  # records of a newer schema version, left alone
        self._skip: dict[tuple[str, str], int] = {}
        self._started = time.monotonic()
        self.ready_seconds = 0.0  # from start() until caught up
        # ``state`` partition -> keys ``prune`` changed or removed, until written.
        self.pruned: dict[int, set[tuple[str, str]]] = {}

    @property
    def caught_up(self) -> bool:
        """Whether the fold has reached the end offsets it saw at start."""
        return self.ready.is_set()

    def partition_of(self, table: str, key: str) -> int:
        """The ``state`` partition of a key (murmur2, as every producer of it hashes)."""
        digest = int(murmur2(f"{table}|{key}".encode()))
        return (digest & 0x7FFFFFFF) % max(1, self.partitions)

    def changed_since(self, partition: int, offset: int) -> Iterator[tuple[str, str]]:
        """Keys of a partition changed at or after ``offset`` (newest first)."""
        for name, at in reversed(self.changed.get(partition, {}).items()):
            if at < offset:
                return
            yield name

    def _note(self, partition: int, table: str, key: str, offset: int) -> None:
        changed = self.changed.get(partition)
        if changed is None:
            changed = self.changed[partition] = OrderedDict()
        changed[(table, key)] = offset
        changed.move_to_end((table, key))

    def prune(self, now: float) -> int:
        """Drop window entries no longer needed (``reducers.prune``); keys changed."""
        return sum(self.prune_keys(table, self.keys(table), now) for table in PRUNED)

    def prune_keys(self, table: str, keys: Iterable[str], now: float) -> int:
        """``prune`` for some keys of one table (the snapshot timer prunes in slices);
        a key gone meanwhile is skipped."""
        touched = 0
        values = self.data[table]
        for key in keys:
            value = values.get(key)
            if value is None:
                continue
            new = prune(table, value, now)
            if new is value:
                continue
            if table == "velocity":
                self.fleet.replace(value, new)
            if new is None:
                del values[key]
            else:
                values[key] = new
            self.pruned.setdefault(self.partition_of(table, key), set()).add((table, key))
            touched += 1
        return touched

    def take_pruned(self, partition: int) -> set[tuple[str, str]]:
        """Keys of a partition pruned since the last call (their owner rewrites them)."""
        return self.pruned.pop(partition, set())

    def get(self, table: str, key: str) -> Any:
        """The current value, or ``None``."""
        return self.data[table].get(key)

    def keys(self, table: str) -> list[str]:
        """Every key of a table, as a list taken now."""
        return list(self.data[table])

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
        old = self.data[table].get(key)
        new = apply_update(old, update)
        if new is None:
            return False
        self.data[table][key] = new
        if table == "velocity":
            self.fleet.replace(old, new)
        if self.on_applied is not None:
            self.on_applied(table)
        for listener in self.listeners:
            listener(table, key, new)
        return True

    async def start(self) -> None:
        """Start folding; returns at once (``ready`` is set once caught up)."""
        self._started = time.monotonic()
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
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("state fold failed; resuming in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _partitions(self, consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
        while True:
            cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001
            partitions = cluster.partitions_for_topic(topic)
            if partitions:
                return [TopicPartition(topic, p) for p in sorted(partitions)]
            log.info("state fold waiting for topic %s", topic)
            await asyncio.sleep(0.5)

    async def _load_folded(self, consumer: AIOKafkaConsumer) -> None:
        """Read ``state.folded`` to its end: the values, their offsets, the markers."""
        started = time.monotonic()
        tps = await self._partitions(consumer, self.folded_topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        read = 0
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=10_000)
            for tp, records in batches.items():
                for record in records:
                    read += 1
                    self.load_record(tp.partition, record.key, record.value)
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        self.loaded_all()
        log.info(
            "state.folded: %d values (%d records) in %.2fs; markers %s",
            self.loaded,
            read,
            time.monotonic() - started,
            dict(sorted(self.folded_through.items())),
        )

    def loaded_all(self) -> None:
        """Every value of ``state.folded`` is read: tell the listeners (policy, metrics)."""
        for table, values in self.data.items():
            for key, value in values.items():
                for listener in self.listeners:
                    listener(table, key, value)
        self.loaded = sum(len(values) for values in self.data.values())

    def load_record(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        """Fold one record of ``state.folded`` partition ``partition`` (read at start)."""
        folded = read_record(key, value)
        if folded.kind == "marker":
            self.folded_through[partition] = folded.through
        elif folded.kind == "value" and folded.table in self.data:
            old = self.data[folded.table].get(folded.key)
            self.data[folded.table][folded.key] = folded.value
            if folded.table == "velocity":
                self.fleet.replace(old, folded.value)
            self._skip[(folded.table, folded.key)] = folded.through
        elif folded.kind == "tombstone" and folded.table in self.data:
            old = self.data[folded.table].pop(folded.key, None)
            if folded.table == "velocity":
                self.fleet.replace(old, None)
            self._skip.pop((folded.table, folded.key), None)
        elif folded.kind == "newer":
            self.skipped_newer += 1
            log.error("state.folded: a record of a newer schema than %d left alone",
                      STATE_SCHEMA_VERSION)  # fmt: skip
        elif folded.kind == "unreadable":
            log.warning("state.folded: unreadable record skipped")

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            **self.client,
        )
        await consumer.start()
        try:
            tps = await self._partitions(consumer, self.topic)
            self.partitions = len(tps)
            if not self.ready.is_set() and not self.positions:
                await self._load_folded(consumer)
                self.positions = {tp.partition: self.folded_through.get(tp.partition, 0)
                                  for tp in tps}  # fmt: skip
            consumer.assign(tps)
            starts = await consumer.beginning_offsets(tps)
            for tp in tps:
                position = self.positions.get(tp.partition, 0)
                if starts[tp] > position:
                    # Deleted before anyone folded it (the cluster was down longer than
                    # the retention of ``state``): say so, loudly, and go on from there.
                    log.error("state[%d]: updates %d..%d aged out before they were folded",
                              tp.partition, position, starts[tp] - 1)  # fmt: skip
                    position = self.positions[tp.partition] = starts[tp]
                consumer.seek(tp, position)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > self.positions.get(tp.partition, 0)}
            if not pending:
                self.caught_up_now()
            while True:
                batches = await consumer.getmany(timeout_ms=100, max_records=5000)
                for tp, records in batches.items():
                    partition = tp.partition
                    for record in records:
                        self.apply_record(record.value, partition, record.offset)
                        self.positions[partition] = record.offset + 1
                if pending:
                    pending = {
                        tp for tp in pending if self.positions.get(tp.partition, 0) < ends[tp]
                    }
                    if not pending:
                        self.caught_up_now()
        finally:
            await consumer.stop()

    def caught_up_now(self) -> None:
        if self.ready.is_set():
            return
        # Every value's own offset is now behind the fold: nothing more to skip.
        self._skip.clear()
        self.ready_seconds = time.monotonic() - self._started
        log.info("state fold caught up in %.2fs: %d values read, %d updates folded",
                 self.ready_seconds, self.loaded, self.folded)  # fmt: skip
        self.ready.set()

    def apply_record(self, value: bytes | None, partition: int, offset: int) -> None:
        """Fold one record of ``state`` (unless the value read at start already has it)."""
        try:
            update = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            log.warning("state fold: unreadable update skipped")
            return
        if not isinstance(update, dict):
            return
        table, key = update.get("table"), update.get("key")
        if not isinstance(table, str) or not isinstance(key, str) or table not in self.data:
            return
        version = update.get("v", 1)
        if not isinstance(version, int) or version > STATE_SCHEMA_VERSION:
            self.skipped_newer += 1
            log.error("state[%d]@%d: schema version %r is newer than %d; left alone",
                      partition, offset, version, STATE_SCHEMA_VERSION)  # fmt: skip
            return
        if self._skip and offset < self._skip.get((table, key), -1):
            return  # already in the value read from state.folded
        self.folded += 1
        self.apply(update)
        self._note(partition, table, key, offset)
