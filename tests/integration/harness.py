"""Run real ``escalation worker`` processes against the session's broker, and watch them.

Workers are subprocesses (so a test can SIGKILL one); their state is in their own
data directory; their metrics port is written to a file. Every wait has a deadline.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

import orjson
from prometheus_client.parser import text_string_to_metric_families

from streams import identities, keys, samples
from streams.files import read_policy
from streams.models import ApprovalResponse, ControlCommand, Outcome, Proposal, encode
from streams.settings import Settings
from streams.signing import sign, sign_answer, sign_command
from streams.state.records import history_updates
from streams.testing import wait_until

FAST_POLICY = Path(__file__).resolve().parents[1] / "fixtures" / "fast-policy.yaml"


class Identities(identities.DevIdentities):
    """The session's keys and keyring (streams.identities.DevIdentities)."""

    @classmethod
    def make(cls, root: Path) -> Identities:  # type: ignore[override] # the test policy
        identities.DevIdentities.make(root, read_policy(FAST_POLICY))
        return cls(root)


DECISION_TOPICS = ("execute", "approve", "assist", "manual")


SEED_TIMEOUT = 300.0


class WorkerUnreachableError(AssertionError):
    """The worker's metrics endpoint did not answer."""


def gate_key(settings: Settings) -> Path:
    """The gate's signing key the test's workers use: the session's (ESCALATION_GATE_KEY_FILE,
    set for every integration test), else one made for this test (0600)."""
    configured = os.environ.get("ESCALATION_GATE_KEY_FILE")
    if configured:
        return Path(configured)
    path = settings.data_dir / "keys" / "gate.key"
    if not path.exists():
        keys.write_private(keys.generate("escalation-gate"), path)
    return path


