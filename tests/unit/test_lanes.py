"""The proposals' lanes (streams/topology/lanes.py): turn order and commit positions."""

from __future__ import annotations

from typing import Any

from streams.topology.lanes import Arrival, Lanes, Position, offsets_group


class _Message:
    """What ``confluent_kafka.Message`` answers, for the fields an ``Arrival`` reads."""

    def __init__(self, partition: int, offset: int, key: bytes | None) -> None:
        self._partition, self._offset, self._key = partition, offset, key

    def topic(self) -> str:
        return "proposals"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (2, 1_700_000_000_123)  # TIMESTAMP_LOG_APPEND_TIME, in ms

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return b"{}"


def _arrival(partition: int, offset: int, key: bytes | None) -> Arrival:
    return Arrival(_Message(partition, offset, key))


def test_an_arrival_reads_like_a_faust_event() -> None:
    arrival = _arrival(3, 41, b"checkout")
    message: Any = arrival.message
    assert (message.topic, message.partition, message.offset) == ("proposals", 3, 41)
    assert message.timestamp == 1_700_000_000.123
    assert (message.key, message.value) == (b"checkout", b"{}")
    assert tuple(message.tp) == ("proposals", 3)


def test_a_storm_on_ten_services_makes_an_eleventh_wait_for_ten_decisions_at_most() -> None:
    lanes = Lanes()
    offset = 0
    for _ in range(2_000):  # 20,000 storm proposals, all in partition 0, before it
        for service in range(10):
            lanes.add(_arrival(0, offset, f"storm-{service}".encode()))
            offset += 1
    lanes.add(_arrival(0, offset, b"healthy"))
    taken = [lanes.take() for _ in range(11)]
    assert [a.key for a in taken if a is not None][-1] == b"healthy"
    assert lanes.waiting == 20_000 - 10


def test_each_lane_keeps_its_partition_order() -> None:
    lanes = Lanes()
    for offset, key in enumerate([b"a", b"b", b"a", b"a", b"c", b"b"]):
        lanes.add(_arrival(1, offset, key))
    order = []
    while (arrival := lanes.take()) is not None:
        order.append((arrival.key, arrival.offset))
    assert order == [(b"a", 0), (b"b", 1), (b"c", 4), (b"a", 2), (b"b", 5), (b"a", 3)]
    for key in (b"a", b"b"):
        offsets = [o for k, o in order if k == key]
        assert offsets == sorted(offsets)
    assert lanes.waiting == 0
    assert lanes.take() is None


def test_the_same_key_in_two_partitions_is_two_lanes() -> None:
    lanes = Lanes()
    lanes.add(_arrival(0, 0, b"x"))
    lanes.add(_arrival(0, 1, b"x"))
    lanes.add(_arrival(1, 0, b"x"))
    first, second = lanes.take(), lanes.take()
    assert first is not None
    assert second is not None
    assert (first.partition, second.partition) == (0, 1)


def test_the_commit_position_is_the_oldest_proposal_not_yet_decided() -> None:
    position = Position()
    assert position.commit_offset() is None  # nothing read: nothing to commit
    for offset in (10, 11, 12, 13):
        position.read(offset)
    assert position.commit_offset() == 10
    position.decided(12)  # decided out of order (another lane's turn came first)
    position.decided(11)
    assert position.commit_offset() == 10
    position.decided(10)
    assert position.commit_offset() == 13
    position.decided(13)
    assert position.commit_offset() == 14  # everything read is decided
    assert not position.done


def test_the_reader_keeps_its_offsets_beside_the_faust_group() -> None:
    assert offsets_group("escalation-gate") == "escalation-gate.proposals"
