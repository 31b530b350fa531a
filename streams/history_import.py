"""``escalation history import`` at real sizes: stream, batch, produce, report.

The file is read a line at a time (memory does not grow with its size), each line is
decoded and validated (an error names ``FILE:LINE`` and the field), lines are grouped
into batches of at most ``MAX_IMPORT_RECORDS`` incidents, and each batch is handed
to ``send`` (one message per batch: on ``control`` an ``import_history`` command the
gate verifies and folds). A producer whose local queue is full is polled until it has
room (never a ``BufferError``). Batches are cut from the file's content alone, so a
rerun of the same file sends the same batches, whose state updates carry ids derived
from that content (``streams.state.records.import_updates``): the gate folds them once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, Self

from streams.errors import EscalationError, InputError
from streams.models import HistoryRecord, decode
from streams.models.messages import MAX_IMPORT_RECORDS

#: A line longer than this is refused (a history record is a few hundred bytes).
MAX_LINE_BYTES = 64 * 1024


@dataclass
class Report:
    """What an import did."""

    incidents: int = 0
    batches: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    patterns: set[str] = field(default_factory=set)
    ai_systems: set[str] = field(default_factory=set)

    @property
    def rate(self) -> float:
        """Incidents per second."""
        return self.incidents / self.seconds if self.seconds > 0 else 0.0

    def summary(self, destination: str) -> str:
        """One line for the user."""
        return (
            f"imported {self.incidents:,} incident(s) in {self.batches:,} signed batch(es) to "
            f"{destination}: {len(self.patterns):,} pattern/action pair(s), "
            f"{len(self.ai_systems):,} AI system(s), {self.seconds:.1f}s "
            f"({self.rate:,.0f} incidents/s)"
        )


class Progress(Protocol):
    """What the import reports as it goes (a rich progress bar, or nothing)."""

    def advance(self, bytes_read: int, incidents: int) -> None: ...


def read_lines(stream: IO[bytes], name: str) -> Iterator[tuple[str, int, bytes]]:
    """``(FILE:LINE, bytes of the line, the line)`` of every non-blank line, streamed."""
    for number, line in enumerate(stream, start=1):
        if len(line) > MAX_LINE_BYTES:
            raise InputError(f"{name}:{number}", f"line longer than {MAX_LINE_BYTES} bytes")
        if line.strip():
            yield f"{name}:{number}", len(line), line
        elif line:
            yield "", len(line), b""


def records(
    lines: Iterable[tuple[str, int, bytes]],
) -> Iterator[tuple[int, HistoryRecord | None]]:
    """Decoded records with the bytes they took (``None``: a blank line); an error names
    ``FILE:LINE: field``."""
    for where, size, line in lines:
        if not line:
            yield size, None
            continue
        try:
            yield size, decode(HistoryRecord, line)
        except InputError as exc:
            raise InputError(f"{where}: {exc.field}" if exc.field else where, exc.reason) from None


def import_history(
    items: Iterable[tuple[int, HistoryRecord | None]],
    send: Callable[[list[HistoryRecord]], None],
    *,
    batch_size: int = MAX_IMPORT_RECORDS,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Report:
    """Batch ``items`` (``(bytes, record)``) and ``send`` each batch; what was sent.

    ``send`` is called with at most ``batch_size`` records, in file order.
    """
    if not 1 <= batch_size <= MAX_IMPORT_RECORDS:
        raise InputError("batch_size", f"must be 1..{MAX_IMPORT_RECORDS}, got {batch_size}")
    report = Report()
    started = clock()
    batch: list[HistoryRecord] = []
    pending_bytes = 0
    for size, record in items:
        report.bytes_read += size
        pending_bytes += size
        if record is None:
            continue
        batch.append(record)
        report.patterns.add(f"{record.pattern}|{record.action_type}")
        report.ai_systems.add(record.ai_system)
        if len(batch) == batch_size:
            send(batch)
            report.incidents += len(batch)
            report.batches += 1
            if progress is not None:
                progress.advance(pending_bytes, len(batch))
            batch, pending_bytes = [], 0
    if batch:
        send(batch)
        report.incidents += len(batch)
        report.batches += 1
    if progress is not None:
        progress.advance(pending_bytes, len(batch))
    report.seconds = clock() - started
    return report


class ProducerLike(Protocol):
    """The part of confluent-kafka's ``Producer`` the sender uses."""

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


class Sender:
    """Produces records without ever raising ``BufferError``; counts what failed."""

    def __init__(self, producer: ProducerLike, topic: str, *, flush_seconds: float = 60.0) -> None:
        self.producer = producer
        self.topic = topic
        self.flush_seconds = flush_seconds
        self.sent = 0
        self.delivered = 0
        self.failures: list[str] = []
        self.waits = 0  # times the local queue was full

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failures.append(str(err))

    def send(self, key: bytes, value: bytes) -> None:
        """Queue one record; a full queue is drained (delivery callbacks run) first."""
        while True:
            try:
                self.producer.produce(self.topic, value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:
                self.waits += 1
                self.producer.poll(0.1)
        self.sent += 1
        self.producer.poll(0)
        if self.failures:
            raise EscalationError(f"{self.topic}: a record was not delivered: {self.failures[0]}")

    def close(self) -> None:
        """Wait for every delivery; raise naming the topic if any failed."""
        left = self.producer.flush(self.flush_seconds)
        if left or self.failures:
            detail = f": {self.failures[0]}" if self.failures else ""
            raise EscalationError(
                f"{left + len(self.failures)} of {self.sent} record(s) not delivered to "
                f"{self.topic}{detail}"
            )


class RichProgress:
    """A rich progress bar on stderr: bytes of the file, incidents, rate."""

    def __init__(self, total_bytes: int | None) -> None:
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar  # noqa: PLC0415

        self.incidents = 0
        self.bar = Bar(
            TextColumn("importing"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[incidents]:,} incidents"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.bar.add_task("import", total=total_bytes, incidents=0)

    def __enter__(self) -> Self:
        self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.bar.stop()

    def advance(self, bytes_read: int, incidents: int) -> None:
        self.incidents += incidents
        self.bar.update(self.task, advance=bytes_read, incidents=self.incidents)


def open_source(source: str) -> tuple[IO[bytes], str, int | None]:
    """The byte stream of ``source`` (``-``: stdin), its shown name and size if known."""
    from streams.files import shown_path  # noqa: PLC0415

    if source == "-":
        return sys.stdin.buffer, "<stdin>", None
    path = Path(source)
    name = shown_path(source)
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise InputError(name, f"cannot read input: {exc.strerror or exc}") from None
    try:
        size: int | None = path.stat().st_size if path.is_file() else None
    except OSError:
        size = None
    return stream, name, size


def producer_for(bootstrap: str, **overrides: Any) -> Any:
    """A confluent-kafka producer for an import: large batches, murmur2 like the gate."""
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.kafka.admin import producer_config  # noqa: PLC0415

    return Producer(producer_config(bootstrap, **{"linger.ms": 20, **overrides}))


def run_import(
    source: str,
    send: Callable[[list[HistoryRecord]], None],
    *,
    progress: bool,
) -> Report:
    """Stream ``source`` (a path or ``-``) through ``send``, with a progress bar on stderr
    when ``progress`` (the command line: on a terminal, or ``--progress``)."""
    stream, name, size = open_source(source)
    try:
        items = records(read_lines(stream, name))
        if not progress:
            report = import_history(items, send)
        else:
            with RichProgress(size) as bar:
                report = import_history(items, send, progress=bar)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if not report.incidents:
        raise InputError(name, "no JSON documents")
    return report
