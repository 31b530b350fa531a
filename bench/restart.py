"""A restart whose cost does not grow with history: SIGKILL a worker, start it, time it.

``python bench/restart.py [--sizes 0,10000,100000,1000000] [--keys 5000]
[--wide-keys 100000] [--json FILE]``

For each size, on one broker (a local Apache Kafka in a temporary directory, or
``KAFKA_BOOTSTRAP_SERVERS``), on topics of its own:

1. seeds ``size`` state updates straight onto ``state`` with a fast confluent-kafka
   producer: outcomes over ``--keys`` patterns, verdicts of 50 AI systems over six
   days, error budgets of 1,000 services (the records ``streams.state.records``
   builds, with the ids the gate's own would carry);
2. starts ``escalation worker``: it folds every update once (the upgrade path, and
   the old layout's cost on every start), and its partitions' owner writes the
   folded values to ``state.folded``; times it and takes the worker's RSS;
3. once ``state.folded`` covers every update, kills the worker with SIGKILL, starts
   a new one, sends a proposal at once and times (a) until the new worker has its
   state (``escalation_worker_ready``) and (b) until it decides that proposal; its RSS;
4. with ``--wide-keys``, one more run of the largest size over that many patterns:
   the memory of live keys (per 100,000 keys).

Size 0 is the baseline: what a restart costs without any state (the consumer group
waits ``broker_session_timeout``, 10 s, for the killed member; Python starts).
Everything it starts it stops, on failure or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import random
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _common as c
import orjson
from confluent_kafka import Consumer, TopicPartition

from streams import samples
from streams.kafka.admin import CLIENT_LOG, create_topics
from streams.models import encode
from streams.settings import Settings
from streams.state.records import StateUpdate, budget_update, outcome_update, verdict_update

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ROUTES = ("execute", "approve", "assist", "manual")
AI_SYSTEMS = 50
SERVICES = 1_000
PROBE = next(s for s in samples.SCENARIOS if s.expected_level == 2)


def updates(count: int, keys: int, *, seed: int = 14) -> tuple[list[tuple[bytes, bytes]], int]:
    """``count`` encoded state updates and the number of live keys they touch."""
    rng = random.Random(seed)
    now = time.time()
    out: list[tuple[bytes, bytes]] = []
    live: set[bytes] = set()
    for number in range(count):
        roll = rng.random()
        update: StateUpdate
        if roll < 0.6:
            origin = f"bench.outcomes:{number % 4}:{number}:history"
            pattern = f"pattern-{rng.randrange(keys)}"
            update = outcome_update(
                pattern, "rolling_restart", success=rng.random() < 0.9, update_id=origin
            )
        elif roll < 0.9:
            origin = f"bench.outcomes:{number % 4}:{number}:verdicts"
            update = verdict_update(
                f"ai-{rng.randrange(AI_SYSTEMS)}",
                false_positive=rng.random() < 0.1,
                at=now - rng.randrange(6 * 86_400),
                update_id=origin,
            )
        else:
            update = budget_update(
                f"svc-{rng.randrange(SERVICES)}", remaining=rng.random(), at=now + number
            )
        key = update.kafka_key()
        live.add(key)
        out.append((key, update.value()))
    return out, len(live)


def seed(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> float:
    """Produce every update as fast as the client takes them (murmur2, like the gate)."""
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.kafka.admin import producer_config  # noqa: PLC0415

    producer = Producer(
        producer_config(
            bootstrap,
            **{
                "linger.ms": 20,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
            },
        )
    )
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    started = time.perf_counter()
    for number, (key, value) in enumerate(items):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if number % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or failures:
        raise RuntimeError(f"seeding: {left} undelivered, {failures[:1]}")
    return time.perf_counter() - started


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-restart",
                         "logger": CLIENT_LOG})  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in metadata.topics[topic].partitions
        }
    finally:
        consumer.close()


def folded_markers(bootstrap: str, topic: str) -> dict[int, int]:
    """The latest marker of each partition of ``state.folded`` (read to the end)."""
    ends = end_offsets(bootstrap, topic)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-restart",
                         "enable.auto.commit": False, "logger": CLIENT_LOG})  # fmt: skip
    markers: dict[int, int] = {}
    try:
        wanted = {p: end for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, 0) for p in wanted])
        seen = dict.fromkeys(wanted, -1)
        deadline = time.monotonic() + 60
        while any(seen[p] < wanted[p] - 1 for p in wanted) and time.monotonic() < deadline:
            for m in consumer.consume(5_000, timeout=0.5):
                if m.error() is not None:
                    continue
                seen[m.partition()] = m.offset()
                if m.key() == b"_marker" and m.value():
                    markers[m.partition()] = int(orjson.loads(m.value())["through"])
    finally:
        consumer.close()
    return markers


class Run:
    """One size: seed, first start, snapshot, SIGKILL, restart."""

    def __init__(self, args: argparse.Namespace, work: Path, bootstrap: str) -> None:
        self.args = args
        self.work = work
        self.bootstrap = bootstrap
        self.deadline = c.Deadline(args.deadline)

    def say(self, text: str) -> None:
        print(f"[{self.args.deadline - self.deadline.remaining():7.1f}s] {text}", flush=True)

    def worker(self, settings: Settings, name: str) -> tuple[Any, Path, Path]:
        data_dir = settings.data_dir / name
        port_file = data_dir / "metrics.port"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
            "ESCALATION_DATA_DIR": str(data_dir),
            "ESCALATION_METRICS_PORT": "0",
            "ESCALATION_METRICS_ADDR": "127.0.0.1",
            "ESCALATION_METRICS_PORT_FILE": str(port_file),
            "ESCALATION_STORE": "memory://",
            "ESCALATION_PARTITIONS": str(settings.partitions),
            "ESCALATION_STATE_SNAPSHOT_SECONDS": "1",
            "ESCALATION_DEV": "1",
            **({"ESCALATION_INSTANCE_ID": "bench-worker"} if self.args.static else {}),
        }
        log = data_dir / "worker.log"
        process = c.spawn(
            [sys.executable, "-m", "streams.cli", "worker", "--log-level", "INFO"],
            env=env,
            log=log,
            cwd=REPO,
        )
        return process, port_file, log

    def wait_ready(self, process: Any, port_file: Path, log: Path, timeout: float) -> int:
        def port_written() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{c.tail(log)}")
            return port_file.exists() and port_file.read_text().strip() != ""

        if not c.wait_until(port_written, timeout=timeout, deadline=self.deadline, interval=0.02):
            raise RuntimeError(f"no metrics port within {timeout:.0f}s:\n{c.tail(log)}")
        port = int(port_file.read_text())

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{c.tail(log)}")
            return c.metric(port, "escalation_worker_ready") >= 1

        if not c.wait_until(ready, timeout=timeout, deadline=self.deadline, interval=0.02):
            raise RuntimeError(f"not ready within {timeout:.0f}s:\n{c.tail(log)}")
        return port

    def probe(self, number: int) -> tuple[str, bytes, bytes]:
        at = dt.datetime.now(tz=dt.UTC)
        proposal = samples.proposal(PROBE, number, at=at, tag=f"restart{number}-")
        return proposal.proposal_id, proposal.action.target.service.encode(), encode(proposal)

    def measure(self, size: int, keys: int) -> dict[str, Any]:
        prefix = f"bench-{uuid.uuid4().hex[:8]}-restart."
        settings = Settings(
            topic_prefix=prefix,
            partitions=self.args.partitions,
            data_dir=self.work / prefix,
            store="memory://",
            bootstrap_servers=self.bootstrap,
        )
        create_topics(settings, self.bootstrap)
        state = settings.topic("state")
        result: dict[str, Any] = {"updates": size, "pattern_keys": keys}
        items, live = updates(size, keys)
        result["live_keys"] = live
        result["seed_seconds"] = round(seed(self.bootstrap, state, items), 2) if items else 0.0
        del items
        self.say(f"{size:,} updates over {live:,} keys seeded in {result['seed_seconds']}s")
        collector = c.Collector(
            self.bootstrap, [settings.topic(f"decisions.{r}") for r in ROUTES], settings.partitions
        ).start()
        prod = c.producer(self.bootstrap, linger_ms=0)
        first = second = None
        try:
            started = time.perf_counter()
            first, port_file, log = self.worker(settings, "first")
            self.wait_ready(first, port_file, log, timeout=self.args.fold_timeout)
            result["first_start_ready_s"] = round(time.perf_counter() - started, 2)
            result["first_start_rss_mib"] = round((c.rss_kib(first.pid) or 0) / 1024, 1)
            pid, key, value = self.probe(1)
            prod.produce(settings.topic("proposals"), value=value, key=key)
            prod.flush(30)
            if not collector.wait_for([pid], timeout=120, deadline=self.deadline):
                raise RuntimeError(f"first worker did not decide:\n{c.tail(log)}")
            result["first_start_decided_s"] = round(time.perf_counter() - started, 2)
            first_lines = log.read_text(errors="replace").splitlines()
            caught = [line for line in first_lines if "state fold caught up in" in line]
            result["first_fold_s"] = (
                float(caught[-1].split("caught up in ", 1)[1].split("s", 1)[0]) if caught else None
            )
            ends = end_offsets(self.bootstrap, state)

            def folded() -> bool:
                markers = folded_markers(self.bootstrap, settings.topic("state.folded"))
                return all(markers.get(p, 0) >= end for p, end in ends.items())

            if not c.wait_until(folded, timeout=120, deadline=self.deadline, interval=1.0):
                raise RuntimeError("state.folded does not cover the seeded updates")
            result["rss_mib_before_kill"] = round((c.rss_kib(first.pid) or 0) / 1024, 1)
            first.kill()
            first.wait(timeout=30)
            killed = time.perf_counter()
            second, port_file, log = self.worker(settings, "second")
            pid, key, value = self.probe(2)
            prod.produce(settings.topic("proposals"), value=value, key=key)
            prod.flush(30)
            with c.RssSampler(second.pid) as rss:
                self.wait_ready(second, port_file, log, timeout=120)
                result["restart_ready_s"] = round(time.perf_counter() - killed, 2)
                if not collector.wait_for([pid], timeout=120, deadline=self.deadline):
                    raise RuntimeError(f"restarted worker did not decide:\n{c.tail(log)}")
                result["restart_decided_s"] = round(time.perf_counter() - killed, 2)
            result["restart_rss_mib"] = round((c.rss_kib(second.pid) or 0) / 1024, 1)
            result["restart_peak_rss_mib"] = round((rss.peak() or 0) / 1024, 1)
            lines = log.read_text(errors="replace").splitlines()
            loaded = [line for line in lines if "state.folded:" in line]
            result["restart_log"] = loaded[-1].split("] ", 2)[-1].strip() if loaded else ""
            caught = [line for line in lines if "state fold caught up in" in line]
            # The mirror's own time: read state.folded, fold the tail of state.
            result["restart_fold_s"] = (
                float(caught[-1].split("caught up in ", 1)[1].split("s", 1)[0]) if caught else None
            )
        finally:
            collector.close()
            c.stop(first)
            c.stop(second)
        return result


def report(results: list[dict[str, Any]]) -> str:
    head = (
        "| updates | live keys | first start: fold / ready / decided s | RSS MiB | "
        "restart after SIGKILL: fold / ready / decides s | RSS MiB (peak) |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    lines += [
        f"| {r['updates']:,} | {r['live_keys']:,} | {r['first_fold_s']} / "
        f"{r['first_start_ready_s']} / {r['first_start_decided_s']} | "
        f"{r['first_start_rss_mib']} | {r['restart_fold_s']} / {r['restart_ready_s']} / "
        f"{r['restart_decided_s']} | {r['restart_rss_mib']} ({r['restart_peak_rss_mib']}) |"
        for r in results
    ]
    narrow = [r for r in results if r["pattern_keys"] == results[0]["pattern_keys"]]
    lines.append("")

    def ratio(larger: dict[str, Any], smaller: dict[str, Any], name: str) -> str:
        if larger.get(name) is None or smaller.get(name) is None:
            return "n/a"
        return f"x{larger[name] / max(smaller[name], 0.01):.2f}"

    for smaller, larger in itertools.pairwise(narrow):
        if not smaller["updates"]:
            continue
        lines.append(
            f"{smaller['updates']:,} -> {larger['updates']:,} updates "
            f"(x{larger['updates'] / smaller['updates']:.0f}): "
            f"first fold {ratio(larger, smaller, 'first_fold_s')}, "
            f"restart: fold {ratio(larger, smaller, 'restart_fold_s')}, "
            f"ready {ratio(larger, smaller, 'restart_ready_s')}, "
            f"decides {ratio(larger, smaller, 'restart_decided_s')}, "
            f"RSS {ratio(larger, smaller, 'restart_rss_mib')}"
        )
    wide = [r for r in results if r["pattern_keys"] != results[0]["pattern_keys"]]
    if wide and narrow:
        same = next((r for r in narrow if r["updates"] == wide[0]["updates"]), narrow[-1])
        extra_keys = wide[0]["live_keys"] - same["live_keys"]
        extra_mib = wide[0]["restart_rss_mib"] - same["restart_rss_mib"]
        if extra_keys > 0:
            lines.append(
                f"memory of live keys: +{extra_keys:,} keys -> +{extra_mib:.1f} MiB RSS "
                f"({extra_mib / extra_keys * 100_000:.1f} MiB per 100,000 keys); "
                f"restart state ready {wide[0]['restart_ready_s']}s"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0,10000,100000,1000000")
    parser.add_argument("--keys", type=int, default=5_000, help="patterns (history keys)")
    parser.add_argument("--wide-keys", type=int, default=100_000, help="0: no wide run")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--fold-timeout", type=float, default=600.0)
    parser.add_argument("--deadline", type=float, default=3_600.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--static",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="static group membership (ESCALATION_INSTANCE_ID): the restarted worker "
        "rejoins under the killed one's name",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-restart-")))
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap:
            from streams.kafka.launcher import LocalKafka  # noqa: PLC0415

            kafka = LocalKafka(work / "kafka", cache_dir=Settings().kafka_cache_dir)
            stack.enter_context(kafka)
            bootstrap = kafka.bootstrap_servers
        run = Run(args, work, bootstrap)
        plan = [(size, args.keys) for size in sizes]
        if args.wide_keys and sizes:
            plan.append((max(sizes), args.wide_keys))
        try:
            for size, keys in plan:
                run.say(f"size {size:,}, {keys:,} patterns")
                result = run.measure(size, keys)
                results.append(result)
                run.say(orjson.dumps(result).decode())
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            if results:
                print(report(results), flush=True)
            if args.json is not None:
                args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
