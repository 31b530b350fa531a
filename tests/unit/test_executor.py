"""The reference executor without a broker: what runs, what is refused, and at most once."""

from __future__ import annotations

import copy
import datetime as dt
import io
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import keys
from streams.executor import Executor, ExecutorMetrics, Result, ShellCommand, Task
from streams.executor.guard import Action, judge
from streams.executor.ledger import Ledger, LedgerError
from streams.executor.samples import command, decision
from streams.models import Outcome
from streams.models.codec import validate
from streams.settings import Settings

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


class Recorder:
    """A handler that records every task and answers ``ok``."""

    def __init__(self, ok: bool = True) -> None:
        self.tasks: list[Task] = []
        self.ok = ok

    def __call__(self, task: Task) -> Result:
        self.tasks.append(task)
        return Result(self.ok, "" if self.ok else "it failed")


class Outcomes:
    """An outcome writer that keeps what it was given."""

    def __init__(self, deliver: bool = True) -> None:
        self.records: list[dict[str, Any]] = []
        self.deliver = deliver

    def write(self, key: bytes, value: bytes) -> bool:
        if self.deliver:
            self.records.append(orjson.loads(value))
        return self.deliver

    def close(self) -> None:
        pass


@pytest.fixture
def gate() -> keys.Signer:
    return keys.generate("escalation-gate")


@pytest.fixture
def executor_key() -> keys.Signer:
    return keys.generate("executor-test")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1", data_dir=tmp_path)


class Rig:
    """An executor with a recording handler, verifier and rollback, and its outcomes."""

    def __init__(self, settings: Settings, gate: keys.Signer, signer: keys.Signer) -> None:
        self.settings, self.gate, self.signer = settings, gate, signer
        self.handler, self.verifier, self.rollback = Recorder(), Recorder(), Recorder()
        self.outcomes = Outcomes()
        self.out = io.StringIO()
        self.metrics = ExecutorMetrics()
        self.executor = self.start()

    def start(self, public: keys.PublicKeys | None = None) -> Executor:
        return Executor(
            self.settings,
            self.handler,
            verifier=self.verifier,
            rollback=self.rollback,
            keys=public or keys.PublicKeys([self.gate.public]),
            signer=self.signer,
            metrics=self.metrics,
            out=self.out,
            clock=lambda: NOW,
            outcomes=self.outcomes,
        )

    def restart(self) -> None:
        self.executor.close()
        self.executor = self.start()

    def send(self, body: dict[str, Any], topic: str = "execute", *, sign: bool = True) -> Any:
        signed = self.gate.sign(body) if sign else body
        return self.executor.handle(topic, orjson.dumps(signed))  # type: ignore[arg-type]

    def refused(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "escalation_executor_refused_total", {"reason": reason}
        )
        return value or 0.0


@pytest.fixture
def rig(settings: Settings, gate: keys.Signer, executor_key: keys.Signer) -> Any:
    r = Rig(settings, gate, executor_key)
    yield r
    r.executor.close()


def test_a_signed_level_3_decision_runs_once_with_the_action_in_the_environment(rig: Rig) -> None:
    body = decision(3, now=NOW, decision_id="d-3", parameters={"replicas": 2})

    first = rig.send(body)

    assert first.happened == "executed"
    [task] = rig.handler.tasks
    env = task.environment()
    assert env["ESCALATION_DECISION_ID"] == "d-3"
    assert env["ESCALATION_ACTION_TYPE"] == "rolling_restart"
    assert env["ESCALATION_SERVICE"] == "checkout-api"
    assert env["ESCALATION_NAMESPACE"] == "shop"
    assert env["ESCALATION_KIND"] == "Deployment"
    assert orjson.loads(env["ESCALATION_PARAMETERS"]) == {"replicas": 2}
    assert env["ESCALATION_LEVEL"] == "3"
    assert "executed decision_id=d-3" in rig.out.getvalue()


