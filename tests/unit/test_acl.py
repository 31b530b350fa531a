"""The principals and ACL table, the acl plan, the client security settings, the secure compose.

The table is checked by what it must never allow (an AI system writing anything but
proposals, anyone but the gate writing the gate's outputs); the broker tests in
tests/integration/test_secure_broker.py try each of those for real.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from streams.kafka import acls
from streams.kafka.admin import TOPICS
from streams.kafka.cli import acl
from streams.kafka.launcher import secure_properties, server_properties
from streams.kafka.security import (
    KafkaSecurityError,
    aiokafka_config,
    client_properties,
    confluent_config,
    faust_credentials,
    parse_client_properties,
    write_client_properties,
)
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GATE_ONLY = (
    "decisions.execute",
    "decisions.approve",
    "decisions.assist",
    "decisions.manual",
    "audit",
    "oncall",
    "state",
    "lifecycle",
    "dlq",
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def writes(table: tuple[acls.Grant, ...], principal: str) -> set[str]:
    return {
        g.name
        for g in table
        if g.principal == principal
        and g.resource == "topic"
        and ({"Write", "All"} & set(g.operations))
    }


def test_an_ai_system_writes_only_proposals(settings: Settings) -> None:
    table = acls.grants(settings, ["holmesgpt", "k8sgpt"])
    for ai in ("ai-holmesgpt", "ai-k8sgpt"):
        assert writes(table, ai) == {settings.topic("proposals")}
        assert not [g for g in table if g.principal == ai and "Read" in g.operations]


def test_only_the_gate_writes_decisions_audit_oncall_state_lifecycle_and_dlq(
    settings: Settings,
) -> None:
    table = acls.grants(settings, ["holmesgpt"])
    for name in GATE_ONLY:
        writers = {
            g.principal
            for g in table
            if g.resource == "topic"
            and ({"Write", "All"} & set(g.operations))
            and (
                g.name == settings.topic(name)
                or (g.pattern == "prefixed" and settings.topic(name).startswith(g.name))
            )
        }
        assert writers == {acls.GATE}, name


def test_every_internal_topic_of_the_table_is_the_gates(settings: Settings) -> None:
    table = acls.grants(settings, [])
    internal = {settings.topic(spec.name) for spec in TOPICS if spec.direction == "internal"}
    assert internal <= writes(table, acls.GATE)


def test_executors_read_decisions_execute_in_their_own_groups_and_write_outcomes(
    settings: Settings,
) -> None:
    table = acls.grants(settings, ["holmesgpt"])
    mine = [g for g in table if g.principal == acls.EXECUTOR]
    assert writes(table, acls.EXECUTOR) == {settings.topic("outcomes")}
    reads = {g.name for g in mine if g.resource == "topic" and "Read" in g.operations}
    assert reads == {settings.topic("decisions.execute"), settings.topic("decisions.approve")}
    [group] = [g for g in mine if g.resource == "group"]
    assert group.pattern == "prefixed"
    assert acls.executor_group(settings, "payments").startswith(group.name)
    assert not acls.executor_group(settings, "x").startswith(
        f"{settings.topic_prefix}{settings.app_id}"
    )


def test_operators_splunk_and_the_slo_source(settings: Settings) -> None:
    table = acls.grants(settings, [])
    assert writes(table, acls.OPERATOR) == {settings.topic("control"), settings.topic("approvals")}
    assert writes(table, acls.SLO_SOURCE) == {settings.topic("error-budgets")}
    assert writes(table, acls.INTAKE) == {settings.topic("proposals")}
    splunk_reads = {
        g.name
        for g in table
        if g.principal == acls.SPLUNK_CONNECT and g.resource == "topic" and g.pattern == "literal"
    }
    assert splunk_reads == {settings.topic("audit")}
    assert writes(table, acls.SPLUNK_CONNECT) == {"_connect-"}  # Connect's own topics only


def test_principals_are_one_per_party_and_each_trusted_ai(settings: Settings) -> None:
    names = [p.name for p in acls.principals(["holmesgpt"])]
    assert names == [
        "gate",
        "ai-holmesgpt",
        "executor",
        "slo-source",
        "operator",
        "splunk-connect",
        "intake",
    ]
    assert acls.trusted_ai_systems(settings) == ("holmesgpt",)


def test_the_plan_is_the_table_as_kafka_acls_commands(settings: Settings) -> None:
    table = acls.grants(settings, ["holmesgpt"])
    commands = acls.kafka_acls_commands(table, bootstrap="b:9092", command_config="a.properties")

    assert len(commands) == len(table)
    for grant, line in zip(table, commands, strict=True):
        argv = shlex.split(line)
        assert argv[:7] == [
            "kafka-acls.sh",
            "--bootstrap-server",
            "b:9092",
            "--command-config",
            "a.properties",
            "--add",
            "--allow-principal",
        ]
        assert argv[7] == f"User:{grant.principal}"
        ops = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--operation"]
        assert tuple(ops) == grant.operations
        assert argv[argv.index(f"--{grant.resource}") + 1] == grant.name
        assert argv[-1] == grant.pattern
    assert len(acls.acl_bindings(table)) == sum(len(g.operations) for g in table)


def test_acl_plan_prints_a_script_for_the_prefix_and_the_policys_ai_systems() -> None:
    result = CliRunner().invoke(acl, ["plan"], env={"ESCALATION_TOPIC_PREFIX": "prod."})

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "#!/bin/sh"
    assert any("--entity-name ai-holmesgpt" in line for line in lines)
    assert "kafka-acls.sh --bootstrap-server $KAFKA_BOOTSTRAP_SERVERS" in result.output
    assert "--topic prod.proposals" in result.output
    assert "--topic escalation." not in result.output


def test_the_secure_broker_authenticates_everyone_and_denies_by_default(tmp_path: Path) -> None:
    props = server_properties(
        broker_port=1, controller_port=2, log_dirs=tmp_path, admin_password="pw"
    )
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert "PLAINTEXT:" not in props["listener.security.protocol.map"].replace("SASL_", "")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["auto.create.topics.enable"] == "false"
    assert secure_properties(broker_port=1, controller_port=2, admin_password="pw").items() <= (
        props.items()
    )
    plain = server_properties(broker_port=1, controller_port=2, log_dirs=tmp_path)
    assert "authorizer.class.name" not in plain


# ------------------------------------------------------------ client security


def test_client_properties_from_a_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_client_properties(
        tmp_path / "gate.properties",
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "gate",
            "sasl.password": "from-file",
            "bootstrap.servers": "ignored:1",
        },
    )
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(KafkaSecurityError, match="refusing to overwrite"):
        write_client_properties(path, {})
    monkeypatch.setenv("ESCALATION_KAFKA_CLIENT_PROPERTIES", str(path))
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "from-env")
    settings = Settings()

    props = client_properties(settings)

    assert props == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "gate",
        "sasl.password": "from-env",
    }
    assert confluent_config(settings) == props
    aio = aiokafka_config(settings)
    assert aio == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gate",
        "sasl_plain_password": "from-env",
    }
    credentials = faust_credentials(settings)
    assert credentials.username == "gate"
    assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_no_security_settings_mean_plaintext(settings: Settings) -> None:
    assert confluent_config(settings) == {}
    assert aiokafka_config(settings) == {}
    assert faust_credentials(settings) is None


def test_ssl_gives_an_ssl_context(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, KAFKA_SECURITY_PROTOCOL="SSL")
    aio: dict[str, Any] = aiokafka_config(settings)
    assert aio["security_protocol"] == "SSL"
    assert aio["ssl_context"] is not None


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXTT"}, "security.protocol"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "MD5"}, "sasl.mechanism"),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN"},
            "sasl.username",
        ),
        ({"KAFKA_SASL_USERNAME": "gate"}, "security.protocol"),
    ],
)
def test_incomplete_or_wrong_security_settings_name_the_field(
    tmp_path: Path, env: dict[str, str], field: str
) -> None:
    settings = Settings(data_dir=tmp_path, **env)  # type: ignore[arg-type]
    with pytest.raises(KafkaSecurityError, match=f"^{field}:"):
        client_properties(settings)


def test_a_bad_properties_file_names_file_and_line(tmp_path: Path) -> None:
    assert parse_client_properties("# c\n! c\na=b\nc: d\n") == {"a": "b", "c": "d"}
    with pytest.raises(KafkaSecurityError, match=r"f\.properties:2: expected key=value"):
        parse_client_properties("a=b\nnot a property\n", source="f.properties")


# ------------------------------------------------------------ docker-compose.yml


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    found = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert isinstance(found, dict)
    return found


def test_the_compose_broker_is_secure(services: dict[str, Any]) -> None:
    env = services["kafka"]["environment"]
    protocols = [
        item.split(":")[1] for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    ]
    assert set(protocols) == {"SASL_PLAINTEXT"}
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    assert "SCRAM-SHA-512" in env["KAFKA_SASL_ENABLED_MECHANISMS"]


def test_the_compose_clients_authenticate_as_their_own_principals(services: dict[str, Any]) -> None:
    for name in ("topics", "worker"):
        env = services[name]["environment"]
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["KAFKA_SASL_USERNAME"] == acls.GATE
        assert env["KAFKA_SASL_PASSWORD"].startswith("${KAFKA_GATE_PASSWORD:?")
    connect = services["kafka-connect"]["environment"]
    for prefix in ("CONNECT_", "CONNECT_CONSUMER_", "CONNECT_PRODUCER_"):
        assert connect[f"{prefix}SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert 'username="splunk-connect"' in connect[f"{prefix}SASL_JAAS_CONFIG"]


def test_the_compose_acls_come_from_acl_plan_before_the_topics(services: dict[str, Any]) -> None:
    assert "escalation acl plan" in services["acl-plan"]["command"][0]
    job = services["acls"]
    assert "sh /plan/acls.sh" in job["command"][0]
    assert job["depends_on"]["acl-plan"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["acls"]["condition"] == "service_completed_successfully"
    wanted = {f"PASSWORD_{acls._env_name(p.name)}" for p in acls.principals(["holmesgpt"])}
    assert wanted <= set(job["environment"])
    for value in job["environment"].values():
        assert ":?" in value, "every password is required, none defaulted"
