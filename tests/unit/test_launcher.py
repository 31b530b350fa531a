"""The local broker's launcher, topic specs and CLI: the parts that need no Java."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.errors import KafkaLauncherError
from streams.kafka import launcher
from streams.kafka.admin import DLQ_RETENTION_MS, TOPICS, create_topics, topic_spec
from streams.kafka.cli import kafka, topics
from streams.kafka.launcher import (
    POM_FILE,
    BrokerState,
    LocalKafka,
    fetch_jars,
    free_port,
    is_broker_process,
    kafka_home_libs,
    kafka_version,
    new_cluster_id,
    parse_properties,
    pick_ports,
    port_is_free,
    read_state,
    render_properties,
    server_properties,
    write_state,
)
from streams.settings import Settings
from streams.testing import wait_until

REPO = Path(__file__).resolve().parents[2]


def _properties(tmp_path: Path) -> dict[str, str]:
    return server_properties(broker_port=19092, controller_port=19093, log_dirs=tmp_path / "data")


def test_server_properties_describe_one_combined_kraft_node_on_loopback(tmp_path: Path) -> None:
    props = _properties(tmp_path)

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str(tmp_path / "data")


def test_server_properties_suit_a_single_node_that_faust_uses(tmp_path: Path) -> None:
    props = _properties(tmp_path)

    assert props["auto.create.topics.enable"] == "true"  # Faust creates internal topics
    assert props["num.partitions"] == "1"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_properties_render_and_parse_back(tmp_path: Path) -> None:
    props = {**_properties(tmp_path), "log.dirs": r"C:\kafka\data"}

    text = render_properties(props)

    assert text.startswith("#")
    assert parse_properties(text) == props


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()

    assert 0 < port < 65536
    assert port_is_free(port)


def test_pick_ports_gives_two_distinct_free_ports() -> None:
    broker, controller = pick_ports()

    assert broker != controller
    assert port_is_free(broker)
    assert port_is_free(controller)


def test_pick_ports_keeps_free_preferred_ports_and_replaces_taken_ones() -> None:
    wanted = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]

        broker, controller = pick_ports((wanted, busy))

    assert broker == wanted
    assert controller not in (busy, wanted)


def test_cluster_id_is_22_url_safe_characters_not_starting_with_a_dash() -> None:
    ids = {new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")


def test_state_file_round_trips(tmp_path: Path) -> None:
    state = BrokerState(
        port=19092,
        controller_port=19093,
        data_dir=tmp_path,
        pid=4242,
        kafka_version="4.2.2",
        started_at="2026-01-01T00:00:00+00:00",
    )
    path = tmp_path / "kafka" / "state.json"

    write_state(path, state)

    assert read_state(path) == state
    assert state.bootstrap_servers == "127.0.0.1:19092"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_missing_state_file_reads_as_none(tmp_path: Path) -> None:
    assert read_state(tmp_path / "state.json") is None


def test_unreadable_state_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"port": "x"}')

    with pytest.raises(KafkaLauncherError, match=r"state\.json"):
        read_state(path)


def test_pom_pins_a_kafka_4_release_and_the_slf4j_binding_of_log4j2() -> None:
    version = kafka_version()
    pom = POM_FILE.read_text()

    assert re.fullmatch(r"4\.\d+\.\d+", version)
    assert "<artifactId>kafka_2.13</artifactId>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom
    assert launcher.LOG4J2_CONFIG.is_file()


def test_fetched_jars_are_reused_without_running_maven(tmp_path: Path) -> None:
    root = tmp_path / kafka_version()
    (root / "libs").mkdir(parents=True)
    (root / "FETCHED").write_text("kafka_2.13.jar\n")

    libs = fetch_jars(tmp_path, mvn="no-such-mvn-on-path")

    assert libs == root / "libs"


def test_fetch_without_maven_names_the_missing_tool(tmp_path: Path) -> None:
    with pytest.raises(KafkaLauncherError, match="no-such-mvn-on-path not found"):
        fetch_jars(tmp_path, mvn="no-such-mvn-on-path")


def test_kafka_home_without_a_broker_jar_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "libs").mkdir()

    with pytest.raises(KafkaLauncherError, match="KAFKA_HOME"):
        kafka_home_libs(tmp_path)


def test_kafka_home_libs_are_the_classpath(tmp_path: Path) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.2.2.jar").touch()

    local = LocalKafka(tmp_path / "data", cache_dir=tmp_path / "cache", kafka_home=tmp_path)

    assert local.classpath() == str(tmp_path / "libs" / "*")
    assert local.version() == "4.2.2"


def test_a_broker_not_started_has_no_address(tmp_path: Path) -> None:
    local = LocalKafka(tmp_path, cache_dir=tmp_path / "cache")

    assert not local.running
    assert local.stop() is None
    with pytest.raises(KafkaLauncherError, match="not been started"):
        _ = local.bootstrap_servers


def test_from_settings_prefers_the_previous_runs_ports(tmp_path: Path) -> None:
    wanted_broker, wanted_controller = pick_ports()
    settings = Settings(data_dir=tmp_path, kafka_cache_dir=tmp_path / "cache")
    previous = BrokerState(
        port=wanted_broker, controller_port=wanted_controller, data_dir=tmp_path / "kafka"
    )
    write_state(tmp_path / "kafka" / "state.json", previous)

    local = LocalKafka.from_settings(settings)

    assert local.data_dir == (tmp_path / "kafka").absolute()
    assert pick_ports(local._preferred) == (wanted_broker, wanted_controller)


def test_our_own_process_is_not_taken_for_a_broker(tmp_path: Path) -> None:
    assert not is_broker_process(os.getpid(), tmp_path / "server.properties")
    assert not is_broker_process(2**22 + 1, tmp_path / "server.properties")


# Spawns `sleep` with die_with_parent from the main thread (prctl) or from a worker
# thread that ends at once (watchdog), prints its pid and waits for stdin to close.
_SPAWNER = """
import sys, threading
from streams.kafka.launcher import spawn
children = []
def start():
    children.append(spawn(["sleep", "600"], die_with_parent=True))
