"""The proposals' lanes (streams/topology/lanes.py): turn order and commit positions."""

from __future__ import annotations

from typing import Any

from streams.topology.lanes import FRESH_RUN, Arrival, Lanes, Position, offsets_group


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


def test_a_storm_read_before_a_healthy_service_delays_it_by_its_first_turns_only() -> None:
    lanes = Lanes()
    offset = 0
    for _ in range(2_000):  # 20,000 storm proposals, all in partition 0, before it
        for service in range(10):
            lanes.add(_arrival(0, offset, f"storm-{service}".encode()))
            offset += 1
    lanes.add(_arrival(0, offset, b"healthy"))
    # The ten storm lanes were fresh too: their first turns, and the backlog's turns
    # among them, come first.
    turns = 11 + 10 // FRESH_RUN
    taken = [lanes.take() for _ in range(turns)]
    assert [a.key for a in taken if a is not None][-1] == b"healthy"
    assert lanes.waiting == 20_000 + 1 - turns


def _storm(lanes: Lanes, per_service: int = 200) -> int:
    """Ten storm services' backlogs in partition 0, each lane taken until every one is
    backlogged, then one backlog turn (no fresh turn since); the next free offset."""
    offset = 0
    for _ in range(per_service):
        for service in range(10):
            lanes.add(_arrival(0, offset, f"storm-{service}".encode()))
            offset += 1
    while lanes.fresh:
        lanes.take()
    lanes.take()
    return offset


def test_a_healthy_service_arriving_during_a_storm_is_taken_next() -> None:
    lanes = Lanes()
    offset = _storm(lanes)
    for _ in range(37):  # somewhere inside the storm's rounds
        lanes.take()
    lanes.add(_arrival(0, offset, b"healthy"))
    taken = lanes.take()
    assert taken is not None
    assert taken.key == b"healthy"
    # And again for its next proposal: it did not join the storm's ring.
    lanes.add(_arrival(0, offset + 1, b"healthy"))
    taken = lanes.take()
    assert taken is not None
    assert (taken.key, taken.offset) == (b"healthy", offset + 1)


def test_a_service_with_a_backlog_of_its_own_takes_turns_with_the_storm() -> None:
    lanes = Lanes()
    offset = _storm(lanes)
    for extra in range(3):  # three proposals at once: one fresh turn, then the ring
        lanes.add(_arrival(0, offset + extra, b"busy"))
    first = lanes.take()
    assert first is not None
    assert first.key == b"busy"
    round_ = [lanes.take() for _ in range(11)]
    keys = [a.key for a in round_ if a is not None]
    assert keys.count(b"busy") == 1
    assert keys[-1] == b"busy"  # behind the ten storm lanes already in the ring


def test_a_flood_of_fresh_services_cannot_starve_a_backlog() -> None:
    lanes = Lanes()
    offset = _storm(lanes)
    for n in range(1_000):
        lanes.add(_arrival(0, offset + n, f"svc-{n}".encode()))
    waiting = lanes.waiting
    taken = [lanes.take() for _ in range(100 * (FRESH_RUN + 1))]
    storm = [a for a in taken if a is not None and a.key is not None and a.key.startswith(b"storm")]
    assert len(storm) == 100  # one backlog turn after every FRESH_RUN fresh ones
    assert taken[FRESH_RUN] is storm[0]
    assert lanes.waiting == waiting - 100 * (FRESH_RUN + 1)


def test_clearing_forgets_every_lane() -> None:
    lanes = Lanes()
    _storm(lanes, per_service=2)
    lanes.add(_arrival(1, 0, b"healthy"))
    lanes.clear()
    assert lanes.waiting == 0
    assert lanes.take() is None
    lanes.add(_arrival(1, 1, b"again"))
    taken = lanes.take()
    assert taken is not None
    assert taken.key == b"again"


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