class Worker:
    """One ``escalation worker`` child process."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        *,
        policy_file: Path = FAST_POLICY,
        store: str = "memory://",
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.data_dir = settings.data_dir / name
        self.policy_file = policy_file
        self.store = store
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    @property
    def port_file(self) -> Path:
        return self.data_dir / "metrics.port"

    def start(self) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port_file.unlink(missing_ok=True)
        self._port = None
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers or "",
            "ESCALATION_TOPIC_PREFIX": self.settings.topic_prefix,
            "ESCALATION_DATA_DIR": str(self.data_dir),
            "ESCALATION_METRICS_PORT": "0",
            "ESCALATION_METRICS_PORT_FILE": str(self.port_file),
            "ESCALATION_POLICY_FILE": str(self.policy_file),
            "ESCALATION_STORE": self.store,
            "ESCALATION_TICK_SECONDS": "0.2",
            **self.env,
        }
        log = (self.data_dir / "worker.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams.cli",
                "worker",
                "--log-level",
                os.environ.get("ESCALATION_TEST_WORKER_LOG_LEVEL", "WARNING"),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def log_tail(self, lines: int = 40) -> str:
        path = self.data_dir / "worker.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def port(self, timeout: float = 60.0) -> int:
        if self._port is None:
            assert wait_until(self.port_file.exists, timeout=timeout), self.log_tail()
            assert wait_until(lambda: self.port_file.read_text().strip() != "", timeout=5)
            self._port = int(self.port_file.read_text())
        return self._port

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample the worker exports; ``WorkerUnreachableError`` when it does not answer."""
        url = f"http://127.0.0.1:{self.port()}/metrics"
        try:
            body = urllib.request.urlopen(url, timeout=5).read()
        except OSError as exc:
            raise WorkerUnreachableError(f"{self.name}: {url}: {exc}\n{self.log_tail()}") from exc
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        """One sample (0.0 when the worker has not counted it yet); raises when the worker
        does not answer, so an ``== 0`` assertion cannot pass against a dead worker."""
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_metric(self, name: str, at_least: float, timeout: float = 60.0, **labels: str) -> None:
        def reached() -> bool:
            try:
                return self.metric(name, **labels) >= at_least
            except WorkerUnreachableError:
                return False  # not up yet, or restarting: the deadline decides

        ok = wait_until(reached, timeout=timeout)
        assert ok, (
            f"{self.name}: {name}{labels} stayed at {self.metric(name, **labels)} < {at_least}\n"
            + self.log_tail()
        )

    def wait_ready(self, timeout: float = 90.0) -> Worker:
        self.port(timeout)
        self.wait_metric("escalation_worker_ready", 1, timeout=timeout)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Feed:
    """Produce the gate's inputs for one test prefix."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415

        self.settings = settings
        self.bootstrap = settings.bootstrap_servers or ""
        from streams.kafka.admin import producer_config  # noqa: PLC0415

        self.producer = Producer(producer_config(self.bootstrap, **{"linger.ms": 1}))
        self.ids = Identities(Path(os.environ["ESCALATION_KEYRING_FILE"]).parent)
        self.last: list[Position] = []  # where the last send landed
        self.sent: list[Position] = []  # where every send landed

    def send(
        self,
        topic: str,
        values: Iterable[bytes],
        key: str | bytes | None = None,
        *,
        timestamp: float | None = None,
    ) -> list[Position]:
        """Produce to a logical topic and wait until the broker has every message.

        Returns where each landed (for :func:`wait_processed`). ``timestamp`` sets the
        records' CreateTime (seconds since the epoch).
        """
        errors: list[Any] = []
        positions: list[Position] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err)
            else:
                positions.append((msg.topic(), msg.partition(), msg.offset()))

        extra: dict[str, Any] = {} if timestamp is None else {"timestamp": int(timestamp * 1000)}
        for value in values:
            self.producer.produce(
                self.topic(topic), value=value, key=key, on_delivery=delivered, **extra
            )
        assert self.producer.flush(30) == 0, "messages not delivered"
        assert not errors, errors
        self.last = positions
        self.sent += positions
        return positions

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    def proposals(self, proposals: Iterable[Proposal]) -> list[Proposal]:
        items = list(proposals)
        positions: list[Position] = []

        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            positions.append((msg.topic(), msg.partition(), msg.offset()))

        for p in items:
            self.producer.produce(
                self.topic("proposals"),
                value=encode(p),
                key=p.action.target.service,
                on_delivery=delivered,
            )
        assert self.producer.flush(30) == 0
        self.last = positions
        self.sent += positions
        return items

    def raw(self, topic: str, values: list[bytes], key: bytes | None = None) -> None:
        self.send(topic, values, key=key)

    def history(self, records: Iterable[Any]) -> int:
        messages = [
            (update.kafka_key(), update.value())
            for record in records
            for update in history_updates(record)
        ]
        for key, value in messages:
            self.producer.produce(self.topic("state"), value=value, key=key)
        assert self.producer.flush(30) == 0
        return len(messages)

    def control(
        self,
        command: str,
        *,
        signer: keys.Signer | None = None,
        cosigners: tuple[str, ...] = (),
        **fields: Any,
    ) -> None:
        """A control command signed by its ``user`` (or ``signer``), then ``cosigners``."""
        message = ControlCommand(
            schema_version=1, command=command, at=dt.datetime.now(tz=dt.UTC), **fields
        )
        signed = sign_command(message, signer or self.ids.person(message.user))
        for name in cosigners:
            signed = sign_command(signed, self.ids.person(name))
        self.send("control", [encode(signed)], key="control")

    def budget(self, service: str, remaining: float) -> None:
        from streams.models import ErrorBudgetUpdate  # noqa: PLC0415

        update = ErrorBudgetUpdate(
            schema_version=1,
            service=service,
            remaining=remaining,
            at=dt.datetime.now(tz=dt.UTC),
            source=identities.DEV_SLO_SOURCE,
        )
        self.send("error-budgets", [encode(sign(update, self.ids.slo()))], key=service)

    def outcome(self, decision: dict[str, Any], **overrides: Any) -> Outcome:
        p = decision["proposal"]
        outcome = Outcome.model_validate(
            {
                "schema_version": 1,
                "decision_id": decision["decision_id"],
                "proposal_id": decision["proposal_id"],
                "pattern": p["pattern"],
                "action_type": p["action"]["type"],
                "ai_system": p["source"]["ai_system"],
                "service": p["action"]["target"]["service"],
                "level": decision["level"],
                "result": "success",
                "verification": "passed",
                "at": dt.datetime.now(tz=dt.UTC).isoformat(),
                # What the gate learns signatures and calibration from (as the executor).
                "target_kind": p["action"]["target"]["kind"],
                "namespace": p["action"]["target"]["namespace"],
                "environment": p["action"]["target"]["environment"],
                "parameters": p["action"]["parameters"],
                "model": p["source"].get("model"),
                "confidence": p["confidence"]["model"],
                **overrides,
            }
        )
        key = f"{outcome.pattern}|{outcome.action_type}"
        self.send("outcomes", [encode(sign(outcome, self.ids.executor()))], key=key)
        return outcome

    def answer(
        self,
        kind: str,
        decision_id: str,
        user: str,
        *,
        signer: keys.Signer | None = None,
        signed: bool = True,
        nonce: str | None = None,
        timestamp: float | None = None,
        **fields: Any,
    ) -> ApprovalResponse:
        """An answer signed by ``user``'s key (or ``signer``); ``timestamp`` is the
        record's CreateTime (the broker replaces it: input topics use LogAppendTime)."""
        import secrets  # noqa: PLC0415

        now = (
            dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
            if timestamp
            else dt.datetime.now(tz=dt.UTC)
        )
        answer = ApprovalResponse(
            schema_version=1,
            kind=kind,
            decision_id=decision_id,
            user=user,
            nonce=nonce or secrets.token_hex(12),
            issued_at=now,
            expires_at=now + dt.timedelta(minutes=5),
            **fields,
        )
        if signed:
            answer = sign_answer(answer, signer or self.ids.person(user))
        self.answer_raw(answer, timestamp=timestamp)
        return answer

    def answer_raw(self, answer: ApprovalResponse, *, timestamp: float | None = None) -> None:
        self.send("approvals", [encode(answer)], key=answer.decision_id, timestamp=timestamp)

    def seed_samples(self, *workers: Worker) -> None:
        """History, budgets and re-qualifications of ``streams.samples``.

        Waits until every worker given has all of it in its state mirror.
        """
        now = dt.datetime.now(tz=dt.UTC)
        records = samples.history_records(now)
        self.history(records)
        for update in samples.budgets(now):
            self.budget(update.service, update.remaining)
        requalifications = samples.requalifications(now)
        signed = [sign_command(c, self.ids.person(c.user)) for c in requalifications]
        self.send("control", [encode(c) for c in signed], key="control")
        # Budgets and re-qualifications pass through the workers' agents while a second
        # worker may still be joining the group (a rebalance, with recovery, on a
        # loaded machine), so this waits as long as the fault tests do.
        for w in workers:
            w.wait_metric(
                "escalation_state_updates_applied_total",
                len(records),
                timeout=SEED_TIMEOUT,
                table="history",
            )
            w.wait_metric(
                "escalation_state_updates_applied_total",
                len(samples.budgets(now)),
                timeout=SEED_TIMEOUT,
                table="budgets",
            )
            w.wait_metric(
                "escalation_state_updates_applied_total",
                len(requalifications),
                timeout=SEED_TIMEOUT,
                table="requalification",
            )