if sys.argv[1] == "main":
    start()
else:
    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
print(children[0].process.pid, flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and pidfd are Linux")
@pytest.mark.parametrize("thread", ["main", "worker"])
def test_spawned_child_dies_when_its_parent_is_killed(thread: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _SPAWNER, thread],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    child = None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)  # also after the worker thread that spawned it ended

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        assert wait_until(lambda: not _alive(child), timeout=10)
    finally:
        parent.kill()
        parent.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


# ------------------------------------------------------------------ topic specs


def test_topics_include_the_specs_inputs_and_outputs() -> None:
    names: dict[str, set[str]] = {"in": set(), "out": set()}
    for spec in TOPICS:
        names.setdefault(spec.direction, set()).add(spec.name)

    assert names["in"] == {"proposals", "approvals", "outcomes", "error-budgets", "control"}
    assert names["out"] == {
        "decisions.execute",
        "decisions.approve",
        "decisions.assist",
        "decisions.manual",
        "oncall",
        "audit",
        "dlq",
    }
    assert len({spec.name for spec in TOPICS}) == len(TOPICS)


def test_partition_counts_follow_settings_unless_a_topic_fixes_its_own() -> None:
    settings = Settings(partitions=6, topic_prefix="x.")

    for spec in TOPICS:
        expected = 6 if spec.partitions is None else spec.partitions
        assert spec.full_name(settings) == f"x.{spec.name}"
        assert spec.partition_count(settings) == expected


def test_control_commands_are_kept_forever() -> None:
    config = topic_spec("control").topic_config(Settings())

    assert config["retention.ms"] == "-1"


@pytest.mark.parametrize(("replication", "min_isr"), [(1, "1"), (2, "2"), (3, "2")])
def test_audit_is_append_only_unlimited_with_two_in_sync_copies_when_possible(
    replication: int, min_isr: str
) -> None:
    settings = Settings(replication_factor=replication)

    config = topic_spec("audit").topic_config(settings)

    assert config == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
        "min.insync.replicas": min_isr,
    }


def test_dlq_keeps_thirty_days() -> None:
    config = topic_spec("dlq").topic_config(Settings())

    assert config["retention.ms"] == str(DLQ_RETENTION_MS) == str(30 * 24 * 3600 * 1000)


def test_create_topics_without_a_cluster_names_the_setting() -> None:
    settings = Settings(topic_prefix="x.").model_copy(update={"bootstrap_servers": None})

    with pytest.raises(KafkaLauncherError, match="bootstrap_servers"):
        create_topics(settings)


# ------------------------------------------------------------------------ CLI


def test_kafka_up_uses_the_configured_cluster_and_starts_nothing(tmp_path: Path) -> None:
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS="kafka.example:9092", data_dir=tmp_path)

    result = CliRunner().invoke(kafka, ["up", "--detach"], obj=settings)

    assert result.exit_code == 0, result.output
    assert result.stdout == "KAFKA_BOOTSTRAP_SERVERS=kafka.example:9092\n"
    assert "kafka.example:9092" in result.stderr
    assert not (tmp_path / "kafka").exists()


def test_topics_create_without_any_cluster_is_a_one_line_usage_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path).model_copy(update={"bootstrap_servers": None})

    result = CliRunner().invoke(topics, ["create"], obj=settings)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def test_kafka_down_with_nothing_running_succeeds(tmp_path: Path) -> None:
    result = CliRunner().invoke(kafka, ["down"], obj=Settings(data_dir=tmp_path))

    assert result.exit_code == 0
    assert "no local broker" in result.stderr


def test_kafka_status_with_nothing_running_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(kafka, ["status"], obj=Settings(data_dir=tmp_path))

    assert result.exit_code == 1
    assert result.stdout == ""
