"""Re-sync audit chain heads from the audit topic when a worker is assigned partitions.

The head of chain ``pN`` lives in a changelogged table, but a worker that crashed may
have written audit events whose head update never reached the changelog. The audit
topic is the record of truth: the last record of audit partition N is the chain's
real head. A worker adopts it when it is ahead of the table (see docs/audit-and-splunk.md).
"""

from __future__ import annotations

import logging

from confluent_kafka import Consumer, TopicPartition

from streams.audit.chain import ChainHead
from streams.errors import InputError
from streams.models import AuditEvent, decode

log = logging.getLogger(__name__)


def last_heads(bootstrap: str, topic: str, partitions: set[int]) -> dict[str, ChainHead]:
    """The head of each chain whose last event is the last record of its audit partition."""
    heads: dict[str, ChainHead] = {}
    if not partitions:
        return heads
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "escalation-audit-resync",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        wanted = []
        for p in sorted(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                wanted.append(TopicPartition(topic, p, high - 1))
        if not wanted:
            return heads
        consumer.assign(wanted)
        remaining = {tp.partition for tp in wanted}
        for _ in range(50):
            if not remaining:
                break
            for message in consumer.consume(num_messages=len(remaining), timeout=0.2):
                if message.error() is not None or message.partition() not in remaining:
                    continue
                remaining.discard(message.partition())
                try:
                    event = decode(AuditEvent, message.value() or b"")
                except InputError:
                    log.warning(
                        "audit partition %d ends in an unreadable record", message.partition()
                    )
                    continue
                head = ChainHead.of(event)
                heads[head.chain] = head
    finally:
        consumer.close()
    return heads
