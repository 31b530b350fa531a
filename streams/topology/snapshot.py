"""The folded state: the latest value of every table key, written by the key's owner.

``state`` carries updates (deltas such as one outcome, one verdict); folding all of
them from the beginning on every start made a restart cost grow with history, and
a topic that deletes old records lost what they said (a freeze, a re-qualification).
So the owner of each ``state`` partition (the worker assigned that partition number
of the gate's input topics) writes, every ``ESCALATION_STATE_SNAPSHOT_SECONDS``, the
folded value of every key of that partition that changed since its last round, to
the same partition of the compacted ``state.folded``, then a marker::

    key  table|key   value {"v": 1, "table", "key", "value": {...}, "through": N}
    key  table|key   value null                    (a key its window emptied)
    key  _marker     value {"v": 1, "through": N, "at": ..., "keys": k}

``through`` is the ``state`` offset the value folds up to (every update below it,
none at or above it). A worker starts by reading ``state.folded`` (one record per
live key once compacted), then folds ``state`` from each partition's last marker,
skipping an update below its key's own ``through`` (a round cut short by a crash
wrote some keys past the marker). Every worker still folds every update (all of
them see the same state); the folded topic only replaces the history before the
marker. Raw updates are kept a week (``streams/kafka/admin.py``): folded within
seconds, they are only needed by a worker catching up.

Why the marker and the keys of one partition share a partition: a reader sees a
round's keys before its marker (one producer, one partition, in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from streams.state.reducers import PRUNED, STATE_SCHEMA_VERSION

log = logging.getLogger(__name__)

MARKER = b"_marker"
# Keys pruned, or records written, between two turns of the event loop (1-2 ms).
SLICE = 1000


@dataclass(frozen=True, slots=True)
class Folded:
    """One record of ``state.folded`` as read back: a value, a tombstone or a marker."""

    kind: str  # "value", "tombstone", "marker", "unreadable", "newer"
    table: str = ""
    key: str = ""
    value: Any = None
    through: int = 0


def value_record(table: str, key: str, value: Any, through: int) -> tuple[bytes, bytes | None]:
    """Kafka key and value of one key's folded value (``None``: a tombstone)."""
    kafka_key = f"{table}|{key}".encode()
    if value is None:
        return kafka_key, None
    body = {"v": STATE_SCHEMA_VERSION, "table": table, "key": key, "value": value}
    return kafka_key, orjson.dumps({**body, "through": through})


def marker_record(through: int, *, at: float, keys: int) -> tuple[bytes, bytes]:
    """Kafka key and value of a partition's marker: every change below ``through`` is in."""
    body = {"v": STATE_SCHEMA_VERSION, "through": through, "at": at, "keys": keys}
    return MARKER, orjson.dumps(body)


def read_record(key: bytes | None, value: bytes | None) -> Folded:
    """Decode one record of ``state.folded`` (total: never raises)."""
    if key is None:
        return Folded("unreadable")
    if value is None:
        table, sep, name = key.decode(errors="replace").partition("|")
        return Folded("tombstone", table, name) if sep else Folded("unreadable")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Folded("unreadable")
    if not isinstance(body, dict):
        return Folded("unreadable")
    version = body.get("v", 1)
    if not isinstance(version, int) or version > STATE_SCHEMA_VERSION:
        return Folded("newer")
    through = body.get("through")
    if not isinstance(through, int) or through < 0:
        return Folded("unreadable")
    if key == MARKER:
        return Folded("marker", through=through)
    table_name, key_name = body.get("table"), body.get("key")
    if not isinstance(table_name, str) or not isinstance(key_name, str):
        return Folded("unreadable")
    if body.get("value") is None:
        return Folded("unreadable")
    return Folded("value", table_name, key_name, body["value"], through)


class FoldedState(Protocol):
    """What the writer needs of the mirror (``streams.topology.mirror.Mirror``)."""

    positions: dict[int, int]
    folded_through: dict[int, int]

    @property
    def caught_up(self) -> bool: ...

    def changed_since(self, partition: int, offset: int) -> Iterator[tuple[str, str]]: ...

    def get(self, table: str, key: str) -> Any: ...

    def prune(self, now: float) -> int: ...

    def prune_keys(self, table: str, keys: Iterable[str], now: float) -> int: ...

    def keys(self, table: str) -> list[str]: ...

    def take_pruned(self, partition: int) -> set[tuple[str, str]]: ...


Produce = Callable[[bytes, bytes | None, int], None]  # key, value, partition


