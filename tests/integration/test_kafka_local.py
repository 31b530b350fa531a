"""The local Apache Kafka broker and the topic admin, against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient

from streams.kafka.admin import (
    DLQ_RETENTION_MS,
    TOPICS,
    create_topics,
    describe_topic_config,
    partition_counts,
)
from streams.kafka.cli import topics
from streams.kafka.launcher import LocalKafka, is_broker_process, read_state
from streams.settings import Settings
from streams.testing import consume_all, json_values, produce, wait_until

REPO = Path(__file__).resolve().parents[2]


def test_broker_answers_a_metadata_request(kafka_bootstrap: str) -> None:
    metadata = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10)

    assert len(metadata.brokers) >= 1
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        assert [f"{b.host}:{b.port}" for b in metadata.brokers.values()] == [kafka_bootstrap]


def test_topics_create_twice_is_idempotent_and_applies_configs(
    settings: Settings, kafka_bootstrap: str
) -> None:
    first = create_topics(settings, kafka_bootstrap)
    second = create_topics(settings, kafka_bootstrap)

    assert first == second == [settings.topic(spec.name) for spec in TOPICS]
    assert partition_counts(kafka_bootstrap, first) == {
        spec.full_name(settings): spec.partition_count(settings) for spec in TOPICS
    }
    audit = describe_topic_config(kafka_bootstrap, settings.topic("audit"))
    assert audit["cleanup.policy"] == "delete"
    assert audit["retention.ms"] == "-1"
    assert audit["retention.bytes"] == "-1"
    assert audit["min.insync.replicas"] == "1"  # min(2, replication_factor=1)
    dlq = describe_topic_config(kafka_bootstrap, settings.topic("dlq"))
    assert dlq["retention.ms"] == str(DLQ_RETENTION_MS)


def test_produced_messages_are_consumed_from_the_beginning(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}roundtrip"
    values = [b"raw", "text", {"proposal_id": "p-1", "schema_version": 1}]

    sent = produce(kafka_bootstrap, topic, values, key="k")  # auto-created topic
    messages = consume_all(kafka_bootstrap, topic, min_count=3, timeout=30)

    assert sent == 3
    assert [m.value() for m in messages] == [
        b"raw",
        b"text",
        b'{"proposal_id":"p-1","schema_version":1}',
    ]
    assert {m.key() for m in messages} == {b"k"}
    assert json_values(messages[2:]) == [{"proposal_id": "p-1", "schema_version": 1}]


def test_consume_all_returns_what_arrived_by_the_deadline(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}short"
    produce(kafka_bootstrap, topic, ["only one"])

    messages = consume_all(kafka_bootstrap, topic, min_count=2, timeout=2)

    assert [m.value() for m in messages] == [b"only one"]


def test_restart_keeps_the_port_and_the_data(
    kafka_broker: LocalKafka, kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}durable"
    produce(kafka_bootstrap, topic, ["before restart"])
    pid_before = kafka_broker.pid

    kafka_broker.stop()
    assert not kafka_broker.running
    kafka_broker.start()

    assert kafka_broker.pid != pid_before
    assert kafka_broker.bootstrap_servers == kafka_bootstrap
    produce(kafka_bootstrap, topic, ["after restart"])
    messages = consume_all(kafka_bootstrap, topic, min_count=2, timeout=30)
    assert [m.value() for m in messages] == [b"before restart", b"after restart"]


def test_aiokafka_produces_and_consumes_through_the_advertised_listener(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Faust talks to the broker through aiokafka: the advertised address must suit it."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: PLC0415

    topic = f"{topic_prefix}aiokafka"

    async def roundtrip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"from aiokafka")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"{topic_prefix}group",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
        finally:
            await consumer.stop()
        return [message.value or b""]

    assert asyncio.run(roundtrip()) == [b"from aiokafka"]
    assert [m.value() for m in consume_all(kafka_bootstrap, topic, min_count=1)] == [
        b"from aiokafka"
    ]


def test_topics_create_command_prints_every_topic(settings: Settings) -> None:
    result = CliRunner().invoke(topics, ["create"], obj=settings)

    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [settings.topic(spec.name) for spec in TOPICS]


# Starts a LocalKafka in DATA_DIR (argv[1]) from the main thread or from a short-lived
# worker thread (argv[3]), prints the JVM's pid, then waits for stdin to close.
_STARTER = """
import sys, threading
from pathlib import Path
from streams.kafka.launcher import LocalKafka
kafka = LocalKafka(Path(sys.argv[1]), cache_dir=Path(sys.argv[2]))
if sys.argv[3] == "main":
    kafka.start()
