"""The stall report (streams.topology.diagnose): reads what it can, never raises."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.topology.diagnose import partition_state

STALLED = TP("escalation.error-budgets", 2)


def _app(assigned: set[TP]) -> Any:
    consumer = SimpleNamespace(
        assignment=lambda: assigned,
        _get_active_partitions=set,
        _paused_partitions={STALLED},
        _buffered_partitions=set(),
        flow_active=True,
        _committed_offset=defaultdict(lambda: None),
        _read_offset={STALLED: 7},
        _acked={STALLED: [1, 2, 3, 4, 5, 6, 7]},
        _gap={},
        # no _thread: the aiokafka half cannot be read
    )
    queue = SimpleNamespace(qsize=lambda: 3, maxsize=4096)
    return SimpleNamespace(
        consumer=consumer,
        flow_control=SimpleNamespace(is_active=lambda: False),
        in_recovery=False,
        topics=SimpleNamespace(_tp_index={STALLED: [SimpleNamespace(queue=queue)]}),
    )


def test_a_partition_not_assigned_says_so() -> None:
    line = partition_state(_app(set()), STALLED.topic, STALLED.partition)
    assert line == "escalation.error-budgets[2] is not in the Faust consumer's assignment"


def test_what_can_be_read_is_reported_and_what_cannot_is_named() -> None:
    line = partition_state(_app({STALLED}), STALLED.topic, STALLED.partition)
    assert line.startswith("escalation.error-budgets[2]: ")
    assert "active=False" in line
    assert "paused=True" in line
    assert "flow_control=False" in line
    assert "read=7" in line
    assert "acked=[3, 4, 5, 6, 7]" in line  # the last five only
    assert "channel_queues=[(3, 4096)]" in line
    assert "aiokafka=<AttributeError:" in line
