"""Under load and faults: the gate on a real broker against two forwarding baselines.

``python bench/pipeline.py [--count 20000] [--rate 500] [--seconds 20] [--json FILE]``

In one run, on one broker (a local Apache Kafka in a temporary directory, or
``KAFKA_BOOTSTRAP_SERVERS``), one system at a time:

- **gate**: ``python -m streams.cli worker`` under ``bench/policy-fleet.yaml``, fed
  a fleet's proposals (``_common.Fleet``: the ten sample scenarios in turn over
  20,000 services and 100 variants of each failure pattern, keyed by service), with
  every variant's history and re-qualification and every service's budget seeded;
  decisions read back from the four ``decisions.*`` topics, their level kept.
- **faust**: ``bench/forwarder.py``, a Faust agent with the gate's ``faust.App``
  settings that forwards each message unchanged (the floor of any Faust app).
- **confluent**: ``bench/forwarder.py --engine confluent``, a plain confluent-kafka
  consume-and-produce loop in one process.

Measured (every figure that matters is a ratio within this run, because the machine
is shared):

1. throughput: N proposals produced as fast as the client takes them; decisions per
   second from the first output consumed to the last (gate, faust, confluent);
   ``--repeat`` runs (3) per system, the median run reported and compared;
2. end-to-end latency at a steady rate (gate, faust): produce instant -> the
   consumer's first read of that proposal's output, p50/p95/p99/max;
   at ``--low-rate`` and then ``--rate``, for all decisions and per level;
3. burst (gate): a burst produced at full speed on top of a steady stream; drain
   time, lost and duplicated decisions by proposal id, worker RSS before/peak/after;
4. ``--profile``: py-spy samples the gate during its throughput run and its burst;
   ``bench/profile-gate.txt`` gets the report;
5. scale-out (``scale``): fresh deployments of one and of ``--workers`` gate workers
   (one consumer group, static instance ids) on ``--scale-partitions`` partitions:
   throughput and latency at ``--rate`` of each, and the ratio.

Everything it starts (broker, workers, py-spy) it stops, on Ctrl-C, failure or the
overall ``--deadline`` too. Exit code 0 when it measured everything (targets missed
are reported, not failed), 1 when a phase failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _common as c

from streams import samples
from streams.files import read_policy
from streams.identities import DevIdentities
from streams.models import encode
from streams.settings import Settings

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DECISION_ROUTES = ("execute", "approve", "assist", "manual")
# Issue 19's targets: throughput against the Faust forwarder; p99 at --rate for all
# decisions and for Level 4; Levels 3 and 4 at least this share of the decisions.
TARGET_THROUGHPUT_RATIO = 0.90
TARGET_P99_MS = 20.0
TARGET_AUTONOMOUS_SHARE = 0.20
WARM_UP = 60
# Warm-up uses scenarios that never reach Level 3/4, so the velocity guard's budget
# is left to the measured run.
WARM_UP_SCENARIOS = tuple(s for s in samples.SCENARIOS if s.expected_level <= 2)
SHIPPED_POLICY = REPO / "policies" / "escalation-policy.yaml"
FLEET_POLICY = BENCH / "policy-fleet.yaml"
# What bench/policy-fleet.yaml may change in the shipped policy (its header says why).
FLEET_POLICY_CHANGES = frozenset({("policy", "version"), ("velocity", "max_fleet")})
SYSTEMS = ("gate", "faust", "confluent", "scale")


# ---------------------------------------------------------------------- workload


def proposals(
    tag: str, count: int, *, scenarios: tuple[samples.Scenario, ...] = samples.SCENARIOS
) -> list[c.Item]:
    """``count`` sample proposals cycling through ``scenarios``: (id, key, JSON bytes)."""
    start = dt.datetime.now(tz=dt.UTC)
    out = []
    for number in range(count):
        scenario = scenarios[number % len(scenarios)]
        p = samples.proposal(scenario, number, at=start, tag=tag)
        out.append((p.proposal_id, p.action.target.service.encode(), encode(p)))
    return out


def proposal_stream(tag: str) -> Iterator[c.Item]:
    """Endless sample proposals, every scenario in turn (for a steady stream of unknown length)."""
    start = dt.datetime.now(tz=dt.UTC)
    for number in itertools.count():
        scenario = samples.SCENARIOS[number % len(samples.SCENARIOS)]
        p = samples.proposal(scenario, number, at=start, tag=tag)
        yield p.proposal_id, p.action.target.service.encode(), encode(p)


class SampleWorkload:
    """The workload before issue 19: the ten services of the sample fleet, every
    scenario in turn (``--workload samples``; with the shipped policy, 0% Level 3/4)."""

    def proposals(self, tag: str, count: int, *, max_level: int = 4) -> list[c.Item]:
        scenarios = tuple(s for s in samples.SCENARIOS if s.expected_level <= max_level)
        return proposals(tag, count, scenarios=scenarios)

    def stream(self, tag: str) -> Iterator[c.Item]:
        return proposal_stream(tag)


Workload = c.Fleet | SampleWorkload


class System:
    """One system under test: its processes, its input topic and a collector of its output."""

    def __init__(
        self,
        name: str,
        process: Any,
        topic: str,
        collector: c.Collector,
        workload: Workload | None = None,
    ) -> None:
        self.name = name
        self.process = process  # the first (or only) worker
        self.processes: list[Any] = [process]
        self.topic = topic
        self.collector = collector
        self.workload: Workload = workload if workload is not None else SampleWorkload()
        self.metrics_port: int | None = None
        self.metrics_ports: list[int] = []
        # Consumer-group lag on every topic the system consumes: work still owed.
        self.lag: c.LagProbe | None = None

    @property
    def decides(self) -> bool:
        """The system is the gate (its outputs are decisions with a level)."""
        return self.name.startswith("gate")

    def cpu_seconds(self) -> float:
        """User + system CPU of every worker of the system, seconds."""
        return sum(c.cpu_seconds(p.pid) or 0.0 for p in self.processes)

    def alive(self) -> None:
        """Raise if a worker has exited (the gate's watchdog exits a stalled worker)."""
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: worker {process.pid} exited with {process.returncode}"
                )

    def wait_for(self, ids: list[str], *, timeout: float, deadline: c.Deadline) -> bool:
        """Until every id's output was read, ``timeout``, or a worker exits (raises)."""

        def done() -> bool:
            self.alive()
            if self.collector.error:
                raise RuntimeError(f"collector failed: {self.collector.error}")
            return self.collector.have(ids) == len(ids)

        return c.wait_until(done, timeout=timeout, deadline=deadline, interval=0.02)

    def settle(self, deadline: c.Deadline, *, timeout: float) -> int | None:
        """Wait until the system has committed everything it consumes; the lag left."""
        if self.lag is None:
            return None
        self.lag.wait_zero(timeout=timeout, deadline=deadline)
        return self.lag.lag()