def test_a_redelivered_decision_is_not_run_again(rig: Rig) -> None:
    body = decision(3, now=NOW, decision_id="d-dup")

    rig.send(body)
    again = rig.send(body)

    assert again.happened == "duplicate"
    assert len(rig.handler.tasks) == 1
    assert len(rig.outcomes.records) == 1


def test_after_a_restart_the_same_decision_is_not_run_again(rig: Rig) -> None:
    body = decision(4, now=NOW, decision_id="d-restart")
    rig.send(body)

    rig.restart()
    again = rig.send(body)

    assert again.happened == "duplicate"
    assert len(rig.handler.tasks) == 1


def test_the_outcome_is_an_outcome_signed_with_the_executors_key(rig: Rig) -> None:
    rig.send(decision(3, now=NOW, decision_id="d-out"))

    [record] = rig.outcomes.records
    outcome = validate(Outcome, record)
    assert (outcome.decision_id, outcome.level, outcome.result) == ("d-out", 3, "success")
    assert outcome.verification == "skipped"
    assert outcome.duration_seconds is not None
    assert outcome.ai_system == "holmesgpt"
    assert keys.PublicKeys([rig.signer.public]).verify(record) is None
    assert keys.PublicKeys([rig.gate.public]).verify(record) == "unknown_key"


def _tampered(gate: keys.Signer, body: dict[str, Any]) -> dict[str, Any]:
    signed = gate.sign(body)
    signed["proposal"]["action"]["target"]["service"] = "payments-api"
    return signed


@pytest.mark.parametrize(
    ("attack", "reason"),
    [
        ("unsigned", "unsigned"),
        ("forged", "unknown_key"),
        ("tampered", "bad_signature"),
        ("malformed", "malformed_signature"),
        ("garbage_sig", "malformed_signature"),
    ],
)
def test_unsigned_forged_or_tampered_records_are_refused_and_counted(
    rig: Rig, attack: str, reason: str
) -> None:
    body = decision(4, now=NOW, decision_id=f"d-{attack}")
    record: dict[str, Any]
    if attack == "unsigned":
        record = body
    elif attack == "forged":
        record = keys.generate("attacker").sign(body)
    elif attack == "tampered":
        record = _tampered(rig.gate, body)
    elif attack == "malformed":
        record = {**body, "signature": "deadbeef"}
    else:
        signed = rig.gate.sign(body)
        record = {**signed, "signature": {**signed["signature"], "sig": "not base64!"}}

    result = rig.send(record, sign=False)

    assert (result.happened, result.reason) == ("refused", reason)
    assert rig.handler.tasks == []
    assert rig.outcomes.records == []
    assert rig.refused(reason) == 1
    assert f"refused reason={reason}" in rig.out.getvalue()


def test_a_signature_moved_onto_another_decision_is_refused(rig: Rig) -> None:
    signature = rig.gate.sign(decision(3, now=NOW, decision_id="d-a"))["signature"]
    other = {**decision(3, now=NOW, decision_id="d-b"), "signature": signature}

    assert rig.send(other, sign=False).reason == "bad_signature"
    assert rig.handler.tasks == []


def test_a_decision_signed_with_a_retired_gate_key_still_verifies(rig: Rig) -> None:
    retired = keys.generate("old-gate")
    rig.executor.close()
    rig.executor = rig.start(keys.PublicKeys([rig.gate.public, retired.public]))

    result = rig.executor.handle(
        "execute", orjson.dumps(retired.sign(decision(3, now=NOW, decision_id="d-old")))
    )

    assert result.happened == "executed"


@pytest.mark.parametrize("level", [0, 1, 2])
def test_levels_0_1_and_a_bare_level_2_decision_never_execute(rig: Rig, level: int) -> None:
    result = rig.send(decision(level, now=NOW, decision_id=f"d-l{level}"))

    assert (result.happened, result.reason) == ("refused", "level_not_executable")
    assert rig.handler.tasks == []


