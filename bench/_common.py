"""Shared parts of the pipeline benchmark: processes, producers, a collector, figures.

Everything here is bounded: every wait takes a deadline, every child process is
started in its own session with a parent-death signal (it dies with the benchmark
even after a SIGKILL) and is stopped by its own pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.kafka.admin import CLIENT_LOG, admin_client

_PR_SET_PDEATHSIG = 1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class DeadlineExceededError(Exception):
    """The benchmark's overall deadline passed."""


class Deadline:
    """One overall deadline; every wait asks it how long it may wait."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def cap(self, seconds: float) -> float:
        """``seconds``, or less if the deadline comes first (raises once it has passed)."""
        left = self.remaining()
        if left <= 0:
            raise DeadlineExceededError(f"overall deadline of {self.seconds:g}s passed")
        return min(seconds, left)


# ----------------------------------------------------------------------- processes


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(command: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None) -> Any:
    """A child in its own session (Ctrl-C reaches only us) that dies with this process."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
        )


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> int | None:
    """SIGTERM the child, wait, then SIGKILL it; its exit code."""
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    return process.returncode


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def rss_kib(pid: int) -> int | None:
    """Resident set size of a process (``VmRSS``), KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (every thread), seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine spent busy since boot (``/proc/stat``:
    everything but idle and iowait), to tell a rate bound by the machine from one
    bound by the system measured."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu":
        return None
    ticks = [int(f) for f in fields[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / _CLOCK_TICKS


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append((time.perf_counter(), value))
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def peak(self, since: float = 0.0) -> int | None:
        values = [kib for t, kib in self.samples if t >= since]
        return max(values) if values else None


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus endpoint on loopback."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    url = f"http://127.0.0.1:{port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def metric(port: int, name: str, **labels: str) -> float:
    try:
        return metrics(port).get((name, tuple(sorted(labels.items()))), 0.0)
    except OSError:
        return 0.0


def wait_until(
    condition: Any, *, timeout: float, deadline: Deadline, interval: float = 0.05
) -> bool:
    """Poll ``condition`` until true, ``timeout`` or the overall deadline."""
    end = time.monotonic() + deadline.cap(timeout)
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(min(interval, max(0.0, end - time.monotonic())))
        deadline.cap(1.0)  # raises once the overall deadline passed


# ------------------------------------------------------------------------- kafka


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Plain topics (for the baselines), ``partitions`` each; existing ones are kept."""
    from confluent_kafka.cimpl import NewTopic  # noqa: PLC0415

    admin = admin_client(bootstrap)  # kept alive until every future has resolved
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names],
        operation_timeout=30,
        request_timeout=30,
    )
    for name, future in futures.items():
        try:
            future.result(timeout=30)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"topic {name}: {exc}") from exc


class LagProbe:
    """Committed-offset lag of a consumer group on some topics (it does not join the group)."""

    def __init__(self, bootstrap: str, group: str, topics: list[str]) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "logger": CLIENT_LOG,
            }
        )
        metadata = self._consumer.list_topics(timeout=10)
        self._partitions = [
            TopicPartition(t, p) for t in topics if t in metadata.topics
            for p in metadata.topics[t].partitions
        ]  # fmt: skip

    def lag(self) -> int | None:
        """Messages not yet committed by the group, or None when the broker did not answer."""
        try:
            total = 0
            for tp in self._consumer.committed(self._partitions, timeout=10):
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=10)
                total += high - max(tp.offset, 0)
        except Exception:
            return None
        return total

    def wait_zero(self, *, timeout: float, deadline: Deadline) -> float | None:
        """Wait until the lag is 0; the ``perf_counter`` instant it was seen, or None."""
        seen: list[float] = []

        def zero() -> bool:
            if self.lag() == 0:
                seen.append(time.perf_counter())
                return True
            return False

        wait_until(zero, timeout=timeout, deadline=deadline, interval=0.2)
        return seen[0] if seen else None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()


