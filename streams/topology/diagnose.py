"""What Faust and aiokafka hold about one partition: logged when the stall watchdog
fires, so that a stalled partition says why (paused, buffered, no position, ...).

Best effort: it reads private attributes of both libraries, which change between
versions; whatever cannot be read is reported as such, never raised.
"""

# ruff: noqa: SLF001 - reading both libraries' private state is this module's purpose

from __future__ import annotations

from typing import Any


def _read(what: str, get: Any) -> str:
    try:
        return f"{what}={get()!r}"
    except Exception as exc:  # private attributes: report, never raise
        return f"{what}=<{type(exc).__name__}: {exc}>"


def partition_state(app: Any, topic: str, partition: int) -> str:
    """One line: the Faust consumer's and aiokafka's view of ``topic[partition]``."""
    consumer = app.consumer
    tp = next((t for t in consumer.assignment() if t == (topic, partition)), None)
    if tp is None:
        return f"{topic}[{partition}] is not in the Faust consumer's assignment"

    def aiokafka_state() -> Any:
        inner = consumer._thread._ensure_consumer()
        assignment = inner._fetcher._subscriptions.subscription.assignment
        from aiokafka.structs import TopicPartition  # noqa: PLC0415

        state = assignment.state_value(TopicPartition(topic, partition))
        if state is None:
            return None
        return {
            "paused": state.paused,
            "has_position": state.has_valid_position,
            "position": state.position if state.has_valid_position else None,
            "last_fetch_ms": state.timestamp,
            "buffered": TopicPartition(topic, partition) in inner._fetcher._records,
        }

    def channels() -> Any:
        found = app.topics._tp_index.get(tp, ())
        return [(chan.queue.qsize(), chan.queue.maxsize) for chan in found]

    fields = [
        _read("active", lambda: tp in consumer._get_active_partitions()),
        _read("paused", lambda: tp in consumer._paused_partitions),
        _read("buffered", lambda: tp in consumer._buffered_partitions),
        _read("flow_active", lambda: consumer.flow_active),
        _read("flow_control", lambda: app.flow_control.is_active()),  # noqa: PLW0108 - read in _read
        _read("in_recovery", lambda: app.in_recovery),
        _read("committed", lambda: consumer._committed_offset.get(tp)),
        _read("read", lambda: consumer._read_offset.get(tp)),
        _read("acked", lambda: list(consumer._acked.get(tp, ()))[-5:]),
        _read("gap", lambda: list(consumer._gap.get(tp, ()))[-5:]),
        _read("channel_queues", channels),
        _read("aiokafka", aiokafka_state),
    ]
    return f"{topic}[{partition}]: " + ", ".join(fields)
