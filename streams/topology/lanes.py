"""Proposals read ahead by librdkafka and decided one service at a time, in turn.

Why (issue 19, bench/README.md "Storm isolation"): a Kafka partition is a queue, and
proposals are keyed by service, so a storm of proposals for a few services lands in
front of a healthy service's proposal in the same partition, and Faust's one agent
queue puts every partition's records in one line. Measured on this machine, Faust
only *reads* about 4,300 records/s (an agent that acknowledges and does nothing
else) where librdkafka reads 240,000-340,000/s; a 20,000-proposal storm took Faust
longer to read than the gate has to decide a healthy service's Level 4 fix.

So the proposals topic (and, for the same reason, the lifecycle and approvals
topics, one lane per partition: their Faust agent folded every Level 2 entry the
worker had just written, at Faust's rate) is read by a librdkafka consumer on a
thread of its own, ahead of the decisions (up to ``max_waiting`` records), into one
*lane* per record key (proposers key by service, SPEC 2) and partition. The decider
on the event loop takes a lane that was empty first (a healthy service's
proposal), else one proposal from each backlogged lane in turn (``Lanes``): a storm on
ten services makes an eleventh wait for the current slice, not for the storm. Within
a lane the order is the partition's, so each service's proposals are decided in the
order they were written (the velocity guard sees them in order). Across services
a backlog is served round-robin, as it already was across partitions; replay
is unaffected (it re-decides from the context recorded with each decision).

The partitions follow Faust's assignment: this worker reads the partitions whose
numbers Faust gave it of ``outcomes`` (``Assignment.mirror_from``), so one worker
still owns each partition number of every input topic (the audit chain ``proposals:3``,
the lifecycle entries of its Level 2 decisions, the state partition it folds). The
reader is not a group member (``assign``, not ``subscribe``): it stores its offsets
in a consumer group of its own (:func:`offsets_group`), and a partition it never
committed starts where the worker's Faust group had committed it (an upgrade from
the Faust agent decides nothing twice), else at the beginning.

At-least-once as elsewhere (``acks.py``): a position is committed only once every
proposal before it was decided and everything those decisions wrote is on the broker
(``Sink.delivered``); the commit position of a partition is its oldest proposal not
yet decided. On revocation the decider stops (``Assignment.ready``), the sink is
flushed, the positions are committed, and the partitions are unassigned; whatever was
read ahead is dropped and read again by the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition
from faust.types import TP

from streams.errors import DeliveryError
from streams.kafka.sink import Sink
from streams.topology.assignment import Assignment, Fatal
from streams.topology.config import offsets_group

__all__ = ["Arrival", "LaneReader", "Lanes", "Position", "offsets_group"]

log = logging.getLogger(__name__)

#: Proposals read ahead of the decisions, at most (about 1 KB each): the reader thread
#: waits while this many are undecided, and librdkafka stops fetching meanwhile.
MAX_WAITING = 50_000
#: The decider gives the event loop back (Faust's other agents, the timers) after this
#: long deciding; a new proposal's lane joins the round at the next turn.
SLICE_SECONDS = 0.005
#: While a backlog lasts, the records of consecutive slices are handed to librdkafka
#: together, up to this long after the first slice began (two slices): fewer, larger
#: produce requests. At saturation the broker spent 0.24 ms of CPU per proposal with
#: a 2 ms linger and 0.15 ms with 10 ms (bench/README.md), but a 10 ms linger delays
#: every record; this only delays a backlog's. Without a backlog each slice is handed
#: over at its end.
HOLD_SECONDS = 0.010
#: Records the reader hands the event loop at a time (a batch is one callback there).
READ_BATCH = 500
#: Fresh lanes (a record whose lane was empty) taken in a row at most while a backlog
#: waits (``Lanes``): a backlog keeps at least 1/(FRESH_RUN + 1) of the decisions.
FRESH_RUN = 4
#: How often decided positions are committed (as Faust's ``broker_commit_interval``).
COMMIT_SECONDS = 1.0


# One TP per topic-partition, shared by every record of it.
_TPS: dict[tuple[str, int], TP] = {}


class Arrival:
    """A proposal record as the handlers read a Faust event's ``message``."""

    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "tp", "value")

    def __init__(self, message: Any) -> None:
        self.topic: str = message.topic()
        self.partition: int = message.partition()
        self.offset: int = message.offset()
        kind, ms = message.timestamp()
        self.timestamp: float | None = ms / 1000.0 if kind and ms >= 0 else None
        self.key: bytes | None = message.key()
        self.value: bytes | None = message.value()
        tp = _TPS.get((self.topic, self.partition))
        if tp is None:
            tp = _TPS[self.topic, self.partition] = TP(self.topic, self.partition)
        self.tp = tp

    @property
    def message(self) -> Arrival:
        return self


