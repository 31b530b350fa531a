"""``streams.history_import``: streamed, batched, never a BufferError, reported (no broker)."""

from __future__ import annotations

import datetime as dt
import io
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams.errors import EscalationError, InputError
from streams.history_import import (
    Report,
    Sender,
    import_history,
    open_source,
    read_lines,
    records,
)
from streams.models import HistoryRecord
from streams.state.records import import_updates

AT = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _line(number: int) -> bytes:
    return (
        orjson.dumps(
            {
                "pattern": f"pattern-{number % 7}",
                "action_type": "rolling_restart",
                "outcome": "success" if number % 5 else "failure",
                "ai_system": f"ai-{number % 3}",
                "verdict": "true_positive" if number % 4 else "false_positive",
                "at": (AT + dt.timedelta(seconds=number)).isoformat(),
            }
        )
        + b"\n"
    )


def _file(count: int, *, blank_every: int = 0) -> io.BytesIO:
    body = b"".join(
        _line(n) + (b"\n" if blank_every and n % blank_every == 0 else b"") for n in range(count)
    )
    return io.BytesIO(body)


def test_batches_of_at_most_500_in_file_order_and_a_report() -> None:
    batches: list[list[HistoryRecord]] = []
    stream = _file(1_234, blank_every=100)
    report = import_history(records(read_lines(stream, "h.jsonl")), batches.append)
    assert [len(b) for b in batches] == [500, 500, 234]
    assert [r.at for b in batches for r in b] == [
        AT + dt.timedelta(seconds=n) for n in range(1_234)
    ]
    assert (report.incidents, report.batches) == (1_234, 3)
    assert report.bytes_read == len(stream.getvalue())
    assert (len(report.patterns), len(report.ai_systems)) == (7, 3)
    line = report.summary("escalation.control")
    assert "1,234 incident(s) in 3 signed batch(es)" in line
    assert "escalation.control" in line


def test_a_rerun_sends_the_same_batches_so_the_same_update_ids() -> None:
    first: list[list[HistoryRecord]] = []
    second: list[list[HistoryRecord]] = []
    import_history(records(read_lines(_file(1_100), "a")), first.append)
    import_history(records(read_lines(_file(1_100), "a")), second.append)
    ids = [{u.body["id"] for u in import_updates(b)} for b in first]
    assert ids == [{u.body["id"] for u in import_updates(b)} for b in second]
    assert len({i for batch in ids for i in batch}) == 3  # one id per batch


def test_a_bad_line_names_the_file_the_line_and_the_field() -> None:
    stream = io.BytesIO(_line(1) + b'{"pattern": "x", "action_type": "y"}\n')
    with pytest.raises(InputError) as caught:
        import_history(records(read_lines(stream, "past.jsonl")), lambda _b: None)
    assert str(caught.value.field).startswith("past.jsonl:2")
    with pytest.raises(InputError) as caught:
        list(records(read_lines(io.BytesIO(b"not json\n"), "past.jsonl")))
    assert str(caught.value.field).startswith("past.jsonl:1")
    with pytest.raises(InputError, match="longer than"):
        list(read_lines(io.BytesIO(b"{" + b" " * 70_000 + b"}\n"), "big.jsonl"))
    with pytest.raises(InputError):
        import_history([], lambda _b: None, batch_size=501)


def _endless(count: int) -> Iterator[bytes]:
    for n in range(count):
        yield _line(n)


class _Stream(io.RawIOBase):
    """A file of ``count`` lines made as it is read (nothing of it is held)."""

    def __init__(self, count: int) -> None:
        self._lines = _endless(count)
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._rest:
            try:
                self._rest = next(self._lines)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._rest))
        buffer[:size] = self._rest[:size]
        self._rest = self._rest[size:]
        return size


def test_memory_does_not_grow_with_the_file() -> None:
    def peak(count: int) -> int:
        sent = [0]

        def send(batch: list[HistoryRecord]) -> None:
            sent[0] += len(batch)

        tracemalloc.start()
        try:
            stream = io.BufferedReader(_Stream(count))
            import_history(records(read_lines(stream, "big")), send)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(2_000), peak(20_000)
    # Ten times the incidents, the same peak (within a batch's worth of noise).
    assert large < small * 1.5, (small, large)


class _FullQueueProducer:
    """A producer whose local queue holds ``room`` records until polled."""

    def __init__(self, room: int, fail: int = -1) -> None:
        self.room = room
        self.queued: list[tuple[bytes, Any]] = []
        self.delivered: list[bytes] = []
        self.fail = fail
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        del topic, key
        if len(self.queued) >= self.room:
            raise BufferError("Local: Queue full")
        self.queued.append((value, on_delivery))

    def poll(self, timeout: float) -> int:
        del timeout
        self.polls += 1
        done, self.queued = self.queued, []
        for value, callback in done:
            error = "broker said no" if len(self.delivered) == self.fail else None
            self.delivered.append(value)
            callback(error, None)
        return len(done)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0


def test_a_full_queue_is_drained_never_a_buffer_error() -> None:
    producer = _FullQueueProducer(room=3)

    class LazyProducer(_FullQueueProducer):
        def poll(self, timeout: float) -> int:
            # Like librdkafka: poll(0) serves callbacks only for what was sent.
            if timeout == 0:
                return 0
            return super().poll(timeout)

    lazy = LazyProducer(room=3)
    for target, full in ((producer, False), (lazy, True)):
        sender = Sender(target, "t")
        for n in range(50):
            sender.send(b"k", b"%d" % n)
        sender.close()
        assert target.delivered == [b"%d" % n for n in range(50)]
        assert sender.sent == sender.delivered == 50
        assert (sender.waits > 0) is full


def test_a_failed_delivery_is_one_error_naming_the_topic() -> None:
    sender = Sender(_FullQueueProducer(room=1, fail=2), "escalation.control")

    def send_all() -> None:
        for n in range(10):
            sender.send(b"k", b"%d" % n)

    with pytest.raises(EscalationError, match=r"escalation\.control"):
        send_all()


def test_a_missing_file_is_an_input_error(tmp_path: Any) -> None:
    with pytest.raises(InputError) as caught:
        open_source(str(tmp_path / "nope.jsonl"))
    assert caught.value.field == str(tmp_path / "nope.jsonl")
    path = tmp_path / "h.jsonl"
    path.write_bytes(_line(1))
    stream, name, size = open_source(str(path))
    with stream:
        assert (name, size) == (str(path), len(_line(1)))


def test_an_empty_report_has_no_rate() -> None:
    assert Report().rate == 0.0
