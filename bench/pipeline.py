"""Under load and faults: the gate on a real broker against two forwarding baselines.

``python bench/pipeline.py [--count 20000] [--rate 500] [--seconds 20] [--json FILE]``

In one run, on one broker (a local Apache Kafka in a temporary directory, or
``KAFKA_BOOTSTRAP_SERVERS``), one system at a time:

- **gate**: ``python -m streams.cli worker`` with the sample history, budgets and
  re-qualifications seeded (``streams.demo.seed``), fed ``streams.samples`` proposals
  that reach every level; decisions read back from the four ``decisions.*`` topics.
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
   at ``--low-rate`` and then ``--rate``;
3. burst (gate): a burst produced at full speed on top of a steady stream; drain
   time, lost and duplicated decisions by proposal id, worker RSS before/peak/after;
4. ``--profile``: py-spy samples the gate during its throughput run and its burst;
   ``bench/profile-gate.txt`` gets the report.

Everything it starts (broker, workers, py-spy) it stops, on Ctrl-C, failure or the
overall ``--deadline`` too. Exit code 0 when it measured everything (targets missed
are reported, not failed), 1 when a phase failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
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
import orjson

from streams import samples
from streams.files import read_policy
from streams.identities import DevIdentities
from streams.models import encode
from streams.settings import Settings

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DECISION_ROUTES = ("execute", "approve", "assist", "manual")
TARGET_THROUGHPUT_RATIO = 0.70
TARGET_P99_MS = 50.0
WARM_UP = 60
# Warm-up uses scenarios that never reach Level 3/4, so the velocity guard's budget
# (20 autonomous decisions per 10 minutes fleet-wide) is left to the measured run.
WARM_UP_SCENARIOS = tuple(s for s in samples.SCENARIOS if s.expected_level <= 2)


class Interrupted(BaseException):
    """SIGTERM or SIGINT (a BaseException: the phases' ``except Exception`` let it pass)."""


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


class System:
    """One system under test: its process, its input topic and a collector of its output."""

    def __init__(self, name: str, process: Any, topic: str, collector: c.Collector) -> None:
        self.name = name
        self.process = process
        self.topic = topic
        self.collector = collector
        self.metrics_port: int | None = None
        # Consumer-group lag on every topic the system consumes: work still owed.
        self.lag: c.LagProbe | None = None

    def settle(self, deadline: c.Deadline, *, timeout: float) -> int | None:
        """Wait until the system has committed everything it consumes; the lag left."""
        if self.lag is None:
            return None
        self.lag.wait_zero(timeout=timeout, deadline=deadline)
        return self.lag.lag()


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, bootstrap: str) -> None:
        self.args = args
        self.work = work
        self.bootstrap = bootstrap
        self.deadline = c.Deadline(args.deadline)
        self.run_id = uuid.uuid4().hex[:8]
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        self.profiles: dict[str, str] = {}  # window -> py-spy's collapsed stacks
        self.version = code_version()

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
        items = proposals(f"{tag}-warm-", WARM_UP, scenarios=WARM_UP_SCENARIOS)
        prod = c.producer(self.bootstrap, linger_ms=0)
        c.produce_fast(prod, system.topic, items, c.Sent())
        ids = [pid for pid, _, _ in items]
        if not system.collector.wait_for(ids, timeout=120, deadline=self.deadline):
            got = system.collector.have(ids)
            raise RuntimeError(f"{system.name}: warm-up got {got} of {len(ids)} outputs in 120s")

    def throughput(self, system: System, tag: str) -> dict[str, Any]:
        count = self.args.count
        items = proposals(f"{tag}-tp-", count)
        ids = [pid for pid, _, _ in items]
        prod = c.producer(self.bootstrap, linger_ms=5)
        sent = c.Sent()
        pid = system.process.pid
        cpu_before = c.cpu_seconds(pid)
        started = time.perf_counter()
        produce_seconds = c.produce_fast(prod, system.topic, items, sent)
        complete = system.collector.wait_for(ids, timeout=60 + count / 50, deadline=self.deadline)
        settled_at = (
            system.lag.wait_zero(timeout=120, deadline=self.deadline)
            if system.lag is not None
            else None
        )
        cpu_after = c.cpu_seconds(pid)
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
        if system.name == "gate":
            levels = Counter(
                system.collector.levels[i][0] for i in ids if i in system.collector.levels
            )
            rules = Counter(
                system.collector.levels[i][1] for i in ids if i in system.collector.levels
            )
            result["levels"] = {str(k): levels[k] for k in range(5)}
            result["deciding_rules"] = dict(rules.most_common())
        return result

    def throughputs(self, system: System, tag: str) -> dict[str, Any]:
        """``--repeat`` throughput runs, back to back on the same worker; the run with
        the median rate stands for the system, and every run's rate is kept beside it
        (one run moved by a quarter on this shared machine)."""
        runs = [self.throughput(system, f"{tag}-r{i}") for i in range(self.args.repeat)]
        median = sorted(runs, key=lambda run: run["per_second"])[len(runs) // 2]
        return {
            **median,
            "runs_per_second": [run["per_second"] for run in runs],
            "runs_settled_per_second": [run["settled_per_second"] for run in runs],
        }

    def latency(self, system: System, tag: str, rate: float) -> dict[str, Any]:
        seconds = self.args.seconds
        items = proposals(f"{tag}-lat{rate:g}-", max(1, int(rate * seconds)))
        prod = c.producer(self.bootstrap, linger_ms=0)
        sent = c.Sent()
        before = self._gate_histogram(system)
        duration = c.produce_paced(prod, system.topic, items, sent, rate=rate)
        self.deadline.cap(1)
        # A saturated system still has a backlog: let it drain before the next phase.
        system.collector.wait_for(
            list(sent.at), timeout=30 + len(items) / 100, deadline=self.deadline
        )
        result = c.latency_summary(sent.at, system.collector)
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
        burst_items = proposals(f"{tag}-bu-", size)
        burst_ids = [p for p, _, _ in burst_items]
        steady_sent, burst_sent = c.Sent(), c.Sent()
        stop_steady = threading.Event()
        steady = threading.Thread(
            target=c.produce_paced,
            args=(c.producer(self.bootstrap, linger_ms=0), system.topic),
            kwargs={
                "items": proposal_stream(f"{tag}-bs-"),
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
                    c.producer(self.bootstrap, linger_ms=5), system.topic, burst_items, burst_sent
                )
                drained = system.collector.wait_for(
                    burst_ids, timeout=drain_timeout, deadline=self.deadline
                )
                arrivals = system.collector.arrivals(burst_ids)
                drained_at = max(arrivals) if arrivals else time.perf_counter()
                time.sleep(self.deadline.cap(3.0))  # the steady stream after the drain
            finally:
                stop_steady.set()
                steady.join(timeout=70)
            steady_ids = list(steady_sent.at)
            system.collector.wait_for(steady_ids, timeout=30, deadline=self.deadline)
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
            "steady_latency_during_burst": c.latency_summary(during, system.collector),
            "steady_latency_after_drain": c.latency_summary(after, system.collector),
            "rss_mib": {
                "before": _mib(rss_before),
                "peak": _mib(rss_peak),
                "after": _mib(rss_after),
            },
        }

    def _gate_histogram(self, system: System) -> dict[float, float] | None:
        port = system.metrics_port
        if port is None:
            return None
        try:
            samples_ = c.metrics(port)
        except OSError:
            return None
        return {
            float(dict(labels)["le"]): value
            for (name, labels), value in samples_.items()
            if name == "escalation_decision_latency_seconds_bucket"
        }

    # ------------------------------------------------------------------ systems

    def run_gate(self) -> None:
        args = self.args
        prefix = f"bench-{self.run_id}-gate."
        data_dir = self.work / "gate"
        settings = Settings(
            topic_prefix=prefix,
            partitions=args.partitions,
            data_dir=data_dir,
            store=args.store,
            bootstrap_servers=self.bootstrap,
            **({"policy_file": args.policy} if args.policy else {}),
        )
        from streams.kafka.admin import create_topics  # noqa: PLC0415

        create_topics(settings, self.bootstrap)
        ids = DevIdentities.make(self.work / "identities", read_policy(settings.policy_file))
        port_file = data_dir / "metrics.port"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ESCALATION_TOPIC_PREFIX": prefix,
            "ESCALATION_DATA_DIR": str(data_dir),
            "ESCALATION_METRICS_PORT": "0",
            "ESCALATION_METRICS_ADDR": "127.0.0.1",
            "ESCALATION_METRICS_PORT_FILE": str(port_file),
            "ESCALATION_STORE": args.store,
            "ESCALATION_PARTITIONS": str(args.partitions),
            "ESCALATION_POLICY_FILE": str(settings.policy_file),
            **ids.env(),
            **args.extra_env,
        }
        log = data_dir / "worker.log"
        self.say(f"gate: starting worker (store {args.store}, {args.partitions} partitions)")
        process = c.spawn(
            [sys.executable, "-m", "streams.cli", "worker", "--log-level", "WARNING"],
            env=env,
            log=log,
            cwd=REPO,
        )
        try:
            self._gate(settings, process, port_file, log)
        except Exception:
            self.say(f"gate: worker log tail:\n{c.tail(log)}")
            raise
        finally:
            self.say(f"gate: worker stopped (exit {c.stop(process)})")
        counts = c.records_by_topic(self.bootstrap, prefix)
        decided = counts.get(settings.topic("proposals"), 0)
        if decided and "gate" in self.results:
            self.results["gate"]["records_per_proposal"] = {
                name.removeprefix(prefix): round(n / decided, 3)
                for name, n in sorted(counts.items(), key=lambda kv: -kv[1])
                if n
            }

    def _gate(self, settings: Settings, process: Any, port_file: Path, log: Path) -> None:
        from streams.demo import seed  # noqa: PLC0415

        def alive() -> None:
            if process.poll() is not None:
                raise RuntimeError(f"gate worker exited with {process.returncode}:\n{c.tail(log)}")

        def port_written() -> bool:
            alive()
            return port_file.exists() and port_file.read_text().strip() != ""

        if not c.wait_until(port_written, timeout=120, deadline=self.deadline):
            raise RuntimeError("gate: no metrics port within 120s")
        port = int(port_file.read_text())
        started = time.perf_counter()

        def ready() -> bool:
            alive()
            return c.metric(port, "escalation_worker_ready") >= 1

        if not c.wait_until(ready, timeout=120, deadline=self.deadline, interval=0.2):
            raise RuntimeError("gate: escalation_worker_ready stayed 0 for 120s")
        self.say(f"gate: ready after {time.perf_counter() - started:.1f}s; seeding state")
        now = dt.datetime.now(tz=dt.UTC)
        seed(settings, self.bootstrap, now, DevIdentities(self.work / "identities"))
        wanted = {
            "history": len(samples.history_records(now)),
            "budgets": len(samples.budgets(now)),
            "requalification": len(samples.requalifications(now)),
        }

        def seeded() -> bool:
            alive()
            return all(
                c.metric(port, "escalation_state_updates_applied_total", table=t) >= n
                for t, n in wanted.items()
            )

        if not c.wait_until(seeded, timeout=60, deadline=self.deadline, interval=0.2):
            raise RuntimeError(f"gate: state not seeded within 60s (wanted {wanted})")
        collector = c.Collector(
            self.bootstrap,
            [settings.topic(f"decisions.{r}") for r in DECISION_ROUTES],
            self.args.partitions,
        ).start()
        system = System("gate", process, settings.topic("proposals"), collector)
        try:
            system.metrics_port = port
            # The gate still owes work after a decision is out: the lifecycle agent
            # opens the pending approval and audits it. "Settled" waits for that too.
            system.lag = c.LagProbe(
                self.bootstrap,
                f"{settings.topic_prefix}{settings.app_id}",
                [settings.topic("proposals"), settings.topic("lifecycle")],
            )
            self.warm_up(system, "gate")
            self.say("gate: warm; throughput run")
            self.results["gate"] = {"rss_mib_ready": _mib(c.rss_kib(process.pid))}
            spy = self._start_profiler(process.pid) if self.args.profile else None
            try:
                self.results["gate"]["throughput"] = self.throughputs(system, "gate")
            finally:
                if spy is not None:
                    self._finish_profiler(spy, "the throughput run (fresh worker)")
            self._said_throughput("gate")
            self.latencies(system)
            if self.args.burst > 0:
                self.say(f"gate: burst of {self.args.burst}")
                spy = self._start_profiler(process.pid) if self.args.profile else None
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
        finally:
            collector.close()
            if system.lag is not None:
                system.lag.close()

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
        system = System(name, process, source, collector)
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

    def _said_throughput(self, name: str) -> None:
        t = self.results[name]["throughput"]
        self.say(
            f"{name}: {t['per_second']:,.0f}/s ({t['received']}/{t['count']} in "
            f"{t['first_to_last_seconds']:.1f}s, {t['cpu_ms_per_message']:.2f} CPU ms/message)"
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
            self.say(
                f"{name}: p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, max "
                f"{lat['max_ms']:.1f} ms, decided {lat['decided_rate']:.0f}/s "
                f"({lat['missing']} missing)"
            )

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
    """The commit under test, and whether ``streams/`` differs from it (others edit it)."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "streams")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}{' + uncommitted changes in streams/' if dirty else ''}"


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
        f"  code {bench.version}; env {a.extra_env or '-'}",
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
    p99_faust = get("faust", "latency", "p99_ms")
    lines.extend(
        f"SATURATED: {name} decided {get(name, key, 'decided_rate'):,.0f}/s of "
        f"{get(name, key, 'achieved_rate'):,.0f}/s offered: its latency is queueing"
        for name in ("gate", "faust")
        for key in ("latency_low", "latency")
        if get(name, key, "saturated")
    )
    if p99_gate is not None:
        verdict = "PASS" if p99_gate <= TARGET_P99_MS else "ABOVE TARGET"
        vs = f", Faust forwarder {p99_faust:.1f} ms" if p99_faust is not None else ""
        lines.append(
            f"latency p99 at {a.rate:g}/s: gate {p99_gate:.1f} ms{vs}  {verdict} "
            f"(target <= {TARGET_P99_MS:.0f} ms)"
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
    levels = get("gate", "throughput", "levels")
    if levels:
        total = sum(levels.values()) or 1
        mix = ", ".join(f"L{k} {n} ({100 * n / total:.0f}%)" for k, n in levels.items())
        lines.append(f"level mix (throughput run): {mix}")
        rules = get("gate", "throughput", "deciding_rules") or {}
        lines.append("  deciding rules: " + ", ".join(f"{k} {v}" for k, v in rules.items()))
    burst = get("gate", "burst")
    if burst:
        rss = burst["rss_mib"]
        during = burst["steady_latency_during_burst"]
        lines += [
            (
                f"burst: {burst['size']} proposals at {burst['produce_rate']:,.0f}/s over "
                f"{burst['steady_rate']:g}/s steady: drained in {burst['drain_seconds']:.1f}s "
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
    if get("gate", "profile"):
        lines.append(f"profile: {get('gate', 'profile')} (gate throughput measured under py-spy)")
    lines += [f"note: {n}" for n in bench.notes]
    return "\n".join(lines)


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
    parser.add_argument("--policy", type=Path, default=None, help="policy file for the gate")
    parser.add_argument(
        "--systems",
        default="gate,faust,confluent",
        help="comma-separated subset of gate,faust,confluent",
    )
    parser.add_argument("--deadline", type=float, default=600.0, help="overall limit, seconds")
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
    if any("=" not in e for e in args.env):
        parser.error("--env takes NAME=VALUE")
    args.extra_env = dict(e.split("=", 1) for e in args.env)
    unknown = set(args.systems) - {"gate", "faust", "confluent"}
    if unknown or args.count < 2 or args.rate < 0 or args.seconds <= 0 or args.repeat < 1:
        parser.error(f"bad --systems {sorted(unknown)}" if unknown else "bad numbers")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def interrupted(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    def overdue(_signum: int, _frame: Any) -> None:
        raise c.DeadlineExceededError(f"overall deadline of {args.deadline:g}s passed")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGALRM, overdue)
    signal.alarm(max(1, int(args.deadline + 5)))
    code = 0
    bench: Bench | None = None
    with ExitStack() as stack:
        try:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pipeline-")))
            bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
            kafka_pid: int | None = None
            started = time.perf_counter()
            if not bootstrap:
                from streams.kafka.launcher import LocalKafka  # noqa: PLC0415

                print("starting a local Apache Kafka (KRaft) ...", flush=True)
                kafka = LocalKafka(work / "kafka", cache_dir=Settings().kafka_cache_dir)
                stack.enter_context(kafka)
                bootstrap = kafka.bootstrap_servers
                kafka_pid = kafka.pid
            bench = Bench(args, work, bootstrap)
            bench.say(
                f"broker {bootstrap} ({time.perf_counter() - started:.1f}s); run {bench.run_id}"
            )
            if args.broker_warmup > 0:
                bench.warm_broker(kafka_pid)
            for system in args.systems:
                if system == "gate":
                    bench.run_gate()
                else:
                    bench.run_forwarder(system)
        except Interrupted as exc:
            print(f"\ninterrupted ({exc}); stopping what was started", file=sys.stderr)
            code = 130
        except Exception as exc:
            print(f"\nbench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            if bench is not None:
                bench.notes.append(f"INCOMPLETE: {type(exc).__name__}: {exc}")
            code = 1
        finally:
            signal.alarm(0)
            # A second Ctrl-C must not cut the clean-up short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if bench is not None:
                print(report(bench), flush=True)
                if args.json is not None:
                    payload = {
                        "date": dt.datetime.now(tz=dt.UTC).isoformat(),
                        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                        "command": shlex.join(["python", "bench/pipeline.py", *sys.argv[1:]]),
                        "code": bench.version,
                        "args": {k: str(v) for k, v in vars(args).items()},
                        "results": bench.results,
                        "notes": bench.notes,
                    }
                    args.json.write_bytes(
                        orjson.dumps(payload, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
                    )
    return code


if __name__ == "__main__":
    sys.exit(main())