Position = tuple[str, int, int]  # topic, partition, offset


def wait_processed(
    settings: Settings, positions: Iterable[Position], timeout: float = 60.0
) -> None:
    """Wait until the gate's consumer group has committed past every position.

    The gate commits an input only once everything it caused is on the broker, so
    after this the outputs of those inputs can be read to the end of their topics.
    """
    from confluent_kafka import Consumer, TopicPartition  # noqa: PLC0415

    wanted: dict[tuple[str, int], int] = {}
    for t, p, o in positions:
        wanted[(t, p)] = max(o, wanted.get((t, p), -1))
    from streams.topology.lanes import offsets_group  # noqa: PLC0415

    group = f"{settings.topic_prefix}{settings.app_id}"
    # Topics read in lanes keep their offsets in a group of their own (lanes.py).
    laned = (
        {settings.topic(t) for t in ("proposals", "lifecycle", "approvals")}
        if settings.proposals_reader == "lanes"
        else set()
    )
    config = {"bootstrap.servers": settings.bootstrap_servers, "enable.auto.commit": False}
    consumer = Consumer({**config, "group.id": group})
    reader = Consumer({**config, "group.id": offsets_group(group)})
    try:

        def committed() -> bool:
            tps = [TopicPartition(t, p) for t, p in wanted if t not in laned]
            read = [TopicPartition(t, p) for t, p in wanted if t in laned]
            done = consumer.committed(tps, timeout=10) if tps else []
            done += reader.committed(read, timeout=10) if read else []
            return all(tp.offset > wanted[(tp.topic, tp.partition)] for tp in done)

        assert wait_until(committed, timeout=timeout, interval=0.1), f"not committed: {wanted}"
    finally:
        consumer.close()
        reader.close()


