"""The reference executor on the real secure broker: signed actions run once, nothing else runs.

The test plays the gate: it writes to decisions.* as the gate's principal (the only
one allowed to) and signs with a gate key of its own, which the executor is given
as the gate's public key. The executor runs as the executor principal. Absence is
proven by a marker: a valid decision written after the records that must not run;
once the marker has run, everything before it has been handled.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from secure_kafka import SecureCluster, produce_as, read_as

from streams import keys
from streams.executor import Executor, ExecutorMetrics, Result, Task
from streams.executor.samples import command, decision
from streams.kafka import acls

if TYPE_CHECKING:
    from collections.abc import Callable

DEADLINE_S = 90.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(secure_cluster: SecureCluster) -> SecureCluster:
    """The session's secure broker (tests/integration/conftest.py), topics of our own."""
    return secure_cluster.fresh()


@pytest.fixture(scope="module")
def gate_key() -> keys.Signer:
    return keys.generate("escalation-gate")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class Recorder:
    tasks: list[Task] = field(default_factory=list)

    def __call__(self, task: Task) -> Result:
        self.tasks.append(task)
        return Result(True)

    def ids(self, tag: str = "") -> list[str]:
        """Action ids run, of this test's records only (the topic is the module's)."""
        return [task.action_id for task in self.tasks if tag in task.action_id]


class Running:
    """An Executor on its own thread, as the executor principal."""

    def __init__(
        self,
        cluster: SecureCluster,
        gate: keys.Signer,
        ledger: Path,
        team: str,
        signer: keys.Signer | None = None,
    ) -> None:
        self.handler = Recorder()
        self.rollback = Recorder()
        self.metrics = ExecutorMetrics()
        self.signer = signer or keys.generate("executor-it")
        self.executor = Executor(
            cluster.as_(acls.EXECUTOR),
            self.handler,
            rollback=self.rollback,
            team=team,
            keys=keys.PublicKeys([gate.public]),
            signer=self.signer,
            ledger_path=ledger,
            metrics=self.metrics,
            from_beginning=True,
        )
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.executor.run(self.stop_event)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        self.executor.close()
        assert self.error is None, self.error

    def refused(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "escalation_executor_refused_total", {"reason": reason}
        )
        return value or 0.0


def gate_writes(cluster: SecureCluster, topic: str, *bodies: dict[str, Any]) -> None:
    values = [orjson.dumps(body) for body in bodies]
    assert produce_as(cluster.as_(acls.GATE), cluster.base.topic(topic), values) == [None] * len(
        values
    )


