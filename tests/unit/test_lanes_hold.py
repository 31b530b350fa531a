"""The lanes' decider hands a backlog's records over together (streams/topology/lanes.py
``HOLD_SECONDS``), and each slice's at its end when there is no backlog.

A fake clock the handlers advance (one decision = 1 ms) makes the slices and the hold
deterministic; the worker's own ``Sink`` (on no broker) records what each hand-over
carried, with ``Sink.held``'s nesting (the outermost block hands over).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from typing import Any

import pytest

from streams.testing import OfflineSink
from streams.topology import lanes as lanes_module
from streams.topology.lanes import HOLD_SECONDS, SLICE_SECONDS, Arrival, LaneReader

# Not a divisor of the slice: float sums never land on a boundary.
DECISION_SECONDS = 0.0011
PER_SLICE = math.ceil(SLICE_SECONDS / DECISION_SECONDS)
PER_HOLD = math.ceil(HOLD_SECONDS / (PER_SLICE * DECISION_SECONDS)) * PER_SLICE


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class _Sink(OfflineSink):
    """The worker's ``Sink`` (its ``held`` nesting), on no broker: ``batches`` is what
    each hand-over to librdkafka carried, in order; ``served`` counts ``serve``."""

    def __init__(self) -> None:
        super().__init__(keep=False)
        self.batches: list[list[bytes]] = []
        self.served = 0
        self._leaving = False  # the outermost ``held`` block is handing its records over

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        outer = self._held is None
        with super().held():
            yield
            if outer:
                self.batches.append([])
                self._leaving = True
        self._leaving = False

    def _hand_over(self, producer: Any, topic: str, value: bytes, kwargs: dict[str, Any]) -> None:
        if not self._leaving:
            self.batches.append([])  # produced outside any hold: a hand-over of its own
        self.batches[-1].append(value)
        super()._hand_over(producer, topic, value, kwargs)

    def serve(self) -> None:
        self.served += 1
        super().serve()


class _Assignment:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()

    def owns(self, _tp: Any) -> bool:
        return True


class _Message:
    def __init__(self, offset: int, key: bytes) -> None:
        self._offset, self._key = offset, key

    def topic(self) -> str:
        return "proposals"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return b"{}"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(lanes_module, "time", fake)
    return fake


def _reader(clock: _Clock, sink: _Sink, assignment: _Assignment) -> LaneReader:
    def decide(arrival: Arrival) -> None:
        clock.now += DECISION_SECONDS
        sink.produce("t", b"%d" % arrival.offset)

    return LaneReader(
        config={"bootstrap.servers": "127.0.0.1:1"},
        handlers={"proposals": decide},
        by_key=frozenset({"proposals"}),
        group="g",
        on_error=lambda _a, exc: pytest.fail(f"handler failed: {exc}"),
        assignment=assignment,  # type: ignore[arg-type] # what the decider reads of it
        sink=sink,  # type: ignore[arg-type] # idem
        fatal=lambda exc: pytest.fail(f"fatal: {exc}"),
    )


def _queue(reader: LaneReader, count: int) -> None:
    for offset in range(count):
        reader.lanes.add(Arrival(_Message(offset, b"svc-%d" % (offset % 7))))


def test_a_backlog_is_handed_over_in_holds_of_two_slices(clock: _Clock) -> None:
    assert PER_HOLD == 2 * PER_SLICE  # what the figures in bench/README.md measured

    async def run() -> _Sink:
        sink = _Sink()
        reader = _reader(clock, sink, _Assignment())
        _queue(reader, 3 * PER_HOLD + 3)
        while reader.lanes.waiting:
            await reader._decide_backlog()
        return sink

    sink = asyncio.run(run())
    assert [len(b) for b in sink.batches] == [PER_HOLD, PER_HOLD, PER_HOLD, 3]
    # Every record once.
    assert sorted(int(v) for b in sink.batches for v in b) == list(range(3 * PER_HOLD + 3))


def test_without_a_backlog_each_slice_is_handed_over_at_its_end(clock: _Clock) -> None:
    async def run() -> _Sink:
        sink = _Sink()
        reader = _reader(clock, sink, _Assignment())
        _queue(reader, 2)
        await reader._decide_backlog()  # two records: one slice, the lanes empty
        _queue(reader, 1)
        await reader._decide_backlog()
        return sink

    sink = asyncio.run(run())
    assert [len(b) for b in sink.batches] == [2, 1]
    assert sink.served == 2  # delivery reports served after each hand-over


def test_what_other_tasks_produce_during_a_hold_goes_with_it_in_order(clock: _Clock) -> None:
    async def run() -> _Sink:
        sink = _Sink()
        reader = _reader(clock, sink, _Assignment())
        _queue(reader, 2 * PER_SLICE)

        async def timer() -> None:
            sink.produce("t", b"timer")

        task = asyncio.create_task(timer())  # runs at the hold's first sleep(0)
        await reader._decide_backlog()
        await task
        return sink

    sink = asyncio.run(run())
    assert len(sink.batches) == 1
    batch = sink.batches[0]
    assert batch.index(b"timer") == PER_SLICE  # after the first slice, before the second


def test_a_revocation_ends_the_hold_at_the_next_slice(clock: _Clock) -> None:
    async def run() -> tuple[_Sink, LaneReader]:
        sink = _Sink()
        assignment = _Assignment()
        reader = _reader(clock, sink, assignment)
        _queue(reader, 4 * PER_SLICE)

        async def revoke() -> None:
            assignment.ready.clear()  # Assignment.on_revoked, before it flushes

        task = asyncio.create_task(revoke())
        await reader._decide_backlog()
        await task
        return sink, reader

    sink, reader = asyncio.run(run())
    # Handed over (so the revocation's flush can deliver them), and nothing decided
    # once the assignment was no longer ready.
    assert [len(b) for b in sink.batches] == [PER_SLICE]
    assert reader.lanes.waiting == 3 * PER_SLICE