else:
    starter = threading.Thread(target=kafka.start)
    starter.start()
    starter.join()
print(kafka.pid, flush=True)
sys.stdin.read()
"""


def _kill_if_broker(pid: int | None, config: Path) -> None:
    if pid is not None and is_broker_process(pid, config):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("thread", ["main", "worker"])
def test_broker_dies_with_the_python_process_that_started_it(tmp_path: Path, thread: str) -> None:
    """SIGKILL runs no atexit: the parent-death signal (main thread) or the watchdog
    (a worker thread, which may end long before the process) must take the JVM down."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster; this test needs our own")
    cache_dir = str(Settings().kafka_cache_dir)
    parent = subprocess.Popen(
        [sys.executable, "-c", _STARTER, str(tmp_path), cache_dir, thread],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=REPO,
        text=True,
    )
    config = tmp_path / "server.properties"
    jvm_pid = None
    try:
        assert parent.stdout is not None
        jvm_pid = int(parent.stdout.readline())
        state = read_state(tmp_path / "state.json")
        assert state is not None
        # Alive, and answering, after the thread that started it has ended.
        admin = AdminClient({"bootstrap.servers": state.bootstrap_servers})
        assert admin.list_topics(timeout=10).brokers
        assert is_broker_process(jvm_pid, config)

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        assert wait_until(lambda: not is_broker_process(jvm_pid, config), timeout=15)
    finally:
        parent.kill()
        parent.wait()
        _kill_if_broker(jvm_pid, config)


_KAFKA_CLI = [sys.executable, "-c", "from streams.kafka.cli import kafka; kafka()"]


def _cli_env(data_dir: Path) -> dict[str, str]:
    """The environment of `escalation kafka` with its own data dir and no cluster given."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["ESCALATION_DATA_DIR"] = str(data_dir)
    env["ESCALATION_KAFKA_CACHE_DIR"] = str(Settings().kafka_cache_dir)
    return env


def _run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`escalation kafka ARGS` in a process of its own."""
    return subprocess.run(
        [*_KAFKA_CLI, *args],
        env=_cli_env(data_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kafka_up_detach_outlives_the_cli_and_down_stops_it(tmp_path: Path) -> None:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster; this test needs our own")
    config = tmp_path / "kafka" / "server.properties"

    up = _run_cli("up", "--detach", data_dir=tmp_path)
    state = read_state(tmp_path / "kafka" / "state.json")
    try:
        assert up.returncode == 0, up.stderr
        assert state is not None
        assert state.pid is not None
        assert up.stdout.splitlines() == [f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{state.port}"]
        # The CLI process is gone; the broker it detached still answers.
        admin = AdminClient({"bootstrap.servers": state.bootstrap_servers})
        assert admin.list_topics(timeout=10).brokers
        again = _run_cli("up", "--detach", data_dir=tmp_path)
        assert again.returncode == 0, again.stderr
        assert again.stdout == up.stdout  # already running: same broker, nothing started

        down = _run_cli("down", data_dir=tmp_path)

        assert down.returncode == 0, down.stderr
        assert not is_broker_process(state.pid, config)
        after = json.loads((tmp_path / "kafka" / "state.json").read_text())
        assert after["pid"] is None
        assert after["port"] == state.port  # remembered for the next `up`
    finally:
        _kill_if_broker(state.pid if state else None, config)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_kafka_up_in_the_foreground_stops_cleanly_on_a_signal(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    """Ctrl-C (SIGINT) or a supervisor's SIGTERM: the broker stops, `up` exits 0."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster; this test needs our own")
    up = subprocess.Popen(
        [*_KAFKA_CLI, "up"],
        env=_cli_env(tmp_path),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    config = tmp_path / "kafka" / "server.properties"
    state = None
    try:
        assert up.stdout is not None
        line = up.stdout.readline().strip()
        state = read_state(tmp_path / "kafka" / "state.json")
        assert state is not None
        assert state.pid is not None
        assert line == f"KAFKA_BOOTSTRAP_SERVERS={state.bootstrap_servers}"
        assert AdminClient({"bootstrap.servers": state.bootstrap_servers}).list_topics(timeout=10)

        up.send_signal(stop_signal)
        _, stderr = up.communicate(timeout=60)

        assert up.returncode == 0, stderr
        assert not is_broker_process(state.pid, config)
    finally:
        up.kill()
        up.wait()
        _kill_if_broker(state.pid if state else None, config)