def test_a_decision_runs_once_when_redelivered_and_after_a_restart(
    cluster: SecureCluster, gate_key: keys.Signer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    ledger = tmp_path / "ledger.sqlite3"
    first = Running(cluster, gate_key, ledger, team=f"a{tag}")
    try:
        action = gate_key.sign(decision(3, now=_now(), decision_id=f"d-{tag}"))
        marker = gate_key.sign(decision(4, now=_now(), decision_id=f"m1-{tag}"))
        gate_writes(cluster, "decisions.execute", action, action, marker)  # one redelivery
        wait_for(lambda: f"m1-{tag}" in first.handler.ids(), "the first marker to run")
    finally:
        first.stop()
    assert first.handler.ids(tag) == [f"d-{tag}", f"m1-{tag}"]

    # A new consumer group from the topic's beginning: every record is delivered again.
    second = Running(cluster, gate_key, ledger, team=f"b{tag}")
    try:
        marker2 = gate_key.sign(decision(3, now=_now(), decision_id=f"m2-{tag}"))
        gate_writes(cluster, "decisions.execute", action, marker2)
        wait_for(lambda: f"m2-{tag}" in second.handler.ids(), "the second marker to run")
    finally:
        second.stop()
    assert second.handler.ids(tag) == [f"m2-{tag}"]

    signers = keys.PublicKeys([first.signer.public, second.signer.public])
    found, error = read_as(
        cluster.as_(acls.GATE),
        cluster.base.topic("outcomes"),
        until=lambda m: orjson.loads(m.value())["decision_id"] == f"m2-{tag}",
    )
    assert error is None
    outcomes = [orjson.loads(m.value()) for m in found]
    mine = [o for o in outcomes if o["decision_id"].endswith(tag)]
    assert sorted(o["decision_id"] for o in mine) == sorted([f"d-{tag}", f"m1-{tag}", f"m2-{tag}"])
    assert all(signers.verify(o) is None for o in mine)
    assert {o["result"] for o in mine} == {"success"}


def test_forged_tampered_and_unsigned_records_from_a_compromised_writer_never_run(
    cluster: SecureCluster, gate_key: keys.Signer, tmp_path: Path
) -> None:
    """The gate's principal may write decisions.execute; the signature still decides."""
    tag = uuid.uuid4().hex[:6]
    running = Running(cluster, gate_key, tmp_path / "ledger.sqlite3", team=f"c{tag}")
    try:
        now = _now()
        unsigned = decision(4, now=now, decision_id=f"u-{tag}")
        forged = keys.generate("attacker").sign(decision(4, now=now, decision_id=f"f-{tag}"))
        tampered = gate_key.sign(decision(3, now=now, decision_id=f"t-{tag}"))
        tampered["proposal"]["action"]["parameters"] = {"replicas": 0}
        level1 = gate_key.sign(decision(1, now=now, decision_id=f"l1-{tag}"))
        level2 = gate_key.sign(decision(2, now=now, decision_id=f"l2-{tag}"))
        marker = gate_key.sign(decision(3, now=now, decision_id=f"m-{tag}"))
        gate_writes(
            cluster, "decisions.execute", unsigned, forged, tampered, level1, level2, marker
        )
        wait_for(lambda: f"m-{tag}" in running.handler.ids(), "the marker to run")
    finally:
        running.stop()

    assert running.handler.ids(tag) == [f"m-{tag}"]
    assert running.refused("unsigned") == 1
    assert running.refused("unknown_key") == 1
    assert running.refused("bad_signature") == 1
    assert running.refused("level_not_executable") == 2


def test_level_2_runs_after_the_execute_command_and_level_3_rolls_back_on_abort(
    cluster: SecureCluster, gate_key: keys.Signer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    running = Running(cluster, gate_key, tmp_path / "ledger.sqlite3", team=f"d{tag}")
    try:
        now = _now()
        supervised = decision(2, now=now, decision_id=f"s-{tag}")
        conditional = decision(3, now=now, decision_id=f"c-{tag}")
        gate_writes(cluster, "decisions.approve", gate_key.sign(supervised))
        gate_writes(
            cluster,
            "decisions.execute",
            gate_key.sign(conditional),
            gate_key.sign(command("execute", supervised, now=now)),
        )
        wait_for(lambda: f"s-{tag}:execute" in running.handler.ids(), "the approved action")
        gate_writes(
            cluster, "decisions.execute", gate_key.sign(command("abort", conditional, now=now))
        )
        wait_for(lambda: bool(running.rollback.tasks), "the rollback")
    finally:
        running.stop()

    assert sorted(running.handler.ids(tag)) == sorted([f"c-{tag}", f"s-{tag}:execute"])
    assert [t.action_id for t in running.rollback.tasks] == [f"c-{tag}:abort"]


def test_the_command_line_executor_runs_a_shell_command_and_reports_a_signed_outcome(
    cluster: SecureCluster, gate_key: keys.Signer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    gate_pub = tmp_path / "gate.pub"
    gate_pub.write_text(keys.public_pem(gate_key.public))
    executor_key = tmp_path / "executor.key"
    keys.write_private(keys.generate("escalation-executor"), executor_key)
    ran = tmp_path / "ran.txt"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": cluster.kafka.bootstrap_servers,
        "ESCALATION_TOPIC_PREFIX": cluster.base.topic_prefix,
        "ESCALATION_KAFKA_CLIENT_PROPERTIES": str(cluster.files[acls.EXECUTOR]),
        "ESCALATION_GATE_PUBLIC_KEYS": orjson.dumps([str(gate_pub)]).decode(),
        "ESCALATION_EXECUTOR_KEY_FILE": str(executor_key),
        "ESCALATION_DATA_DIR": str(tmp_path / "data"),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "executor",
            "--run",
            f'echo "$ESCALATION_DECISION_ID $ESCALATION_LEVEL $ESCALATION_SERVICE" >> {ran}',
            "--from-beginning",
            "--team",
            f"cli{tag}",
            "--metrics-port",
            "0",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = gate_key.sign(decision(3, now=_now(), decision_id=f"cli-{tag}"))
        gate_writes(cluster, "decisions.execute", body, body)
        wait_for(lambda: ran.exists() and f"cli-{tag}" in ran.read_text(), "the command to run")
        found, error = read_as(
            cluster.as_(acls.GATE),
            cluster.base.topic("outcomes"),
            until=lambda m: orjson.loads(m.value())["decision_id"] == f"cli-{tag}",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert error is None
    outcome = orjson.loads(found[-1].value())
    assert outcome["decision_id"] == f"cli-{tag}"
    assert keys.PublicKeys.from_pem_files([Path(f"{executor_key}.pub")]).verify(outcome) is None
    assert [line for line in ran.read_text().splitlines() if tag in line] == [
        f"cli-{tag} 3 checkout-api"
    ]
    lines = [line for line in stdout.splitlines() if f"cli-{tag}" in line]
    assert [line.split()[1] for line in lines] == ["executed", "duplicate"]


def _where(cluster: SecureCluster, proposal_id: str) -> dict[str, list[int]]:
    """The levels a proposal was decided at, by topic (and dead letters), for messages."""
    out: dict[str, list[int]] = {}
    for name in ("decisions.execute", "decisions.approve", "decisions.assist",
                 "decisions.manual", "dlq"):  # fmt: skip
        seen, _ = read_as(
            cluster.as_(acls.OPERATOR), cluster.base.topic(name), timeout=5, min_count=10**6
        )
        out[name] = [
            orjson.loads(m.value()).get("level", -1)
            for m in seen
            if proposal_id.encode() in (m.value() or b"")
        ]
    return out


def _proposal(pattern: str, service: str, tag: str) -> dict[str, Any]:
    body = decision(3, now=_now(), decision_id=f"unused-{tag}", service=service)["proposal"]
    return {**body, "proposal_id": f"p-e2e-{tag}", "pattern": pattern}


def test_end_to_end_proposal_decision_execution_outcome_history(
    cluster: SecureCluster, gate_key: keys.Signer, tmp_path: Path, identities: Any
) -> None:
    """Proposal (AI principal) -> the gate's signed Level 3 decision -> the executor runs it
    once -> its signed outcome -> the gate folds it into the pattern's history."""
    from streams.models import HistoryRecord  # noqa: PLC0415
    from streams.state.records import budget_update, history_key, history_updates  # noqa: PLC0415

    tag = uuid.uuid4().hex[:6]
    pattern, service, action = f"oom-kill/e2e-{tag}", f"svc-{tag}", "rolling_restart"
    # The gate's state, as `escalation history import` (run as the gate) would seed it:
    # five successful past incidents and a healthy error budget.
    now = _now()
    updates = [
        update
        for n in range(5)
        for update in history_updates(
            HistoryRecord(
                pattern=pattern,
                action_type=action,
                outcome="success",
                ai_system="holmesgpt",
                at=now - dt.timedelta(days=n + 1),
            )
        )
    ]
    updates.append(budget_update(service, remaining=0.9, at=now.timestamp()))
    gate = cluster.as_(acls.GATE)
    for update in updates:
        assert produce_as(gate, gate.topic("state"), [update.value()], key=update.kafka_key()) == [
            None
        ]
    key_file = tmp_path / "gate.key"
    keys.write_private(gate_key, key_file)
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": cluster.kafka.bootstrap_servers,
        "ESCALATION_TOPIC_PREFIX": cluster.base.topic_prefix,
        "ESCALATION_KAFKA_CLIENT_PROPERTIES": str(cluster.files[acls.GATE]),
        "ESCALATION_GATE_KEY_FILE": str(key_file),
        "ESCALATION_DATA_DIR": str(worker_dir),
        "ESCALATION_STORE": "memory://",
        "ESCALATION_METRICS_PORT": "0",
        "ESCALATION_DEV": "1",  # keys other than the gate's are made under the data dir
        # Short approval timeouts and abort windows (the integration suite's policy).
        "ESCALATION_POLICY_FILE": str(REPO / "tests" / "fixtures" / "fast-policy.yaml"),
    }
    log = (worker_dir / "worker.log").open("ab")
    worker = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # The executor's key is the keyring's (the gate folds only outcomes it can attribute).
    running = Running(
        cluster, gate_key, tmp_path / "ledger.sqlite3", f"e2e{tag}", identities.executor()
    )
    try:
        proposal = _proposal(pattern, service, tag)
        ai = cluster.as_(acls.ai_principal("holmesgpt"))
        assert produce_as(
            ai, ai.topic("proposals"), [orjson.dumps(proposal)], key=service.encode()
        ) == [None]

        def ran() -> bool:
            assert worker.poll() is None, (worker_dir / "worker.log").read_text()[-3000:]
            return any(
                t.action.proposal_id == proposal["proposal_id"] for t in running.handler.tasks
            )

        try:
            wait_for(ran, "the executor to run the gate's decision", timeout=180)
        except BaseException:
            # Say where the proposal went instead (a level, a dead letter, nothing).
            for name in ("decisions.execute", "decisions.approve", "decisions.assist", "dlq"):
                seen, _ = read_as(cluster.as_(acls.OPERATOR), cluster.base.topic(name), timeout=5,
                                  min_count=10_000)  # fmt: skip
                mine = [
                    m.value()[:300] for m in seen if proposal["proposal_id"].encode() in m.value()
                ]
                print(name, mine)
            raise
        [task] = [
            t for t in running.handler.tasks if t.action.proposal_id == proposal["proposal_id"]
        ]
        assert task.action.level == 3
        decided, error = read_as(
            cluster.as_(acls.EXECUTOR),
            cluster.base.topic("decisions.execute"),
            until=lambda m: orjson.loads(m.value()).get("proposal_id") == proposal["proposal_id"],
        )
        assert error is None
        record = orjson.loads(decided[-1].value())
        assert keys.PublicKeys([gate_key.public]).verify(record) is None
        wanted = history_key(pattern, action)

        def folded(message: Any) -> bool:
            value = orjson.loads(message.value())
            return (
                value.get("table") == "history"
                and value.get("key") == wanted
                and not str(value.get("id", "")).startswith("import:")
            )

        found, error = read_as(gate, gate.topic("state"), until=folded, timeout=120)
        assert error is None
        assert found
        assert folded(found[-1]), "the gate did not fold the executor's outcome into history"

        # Every other decision topic and oncall carry the gate's signature too: an
        # untrusted AI system (Level 0), a low confidence (1), a regulated action (2),
        # whose approval times out (the test policy: 3 s) and pages on-call.
        others = {
            "decisions.manual": {**_proposal(pattern, service, f"{tag}-0"),
                                 "source": {"ai_system": "shadow-agent"}},
            "decisions.assist": {**_proposal(pattern, service, f"{tag}-1"),
                                 "confidence": {"model": 0.5, "heuristic": 0.5}},
            "decisions.approve": {**_proposal(pattern, service, f"{tag}-2"),
                                  "regulated": ["PCI-DSS"]},
        }  # fmt: skip
        for body in others.values():
            assert produce_as(
                ai, ai.topic("proposals"), [orjson.dumps(body)], key=service.encode()
            ) == [None]
        gate_keys = keys.PublicKeys([gate_key.public])
        for name, body in others.items():
            seen, error = read_as(
                cluster.as_(acls.OPERATOR),
                cluster.base.topic(name),
                until=lambda m, pid=body["proposal_id"]: pid.encode() in (m.value() or b""),
                timeout=60,
            )
            assert error is None
            assert seen, (name, _where(cluster, body["proposal_id"]))
            signed = orjson.loads(seen[-1].value())
            assert signed["proposal_id"] == body["proposal_id"], name
            assert gate_keys.verify(signed) is None, name
            if name == "decisions.approve":
                approval = signed
        pages, error = read_as(
            cluster.as_(acls.OPERATOR),
            cluster.base.topic("oncall"),
            until=lambda m: approval["decision_id"].encode() in (m.value() or b""),
            timeout=120,
        )
        assert error is None
        assert pages
        page = orjson.loads(pages[-1].value())
        assert page["decision_id"] == approval["decision_id"]
        assert gate_keys.verify(page) is None
    finally:
        running.stop()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.close()
    assert running.handler.ids(record["decision_id"]) == [record["decision_id"]]