class Bench:
    def __init__(
        self, args: argparse.Namespace, work: Path, bootstrap: str, broker_pid: int | None = None
    ) -> None:
        self.args = args
        self.broker_pid = broker_pid  # a local broker's (its CPU is in the figures)
        self.work = work
        self.bootstrap = bootstrap
        self.deadline = c.Deadline(args.deadline)
        self.run_id = uuid.uuid4().hex[:8]
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        self.profiles: dict[str, str] = {}  # window -> py-spy's collapsed stacks
        self.version = code_version()
        self.policy_note = self._policy_note()
        self.workload_note = (
            f"fleet of {args.fleet:,} services x {args.patterns} variants of each pattern"
            if args.workload == "fleet"
            else "samples (the ten services of streams.samples)"
        )

    def _policy_note(self) -> str:
        """What the gate's policy changes in the shipped one; a note if the bench's own
        policy changes more than its header says."""
        policy = read_policy(self.args.policy)
        changes = policy_differences(self.args.policy)
        if self.args.policy.resolve() == FLEET_POLICY.resolve():
            extra = [path for path, _, _ in changes if path not in FLEET_POLICY_CHANGES]
            if extra:
                self.notes.append(
                    f"bench/policy-fleet.yaml differs from the shipped policy beyond its header: "
                    f"{['.'.join(p) for p in extra]}"
                )
        shown = ", ".join(f"{'.'.join(k)} {old} -> {new}" for k, old, new in changes)
        return f"v{policy.policy.version}: " + (
            f"the shipped policy with {shown}" if changes else "the shipped policy"
        )

    def say(self, text: str) -> None:
        elapsed = self.args.deadline - self.deadline.remaining()
        print(f"[{elapsed:6.1f}s] {text}", flush=True)

    # ------------------------------------------------------------------ phases

    def warm_broker(self, pid: int | None) -> None:
        """Load the broker in 5 s windows until its JIT compiler is quiet (under 0.05 of
        a core over a window, when the broker is local) or ``--broker-warmup`` passes."""
        limit = self.args.broker_warmup
        self.say(f"warming the broker up (up to {limit:.0f}s, scratch topic, not measured)")
        started = time.perf_counter()
        moved = 0
        share: float | None = None
        while time.perf_counter() - started < limit:
            before = c.jit_cpu_seconds(pid) if pid else None
            window_start = time.perf_counter()
            moved += c.warm_broker(
                self.bootstrap,
                f"bench-warmup-{self.run_id}",
                seconds=min(5.0, limit),
                partitions=self.args.partitions,
                deadline=self.deadline,
            )
            after = c.jit_cpu_seconds(pid) if pid else None
            if before is None or after is None:
                continue  # not a local broker: the whole limit
            share = (after - before) / (time.perf_counter() - window_start)
            if share < 0.05:
                break
        self.results["broker_warmup"] = {
            "seconds": round(time.perf_counter() - started, 1),
            "records": moved,
            "jit_cores_last_window": None if share is None else round(share, 3),
        }
        jit = "unknown (not a local broker)" if share is None else f"{share:.2f} cores"
        self.say(
            f"broker warm after {time.perf_counter() - started:.0f}s: {moved:,} records moved; "
            f"JIT compiler over the last window: {jit}"
        )

    def warm_up(self, system: System, tag: str) -> None:
        """Send a few proposals until their outputs come back: the consumer is assigned."""
        items = system.workload.proposals(f"{tag}-warm-", WARM_UP, max_level=2)
        prod = c.keyed_producer(self.bootstrap, linger_ms=0)
        c.produce_fast(prod, system.topic, items, c.Sent())
        ids = [pid for pid, _, _ in items]
        if not system.wait_for(ids, timeout=120, deadline=self.deadline):
            got = system.collector.have(ids)
            raise RuntimeError(f"{system.name}: warm-up got {got} of {len(ids)} outputs in 120s")

    def throughput(self, system: System, tag: str) -> dict[str, Any]:
        count = self.args.count
        items = system.workload.proposals(f"{tag}-tp-", count)
        ids = [pid for pid, _, _ in items]
        prod = c.keyed_producer(self.bootstrap, linger_ms=5)
        sent = c.Sent()
        cpu_before = system.cpu_seconds()
        broker_before = c.cpu_seconds(self.broker_pid) if self.broker_pid else None
        busy_before = c.machine_busy_seconds()
        started = time.perf_counter()
        produce_seconds = c.produce_fast(prod, system.topic, items, sent)
        complete = system.wait_for(ids, timeout=60 + count / 50, deadline=self.deadline)
        busy_after, busy_at = c.machine_busy_seconds(), time.perf_counter()
        settled_at = (
            system.lag.wait_zero(timeout=120, deadline=self.deadline)
            if system.lag is not None
            else None
        )
        cpu_after = system.cpu_seconds()
        broker_after = c.cpu_seconds(self.broker_pid) if self.broker_pid else None
        arrivals = sorted(system.collector.arrivals(ids))
        first, last = (arrivals[0], arrivals[-1]) if arrivals else (started, started)
        span = max(last - first, 1e-9)
        result = {
            "count": count,
            "received": len(arrivals),
            "complete": complete,
            "duplicates": system.collector.duplicates(ids),
            "produce_seconds": produce_seconds,
            "produce_rate": count / produce_seconds,
            "first_to_last_seconds": span,
            "per_second": (len(arrivals) - 1) / span if len(arrivals) > 1 else 0.0,
            "wall_seconds": last - started,
            # Until every input was processed and committed (the gate: lifecycle too);
            # offsets are committed every second, so this is late by up to a second.
            "settled_seconds": None if settled_at is None else settled_at - first,
            "settled_per_second": None if settled_at is None else count / (settled_at - first),
            "cpu_seconds": (cpu_after or 0.0) - (cpu_before or 0.0),
            "delivery_failures": len(sent.failures),
        }
        result["cpu_ms_per_message"] = 1000 * result["cpu_seconds"] / max(1, len(arrivals))
        # Where the machine's CPU went meanwhile: the broker's share per message, and
        # how many of the cores were busy until the last output was read (everything:
        # the system, the broker, this bench's producer and collector, anybody else's).
        if broker_before is not None and broker_after is not None:
            result["broker_cpu_ms_per_message"] = (
                1000 * (broker_after - broker_before) / max(1, len(arrivals))
            )
        if busy_before is not None and busy_after is not None:
            result["machine_busy_cores"] = (busy_after - busy_before) / max(busy_at - started, 1e-9)
        if system.decides:
            result["levels"] = c.level_mix(ids, system.collector)
            result["deciding_rules"] = c.deciding_rules(ids, system.collector)
        return result

    def throughputs(self, system: System, tag: str) -> dict[str, Any]:
        """``--repeat`` throughput runs, back to back on the same worker; the run with
        the median rate stands for the system, and every run's rate is kept beside it
        (one run moved by a quarter on this shared machine)."""
        runs = []
        for i in range(self.args.repeat):
            runs.append(run := self.throughput(system, f"{tag}-r{i}"))
            share = _autonomous_share(run.get("levels"))
            self.say(
                f"{system.name}: run {i + 1}: {run['per_second']:,.0f}/s, "
                f"{run['cpu_ms_per_message']:.2f} CPU ms/message"
                + ("" if share is None else f", Level 3+4 {100 * share:.1f}%")
            )
        median = sorted(runs, key=lambda run: run["per_second"])[len(runs) // 2]
        out = {
            **median,
            "runs_per_second": [run["per_second"] for run in runs],
            "runs_settled_per_second": [run["settled_per_second"] for run in runs],
            "runs_cpu_ms_per_message": [run["cpu_ms_per_message"] for run in runs],
        }
        if system.decides:
            out["runs_autonomous_share"] = [_autonomous_share(run.get("levels")) for run in runs]
        return out

    def latency(self, system: System, tag: str, rate: float) -> dict[str, Any]:
        seconds = self.args.seconds
        items = system.workload.proposals(f"{tag}-lat{rate:g}-", max(1, int(rate * seconds)))
        prod = c.keyed_producer(self.bootstrap, linger_ms=0)
        sent = c.Sent()
        before = self._gate_histogram(system)
        duration = c.produce_paced(prod, system.topic, items, sent, rate=rate)
        self.deadline.cap(1)
        # A saturated system still has a backlog: let it drain before the next phase.
        system.wait_for(list(sent.at), timeout=30 + len(items) / 100, deadline=self.deadline)
        result = c.latency_summary(sent.at, system.collector)
        if system.decides:
            result["by_level"] = c.latency_by_level(sent.at, system.collector)
            result["levels"] = c.level_mix(list(sent.at), system.collector)
        result["lag_after"] = system.settle(self.deadline, timeout=60)
        arrivals = sorted(system.collector.arrivals(list(sent.at)))
        decided_rate = (
            (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
        )
        result |= {
            "rate": rate,
            "achieved_rate": len(items) / duration,
            "decided_rate": decided_rate,
            # Decisions came slower than proposals were offered: the latency is queueing.
            "saturated": decided_rate < 0.95 * len(items) / duration,
            "seconds": duration,
            "duplicates": system.collector.duplicates(list(sent.at)),
        }
        after = self._gate_histogram(system)
        if before is not None and after is not None:
            result["gate_internal"] = histogram_quantiles(before, after)
        return result

    def burst(self, system: System, tag: str) -> dict[str, Any]:
        """A burst at full speed over a steady stream: it drains, nothing is lost, RSS.

        The steady stream runs at ``--rate`` or a quarter of the gate's measured
        throughput, whichever is lower, so that the gate can drain the burst at all.
        """
        size = self.args.burst
        measured = _dig(self.results.get(system.name), ("throughput", "per_second")) or 0.0
        candidates = [r for r in (self.args.rate, measured / 4) if r > 0]
        rate = min(candidates) if candidates else 50.0
        pid = system.process.pid
        burst_items = system.workload.proposals(f"{tag}-bu-", size)
        burst_ids = [p for p, _, _ in burst_items]
        steady_sent, burst_sent = c.Sent(), c.Sent()
        stop_steady = threading.Event()
        steady = threading.Thread(
            target=c.produce_paced,
            args=(c.keyed_producer(self.bootstrap, linger_ms=0), system.topic),
            kwargs={
                "items": system.workload.stream(f"{tag}-bs-"),
                "sent": steady_sent,
                "rate": rate,
                "stop": stop_steady,
            },
            name="steady",
            daemon=True,
        )
        # Generous: the burst at a tenth of the measured throughput, plus a minute.
        drain_timeout = 60 + size / max(measured / 10, 20)
        with c.RssSampler(pid) as rss:
            try:
                steady.start()
                time.sleep(self.deadline.cap(3.0))
                rss_before = c.rss_kib(pid)
                burst_start = time.perf_counter()
                produce_seconds = c.produce_fast(
                    c.keyed_producer(self.bootstrap, linger_ms=5),
                    system.topic,
                    burst_items,
                    burst_sent,
                )
                drained = system.wait_for(burst_ids, timeout=drain_timeout, deadline=self.deadline)
                arrivals = system.collector.arrivals(burst_ids)
                drained_at = max(arrivals) if arrivals else time.perf_counter()
                time.sleep(self.deadline.cap(3.0))  # the steady stream after the drain
            finally:
                stop_steady.set()
                steady.join(timeout=70)
            steady_ids = list(steady_sent.at)
            system.wait_for(steady_ids, timeout=30, deadline=self.deadline)
            rss_peak = rss.peak(since=burst_start)
            time.sleep(self.deadline.cap(3.0))
            rss_after = c.rss_kib(pid)
        all_ids = burst_ids + steady_ids
        lag = system.settle(self.deadline, timeout=30)
        undecided = len(all_ids) - system.collector.have(all_ids)
        during = {k: v for k, v in steady_sent.at.items() if burst_start <= v <= drained_at}
        after = {k: v for k, v in steady_sent.at.items() if v > drained_at + 0.5}
        return {
            "size": size,
            "steady_rate": rate,
            "produce_seconds": produce_seconds,
            "produce_rate": size / produce_seconds,
            "drained": drained,
            "drain_seconds": drained_at - burst_start,
            "drain_rate": size / max(drained_at - burst_start, 1e-9),
            "sent": len(all_ids),
            "delivery_failures": len(burst_sent.failures) + len(steady_sent.failures),
            "undecided": undecided,
            # Missing decisions count as lost only once the gate has consumed and
            # committed every proposal (its consumer group has no lag left).
            "input_lag": lag,
            "lost": undecided if lag == 0 else None,
            "duplicates": system.collector.duplicates(all_ids),
            "levels": c.level_mix(all_ids, system.collector),
            "steady_latency_during_burst": c.latency_summary(during, system.collector),
            "steady_latency_after_drain": c.latency_summary(after, system.collector),
            "rss_mib": {
                "before": _mib(rss_before),
                "peak": _mib(rss_peak),
                "after": _mib(rss_after),
            },
        }

    def _gate_histogram(self, system: System) -> dict[float, float] | None:
        """The gate's own latency histogram, summed over its workers."""
        ports = system.metrics_ports or ([system.metrics_port] if system.metrics_port else [])
        if not ports:
            return None
        out: dict[float, float] = {}
        for port in ports:
            try:
                samples_ = c.metrics(port)
            except OSError:
                return None
            for (name, labels), value in samples_.items():
                if name == "escalation_decision_latency_seconds_bucket":
                    bound = float(dict(labels)["le"])
                    out[bound] = out.get(bound, 0.0) + value
        return out

    # ------------------------------------------------------------------ systems

    def _workload(self) -> Workload:
        a = self.args
        return c.Fleet(a.fleet, a.patterns) if a.workload == "fleet" else SampleWorkload()

    @contextlib.contextmanager
    def gate_deployment(
        self, name: str, *, workers: int, partitions: int, static: bool
    ) -> Iterator[System]:
        """A gate of ``workers`` workers (one consumer group) on its own topics, its
        state seeded (every worker folded it), its collector reading; every worker is
        stopped when the block ends. ``static``: each worker has its own
        ``ESCALATION_INSTANCE_ID`` (static group membership, as a StatefulSet's pods)."""
        args = self.args
        prefix = f"bench-{self.run_id}-{name}."
        root = self.work / name
        settings = Settings(
            topic_prefix=prefix,
            partitions=partitions,
            data_dir=root / "w0",
            store=args.store,
            bootstrap_servers=self.bootstrap,
            policy_file=args.policy,
        )
        from streams.kafka.admin import create_topics  # noqa: PLC0415

        create_topics(settings, self.bootstrap)
        ids = DevIdentities.make(root / "identities", read_policy(settings.policy_file))
        processes: list[Any] = []
        logs: list[Path] = []
        port_files: list[Path] = []
        self.say(
            f"{name}: starting {workers} worker(s) (store {args.store}, {partitions} "
            f"partitions, {'static ids' if static else 'dynamic membership'})"
        )
        try:
            for index in range(workers):
                data_dir = root / f"w{index}"
                port_file = data_dir / "metrics.port"
                env = c.worker_env(
                    self.bootstrap,
                    prefix=prefix,
                    data_dir=data_dir,
                    store=args.store,
                    partitions=partitions,
                    policy_file=settings.policy_file,
                    **(
                        {"ESCALATION_INSTANCE_ID": f"bench-{self.run_id}-{name}-{index}"}
                        if static
                        else {}
                    ),
                    **ids.env(),
                    **args.extra_env,
                )
                log = data_dir / "worker.log"
                processes.append(
                    c.spawn(
                        [sys.executable, "-m", "streams.cli", "worker", "--log-level", "WARNING"],
                        env=env,
                        log=log,
                        cwd=REPO,
                    )
                )
                logs.append(log)
                port_files.append(port_file)
                if index < workers - 1:
                    # One at a time, as a StatefulSet starts its pods (OrderedReady): two
                    # workers joining the group at once crashed one in Faust's livelock
                    # detector (aiokafka's position of a partition still being assigned).
                    self._wait_started(name, processes[-1], port_file, log)
            system = self._gate_ready(
                name,
                settings=settings,
                ids=ids,
                processes=processes,
                port_files=port_files,
                logs=logs,
            )
            try:
                yield system
            finally:
                system.collector.close()
                if system.lag is not None:
                    system.lag.close()
        except Exception:
            for log in logs:
                self.say(f"{name}: worker log tail ({log.parent.name}):\n{c.tail(log)}")
            raise
        finally:
            codes = [c.stop(p) for p in processes]
            self.say(f"{name}: worker(s) stopped (exit {codes})")

    def _wait_started(self, name: str, process: Any, port_file: Path, log: Path) -> None:
        """Until one worker reports ``escalation_worker_ready``."""

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name}: worker exited with {process.returncode}:\n{c.tail(log)}"
                )
            if not port_file.exists() or port_file.read_text().strip() == "":
                return False
            return c.metric(int(port_file.read_text()), "escalation_worker_ready") >= 1

        if not c.wait_until(ready, timeout=120, deadline=self.deadline, interval=0.2):
            raise RuntimeError(f"{name}: {log.parent.name} not ready within 120s")

    def _gate_ready(
        self,
        name: str,
        *,
        settings: Settings,
        ids: DevIdentities,
        processes: list[Any],
        port_files: list[Path],
        logs: list[Path],
    ) -> System:
        def alive() -> None:
            for process, log in zip(processes, logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name}: worker exited with {process.returncode}:\n{c.tail(log)}"
                    )

        def ports_written() -> bool:
            alive()
            return all(f.exists() and f.read_text().strip() != "" for f in port_files)

        if not c.wait_until(ports_written, timeout=120, deadline=self.deadline):
            raise RuntimeError(f"{name}: no metrics port within 120s")
        ports = [int(f.read_text()) for f in port_files]
        started = time.perf_counter()

        def ready() -> bool:
            alive()
            return all(c.metric(port, "escalation_worker_ready") >= 1 for port in ports)

        if not c.wait_until(ready, timeout=120, deadline=self.deadline, interval=0.2):
            raise RuntimeError(f"{name}: escalation_worker_ready stayed 0 for 120s")
        self.say(f"{name}: ready after {time.perf_counter() - started:.1f}s; seeding state")
        started = time.perf_counter()
        now = dt.datetime.now(tz=dt.UTC)
        workload = self._workload()
        if isinstance(workload, c.Fleet):
            planted = workload.seed(settings.topic, self.bootstrap, now, ids)
            wanted, messages = planted.applied, planted.messages
        else:
            from streams.demo import seed  # noqa: PLC0415

            seed(settings, self.bootstrap, now, ids)
            wanted, messages = sample_applied(now), 0
        applied: dict[int, dict[str, float]] = {}

        def seeded() -> bool:
            alive()
            for port in ports:
                try:
                    values = c.metrics(port)
                except OSError:
                    return False
                applied[port] = {
                    t: values.get(("escalation_state_updates_applied_total", (("table", t),)), 0)
                    for t in wanted
                }
            return all(applied[p][t] >= n for p in ports for t, n in wanted.items())

        if not c.wait_until(seeded, timeout=240, deadline=self.deadline, interval=0.5):
            raise RuntimeError(
                f"{name}: state not seeded within 240s (wanted {wanted}, applied {applied})"
            )
        self.say(
            f"{name}: state folded by every worker {time.perf_counter() - started:.1f}s after "
            f"the seed began ({messages or 'sample'} messages; updates {wanted})"
        )
        collector = c.Collector(
            self.bootstrap,
            [settings.topic(f"decisions.{r}") for r in DECISION_ROUTES],
            settings.partitions,
        ).start()
        system = System(name, processes[0], settings.topic("proposals"), collector, workload)
        system.processes = processes
        system.metrics_port = ports[0]
        system.metrics_ports = ports
        try:
            # The gate still owes work after a decision is out: the lifecycle agent
            # opens the pending approval and audits it. "Settled" waits for that too.
            group = f"{settings.topic_prefix}{settings.app_id}"
            reader = self.args.extra_env.get(
                "ESCALATION_PROPOSALS_READER", getattr(settings, "proposals_reader", "faust")
            )
            system.lag = gate_lag(self.bootstrap, settings, reader=reader)
            if len(processes) > 1:
                self._wait_assigned(system, group, len(processes), settings.partitions)
        except BaseException:
            collector.close()
            if system.lag is not None:
                system.lag.close()
            raise
        return system

    def _wait_assigned(self, system: System, group: str, workers: int, partitions: int) -> None:
        """Until every worker of the Faust group holds some of the proposals' partitions.

        With the proposals read in lanes (``streams/topology/lanes.py``) Faust does not
        read the proposals topic: each worker reads the proposals partitions whose
        numbers Faust gave it of its other inputs, so ``control``'s stand for them."""
        members: list[tuple[str, dict[str, list[int]]]] = []
        control = system.topic.removesuffix("proposals") + "control"
        topic = [system.topic]

        def assigned() -> bool:
            try:
                members[:] = c.group_members(self.bootstrap, group)
            except Exception:
                return False
            if not any(system.topic in topics for _, topics in members):
                topic[0] = control
            held = [topics.get(topic[0], []) for _, topics in members]
            return len(held) == workers and all(held) and sum(map(len, held)) == partitions

        if not c.wait_until(assigned, timeout=120, deadline=self.deadline, interval=0.5):
            raise RuntimeError(f"{system.name}: not every worker assigned in 120s: {members}")
        shown = [topics.get(topic[0]) for _, topics in members]
        which = "proposals" if topic[0] == system.topic else "control (proposals follow them)"
        self.say(f"{system.name}: {which} partitions by worker: {shown}")

    def run_gate(self) -> None:
        args = self.args
        with self.gate_deployment(
            "gate", workers=1, partitions=args.partitions, static=False
        ) as system:
            self.warm_up(system, "gate")
            prefix = system.topic.removesuffix("proposals")
            seeded = c.records_by_topic(self.bootstrap, prefix)  # the seed is not the gate's
            self.say("gate: warm; throughput run")
            self.results["gate"] = {"rss_mib_ready": _mib(c.rss_kib(system.process.pid))}
            spy = self._start_profiler(system.process.pid) if args.profile else None
            try:
                self.results["gate"]["throughput"] = self.throughputs(system, "gate")
            finally:
                if spy is not None:
                    self._finish_profiler(spy, "the throughput run (fresh worker)")
            self._said_throughput("gate")
            self.latencies(system)
            if args.burst > 0:
                self.say(f"gate: burst of {args.burst}")
                spy = self._start_profiler(system.process.pid) if args.profile else None
                try:
                    self.results["gate"]["burst"] = b = self.burst(system, "gate")
                finally:
                    if spy is not None:
                        self._finish_profiler(spy, "the burst phase (after the latency run)")
                self.say(
                    f"gate: burst drained in {b['drain_seconds']:.1f}s, undecided "
                    f"{b['undecided']} (input lag {b['input_lag']}), duplicates "
                    f"{b['duplicates']}, RSS MiB {b['rss_mib']}"
                )
        after = c.records_by_topic(self.bootstrap, prefix)
        counts = {name: n - seeded.get(name, 0) for name, n in after.items()}
        decided = counts.get(f"{prefix}proposals", 0)
        if decided and "gate" in self.results:
            self.results["gate"]["records_per_proposal"] = {
                name.removeprefix(prefix): round(n / decided, 3)
                for name, n in sorted(counts.items(), key=lambda kv: -kv[1])
                if n
            }

    def run_scale(self) -> None:
        """One worker, then ``--workers`` workers, each a fresh deployment on the same
        broker with ``--scale-partitions`` partitions: throughput and latency at ``--rate``."""
        a = self.args
        self.results["scale"] = results = {}
        for workers in dict.fromkeys((1, a.workers)):
            try:
                self._scale_deployment(results, workers)
            except c.DeadlineExceededError:
                raise
            except Exception as exc:
                # One deployment failing (a worker that exited) leaves the other to run.
                self.notes.append(f"INCOMPLETE gate-{workers}w: {str(exc)[:300]}")
                results.setdefault(str(workers), {})["error"] = str(exc)[:300]
        failed = [k for k, v in results.items() if "error" in v]
        if failed:
            raise RuntimeError(f"scale-out: {len(failed)} deployment(s) failed")

    def _scale_deployment(self, results: dict[str, Any], workers: int) -> None:
        a = self.args
        name = f"gate-{workers}w"
        with self.gate_deployment(
            name, workers=workers, partitions=a.scale_partitions, static=True
        ) as system:
            self.warm_up(system, name)
            out: dict[str, Any] = {"workers": workers, "partitions": a.scale_partitions}
            results[str(workers)] = out
            self.say(f"{name}: warm; throughput run")
            out["throughput"] = self.throughputs(system, name)
            self._said_throughput(name, out["throughput"])
            if a.rate > 0:
                self.say(f"{name}: latency at {a.rate:g}/s for {a.seconds:g}s")
                out["latency"] = lat = self.latency(system, name, a.rate)
                self._said_latency(name, lat)

    def run_forwarder(self, engine: str) -> None:
        name = "faust" if engine == "faust" else "confluent"
        prefix = f"bench-{self.run_id}.{name}"
        source, target = f"{prefix}.in", f"{prefix}.out"
        c.create_topics(self.bootstrap, [source, target], self.args.partitions)
        data_dir = self.work / name
        log = data_dir / "forwarder.log"
        command = [
            sys.executable,
            str(BENCH / "forwarder.py"),
            "--engine",
            engine,
            "--bootstrap",
            self.bootstrap,
            "--input",
            source,
            "--output",
            target,
            "--app-id",
            prefix,
            "--partitions",
            str(self.args.partitions),
            "--data-dir",
            str(data_dir),
            "--store",
            self.args.store,
        ]
        self.say(f"{name}: starting forwarder")
        process = c.spawn(command, env={**os.environ, **self.args.extra_env}, log=log, cwd=REPO)
        collector = c.Collector(self.bootstrap, [target], self.args.partitions).start()
        system = System(name, process, source, collector, self._workload())
        try:
            system.lag = c.LagProbe(self.bootstrap, prefix, [source])
            self.warm_up(system, name)
            self.results[name] = {"rss_mib_ready": _mib(c.rss_kib(process.pid))}
            self.say(f"{name}: warm; throughput run")
            self.results[name]["throughput"] = self.throughputs(system, name)
            self._said_throughput(name)
            if engine == "faust":
                self.latencies(system)
        except Exception:
            self.say(f"{name}: log tail:\n{c.tail(log)}")
            raise
        finally:
            collector.close()
            if system.lag is not None:
                system.lag.close()
            self.say(f"{name}: stopped (exit {c.stop(process)})")

    def _said_throughput(self, name: str, t: dict[str, Any] | None = None) -> None:
        t = t if t is not None else self.results[name]["throughput"]
        share = _autonomous_share(t.get("levels"))
        mix = "" if share is None else f", Level 3+4 {100 * share:.0f}%"
        self.say(
            f"{name}: {t['per_second']:,.0f}/s ({t['received']}/{t['count']} in "
            f"{t['first_to_last_seconds']:.1f}s, {t['cpu_ms_per_message']:.2f} CPU ms/message"
            f"{mix}; runs {', '.join(f'{r:,.0f}' for r in t.get('runs_per_second', []))})"
        )

    def _said_latency(self, name: str, lat: dict[str, Any]) -> None:
        by_level = lat.get("by_level") or {}
        l4 = _dig(by_level, ("L4", "p99_ms"))
        level4 = "" if l4 is None else f", Level 4 p99 {_fmt(l4, '.1f')} ms"
        self.say(
            f"{name}: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms{level4}, max "
            f"{lat['max_ms']:.1f} ms, decided {lat['decided_rate']:.0f}/s "
            f"({lat['missing']} missing)"
        )

    def latencies(self, system: System) -> None:
        """The low rate first (it must not queue behind the main rate's backlog)."""
        name = system.name
        runs = [("latency_low", self.args.low_rate), ("latency", self.args.rate)]
        for key, rate in runs:
            if rate <= 0:
                continue
            self.say(f"{name}: latency at {rate:g}/s for {self.args.seconds:g}s")
            self.results[name][key] = lat = self.latency(system, name, rate)
            self._said_latency(name, lat)

    # ------------------------------------------------------------------ profile

    def _start_profiler(self, pid: int) -> tuple[Any, Path]:
        raw = self.work / f"profile-{len(self.profiles)}.raw"
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            raise RuntimeError(f"--profile needs py-spy: {sys.executable} -m pip install py-spy")
        command = [str(spy), "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
        command += ["--function", "--format", "raw", "--output", str(raw)]
        process = c.spawn(command, env=dict(os.environ), log=self.work / "py-spy.log")
        time.sleep(1.0)  # attach
        if process.poll() is not None:
            raise RuntimeError(f"py-spy exited: {c.tail(self.work / 'py-spy.log')}")
        self.say(f"gate: py-spy sampling pid {pid} at 100 Hz")
        return process, raw

    def _finish_profiler(self, spy: tuple[Any, Path], window: str) -> None:
        process, raw = spy
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            c.stop(process)
        if not raw.exists():
            self.notes.append(f"py-spy wrote no profile: {c.tail(self.work / 'py-spy.log', 5)}")
            return
        self.profiles[window] = raw.read_text()
        out = self.args.profile_out
        out.write_text(
            "\n\n".join(
                profile_report(text, window=name, header=self._header())
                for name, text in self.profiles.items()
            )
        )
        self.results.setdefault("gate", {})["profile"] = str(out)
        self.say(f"gate: profile of {window} written to {out}")

    def _header(self) -> str:
        a = self.args
        return (
            f"{dt.datetime.now(tz=dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"N={a.count}, {a.partitions} partitions, store {a.store}, env {a.extra_env or '-'}, "
            f"code {self.version}\n"
            f"command: {shlex.join(['python', 'bench/pipeline.py', *sys.argv[1:]])}"
        )


# ------------------------------------------------------------------------ figures


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def code_version() -> str:
    """The commit under test, and whether ``streams/`` differs from it (others edit it).

    ``BENCH_CODE_VERSION`` names it instead (a tree exported with ``git archive``)."""
    if os.environ.get("BENCH_CODE_VERSION"):
        return os.environ["BENCH_CODE_VERSION"]
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "streams")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes in streams/' if dirty else ''}"


