"""The reference executor: consume the gate's decisions, run each action once, report it.

``Executor(settings, handler=...)`` is the Python API; ``escalation executor --run
CMD`` wraps it with shell commands (streams/executor/cli.py). Guarantees:

- only what the gate signed runs (``streams.executor.guard``): unsigned, forged,
  tampered records, Levels 0 and 1, a Level 2 decision without the gate's
  ``execute`` command, an abort that is not for Level 3 inside its window: refused,
  logged, counted (``escalation_executor_refused_total{reason}``), never run;
- at most once per id (decision id, or command id for an approved Level 2 and an
  abort), across redeliveries and restarts: the ledger records the claim before the
  command starts (streams/executor/ledger.py). Input is at-least-once: the offset
  is committed after the record is handled and its outcome is on the broker;
- every execution reports one ``Outcome`` on ``outcomes``, signed with the
  executor's own key; an outcome not confirmed by the broker is sent again at the
  next start, an action interrupted by a crash is reported as a failure (and not
  run again);
- one line per action on stdout; metrics on a Prometheus registry.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO

import orjson

from streams.executor.guard import (
    Action,
    Approvable,
    Autonomous,
    Order,
    Refused,
    TopicRole,
    abort_in_window,
    judge,
    matches,
)
from streams.executor.ledger import Ledger
from streams.executor.metrics import ExecutorMetrics
from streams.executor.runner import Handler, Result, Task
from streams.models.messages import Outcome

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from streams.keys import PublicKeys, Signer
    from streams.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE_S = 900.0
DELIVERY_TIMEOUT_S = 30.0
RETRY_UNREPORTED_S = 10.0
#: A remembered Level 2 decision is forgotten after this (the lifecycle topic's week).
APPROVABLE_KEPT = dt.timedelta(days=7)

Happened = Literal[
    "executed", "refused", "duplicate", "waiting", "remembered", "aborted", "rolled_back", "skipped"
]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _bootstrap(settings: Settings) -> str:
    if not settings.bootstrap_servers:
        msg = "bootstrap_servers: the executor needs KAFKA_BOOTSTRAP_SERVERS"
        raise ValueError(msg)
    return settings.bootstrap_servers


class OutcomeWriter(Protocol):
    """Where outcomes go: ``write`` returns once the record is stored (True) or not."""

    def write(self, key: bytes, value: bytes) -> bool: ...

    def close(self) -> None: ...


class KafkaOutcomes:
    """Outcomes to the ``outcomes`` topic: idempotent producer, wait for the broker."""

    def __init__(self, settings: Settings, topic: str) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415

        from streams.kafka.admin import producer_config  # noqa: PLC0415
        from streams.kafka.security import confluent_config  # noqa: PLC0415

        self.topic = topic
        self._producer = Producer(
            producer_config(
                _bootstrap(settings),
                **{"linger.ms": 0, "message.timeout.ms": int(DELIVERY_TIMEOUT_S * 1000)},
                **confluent_config(settings),
            )
        )

    def write(self, key: bytes, value: bytes) -> bool:
        errors: list[Any] = []
        self._producer.produce(
            self.topic, value, key=key, on_delivery=lambda err, _msg: errors.append(err)
        )
        self._producer.flush(DELIVERY_TIMEOUT_S + 5)
        if errors and errors[0] is not None:
            log.error("outcome not delivered: %s", errors[0])
        return bool(errors) and errors[0] is None

    def close(self) -> None:
        self._producer.flush(10)


@dataclass(frozen=True, slots=True)
class Handled:
    """What one record came to (the service's return value, for tests and callers)."""

    happened: Happened
    decision_id: str | None = None
    reason: str = ""


class Executor:
    """Consumes ``decisions.execute`` (and ``decisions.approve`` for approved Level 2
    actions) in its own consumer group and runs ``handler`` once per action.

    ``handler(task) -> Result`` performs the action; ``verifier`` checks a Level 4
    action after it ran; ``rollback`` undoes a Level 3 action aborted inside its
    window. Each is called with a ``Task`` (the action, its id and the step).
    """

    def __init__(
        self,
        settings: Settings,
        handler: Handler,
        *,
        verifier: Handler | None = None,
        rollback: Handler | None = None,
        team: str = "default",
        keys: PublicKeys | None = None,
        signer: Signer | None = None,
        ledger_path: Path | None = None,
        metrics: ExecutorMetrics | None = None,
        from_beginning: bool = False,
        max_age: float | None = DEFAULT_MAX_AGE_S,
        out: TextIO | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
        outcomes: OutcomeWriter | None = None,
    ) -> None:
        from streams import keys as keys_module  # noqa: PLC0415
        from streams.kafka.acls import executor_group  # noqa: PLC0415

        self.settings = settings
        self.handler = handler
        self.verifier = verifier
        self.rollback = rollback
        self.team = team
        self.group = executor_group(settings, team)
        self.keys = keys if keys is not None else keys_module.gate_public_keys(settings)
        self.signer = signer if signer is not None else keys_module.executor_signer(settings)
        self.name = self.signer.name or f"executor-{team}"
        self.metrics = metrics if metrics is not None else ExecutorMetrics()
        self.from_beginning = from_beginning
        self.max_age = max_age
        self.out = out if out is not None else sys.stdout
        self.clock = clock
        self.execute_topic = settings.topic("decisions.execute")
        self.approve_topic = settings.topic("decisions.approve")
        self.outcomes_topic = settings.topic("outcomes")
        path = ledger_path or settings.data_dir / "executor" / f"{self.group}.sqlite3"
        self.ledger = Ledger.open(path)
        self.outcomes = outcomes
        self._last_retry = 0.0

    # ------------------------------------------------------------ one record

    def handle(self, topic: TopicRole, raw: bytes, *, where: str = "") -> Handled:
        """Act on one record of ``decisions.execute`` or ``decisions.approve``."""
        now = self.clock()
        verdict = judge(topic, raw, self.keys, now=now, max_age=self.max_age)
        if isinstance(verdict, Refused):
            self.metrics.refused.labels(verdict.reason).inc()
            self._line(
                "refused",
                reason=verdict.reason,
                decision_id=verdict.decision_id,
                at=where,
                detail=verdict.detail,
            )
            return Handled("refused", verdict.decision_id, verdict.reason)
        if isinstance(verdict, Autonomous):
            action = verdict.action
            if self.ledger.aborted(action.decision_id):
                self._line("skipped", decision_id=action.decision_id, reason="aborted")
                return Handled("skipped", action.decision_id, "aborted")
            return self._execute(action, action.decision_id, now)
        if isinstance(verdict, Approvable):
            action = verdict.action
            self.ledger.remember(action, now)
            waiting = self.ledger.take_waiting(action.decision_id)
            if waiting is not None:
                return self.handle("execute", waiting, where="(waited for its decision)")
            return Handled("remembered", action.decision_id)
        return self._order(verdict, raw, now)

    def _order(self, order: Order, raw: bytes, now: dt.datetime) -> Handled:
        command = order.command
        did = command.decision_id
        if command.type == "execute":
            action = self.ledger.approvable(did)
            if action is None:
                self.ledger.wait(did, raw)
                self._line("waiting", decision_id=did, command_id=command.command_id)
                return Handled("waiting", did)
            mismatch = matches(action, command)
            if mismatch is not None:
                return self._refuse("mismatch", did, mismatch)
            return self._execute(action, command.command_id, now)
        executed = self.ledger.executed(did)
        if executed is None:
            # Never run it: the abort came first (the executor was behind, or down).
            self.ledger.abort(did, command.command_id, now)
            self.metrics.aborted.inc()
            self._line("aborted", decision_id=did, command_id=command.command_id)
            return Handled("aborted", did)
        outside = abort_in_window(executed, command)
        if outside is not None:
            return self._refuse("abort_outside_window", did, outside)
        self.ledger.abort(did, command.command_id, now)
        if not self.ledger.claim(command.command_id, "rollback", executed, now):
            self.metrics.duplicates.inc()
            self._line("duplicate", decision_id=did, id=command.command_id)
            return Handled("duplicate", did)
        if self.rollback is None:
            result = Result(False, "no rollback command configured")
        else:
            result = self._step(self.rollback, Task(executed, command.command_id, "rollback"))
        self.ledger.finish(command.command_id, None)
        outcome = "success" if result.ok else "failure"
        self.metrics.actions.labels("rollback", outcome).inc()
        self._line(
            "rolled_back",
            decision_id=did,
            command_id=command.command_id,
            result=outcome,
            detail=result.detail,
        )
        return Handled("rolled_back", did, outcome)

    def _refuse(self, reason: str, decision_id: str, detail: str) -> Handled:
        self.metrics.refused.labels(reason).inc()
        self._line("refused", reason=reason, decision_id=decision_id, detail=detail)
        return Handled("refused", decision_id, reason)

    def _execute(self, action: Action, action_id: str, now: dt.datetime) -> Handled:
        if not self.ledger.claim(action_id, "execute", action, now):
            self.metrics.duplicates.inc()
            self._line("duplicate", decision_id=action.decision_id, id=action_id)
            return Handled("duplicate", action.decision_id)
        started = time.monotonic()
        result = self._step(self.handler, Task(action, action_id, "execute"))
        verification: Literal["passed", "failed", "skipped"] = "skipped"
        detail = result.detail
        if result.ok and action.level == 4 and self.verifier is not None:
            checked = self._step(self.verifier, Task(action, action_id, "verify"))
            verification = "passed" if checked.ok else "failed"
            self.metrics.verifications.labels(verification).inc()
            detail = checked.detail
        seconds = time.monotonic() - started
        outcome = self._outcome(
            action,
            "success" if result.ok else "failure",
            verification,
            seconds=seconds,
            detail=detail,
        )
        self.ledger.finish(action_id, outcome)
        self.metrics.actions.labels("execute", outcome["result"]).inc()
        self.metrics.duration.observe(seconds)
        self._report(action_id, outcome)
        self._line(
            "executed",
            decision_id=action.decision_id,
            id=action_id,
            level=action.level,
            action=action.action_type,
            service=action.service,
            result=outcome["result"],
            verification=verification,
            seconds=f"{seconds:.3f}",
            detail=detail,
        )
        return Handled("executed", action.decision_id, outcome["result"])

    def _step(self, handler: Handler, task: Task) -> Result:
        try:
            return handler(task)
        except Exception as exc:  # a handler's bug is the action's failure, not ours
            log.exception("%s of %s raised", task.step, task.action_id)
            return Result(False, f"{task.step}: {type(exc).__name__}: {exc}")

    def _outcome(
        self,
        action: Action,
        result: Literal["success", "failure"],
        verification: Literal["passed", "failed", "skipped"],
        *,
        seconds: float | None,
        detail: str,
    ) -> dict[str, Any]:
        outcome = Outcome(
            schema_version=1,
            decision_id=action.decision_id,
            proposal_id=action.proposal_id,
            pattern=action.pattern,
            action_type=action.action_type,
            ai_system=action.ai_system,
            service=action.service,
            level=action.level,
            result=result,
            verification=verification,
            at=self.clock(),
            executor=self.name,
            duration_seconds=seconds,
            detail=detail[:4000],
            target_kind=action.target_kind,
            namespace=action.namespace,
            environment=action.environment,
            parameters=action.parameters,
            model=action.model,
            confidence=action.confidence,
        )
        return self.signer.sign(outcome.model_dump(mode="json", exclude={"signature"}))

    # ------------------------------------------------------------ outcomes

    def _bootstrap(self) -> str:
        return _bootstrap(self.settings)

    def _report(self, action_id: str, outcome: dict[str, Any]) -> bool:
        """Write one outcome and wait for the broker; True when it is there."""
        if self.outcomes is None:
            self.outcomes = KafkaOutcomes(self.settings, self.outcomes_topic)
        delivered = self.outcomes.write(
            f"{outcome['pattern']}|{outcome['action_type']}".encode(), orjson.dumps(outcome)
        )
        self.metrics.outcomes.labels("true" if delivered else "false").inc()
        if delivered:
            self.ledger.reported(action_id)
        else:
            log.error("outcome of %s not delivered; sent again later", action_id)
        return delivered

    def recover(self) -> None:
        """After a restart: report interrupted actions as failed, resend unreported outcomes."""
        for action_id, step, action in self.ledger.interrupted():
            if step == "rollback":
                self.ledger.finish(action_id, None)
                self._line(
                    "rolled_back",
                    decision_id=action.decision_id,
                    result="unknown",
                    detail="interrupted: the executor stopped during the rollback",
                )
                continue
            detail = "interrupted: the executor stopped while it ran; not run again"
            outcome = self._outcome(action, "failure", "skipped", seconds=None, detail=detail)
            self.ledger.finish(action_id, outcome)
            self.metrics.actions.labels("execute", "interrupted").inc()
            self._line(
                "executed",
                decision_id=action.decision_id,
                id=action_id,
                result="failure",
                detail=detail,
            )
        self.retry_unreported()

    def retry_unreported(self) -> int:
        """Send again every outcome the broker has not confirmed; the number still missing."""
        self._last_retry = time.monotonic()
        missing = 0
        for item in self.ledger.unreported():
            if not self._report(item.action_id, item.outcome):
                missing += 1
        return missing

    # ------------------------------------------------------------ the loop

    def consumer_config(self) -> dict[str, Any]:
        """The consumer's settings: own group, manual commits, the security settings."""
        from streams.kafka.admin import CLIENT_LOG  # noqa: PLC0415
        from streams.kafka.security import confluent_config  # noqa: PLC0415

        return {
            "bootstrap.servers": self._bootstrap(),
            "group.id": self.group,
            "enable.auto.commit": False,
            # A new team starts at the end: the topic's history is not re-run.
            "auto.offset.reset": "earliest" if self.from_beginning else "latest",
            "logger": CLIENT_LOG,
            **confluent_config(self.settings),
        }

    def run(
        self, stop: threading.Event | None = None, *, on_assigned: Callable[[], None] | None = None
    ) -> None:
        """Consume until ``stop`` is set; commit each record once it is handled."""
        from confluent_kafka import Consumer, KafkaError  # noqa: PLC0415

        stop = stop or threading.Event()
        self.recover()
        consumer = Consumer(self.consumer_config())

        def assigned(_consumer: Any, partitions: Any) -> None:
            log.info("executor %s assigned %d partitions", self.group, len(partitions))
            if on_assigned is not None:
                on_assigned()

        consumer.subscribe([self.execute_topic, self.approve_topic], on_assign=assigned)
        try:
            while not stop.is_set():
                if time.monotonic() - self._last_retry > RETRY_UNREPORTED_S:
                    self.retry_unreported()
                message = consumer.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.fatal():
                        msg = f"the executor's consumer failed: {error.str()}"
                        raise RuntimeError(msg)
                    if error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's name
                        log.warning("consumer: %s", error.str())
                    continue
                role: TopicRole = "execute" if message.topic() == self.execute_topic else "approve"
                where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
                self.handle(role, message.value() or b"", where=where)
                consumer.commit(message=message, asynchronous=False)
        finally:
            consumer.close()

    def close(self) -> None:
        """Flush the outcome writer and release the ledger."""
        if self.outcomes is not None:
            self.outcomes.close()
        self.ledger.close()

    # ------------------------------------------------------------ output

    def _line(self, event: str, **fields: Any) -> None:
        parts = [self.clock().strftime("%Y-%m-%dT%H:%M:%SZ"), event]
        for key, value in fields.items():
            if value is None or value == "":
                continue
            text = str(value)
            parts.append(f"{key}={orjson.dumps(text).decode() if ' ' in text else text}")
        print(" ".join(parts), file=self.out, flush=True)