@dataclass
class Position:
    """One partition's read and decided offsets: what may be committed."""

    end: int = -1  # the offset after the last one read; -1 before any
    waiting: deque[int] = field(default_factory=deque)  # read, in offset order
    done: set[int] = field(default_factory=set)  # decided, not yet at the front

    def read(self, offset: int) -> None:
        self.waiting.append(offset)
        self.end = offset + 1

    def decided(self, offset: int) -> None:
        self.done.add(offset)
        waiting, done = self.waiting, self.done
        while waiting and waiting[0] in done:
            done.discard(waiting.popleft())

    def commit_offset(self) -> int | None:
        """The oldest offset not yet decided (what a restart must read first)."""
        if self.waiting:
            return self.waiting[0]
        return self.end if self.end >= 0 else None


def _arrivals(messages: list[Any]) -> list[Arrival]:
    """The reader thread's records as Arrivals (errors logged and dropped).

    Made on the reader thread, not on the event loop: taking a storm's 20,000 records
    there in batches of 2,000 held the decider for 10-20 ms a batch (a Level 4 probe
    waited 120-166 ms after its arrival, measured). The GIL still serialises the
    work, but hands the loop its turn every switch interval.
    """
    arrivals = []
    for message in messages:
        if message.error() is not None:
            log.warning("proposals reader: %s", message.error())
        else:
            arrivals.append(Arrival(message))
    return arrivals


class Lanes:
    """Records waiting to be handled, one FIFO lane per (topic, partition, key).

    A record whose lane was empty (a healthy service's occasional proposal) goes
    before the lanes with a backlog (a storm's services): the *fresh* lanes are taken
    first, each once, and a lane still holding records after its turn joins the
    *backlogged* ring, taken in turn. This is FQ-CoDel's new-flows list (RFC 8290,
    section 4.1), with a quantum of one record. Without it (a single ring, sessions
    6-9) each lane got 1/N of the decision rate: on a slow day (320 decisions/s, 16
    lanes) that was below the probe's own 20/s, and its proposals waited seconds in
    their own lane (bench/README.md, "Storm isolation"). So that a flood of fresh lanes
    cannot starve a backlog (its Level 2 approvals must still reach humans), at most
    ``FRESH_RUN`` fresh turns are taken in a row while a backlog waits.
    """

    def __init__(self) -> None:
        self.lanes: dict[tuple[str, int, bytes | None], deque[Arrival]] = {}
        self.fresh: deque[tuple[str, int, bytes | None]] = deque()
        self.ring: deque[tuple[str, int, bytes | None]] = deque()
        self.waiting = 0
        self._fresh_run = 0  # fresh turns taken since the backlog's last turn

    def add(self, arrival: Arrival, *, by_key: bool = True) -> None:
        """Queue ``arrival`` in its lane: its key's (``by_key``), else its partition's."""
        key = (arrival.topic, arrival.partition, arrival.key if by_key else None)
        lane = self.lanes.get(key)
        if lane is None:
            lane = self.lanes[key] = deque()
            self.fresh.append(key)
        lane.append(arrival)
        self.waiting += 1

    def take(self) -> Arrival | None:
        """The next record: the head of the first fresh lane, else of the backlogged
        lane whose turn it is."""
        if self.fresh and (self._fresh_run < FRESH_RUN or not self.ring):
            key = self.fresh.popleft()
            self._fresh_run += 1
        elif self.ring:
            key = self.ring.popleft()
            self._fresh_run = 0
        else:
            return None
        lane = self.lanes[key]
        arrival = lane.popleft()
        if lane:
            self.ring.append(key)
        else:
            del self.lanes[key]
        self.waiting -= 1
        return arrival

    def clear(self) -> None:
        self.lanes.clear()
        self.fresh.clear()
        self.ring.clear()
        self.waiting = 0
        self._fresh_run = 0


@dataclass
class _Command:
    name: str  # "assign" | "unassign" | "commit"
    epoch: int
    args: Any
    done: Future[Any] = field(default_factory=Future)