def gate_lag(bootstrap: str, settings: Settings, *, reader: str) -> c.LagProbe:
    """What the gate still owes: the proposals and the ``lifecycle`` messages its
    groups have not committed. Topics read in lanes (``streams/topology/lanes.py``,
    ``ESCALATION_PROPOSALS_READER=lanes``) keep their offsets in a group of their own."""
    group = f"{settings.topic_prefix}{settings.app_id}"
    proposals, lifecycle = settings.topic("proposals"), settings.topic("lifecycle")
    if reader != "lanes":
        return c.LagProbe(bootstrap, group, [proposals, lifecycle])
    from streams.topology.config import offsets_group  # noqa: PLC0415

    # Since 5217f44 the lanes read lifecycle (and approvals) too.
    return c.LagProbe(bootstrap, offsets_group(group), [proposals, lifecycle])


def sample_applied(now: dt.datetime) -> dict[str, int]:
    """The state updates ``streams.demo.seed`` makes: a worker has folded it once its
    ``escalation_state_updates_applied_total{table}`` reaches these (history: one
    update per pattern and action of each import batch, ``records.import_updates``)."""
    from streams.signing import history_commands  # noqa: PLC0415
    from streams.state.records import import_updates  # noqa: PLC0415

    history = sum(
        1
        for command in history_commands(samples.history_records(now), user="alice")
        for update in import_updates(command.records)
        if update.table == "history"
    )
    return {
        "history": history,
        "budgets": len(samples.budgets(now)),
        "requalification": len(samples.requalifications(now)),
    }