@dataclass(slots=True)
class Round:
    """One partition's round, cut at one instant: its changed keys' values as they were
    then (values are never changed in place: a fold replaces them), to be written."""

    partition: int
    through: int
    since: int
    values: list[tuple[str, str, Any]]


class Snapshots:
    """Writes the folded values of the ``state`` partitions this worker owns."""

    def __init__(
        self,
        state: FoldedState,
        produce: Produce,
        *,
        owned: Callable[[], Iterable[int]],
        clock: Callable[[], float] = time.time,
        batch: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.state = state
        self.produce = produce
        self.owned = owned
        self.clock = clock
        # Wraps each slice of records written (the worker's Sink.held).
        self.batch = batch
        # Partition -> the offset below which every change is on ``state.folded``
        # as far as this worker knows (its own rounds, or the marker it started from).
        self.written: dict[int, int] = {}
        self.records = 0
        self.rounds = 0
        self.failures = 0

    async def tick(self) -> None:
        """The Faust timer's entry point: ``write``, with the event loop served between
        slices. Pruning every service's velocity window in one go stalled the decisions
        for 17-37 ms every round over a 20,000-service fleet, and a round's changed keys
        were all written in the same turn. The windows are pruned a slice of keys at a
        time; the round is then cut at one instant (every value at its marker's
        offset) and written a slice of records at a time, while this worker still owns
        the partition."""
        if not self.state.caught_up:
            return
        now = self.clock()
        for table in PRUNED:
            keys = self.state.keys(table)
            for start in range(0, len(keys), SLICE):
                self.state.prune_keys(table, keys[start : start + SLICE], now)
                await asyncio.sleep(0)
        written = 0
        for cut in self._cut():
            # Owned still? (a revoke may come at any await): if not, no marker, and
            # nothing more from this worker once the next owner may be writing (the
            # revoke flushed what was written so far); an owner writes the keys again.
            for start in range(0, len(cut.values), SLICE):
                if not self._owns(cut):
                    break
                with self.batch():
                    if not self._write_values(cut, cut.values[start : start + SLICE]):
                        break
                await asyncio.sleep(0)
            else:
                if self._owns(cut):
                    written += self._close(cut, now)
        self.rounds += 1
        self.records += written

    def write(self, now: float | None = None) -> int:
        """One round in one go: prune the windows, then write what changed; records
        written."""
        if not self.state.caught_up:
            return 0
        now = self.clock() if now is None else now
        self.state.prune(now)
        written = 0
        for cut in self._cut():
            with self.batch():
                if self._write_values(cut, cut.values):
                    written += self._close(cut, now)
        self.rounds += 1
        self.records += written
        return written

    def _cut(self) -> list[Round]:
        """This instant's rounds of the partitions owned (those with anything to write)."""
        owned = set(self.owned())
        rounds = []
        for partition in sorted(owned):
            through = self.state.positions.get(partition, 0)
            since = self.written.get(partition, self.state.folded_through.get(partition, 0))
            keys = list(self.state.changed_since(partition, since))
            keys += sorted(self.state.take_pruned(partition) - set(keys))
            if not keys and through <= since and partition in self.written:
                continue
            values = [(table, key, self.state.get(table, key)) for table, key in keys]
            rounds.append(Round(partition, through, since, values))
        for partition in set(self.state.positions) - owned:
            self.state.take_pruned(partition)  # their owners prune and write them
        return rounds

    def _owns(self, cut: Round) -> bool:
        return cut.partition in set(self.owned())

    def _write_values(self, cut: Round, values: list[tuple[str, str, Any]]) -> bool:
        for table, key, value in values:
            kafka_key, record = value_record(table, key, value, cut.through)
            try:
                self.produce(kafka_key, record, cut.partition)
            except Exception:
                # Refused at once (too large, say): no marker, so a restart folds this
                # partition's updates from the last good marker instead of losing them.
                log.exception("state.folded[%d]: %s|%s not written; marker held at %d",
                              cut.partition, table, key, cut.since)  # fmt: skip
                self.failures += 1
                return False
        return True

    def _close(self, cut: Round, now: float) -> int:
        """The round's marker: every change below ``through`` is in."""
        kafka_key, marker = marker_record(cut.through, at=now, keys=len(cut.values))
        self.produce(kafka_key, marker, cut.partition)
        self.written[cut.partition] = cut.through
        if cut.values:
            log.debug("state.folded[%d]: %d keys through %d",
                      cut.partition, len(cut.values), cut.through)  # fmt: skip
        return len(cut.values) + 1