def records_by_topic(bootstrap: str, prefix: str) -> dict[str, int]:
    """Records ever written to each topic whose name starts with ``prefix``."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-offsets", "logger": CLIENT_LOG}
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        return {
            name: sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in topic.partitions
            )
            for name, topic in metadata.topics.items()
            if name.startswith(prefix)
        }
    except Exception:
        return {}
    finally:
        consumer.close()


def producer(bootstrap: str, *, linger_ms: int, **extra: Any) -> Producer:
    """The bench's producer: acks=all, large batches and queues; ``extra`` on top."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "logger": CLIENT_LOG,
            "log.connection.close": False,
            **extra,
        }
    )


Item = tuple[str, bytes, bytes]  # proposal id, key, value


@dataclass
class Sent:
    """Send instants (``perf_counter``) by proposal id, and delivery failures."""

    at: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failures.append(str(err))


def produce_fast(prod: Producer, topic: str, items: list[Item], sent: Sent) -> float:
    """Produce every item as fast as the client takes them; returns the seconds it took."""
    start = time.perf_counter()
    for number, (pid, key, value) in enumerate(items):
        sent.at[pid] = time.perf_counter()
        while True:
            try:
                prod.produce(topic, value=value, key=key, on_delivery=sent.delivered)
                break
            except BufferError:
                prod.poll(0.05)
        if number % 1000 == 0:
            prod.poll(0)
    remaining = prod.flush(60)
    if remaining:
        sent.failures.append(f"{remaining} not delivered within 60s")
    return time.perf_counter() - start


def produce_paced(
    prod: Producer,
    topic: str,
    items: Iterable[Item],
    sent: Sent,
    *,
    rate: float,
    stop: threading.Event | None = None,
) -> float:
    """Produce at ``rate`` per second on a fixed schedule; returns the seconds it took."""
    start = time.perf_counter()
    for number, (pid, key, value) in enumerate(items):
        if stop is not None and stop.is_set():
            break
        due = start + number / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent.at[pid] = time.perf_counter()
        prod.produce(topic, value=value, key=key, on_delivery=sent.delivered)
        prod.poll(0)
    prod.flush(60)
    return time.perf_counter() - start


class Collector:
    """Reads output topics from the beginning; first arrival per proposal id.

    One consumer and thread per topic, as in production, where executors read
    ``decisions.execute`` and the approval bridge ``decisions.approve``, each on its
    own: with one consumer for every topic, a storm's 20,000 Level 2 decisions queued
    ahead of the Level 4 probe's in the bench's own fetch queue, and the probe's
    latency measured the bench's backlog, not the gate's."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int) -> None:
        self.first: dict[str, float] = {}
        self.counts: Counter[str] = Counter()
        self.levels: dict[str, tuple[int, str]] = {}
        self.other = 0  # messages that are not decisions (execute/abort commands)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumers = []
        for topic in topics:
            consumer = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"bench-collector-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 20,
                    "logger": CLIENT_LOG,
                    "log.connection.close": False,
                }
            )
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
            self._consumers.append(consumer)
        self._threads = [
            threading.Thread(target=self._run, args=(consumer,), name="collector", daemon=True)
            for consumer in self._consumers
        ]
        self.error: str | None = None

    def start(self) -> Collector:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                consumer.close()

    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                # poll() returns as soon as one message is there (consume() would wait
                # for its whole batch or its timeout: up to 50 ms added to a latency);
                # then take whatever else is already fetched without waiting.
                first = consumer.poll(0.05)
                if first is None:
                    continue
                now = time.perf_counter()
                messages = [first, *consumer.consume(num_messages=2000, timeout=0)]
                parsed = []
                for message in messages:
                    raw = message.value()
                    if message.error() is not None or not raw:
                        continue
                    value = orjson.loads(raw)
                    parsed.append(value)
                with self._lock:
                    for value in parsed:
                        kind = value.get("type")
                        if kind not in (None, "decision"):
                            self.other += 1
                            continue
                        pid = value.get("proposal_id")
                        self.counts[pid] += 1
                        if pid not in self.first:
                            self.first[pid] = now
                            if kind == "decision":
                                self.levels[pid] = (value["level"], value["deciding_rule"])
        except Exception as exc:  # surfaced by the waits
            self.error = repr(exc)

    def have(self, ids: list[str]) -> int:
        with self._lock:
            return sum(1 for pid in ids if pid in self.first)

    def wait_for(self, ids: list[str], *, timeout: float, deadline: Deadline) -> bool:
        def done() -> bool:
            if self.error:
                raise RuntimeError(f"collector failed: {self.error}")
            return self.have(ids) == len(ids)

        return wait_until(done, timeout=timeout, deadline=deadline, interval=0.02)

    def arrivals(self, ids: list[str]) -> list[float]:
        with self._lock:
            return [self.first[pid] for pid in ids if pid in self.first]

    def duplicates(self, ids: list[str]) -> int:
        with self._lock:
            return sum(max(0, self.counts[pid] - 1) for pid in ids)


# ------------------------------------------------------------------------ figures


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(len(sorted_values), rank) - 1]


def latency_summary(sent: dict[str, float], collector: Collector) -> dict[str, Any]:
    """p50/p95/p99/max in milliseconds of send -> first arrival, over the ids sent."""
    ids = list(sent)
    with collector._lock:  # noqa: SLF001 - same module
        values = sorted(
            (collector.first[pid] - sent[pid]) * 1000 for pid in ids if pid in collector.first
        )
    return {
        "count": len(values),
        "missing": len(ids) - len(values),
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": values[-1] if values else float("nan"),
        "mean_ms": sum(values) / len(values) if values else float("nan"),
    }


def jit_cpu_seconds(pid: int) -> float | None:
    """CPU seconds spent by a HotSpot JVM's JIT compiler threads (``C1``/``C2 CompilerThre``)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                stat = (task / "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                if "CompilerThre" in name:
                    fields = stat[stat.rindex(")") + 2 :].split()
                    total += int(fields[11]) + int(fields[12])
    except OSError:
        return None
    return total / _CLOCK_TICKS