class LaneReader:
    """The partitions of this worker's assignment of the topics in ``handlers`` (the
    proposals, lifecycle and approvals), read ahead and handled in lanes (module
    docstring). ``run()`` is the decider, a task on the event loop."""

    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        handlers: Mapping[str, Callable[[Any], object]],
        by_key: frozenset[str],
        group: str,
        on_error: Callable[[Any, Exception], None],
        assignment: Assignment,
        sink: Sink,
        fatal: Fatal,
        on_waiting: Callable[[int], None] | None = None,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        # Topic (full name) -> the handler of its records.
        self.handlers = dict(handlers)
        # Topics with a lane per record key (the proposals, by service); the others get
        # one lane per partition (lifecycle entries and answers: one decision id each).
        self.by_key = by_key
        self.group = group  # the worker's Faust group: where an upgrade starts from
        self.config = {
            **config,
            "group.id": offsets_group(group),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            # Read ahead in larger batches than the default 1 MB per partition.
            "fetch.max.bytes": 16 * 1024 * 1024,
        }
        self.on_error = on_error
        self.assignment = assignment
        self.sink = sink
        self.fatal = fatal
        self.on_waiting = on_waiting or (lambda _n: None)
        self.max_waiting = max_waiting
        self.lanes = Lanes()
        self.positions: dict[tuple[str, int], Position] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._epoch = 0
        self._wake = asyncio.Event()
        self._room = threading.Event()
        self._room.set()
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ event loop side

    def start(self) -> None:
        """Start the reader thread (from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._read, name="proposals-reader", daemon=True)
        self._thread.start()

    async def assign(self, partitions: Iterable[int]) -> None:
        """Read these partitions from their committed positions (a new assignment)."""
        self._new_epoch()
        await self._call("assign", sorted(set(partitions)))

    async def revoke(self) -> None:
        """Commit what was decided and delivered, then stop reading (before the
        partitions move: their next owner starts from these positions)."""
        await self.commit()
        self._new_epoch()
        await self._call("unassign", None)

    async def commit(self) -> None:
        """Commit every partition's decided position, once its outputs are delivered."""
        offsets = {p: pos.commit_offset() for p, pos in self.positions.items()}
        wanted = {p: o for p, o in offsets.items() if o is not None and o != self._committed.get(p)}
        if not wanted:
            return
        await self.sink.delivered()
        epoch = self._epoch
        try:
            await self._call("commit", wanted)
        except KafkaException as exc:
            log.warning("committing proposals positions failed (read again later): %s", exc)
            return
        if epoch == self._epoch:
            self._committed.update(wanted)

    async def run(self) -> None:
        """Decide what the lanes hold, one record per lane in turn, until cancelled."""
        commits = asyncio.create_task(self._commit_every(COMMIT_SECONDS), name="commit-proposals")
        try:
            while True:
                if not self.lanes.waiting:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if not self.assignment.ready.is_set():
                    await self.assignment.ready.wait()
                    continue
                await self._decide_backlog()
        finally:
            commits.cancel()

    async def _decide_backlog(self) -> None:
        """Slices of decisions, their records held together while a backlog lasts (up
        to ``HOLD_SECONDS``). Between slices only ``sleep(0)``: the other tasks run, and
        whatever they produce meanwhile is held with the slices' records (in order; a
        barrier they await returns once the hold ends). A revocation ends the hold at
        the next slice, before the revoked partitions' outputs are flushed."""
        with self.sink.held():
            started = time.perf_counter()
            while True:
                self._decide_slice()
                if (
                    not self.lanes.waiting
                    or not self.assignment.ready.is_set()
                    or time.perf_counter() - started >= HOLD_SECONDS
                ):
                    break
                await asyncio.sleep(0)
        self.sink.serve()  # this hold's share of delivery reports (Sink.serve)
        await asyncio.sleep(0)

    def _decide_slice(self) -> None:
        started = time.perf_counter()
        owns = self.assignment.owns
        take = self.lanes.take
        positions = self.positions
        handlers = self.handlers
        # Inside ``_decide_backlog``'s hold: what the slice produces is handed over with it.
        while self.assignment.ready.is_set():
            arrival = take()
            if arrival is None:
                break
            # A partition revoked meanwhile: not decided, not committed; its next
            # owner reads it again.
            if owns(arrival.tp):
                try:
                    handlers[arrival.topic](arrival)
                except DeliveryError as exc:
                    self.fatal(exc)
                except Exception as exc:
                    log.exception(
                        "%s[%d]@%d failed", arrival.topic, arrival.partition, arrival.offset
                    )
                    self.on_error(arrival, exc)
                position = positions.get(arrival.tp)
                if position is not None:
                    position.decided(arrival.offset)
            # Checked after every record (50 ns against a decision's 700 us): every
            # eighth, as before, let a slice run up to 7 decisions past its 5 ms.
            if time.perf_counter() - started >= SLICE_SECONDS:
                break
        self.on_waiting(self.lanes.waiting)
        if self.lanes.waiting < self.max_waiting // 2:
            self._room.set()

    async def _commit_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            if self.assignment.ready.is_set():
                await self.commit()

    def _new_epoch(self) -> None:
        """Forget everything read under the previous assignment."""
        self._epoch += 1
        self.lanes.clear()
        self.positions.clear()
        self._committed.clear()
        self._room.set()
        self.on_waiting(0)

    async def _call(self, name: str, args: Any) -> Any:
        if self._closing.is_set():
            return None  # stopped: the worker's shutdown committed already
        if self._thread is None:
            self.start()
        command = _Command(name, self._epoch, args)
        self._commands.put(command)
        return await asyncio.wrap_future(command.done)

    def _arrive(self, epoch: int, arrivals: list[Arrival]) -> None:
        if epoch != self._epoch:
            return  # read under an assignment that has since changed
        positions = self.positions
        add = self.lanes.add
        by_key = self.by_key
        for arrival in arrivals:
            position = positions.get(arrival.tp)
            if position is None:
                position = positions[arrival.tp] = Position()
            position.read(arrival.offset)
            add(arrival, by_key=arrival.topic in by_key)
        self.on_waiting(self.lanes.waiting)
        self._wake.set()

    async def close(self) -> None:
        """Stop the reader thread and close its consumer (no commit: see ``revoke``)."""
        self._closing.set()
        self._room.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 10.0)

    # ------------------------------------------------------------ reader thread

    def _read(self) -> None:
        consumer = Consumer(self.config)
        epoch = 0
        loop = self._loop
        if loop is None:
            raise RuntimeError("LaneReader.start() runs on the event loop first")
        try:
            while not self._closing.is_set():
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    epoch = command.epoch
                    self._execute(consumer, command)
                if self.lanes.waiting >= self.max_waiting:
                    self._room.clear()
                    self._room.wait(0.05)
                    continue
                # consume() waits for its whole batch or the timeout: at 200/s a
                # record would wait up to the timeout. poll() returns with the first
                # record; consume(timeout=0) then takes what is already fetched.
                first = consumer.poll(0.05)
                if first is None:
                    continue
                messages = [first, *consumer.consume(num_messages=READ_BATCH, timeout=0)]
                arrivals = _arrivals(messages)
                if arrivals:
                    loop.call_soon_threadsafe(self._arrive, epoch, arrivals)
        except Exception as exc:  # the consumer itself failed: nothing more is decided
            log.exception("proposals reader failed")
            with contextlib.suppress(RuntimeError):  # the loop is closing already
                loop.call_soon_threadsafe(self.fatal, RuntimeError(f"proposals reader: {exc}"))
        finally:
            consumer.close()

    def _execute(self, consumer: Consumer, command: _Command) -> None:
        try:
            result: Any = None
            if command.name == "assign":
                consumer.assign(self._starts(consumer, command.args))
            elif command.name == "unassign":
                consumer.unassign()
            else:
                result = consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in command.args.items()],
                    asynchronous=False,
                )
        except Exception as exc:
            command.done.set_exception(exc)
        else:
            command.done.set_result(result)

    def _starts(self, consumer: Consumer, partitions: list[int]) -> list[TopicPartition]:
        """Each partition at the reader's committed position, else the Faust group's
        (an upgrade from the Faust agent), else the beginning (``auto.offset.reset``)."""
        tps = [TopicPartition(t, p) for t in sorted(self.handlers) for p in partitions]
        if not tps:
            return []
        own = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=30)}
        missing = [TopicPartition(t, p) for (t, p), o in own.items() if o < 0]
        if missing:
            legacy = Consumer({**self.config, "group.id": self.group})
            try:
                for tp in legacy.committed(missing, timeout=30):
                    if tp.offset >= 0:
                        own[(tp.topic, tp.partition)] = tp.offset
            finally:
                legacy.close()
        log.info("lanes read from offsets %s", dict(sorted(own.items())))
        return [TopicPartition(t, p, o if o >= 0 else OFFSET_INVALID) for (t, p), o in own.items()]
