"""Re-read the pending approvals of newly assigned partitions from the ``lifecycle`` log.

The lifecycle topic is the log of every pending entry (see ``streams.state.lifecycle``).
A worker assigned lifecycle partition N folds that partition from its first record to
its end before it handles anything (``Assignment.ready``); the lanes (or the lifecycle
agent) then go on from the group's committed offset, and fold again what lies between
it and that end: a no-op, as folding an entry already held (``lifecycle.fold``) has no
effect. Reading only to the committed offset left the records after it (say the
update a timeout's page wrote, by a worker SIGKILLed before its next commit) to the
reader, and the approval timer could fire first and page again as the first
escalation.

This replaced a changelogged Faust table: one record and one RocksDB write fewer per
Level 2 or 3 decision (bench/README.md), for a read of the partition on assignment.
The topic is compacted by decision id (the latest entry of each decision survives)
and its records expire after ``streams.kafka.admin.LIFECYCLE_RETENTION_MS`` (a week).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.kafka.admin import CLIENT_LOG
from streams.state.lifecycle import Entry, fold

log = logging.getLogger(__name__)


def _group_reader(bootstrap: str, group: str, **extra: object) -> Consumer:
    """A consumer with the gate's own group id, only to read the group's committed
    offsets: it never subscribes, so it never joins the group, and never commits."""
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "logger": CLIENT_LOG,
            **extra,
        }
    )


def load_pending(
    bootstrap: str,
    topic: str,
    group: str,
    partitions: set[int],
    *,
    timeout: float = 60.0,
    client: Mapping[str, Any] | None = None,
) -> dict[int, dict[str, Entry]]:
    """Pending entries by partition, folded to each partition's end (``group`` is only
    the id of the reading consumer, which never joins it or commits).

    Raises ``TimeoutError`` when the partitions cannot be read within ``timeout``: the
    caller must not run with pending approvals it does not know about.
    """
    pending: dict[int, dict[str, Entry]] = {p: {} for p in partitions}
    if not partitions:
        return pending
    consumer = _group_reader(bootstrap, group, **{"enable.partition.eof": True, **(client or {})})
    deadline = time.monotonic() + timeout
    try:
        ends: dict[int, int] = {}
        start: list[TopicPartition] = []
        for number in sorted(partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, number), timeout=timeout
            )
            if high > low:
                ends[number] = high
                start.append(TopicPartition(topic, number, low))
        if not start:
            return pending
        consumer.assign(start)
        while ends:
            if time.monotonic() > deadline:
                raise TimeoutError(f"lifecycle partitions {sorted(ends)} not read in {timeout}s")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                partition = message.partition()
                if partition not in ends:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - public constant
                        del ends[partition]
                        continue
                    raise RuntimeError(f"reading {topic}[{partition}]: {error}")
                offset = message.offset() or 0
                if offset >= ends[partition]:
                    del ends[partition]
                    continue
                try:
                    fold(pending[partition], orjson.loads(message.value() or b""))
                except orjson.JSONDecodeError:
                    log.warning("%s[%d]@%d is not JSON", topic, partition, offset)
    finally:
        consumer.close()
    return pending


def progress(
    bootstrap: str,
    group: str,
    tps: set[tuple[str, int]],
    *,
    timeout: float = 10.0,
    client: Mapping[str, Any] | None = None,
) -> dict[tuple[str, int], tuple[int, int]]:
    """``(committed offset, end offset)`` of ``group`` on each (topic, partition).

    Where the group has committed nothing, the committed offset is the partition's
    first offset (where the group will start).
    """
    out: dict[tuple[str, int], tuple[int, int]] = {}
    if not tps:
        return out
    consumer = _group_reader(bootstrap, group, **(client or {}))
    try:
        wanted = [TopicPartition(topic, partition) for topic, partition in sorted(tps)]
        for tp in consumer.committed(wanted, timeout=timeout):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout
            )
            # Nothing committed yet: the group starts from the first record there is.
            committed = tp.offset if tp.offset >= 0 else low
            out[(tp.topic, tp.partition)] = (committed, high)
    finally:
        consumer.close()
    return out


Progress = dict[tuple[str, int], tuple[int, float]]


def stalled(
    seen: Progress,
    offsets: dict[tuple[str, int], tuple[int, int]],
    *,
    now: float,
    after: float,
) -> list[tuple[str, int]]:
    """Update ``seen`` (committed offset and since when, per partition with input
    waiting) from ``offsets`` (:func:`progress`); the partitions whose committed
    offset has not moved for ``after`` seconds while input waited."""
    out = []
    for tp, (committed, end) in offsets.items():
        held = seen.get(tp)
        if committed >= end:  # nothing waiting
            seen.pop(tp, None)
        elif held is None or held[0] != committed:
            seen[tp] = (committed, now)
        elif now - held[1] >= after:
            out.append(tp)
    return out