def warm_broker(
    bootstrap: str, topic: str, *, seconds: float, partitions: int, deadline: Deadline
) -> int:
    """Produce and consume (idempotent, acks=all, committed group) for ``seconds``.

    A fresh broker's JVM compiles its hot paths during the first minute of load, and
    the compiler takes most of a core on a small machine: whichever system ran first
    used to be measured on a cold broker. Returns the records moved.
    """
    create_topics(bootstrap, [topic], partitions)
    prod = producer(bootstrap, linger_ms=5)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{topic}-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 200,
            "logger": CLIENT_LOG,
            "log.connection.close": False,
        }
    )
    consumer.subscribe([topic])
    values = [os.urandom(size // 2).hex().encode() for size in (200, 600, 1500, 5000)]
    moved = 0
    end = time.monotonic() + deadline.cap(seconds)
    try:
        while time.monotonic() < end:
            for number in range(2000):
                value = values[number % len(values)]
                while True:
                    try:
                        prod.produce(topic, value=value, key=str(number % 64).encode())
                        break
                    except BufferError:
                        prod.poll(0.05)
            prod.poll(0)
            for message in consumer.consume(2000, timeout=0.5):
                if message.error() is None:
                    moved += 1
        prod.flush(30)
    finally:
        consumer.close()
    return moved


def keyed_producer(bootstrap: str, *, linger_ms: int) -> Producer:
    """:func:`producer` with Kafka's Java partitioner (murmur2), as the gate expects.

    librdkafka hashes keys with CRC32 by default: a proposal keyed by service lands on
    another partition than the service's, and the gate re-produces it to the right
    one (``streams/handlers/placement.py``): it reads such a proposal twice and audits
    the move. AI producers are expected to use murmur2; so does the bench.
    """
    return producer(bootstrap, linger_ms=linger_ms, partitioner="murmur2_random")


# --------------------------------------------------------------- figures by level

LEVEL_KEYS = ("L0", "L1", "L2", "L3", "L4")


def level_mix(ids: Iterable[str], collector: Collector) -> dict[str, int]:
    """Decisions by level (``"0"`` .. ``"4"``) among ``ids`` (those decided so far)."""
    with collector._lock:  # noqa: SLF001 - same module
        levels = Counter(collector.levels[pid][0] for pid in ids if pid in collector.levels)
    return {str(k): levels[k] for k in range(5)}


def deciding_rules(ids: Iterable[str], collector: Collector) -> dict[str, int]:
    """Decisions by deciding rule among ``ids``, most frequent first."""
    with collector._lock:  # noqa: SLF001 - same module
        rules = Counter(collector.levels[pid][1] for pid in ids if pid in collector.levels)
    return dict(rules.most_common())


def latency_by_level(sent: dict[str, float], collector: Collector) -> dict[str, dict[str, Any]]:
    """:func:`latency_summary` for every level (``L0`` .. ``L4``) and for ``all``.

    A proposal's level is its decision's (read by the collector); an output without
    a level (a forwarder's) counts in ``all`` only.
    """
    with collector._lock:  # noqa: SLF001 - same module
        by_level: dict[str, dict[str, float]] = {key: {} for key in LEVEL_KEYS}
        for pid, at in sent.items():
            decided = collector.levels.get(pid)
            if decided is not None:
                by_level[f"L{decided[0]}"][pid] = at
    out = {"all": latency_summary(sent, collector)}
    for key, subset in by_level.items():
        out[key] = latency_summary(subset, collector)
    return out


# ------------------------------------------------------------------ a large fleet


@dataclass(frozen=True)
class FleetSeed:
    """What :meth:`Fleet.seed` produced: the messages and the state updates they make."""

    messages: int
    # escalation_state_updates_applied_total{table} a worker reaches once it folded them
    applied: dict[str, int]


class Fleet:
    """Proposals spread over a large fleet, keyed by service, reaching every level.

    The ten sample scenarios (``streams.samples.SCENARIOS``) in turn, as today's
    workload, but each proposal names one of ``services`` services (``svc-00000``
    ...) and one of ``patterns`` variants of its scenario's failure pattern
    (``oom-kill/stateless-deployment#007``). Every variant gets its scenario's
    history and re-qualification, every service a healthy error budget, so each
    scenario reaches the level it reaches in the sample fleet.

    The velocity guard allows ``max_per_service`` autonomous executions per service
    and window (the policy's 3 per 10 minutes). The scenarios that reach Level 3 or 4
    take the fleet's services in turn (their own cursor), so a service sees its
    second autonomous proposal only after every other service saw its first: with
    20,000 services a run of under 60,000 autonomous proposals never trips the
    per-service limit, and what the guard holds is what the fleet limit holds. The
    other scenarios take services in turn on a second cursor. One ``Fleet`` keeps its
    cursors over every phase of one deployment (its velocity state lasts the run).
    """

    def __init__(self, services: int = 20_000, patterns: int = 100) -> None:
        from streams import samples  # noqa: PLC0415

        self.services = max(1, services)
        self.patterns = max(1, patterns)
        self._samples = samples
        self._lock = threading.Lock()
        self._number = 0
        self._autonomous = 0
        self._other = 0
        self.scenarios = samples.SCENARIOS

    @staticmethod
    def service(index: int) -> str:
        return f"svc-{index:05d}"

    def _variant(self, scenario: Any, variant: int, service: str) -> Any:
        import dataclasses  # noqa: PLC0415

        changes: dict[str, Any] = {"pattern": f"{scenario.pattern}#{variant:03d}"}
        changes["service"] = service
        if scenario.name == "payments":
            # Regulated by its namespace (HIPAA in the shipped policy), not by one of
            # the three regulated service names: spread like every other scenario.
            changes["namespace"] = "ehr"
        return dataclasses.replace(scenario, **changes)

    def _next(self, tag: str, start: Any, scenarios: tuple[Any, ...]) -> Item:
        with self._lock:
            number = self._number
            self._number += 1
            scenario = scenarios[number % len(scenarios)]
            if scenario.expected_level >= 3:
                index = self._autonomous
                self._autonomous += 1
            else:
                index = self._other
                self._other += 1
        variant = (number // len(scenarios)) % self.patterns
        fleet = self._variant(scenario, variant, self.service(index % self.services))
        p = self._samples.proposal(fleet, number, at=start, tag=tag)
        from streams.models import encode  # noqa: PLC0415

        return p.proposal_id, p.action.target.service.encode(), encode(p)

    def proposals(self, tag: str, count: int, *, max_level: int = 4) -> list[Item]:
        """``count`` proposals, every scenario in turn (those up to ``max_level`` only)."""
        import datetime as dt  # noqa: PLC0415

        scenarios = tuple(s for s in self.scenarios if s.expected_level <= max_level)
        start = dt.datetime.now(tz=dt.UTC)
        return [self._next(tag, start, scenarios) for _ in range(count)]

    def stream(self, tag: str) -> Any:
        """Endless proposals, every scenario in turn (a steady stream of unknown length)."""
        import datetime as dt  # noqa: PLC0415

        start = dt.datetime.now(tz=dt.UTC)
        while True:
            yield self._next(tag, start, self.scenarios)

    def history_records(self, now: Any) -> list[Any]:
        """Every variant's seeded history (the sample scenarios', all true positives)."""
        import datetime as dt  # noqa: PLC0415

        from streams.models import HistoryRecord  # noqa: PLC0415

        records = []
        for variant in range(self.patterns):
            done: set[tuple[str, str]] = set()
            for scenario in self.scenarios:
                key = (scenario.pattern, scenario.action)
                if key in done or scenario.ai_system != "holmesgpt" or not scenario.history:
                    continue
                done.add(key)
                pattern = f"{scenario.pattern}#{variant:03d}"
                records += [
                    HistoryRecord(
                        pattern=pattern,
                        action_type=scenario.action,
                        outcome="success",
                        ai_system="holmesgpt",
                        verdict="true_positive",
                        service=self.service(variant % self.services),
                        at=now + dt.timedelta(seconds=-86_400 + i),
                    )
                    for i in range(scenario.history)
                ]
        return records

    def requalified(self) -> list[tuple[str, str]]:
        """(pattern, action type) of every re-qualified automation of the fleet."""
        pairs = dict.fromkeys(
            (f"{s.pattern}#{variant:03d}", s.action)
            for variant in range(self.patterns)
            for s in self.scenarios
            if s.requalify
        )
        return list(pairs)

    def seed(self, topic: Any, bootstrap: str, now: Any, ids: Any) -> FleetSeed:
        """History (``import_history`` batches, as ``escalation history import`` sends
        them), a budget of 0.9 for every service and the re-qualifications, signed as
        the keyring requires; ``topic(name)`` names a topic of the deployment."""
        from streams.models import ControlCommand, ErrorBudgetUpdate, encode  # noqa: PLC0415
        from streams.signing import history_commands, sign, sign_command  # noqa: PLC0415
        from streams.state.records import import_updates  # noqa: PLC0415

        prod = keyed_producer(bootstrap, linger_ms=5)
        alice = ids.person("alice")
        applied = {"history": 0, "budgets": 0, "requalification": 0}
        messages = 0

        def send(name: str, key: bytes, value: bytes) -> None:
            nonlocal messages
            while True:
                try:
                    prod.produce(topic(name), key=key, value=value)
                    break
                except BufferError:
                    prod.poll(0.05)
            messages += 1

        for command in history_commands(self.history_records(now), user="alice"):
            # One history update per (pattern, action) of a batch (records.import_updates).
            applied["history"] += sum(
                1 for u in import_updates(command.records) if u.table == "history"
            )
            send("control", b"control", encode(sign_command(command, alice)))
        slo = ids.slo()
        for index in range(self.services):
            budget = ErrorBudgetUpdate(
                schema_version=1,
                service=self.service(index),
                remaining=0.9,
                at=now,
                source=slo.name,
            )
            send("error-budgets", budget.service.encode(), encode(sign(budget, slo)))
            applied["budgets"] += 1
        for pattern, action in self.requalified():
            command = ControlCommand(
                schema_version=1,
                command="requalify",
                user="alice",
                pattern=pattern,
                action_type=action,
                reason="quarterly re-qualification review",
                at=now,
            )
            send("control", b"control", encode(sign_command(command, alice)))
            applied["requalification"] += 1
        remaining = prod.flush(60)
        if remaining:
            raise RuntimeError(f"fleet seed: {remaining} messages not delivered within 60s")
        return FleetSeed(messages, applied)


def group_members(bootstrap: str, group: str) -> list[tuple[str, dict[str, list[int]]]]:
    """``(client id, {topic: partitions})`` of every member of a consumer group."""
    admin = admin_client(bootstrap)
    futures = admin.describe_consumer_groups([group], request_timeout=10)
    description = futures[group].result(timeout=15)
    out = []
    for member in description.members:
        held: dict[str, list[int]] = {}
        for tp in member.assignment.topic_partitions if member.assignment else []:
            held.setdefault(tp.topic, []).append(tp.partition)
        out.append((member.client_id, {t: sorted(ps) for t, ps in held.items()}))
    return out


# ---------------------------------------------------------------------- a bench's run


class Interrupted(BaseException):
    """SIGTERM or SIGINT (a BaseException: the phases' ``except Exception`` let it pass)."""


def bound_run(deadline: float) -> None:
    """SIGTERM and SIGINT raise :class:`Interrupted`; past ``deadline`` seconds (and a
    margin) SIGALRM raises :class:`DeadlineExceededError`."""

    def interrupted(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    def overdue(_signum: int, _frame: Any) -> None:
        raise DeadlineExceededError(f"overall deadline of {deadline:g}s passed")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGALRM, overdue)
    signal.alarm(max(1, int(deadline + 5)))


def end_run() -> None:
    """No alarm any more, and a second Ctrl-C must not cut the clean-up short."""
    signal.alarm(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def broker(stack: contextlib.ExitStack, work: Path) -> tuple[str, int | None]:
    """``KAFKA_BOOTSTRAP_SERVERS``, or a local Apache Kafka in ``work`` that ``stack``
    stops: its bootstrap address and its pid (None for a broker given)."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if bootstrap:
        return bootstrap, None
    from streams.kafka.launcher import LocalKafka  # noqa: PLC0415
    from streams.settings import Settings  # noqa: PLC0415

    print("starting a local Apache Kafka (KRaft) ...", flush=True)
    kafka = LocalKafka(work / "kafka", cache_dir=Settings().kafka_cache_dir)
    stack.enter_context(kafka)
    return kafka.bootstrap_servers, kafka.pid


def loadavg() -> str:
    """The load average over 1, 5 and 15 minutes, as ``/proc/loadavg`` gives it."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def worker_env(
    bootstrap: str, *, prefix: str, data_dir: Path, store: str, partitions: int,
    policy_file: Path, **extra: str,
) -> dict[str, str]:  # fmt: skip
    """The environment of a bench's ``escalation worker``: its topics, state directory,
    a metrics port it picks and writes to ``data_dir/metrics.port``; ``extra`` last."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ESCALATION_TOPIC_PREFIX": prefix,
        "ESCALATION_DATA_DIR": str(data_dir),
        "ESCALATION_METRICS_PORT": "0",
        "ESCALATION_METRICS_ADDR": "127.0.0.1",
        "ESCALATION_METRICS_PORT_FILE": str(data_dir / "metrics.port"),
        "ESCALATION_STORE": store,
        "ESCALATION_PARTITIONS": str(partitions),
        "ESCALATION_POLICY_FILE": str(policy_file),
        **extra,
    }


def write_figures(path: Path, *, script: str, args: Any, bench: Any, **extra: Any) -> None:
    """A bench's figures as JSON: when, where, the command, the code and its args, then
    ``bench.results``, ``bench.notes`` and ``extra`` (a bench's own sections)."""
    import datetime as dt  # noqa: PLC0415
    import platform  # noqa: PLC0415
    import shlex  # noqa: PLC0415
    import sys  # noqa: PLC0415

    payload = {
        "date": dt.datetime.now(tz=dt.UTC).isoformat(),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "command": shlex.join(["python", script, *sys.argv[1:]]),
        "code": bench.version,
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": bench.results,
        **extra,
        "notes": bench.notes,
    }
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