def test_level_2_runs_only_after_the_gates_execute_command(rig: Rig) -> None:
    body = decision(2, now=NOW, decision_id="d-l2")

    assert rig.send(body, "approve").happened == "remembered"
    assert rig.handler.tasks == []
    executed = rig.send(command("execute", body, now=NOW))
    again = rig.send(command("execute", body, now=NOW))

    assert executed.happened == "executed"
    assert again.happened == "duplicate"
    [task] = rig.handler.tasks
    assert task.action_id == "d-l2:execute"
    assert task.environment()["ESCALATION_LEVEL"] == "2"
    assert validate(Outcome, rig.outcomes.records[0]).level == 2


def test_an_execute_command_before_its_decision_waits_for_it(rig: Rig) -> None:
    body = decision(2, now=NOW, decision_id="d-early")

    assert rig.send(command("execute", body, now=NOW)).happened == "waiting"
    assert rig.handler.tasks == []
    result = rig.send(body, "approve")

    assert result.happened == "executed"
    assert len(rig.handler.tasks) == 1


def test_an_execute_command_that_does_not_match_its_decision_is_refused(rig: Rig) -> None:
    body = decision(2, now=NOW, decision_id="d-mismatch")
    rig.send(body, "approve")
    wrong = {**command("execute", body, now=NOW), "service": "payments-api"}

    assert rig.send(wrong).reason == "mismatch"
    assert rig.handler.tasks == []


def test_an_execute_command_for_a_level_3_decision_is_refused(rig: Rig) -> None:
    body = decision(3, now=NOW, decision_id="d-exec3")

    assert rig.send(command("execute", body, now=NOW)).reason == "level_not_executable"


def test_an_abort_inside_the_window_rolls_a_level_3_action_back_once(rig: Rig) -> None:
    body = decision(3, now=NOW, decision_id="d-abort")
    rig.send(body)
    abort = command("abort", body, now=NOW + dt.timedelta(minutes=2))

    first = rig.send(abort)
    again = rig.send(abort)

    assert first.happened == "rolled_back"
    assert again.happened == "duplicate"
    assert [t.step for t in rig.rollback.tasks] == ["rollback"]
    assert len(rig.outcomes.records) == 1  # the execution's; a rollback reports no outcome


def test_an_abort_before_the_executor_ran_it_means_it_never_runs(rig: Rig) -> None:
    body = decision(3, now=NOW, decision_id="d-abort-first")

    assert rig.send(command("abort", body, now=NOW)).happened == "aborted"
    rig.restart()
    later = rig.send(body)

    assert (later.happened, later.reason) == ("skipped", "aborted")
    assert rig.handler.tasks == []


def test_an_abort_after_the_window_is_refused(rig: Rig) -> None:
    body = decision(3, now=NOW, decision_id="d-late")
    rig.send(body)

    result = rig.send(command("abort", body, now=NOW + dt.timedelta(minutes=6)))

    assert result.reason == "abort_outside_window"
    assert rig.rollback.tasks == []


def test_an_abort_for_level_4_is_refused(rig: Rig) -> None:
    body = decision(4, now=NOW, decision_id="d-abort4")
    rig.send(body)

    assert rig.send(command("abort", body, now=NOW)).reason == "level_not_executable"
    assert rig.rollback.tasks == []


@pytest.mark.parametrize(("ok", "verification"), [(True, "passed"), (False, "failed")])
def test_level_4_is_verified_after_it_ran(rig: Rig, ok: bool, verification: str) -> None:
    rig.verifier.ok = ok

    rig.send(decision(4, now=NOW, decision_id=f"d-verify-{ok}"))

    assert [t.step for t in rig.verifier.tasks] == ["verify"]
    assert rig.outcomes.records[0]["verification"] == verification


def test_level_3_is_not_verified(rig: Rig) -> None:
    rig.send(decision(3, now=NOW, decision_id="d-noverify"))

    assert rig.verifier.tasks == []


def test_a_failing_or_raising_handler_reports_a_failure(rig: Rig) -> None:
    def boom(_task: Task) -> Result:
        msg = "kubectl not found"
        raise RuntimeError(msg)

    rig.executor.handler = boom

    assert rig.send(decision(3, now=NOW, decision_id="d-boom")).reason == "failure"
    outcome = rig.outcomes.records[0]
    assert outcome["result"] == "failure"
    assert "kubectl not found" in outcome["detail"]