def policy_differences(
    policy: Path, base: Path = SHIPPED_POLICY
) -> list[tuple[tuple[str, ...], Any, Any]]:
    """``(path, base value, value)`` of every field where ``policy`` differs from ``base``."""
    out: list[tuple[tuple[str, ...], Any, Any]] = []

    def walk(old: Any, new: Any, path: tuple[str, ...]) -> None:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                walk(old.get(key), new.get(key), (*path, key))
        elif old != new:
            out.append((path, old, new))

    walk(
        read_policy(base).model_dump(mode="json"),
        read_policy(policy).model_dump(mode="json"),
        (),
    )
    return out


def _autonomous_share(levels: dict[str, int] | None) -> float | None:
    """Levels 3 and 4 among the decisions of a level mix."""
    if not levels:
        return None
    total = sum(levels.values())
    return (levels.get("3", 0) + levels.get("4", 0)) / total if total else None


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def histogram_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    """Bucket bounds of p50/p99 of the gate's own latency histogram between two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    out: dict[str, Any] = {"count": total}
    for q in (50, 95, 99):
        bound = next((b for b, n in zip(bounds, counts, strict=True) if n >= total * q / 100), None)
        out[f"p{q}_le_ms"] = None if bound is None else bound * 1000
    return out


def _group(frame: str) -> str:
    path = frame.rpartition("(")[2]
    for package in (
        "faust",
        "mode",
        "aiokafka",
        "kafka",
        "pydantic",
        "prometheus_client",
        "rocksdict",
        "asyncio",
        "selectors",
        "orjson",
    ):
        if f"/{package}/" in f"/{path}" or path.startswith(f"{package}/"):
            return package
    if "streams/" in path:
        module = path.split("streams/", 1)[1].split(":")[0].removesuffix(".py")
        return "streams/" + module
    return "other"


def profile_report(raw: str, *, window: str, header: str) -> str:
    """A text report of py-spy's collapsed stacks: where the worker's CPU time goes."""
    self_time: Counter[str] = Counter()
    total: Counter[str] = Counter()
    callers: dict[str, Counter[str]] = {}
    groups: Counter[str] = Counter()
    groups_inclusive: Counter[str] = Counter()
    samples_ = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples_ += count
        self_time[frames[-1]] += count
        groups[_group(frames[-1])] += count
        for frame in set(frames):
            total[frame] += count
        for parent, child in set(itertools.pairwise(frames)):
            callers.setdefault(child, Counter())[parent] += count
        for group in {_group(f) for f in frames}:
            groups_inclusive[group] += count
    if samples_ == 0:
        return f"{header}\nno samples\n"

    def pct(n: int) -> str:
        return f"{100 * n / samples_:5.1f}%"

    lines = [
        f"py-spy profile of the gate worker during {window}",
        header,
        f"samples: {samples_} at 100 Hz (on-CPU only; --function: frames by function)",
        "",
        "self time by package (where the CPU is actually spent)",
    ]
    lines += [f"  {pct(n)}  {g}" for g, n in groups.most_common()]
    lines += ["", "inclusive time by package (a stack counts once per package in it)"]
    lines += [f"  {pct(n)}  {g}" for g, n in groups_inclusive.most_common()]
    lines += ["", "top 30 functions by self time"]
    lines += [f"  {pct(n)}  {f}" for f, n in self_time.most_common(30)]
    lines += ["", "top 40 functions by inclusive time"]
    lines += [f"  {pct(n)}  {f}" for f, n in total.most_common(40)]
    lines += ["", "callers of the top 15 functions by self time (and of any logging call)"]
    logging_frames = [f for f in total if "logging/__init__.py" in f and "Logger." in f]
    for frame in dict.fromkeys([f for f, _ in self_time.most_common(15)] + logging_frames):
        lines.append(f"  {frame}  [self {pct(self_time[frame])}, total {pct(total[frame])}]")
        lines += [f"    {pct(n)}  <- {p}" for p, n in callers.get(frame, Counter()).most_common(4)]
    lines += ["", "streams/* functions by inclusive time"]
    lines += [
        f"  {pct(n)}  {f}" for f, n in total.most_common() if _group(f).startswith("streams/")
    ][:40]
    return "\n".join(lines) + "\n"


def _fmt(value: Any, spec: str = ",.0f") -> str:
    if value is None or (isinstance(value, float) and value != value):  # noqa: PLR0124 - NaN
        return "-"
    return format(value, spec)


def report(bench: Bench) -> str:
    r = bench.results
    a = bench.args
    get = lambda name, *path: _dig(r.get(name), path)  # noqa: E731
    lines = [
        "",
        "Escalation Gate pipeline benchmark",
        (
            f"  {dt.datetime.now(tz=dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"{platform.python_implementation()} {platform.python_version()}, "
            f"N={a.count}, {a.partitions} partitions, store {a.store}, broker {bench.bootstrap}"
        ),
        f"  code {bench.version}; env {a.extra_env or '-'}; load average {c.loadavg()}",
        f"  policy {_shown(a.policy)} ({bench.policy_note}); workload {bench.workload_note}",
        "",
        f"{'':34}{'gate':>12}{'faust fwd':>12}{'confluent':>12}",
    ]

    def row(label: str, path: tuple[str, ...], spec: str = ",.0f") -> None:
        cells = "".join(f"{_fmt(get(n, *path), spec):>12}" for n in ("gate", "faust", "confluent"))
        lines.append(f"{label:34}{cells}")

    row(f"throughput (messages/s, median of {a.repeat})", ("throughput", "per_second"))
    for i in range(a.repeat if a.repeat > 1 else 0):
        row(f"  run {i + 1}", ("throughput", "runs_per_second", str(i)))
    row("  first->last output (s)", ("throughput", "first_to_last_seconds"), ".1f")
    row("  producer rate (messages/s)", ("throughput", "produce_rate"))
    row("  CPU ms per message (worker)", ("throughput", "cpu_ms_per_message"), ".2f")
    row("  CPU ms per message (broker)", ("throughput", "broker_cpu_ms_per_message"), ".2f")
    row("  busy cores (whole machine)", ("throughput", "machine_busy_cores"), ".2f")
    row("  received", ("throughput", "received"))
    row("  duplicates", ("throughput", "duplicates"))
    for key, rate in (("latency_low", a.low_rate), ("latency", a.rate)):
        if rate <= 0:
            continue
        row(f"latency @{rate:g}/s p50 (ms)", (key, "p50_ms"), ".1f")
        row("  p95 (ms)", (key, "p95_ms"), ".1f")
        row("  p99 (ms)", (key, "p99_ms"), ".1f")
        row("  max (ms)", (key, "max_ms"), ".1f")
        row("  offered rate (/s)", (key, "achieved_rate"), ".0f")
        row("  decided rate (/s)", (key, "decided_rate"), ".0f")
    row("RSS when ready (MiB)", ("rss_mib_ready",), ".0f")
    lines.append("")
    gate_tp = get("gate", "throughput", "per_second")
    for name, label in (("faust", "Faust forwarder"), ("confluent", "confluent loop")):
        base = get(name, "throughput", "per_second")
        if gate_tp and base:
            ratio = gate_tp / base
            verdict = ""
            if name == "faust":
                verdict = (
                    "  PASS" if ratio >= TARGET_THROUGHPUT_RATIO else "  BELOW TARGET"
                ) + f" (target >= {TARGET_THROUGHPUT_RATIO:.2f})"
            lines.append(f"gate / {label} throughput: {ratio:.3f}{verdict}")
    settled = get("gate", "throughput", "settled_per_second")
    base = get("faust", "throughput", "per_second")
    if settled and base:
        lines.append(
            f"gate settled (lifecycle work done too, offsets committed): {settled:,.0f}/s; "
            f"/ Faust forwarder: {settled / base:.3f}"
        )
    cpu_gate = get("gate", "throughput", "cpu_ms_per_message")
    cpu_faust = get("faust", "throughput", "cpu_ms_per_message")
    if cpu_gate and cpu_faust:
        lines.append(f"gate / Faust forwarder CPU per message: {cpu_gate / cpu_faust:.2f}x")
    p99_gate = get("gate", "latency", "p99_ms")
    p99_l4 = get("gate", "latency", "by_level", "L4", "p99_ms")
    p99_faust = get("faust", "latency", "p99_ms")
    lines.extend(
        f"SATURATED: {name} decided {get(name, key, 'decided_rate'):,.0f}/s of "
        f"{get(name, key, 'achieved_rate'):,.0f}/s offered: its latency is queueing"
        for name in ("gate", "faust")
        for key in ("latency_low", "latency")
        if get(name, key, "saturated")
    )
    if p99_gate is not None:
        vs = f", Faust forwarder {p99_faust:.1f} ms" if p99_faust is not None else ""
        lines.append(
            f"latency p99 at {a.rate:g}/s: gate, all decisions {p99_gate:.1f} ms  "
            f"{_verdict_max(p99_gate, TARGET_P99_MS)}; Level 4 {_fmt(p99_l4, '.1f')} ms  "
            f"{_verdict_max(p99_l4, TARGET_P99_MS)}{vs}"
        )
    p99_low = get("gate", "latency_low", "p99_ms")
    if p99_low is not None:
        vs = get("faust", "latency_low", "p99_ms")
        lines.append(
            f"latency p99 at {a.low_rate:g}/s: gate {p99_low:.1f} ms"
            + (f", Faust forwarder {vs:.1f} ms" if vs is not None else "")
        )
    for key, rate in (("latency_low", a.low_rate), ("latency", a.rate)):
        internal = get("gate", key, "gate_internal")
        if internal:
            lines.append(
                f"  gate's own histogram at {rate:g}/s (Kafka timestamp -> decision sent): "
                f"p50 <= {_fmt(internal['p50_le_ms'], '.1f')} ms, "
                f"p99 <= {_fmt(internal['p99_le_ms'], '.1f')} ms"
            )
    written = get("gate", "records_per_proposal")
    if written:
        out = {k: v for k, v in written.items() if k != "proposals"}
        lines.append(
            f"records the gate wrote per proposal: {sum(out.values()):.2f} ("
            + ", ".join(f"{k} {v:.2f}" for k, v in out.items())
            + "); the forwarders write 1"
        )
    for key, rate in (("latency_low", a.low_rate), ("latency", a.rate)):
        lines += _level_table(
            f"latency by level @{rate:g}/s (ms)", get("gate", key), get("faust", key)
        )
    phases = [
        (f"throughput run, median of {a.repeat}", get("gate", "throughput", "levels")),
        (f"latency @{a.low_rate:g}/s", get("gate", "latency_low", "levels")),
        (f"latency @{a.rate:g}/s", get("gate", "latency", "levels")),
        ("burst and its steady stream", get("gate", "burst", "levels")),
    ]
    for label, levels in phases:
        if levels:
            lines.append(_mix_line(label, levels))
    shares = get("gate", "throughput", "runs_autonomous_share")
    if shares and len(shares) > 1:
        lines.append(
            "  Level 3+4 in each throughput run: "
            + ", ".join(f"{100 * s:.1f}%" for s in shares if s is not None)
        )
    rules = get("gate", "throughput", "deciding_rules") or {}
    if rules:
        lines.append(
            "  deciding rules (throughput run): " + ", ".join(f"{k} {v}" for k, v in rules.items())
        )
    burst = get("gate", "burst")
    if burst:
        rss = burst["rss_mib"]
        during = burst["steady_latency_during_burst"]
        lines += [
            (
                f"burst: {burst['size']} proposals at {burst['produce_rate']:,.0f}/s over "
                f"{burst['steady_rate']:,.0f}/s steady: drained in {burst['drain_seconds']:.1f}s "
                f"({burst['drain_rate']:,.0f}/s), "
                f"{'complete' if burst['drained'] else 'INCOMPLETE'}"
            ),
            (
                f"  {burst['sent']} sent, {_lost(burst)}, {burst['duplicates']} duplicated; "
                f"steady max latency during the burst {_fmt(during['max_ms'], '.0f')} ms; "
                f"p99 after the drain "
                f"{_fmt(burst['steady_latency_after_drain']['p99_ms'], '.1f')} ms"
            ),
            (
                f"  worker RSS MiB: before {_fmt(rss['before'], '.0f')}, peak "
                f"{_fmt(rss['peak'], '.0f')}, after {_fmt(rss['after'], '.0f')}"
            ),
        ]
    lines += _scale_lines(r.get("scale"), a)
    if get("gate", "profile"):
        lines.append(f"profile: {get('gate', 'profile')} (gate throughput measured under py-spy)")
    lines += [f"note: {n}" for n in bench.notes]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def _verdict_max(value: float | None, target: float) -> str:
    if value is None or value != value:  # noqa: PLR0124 - NaN
        return "NOT MEASURED"
    return f"{'PASS' if value <= target else 'ABOVE TARGET'} (target <= {target:g} ms)"


def _mix_line(label: str, levels: dict[str, int]) -> str:
    total = sum(levels.values()) or 1
    mix = ", ".join(f"L{k} {n} ({100 * n / total:.0f}%)" for k, n in levels.items())
    share = _autonomous_share(levels) or 0.0
    verdict = "PASS" if share >= TARGET_AUTONOMOUS_SHARE else "BELOW TARGET"
    return (
        f"level mix ({label}): {mix}; Level 3+4 {100 * share:.1f}%  {verdict} "
        f"(target >= {100 * TARGET_AUTONOMOUS_SHARE:.0f}%)"
    )


def _level_table(
    title: str, gate: dict[str, Any] | None, faust: dict[str, Any] | None
) -> list[str]:
    """Send -> decision read, by the decision's level (gate) and for all (both)."""
    by_level = (gate or {}).get("by_level")
    if not by_level:
        return []
    lines = [f"{title:30}{'count':>8}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}"]
    rows = [(f"gate {key}", by_level.get(key)) for key in (*c.LEVEL_KEYS, "all")]
    rows.append(("Faust forwarder, all", faust))
    for label, v in rows:
        if not v or not v.get("count"):
            continue
        cells = "".join(
            f"{_fmt(v.get(k), '.1f'):>8}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        )
        lines.append(f"  {label:28}{v['count']:>8}{cells}")
    return lines


def _scale_lines(scale: dict[str, Any] | None, a: argparse.Namespace) -> list[str]:
    """One worker against ``--workers`` workers, each a fresh deployment."""
    if not scale:
        return []
    keys = sorted(scale, key=int)
    names = [f"{k} worker{'s' if k != '1' else ''}" for k in keys]
    lines = [
        "",
        (
            f"scale-out: {a.scale_partitions} partitions, one consumer group, static instance "
            "ids, a fresh deployment each, same broker"
        ),
        f"  {'':44}{''.join(f'{n:>12}' for n in names)}{'ratio' if len(keys) > 1 else '':>8}",
    ]

    def row(label: str, path: tuple[str, ...], spec: str = ",.0f") -> None:
        values = [_dig(scale[k], path) for k in keys]
        cells = "".join(f"{_fmt(v, spec):>12}" for v in values)
        ratio = ""
        if len(values) > 1 and values[0] and values[-1]:
            ratio = f"{values[-1] / values[0]:.2f}"
        lines.append(f"  {label:44}{cells}{ratio:>8}")

    row(f"throughput (decisions/s, median of {a.repeat})", ("throughput", "per_second"))
    row("settled (lifecycle done, committed) /s", ("throughput", "settled_per_second"))
    row("CPU ms per decision (every worker)", ("throughput", "cpu_ms_per_message"), ".2f")
    if a.rate > 0:
        row(f"latency @{a.rate:g}/s p50 (ms)", ("latency", "p50_ms"), ".1f")
        row("  p99 (ms)", ("latency", "p99_ms"), ".1f")
        row("  Level 4 p99 (ms)", ("latency", "by_level", "L4", "p99_ms"), ".1f")
        row("  max (ms)", ("latency", "max_ms"), ".1f")
        row("  decided rate (/s)", ("latency", "decided_rate"), ".0f")
    for k, name in zip(keys, names, strict=True):
        levels = _dig(scale[k], ("throughput", "levels"))
        if levels:
            lines.append("  " + _mix_line(f"{name}, throughput", levels))
    return lines


def _lost(burst: dict[str, Any]) -> str:
    if burst["lost"] is not None:
        return f"{burst['lost']} lost"
    return f"{burst['undecided']} undecided (input lag {burst['input_lag']}: lost unknown)"


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if isinstance(value, list) and key.isdigit():
            value = value[int(key)] if int(key) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


# ---------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="proposals per throughput run")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="throughput runs per system; the median run is reported and compared",
    )
    parser.add_argument("--rate", type=float, default=500.0, help="steady rate, proposals/s")
    parser.add_argument(
        "--low-rate",
        type=float,
        default=100.0,
        help="a second, lower steady rate for latency (0: skip)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="each steady-rate run")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the gate and the Faust forwarder (experiments)",
    )
    parser.add_argument(
        "--burst", type=int, default=None, help="burst size (default: count/2; 0: no burst)"
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--store",
        choices=("rocksdb", "memory"),
        default="rocksdb",
        help="the gate's Faust table store (rocksdb:// is the production default)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        help="policy file for the gate (default: bench/policy-fleet.yaml with --workload "
        "fleet, the shipped policy with --workload samples)",
    )
    parser.add_argument(
        "--workload",
        choices=("fleet", "samples"),
        default="fleet",
        help="fleet: the sample scenarios over --fleet services and --patterns variants of "
        "each pattern (issue 19); samples: the ten services of streams.samples (before)",
    )
    parser.add_argument("--fleet", type=int, default=20_000, help="services of the fleet")
    parser.add_argument(
        "--patterns", type=int, default=100, help="variants of each scenario's failure pattern"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of gate,faust,confluent,scale (scale: one worker "
        "against --workers workers)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="gate workers of the scale-out phase, against one (1: skip the phase)",
    )
    parser.add_argument(
        "--scale-partitions",
        type=int,
        default=8,
        help="partitions of the scale-out phase's deployments",
    )
    parser.add_argument("--deadline", type=float, default=3600.0, help="overall limit, seconds")
    parser.add_argument(
        "--broker-warmup",
        type=float,
        default=90.0,
        help="at most this many seconds of load on a scratch topic before any system is "
        "measured, so that every system meets a broker whose JIT has compiled its hot "
        "paths (0: none)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--profile", action="store_true", help="py-spy the gate's throughput run")
    parser.add_argument("--profile-out", type=Path, default=BENCH / "profile-gate.txt")
    args = parser.parse_args(argv)
    args.store = f"{args.store}://"
    if args.burst is None:
        args.burst = args.count // 2
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if args.workers <= 1 and "scale" in args.systems:
        args.systems.remove("scale")
    if args.policy is None:
        args.policy = FLEET_POLICY if args.workload == "fleet" else SHIPPED_POLICY
    if any("=" not in e for e in args.env):
        parser.error("--env takes NAME=VALUE")
    args.extra_env = dict(e.split("=", 1) for e in args.env)
    unknown = set(args.systems) - set(SYSTEMS)
    bad = (
        args.count < 2
        or args.rate < 0
        or args.seconds <= 0
        or args.repeat < 1
        or args.fleet < 1
        or args.patterns < 1
        or args.scale_partitions < args.workers
    )
    if unknown or bad:
        parser.error(f"bad --systems {sorted(unknown)}" if unknown else "bad numbers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    c.bound_run(args.deadline)
    code = 0
    bench: Bench | None = None
    with ExitStack() as stack:
        try:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
            started = time.perf_counter()
            bootstrap, kafka_pid = c.broker(stack, work)
            bench = Bench(args, work, bootstrap, kafka_pid)
            bench.say(
                f"broker {bootstrap} ({time.perf_counter() - started:.1f}s); run {bench.run_id}"
            )
            if args.broker_warmup > 0:
                bench.warm_broker(kafka_pid)
            for system in args.systems:
                try:
                    if system == "gate":
                        bench.run_gate()
                    elif system == "scale":
                        bench.run_scale()
                    else:
                        bench.run_forwarder(system)
                except c.DeadlineExceededError:
                    raise
                except Exception as exc:
                    # One system failing (a worker that exited) leaves the others to run.
                    print(f"\n{system} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                    bench.notes.append(
                        f"INCOMPLETE {system}: {type(exc).__name__}: {str(exc)[:300]}"
                    )
                    code = 1
        except c.Interrupted as exc:
            print(f"\ninterrupted ({exc}); stopping what was started", file=sys.stderr)
            code = 130
        except Exception as exc:
            print(f"\nbench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if bench is not None:
                bench.notes.append(f"INCOMPLETE: {type(exc).__name__}: {exc}")
            code = 1
        finally:
            c.end_run()
            if bench is not None:
                print(report(bench), flush=True)
                if args.json is not None:
                    c.write_figures(args.json, script="bench/pipeline.py", args=args, bench=bench)
    return code


if __name__ == "__main__":
    sys.exit(main())
