# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Read the heads of the chains a worker was assigned from the audit topic.

The worker calls :func:`chain_heads` on every assignment, before sealing anything
(instead of the last record of each audit partition, which named one chain when a
partition held one). Each audit partition is read backwards in windows of
``step`` records, doubling up to ``max_step``, until every wanted chain is
resolved (:class:`streams.audit.heads.HeadScan`) or the partition's beginning is
reached. The consumer is assigned partitions directly and never commits.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streams.audit.heads import HeadScan

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from confluent_kafka import Consumer

    from streams.audit.chain import ChainHead
    from streams.keys import PublicKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResyncStats:
    """What one re-sync read: to measure it, and to log it."""

    partitions: int
    windows: int
    records: int
    seconds: float


def _window(  # noqa: PLR0917 - the coordinates of one window
    consumer: Consumer, topic: str, partition: int, start: int, end: int, timeout: float
) -> Iterator[bytes]:
    """The records of ``topic[partition]`` at offsets ``start..end-1``, in order."""
    from confluent_kafka import TopicPartition  # noqa: PLC0415 - Kafka client at the edge

    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        deadline = time.monotonic() + timeout
        while True:
            batch = consumer.consume(num_messages=min(1000, end - start), timeout=0.5)
            if not batch and time.monotonic() > deadline:
                msg = f"{topic}[{partition}]: no record for {timeout:.0f}s below offset {end}"
                raise TimeoutError(msg)
            for message in batch:
                if message.error() is not None:
                    continue
                offset = message.offset()
                if offset is None or offset >= end:
                    return
                deadline = time.monotonic() + timeout
                yield message.value() or b""
                if offset >= end - 1:
                    return
    finally:
        consumer.unassign()


def chain_heads(
    bootstrap: str,
    topic: str,
    wanted: Mapping[int, set[str]],
    *,
    keys: PublicKeys | None = None,
    step: int = 2000,
    max_step: int = 64000,
    timeout: float = 10.0,
    client: Mapping[str, Any] | None = None,
) -> tuple[dict[str, ChainHead], ResyncStats]:
    """The head of every chain in ``wanted`` (audit partition -> chain ids).

    A chain the partition says nothing about (no event, no checkpoint listing it)
    gets the empty head. ``keys``: checkpoints that do not verify are ignored.
    """
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    started = time.monotonic()
    heads: dict[str, ChainHead] = {}
    windows = records = 0
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"escalation-audit-resync-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 10,
            # Security settings (streams.kafka.security.confluent_config).
            **(client or {}),
        }
    )
    try:
        for partition, chains in sorted(wanted.items()):
            scan = HeadScan(frozenset(chains), keys=keys)
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout, cached=False
            )
            end, size = high, step
            while not scan.done and end > low:
                start = max(low, end - size)
                scan.window(_window(consumer, topic, partition, start, end, timeout))
                end, size = start, min(max_step, size * 2)
            if scan.unreadable:
                log.warning(
                    "audit partition %d: %d unreadable records or unverified checkpoints skipped",
                    partition,
                    scan.unreadable,
                )
            heads.update(scan.result())
            windows += scan.windows
            records += scan.records
    finally:
        consumer.close()
    return heads, ResyncStats(len(wanted), windows, records, time.monotonic() - started)