def test_a_stale_decision_is_refused(rig: Rig) -> None:
    old = decision(3, now=NOW - dt.timedelta(hours=1), decision_id="d-stale")

    assert rig.send(old).reason == "stale"
    assert rig.handler.tasks == []


def test_not_json_and_unknown_types_are_refused(rig: Rig) -> None:
    assert rig.executor.handle("execute", b"{not json").reason == "not_json"
    assert rig.send({"type": "bogus", "decision_id": "x"}).reason == "unknown_type"
    assert rig.send({"type": "decision", "decision_id": "x"}).reason == "schema"


def test_an_action_interrupted_by_a_crash_is_reported_failed_and_never_rerun(
    rig: Rig, settings: Settings
) -> None:
    body = decision(3, now=NOW, decision_id="d-crash")
    signed = rig.gate.sign(body)
    verdict = judge("execute", orjson.dumps(signed), keys.PublicKeys([rig.gate.public]))
    action: Action = verdict.action  # type: ignore[union-attr]
    # The claim is written before the command starts: a crash right after it.
    assert rig.executor.ledger.claim("d-crash", "execute", action, NOW)
    rig.restart()

    rig.executor.recover()
    again = rig.send(body)

    assert again.happened == "duplicate"
    assert rig.handler.tasks == []
    [outcome] = rig.outcomes.records
    assert outcome["result"] == "failure"
    assert outcome["detail"].startswith("interrupted")


def test_an_outcome_the_broker_did_not_take_is_sent_again(rig: Rig) -> None:
    rig.outcomes.deliver = False
    rig.send(decision(3, now=NOW, decision_id="d-resend"))
    assert rig.outcomes.records == []

    rig.outcomes.deliver = True
    assert rig.executor.retry_unreported() == 0

    assert [r["decision_id"] for r in rig.outcomes.records] == ["d-resend"]
    assert rig.executor.retry_unreported() == 0
    assert len(rig.outcomes.records) == 1


def test_one_process_per_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with Ledger.open(path), pytest.raises(LedgerError, match="another executor"):
        Ledger.open(path)


def test_a_shell_command_sees_the_decision_and_is_killed_at_its_timeout(
    tmp_path: Path, gate: keys.Signer
) -> None:
    body = decision(3, now=NOW, decision_id="d-shell", parameters={"replicas": 3})
    verdict = judge("execute", orjson.dumps(gate.sign(body)), keys.PublicKeys([gate.public]))
    task = Task(verdict.action, "d-shell", "execute")  # type: ignore[union-attr]
    seen = tmp_path / "env.json"
    dump = (
        f'{sys.executable} -c "import json, os; json.dump({{k: v for k, v in os.environ.items() '
        f"if k.startswith('ESCALATION_')}}, open('{seen}', 'w'))\""
    )

    assert ShellCommand(dump, timeout=30).__call__(task) == Result(True)
    env = orjson.loads(seen.read_bytes())
    assert env["ESCALATION_DECISION_ID"] == "d-shell"
    assert orjson.loads(env["ESCALATION_PARAMETERS"]) == {"replicas": 3}
    assert ShellCommand("exit 3", timeout=30)(task).detail.startswith("execute: exit code 3")
    slow = ShellCommand("sleep 30", timeout=0.5)(task)
    assert (slow.ok, slow.detail) == (False, "execute: timed out after 0.5s")


def test_samples_are_valid_decisions_and_commands(gate: keys.Signer) -> None:
    body = decision(3, now=NOW, decision_id="d-sample")
    cmd = command("abort", copy.deepcopy(body), now=NOW)
    from streams.models.decision import Decision, ExecuteCommand  # noqa: PLC0415

    assert validate(Decision, body).abort_window_ends_at == NOW + dt.timedelta(minutes=5)
    assert validate(ExecuteCommand, cmd).command_id == "d-sample:abort"