class Reader:
    """A group-less consumer of some topics from their beginning that keeps what it read."""

    def __init__(self, bootstrap: str, topics: Iterable[str]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: PLC0415

        from streams.testing import wait_for_topic  # noqa: PLC0415

        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "harness-reader",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        assignment = []
        for topic in topics:
            partitions = wait_for_topic(bootstrap, topic, timeout=60)
            assert partitions, f"topic {topic} does not exist"
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        self.consumer.assign(assignment)
        self.messages: list[Any] = []

    def drain(self, timeout: float = 0.2) -> None:
        for message in self.consumer.consume(num_messages=10_000, timeout=timeout):
            if message.error() is None:
                self.messages.append(message)

    def read_to_end(self, timeout: float = 30.0) -> None:
        """Read everything the topics hold now: up to their end offsets at this call.

        After :func:`wait_processed`, this is how absence is proven: whatever the gate
        wrote for an input is on the broker before its offset is committed.
        """
        ends = {}
        for tp in self.consumer.assignment():
            _low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
            ends[(tp.topic, tp.partition)] = high
        seen: dict[tuple[str, int], int] = {}

        def caught_up() -> bool:
            for message in self.consumer.consume(num_messages=10_000, timeout=0.1):
                if message.error() is None:
                    self.messages.append(message)
                    key = (str(message.topic()), int(message.partition() or 0))
                    seen[key] = int(message.offset() or 0) + 1
            for key, high in ends.items():
                if seen.get(key, 0) < high:
                    position = self._position(key)
                    if position < high:
                        return False
            return True

        assert wait_until(caught_up, timeout=timeout, interval=0.01), "topics not read to the end"

    def _position(self, key: tuple[str, int]) -> int:
        from confluent_kafka import TopicPartition  # noqa: PLC0415

        (tp,) = self.consumer.position([TopicPartition(*key)])
        return int(tp.offset) if tp.offset >= 0 else 0

    def values(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [
            orjson.loads(m.value())
            for m in self.messages
            if (topic is None or m.topic() == topic) and m.value()
        ]

    def wait(self, condition: Callable[[Reader], bool], timeout: float = 60.0) -> bool:
        def check() -> bool:
            self.drain()
            return condition(self)

        return wait_until(check, timeout=timeout, interval=0.01)

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class DecisionReader(Reader):
    """Decisions (``type == decision``) on the four route topics, by proposal id."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__(
            settings.bootstrap_servers or "",
            [settings.topic(f"decisions.{r}") for r in DECISION_TOPICS],
        )

    def by_proposal(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for m in self.messages:
            value = orjson.loads(m.value())
            if value.get("type") == "decision":
                value["_topic"] = m.topic().rsplit(".", 1)[-1]
                value["_key"] = m.key()
                out.setdefault(value["proposal_id"], value)
        return out

    def wait_for(
        self, proposal_ids: Iterable[str], timeout: float = 60.0
    ) -> dict[str, dict[str, Any]]:
        wanted = set(proposal_ids)
        ok = self.wait(lambda r: wanted <= set(self.by_proposal()), timeout=timeout)
        found = self.by_proposal()
        assert ok, f"no decision for {sorted(wanted - set(found))}"
        return {pid: found[pid] for pid in wanted}
