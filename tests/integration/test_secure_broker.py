"""`kafka up --secure` on the real broker: every party only on its own topics.

One secure broker for the module (SASL/SCRAM-SHA-512, StandardAuthorizer), its
principals and ACLs provisioned from the one table in streams/kafka/acls.py. Each
forbidden write and read is tried and must be refused by the broker with an
authorization error; each allowed path must work.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient
from secure_kafka import SecureCluster, produce_as, read_as, topic_error

from streams.executor.samples import decision
from streams.kafka import acls
from streams.kafka.admin import CLIENT_LOG, wait_for_broker
from streams.kafka.cli import acl
from streams.kafka.security import KafkaSecurityError, confluent_config

AI = acls.ai_principal("holmesgpt")


@pytest.fixture(scope="module")
def cluster(secure_cluster: SecureCluster) -> SecureCluster:
    """The session's secure broker (tests/integration/conftest.py), topics of our own."""
    return secure_cluster.fresh()


@pytest.mark.parametrize(
    ("principal", "topic"),
    [
        (AI, "decisions.execute"),
        (AI, "control"),
        (AI, "state"),
        (AI, "outcomes"),
        (AI, "audit"),
        (AI, "approvals"),
        (acls.EXECUTOR, "decisions.execute"),
        (acls.EXECUTOR, "proposals"),
        (acls.OPERATOR, "decisions.execute"),
        (acls.OPERATOR, "state"),
        (acls.SLO_SOURCE, "proposals"),
    ],
)
def test_a_forbidden_write_is_refused_by_the_broker(
    cluster: SecureCluster, principal: str, topic: str
) -> None:
    settings = cluster.as_(principal)

    [error] = produce_as(settings, settings.topic(topic), [b'{"forged": true}'], timeout=20)

    assert error is not None
    assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


@pytest.mark.parametrize(
    ("principal", "topic"),
    [
        (AI, "decisions.execute"),
        (AI, "proposals"),
        (acls.EXECUTOR, "audit"),
        (acls.SPLUNK_CONNECT, "decisions.execute"),
        (acls.SLO_SOURCE, "audit"),
    ],
)
def test_a_forbidden_read_is_refused_by_the_broker(
    cluster: SecureCluster, principal: str, topic: str
) -> None:
    settings = cluster.as_(principal)
    name = settings.topic(topic)
    assert produce_as(cluster.as_(acls.GATE if topic != "proposals" else AI), name, [b"x"]) == [
        None
    ]

    # Without Describe the topic is hidden from the principal's metadata; with it
    # (an AI may write proposals) the fetch itself is refused.
    refusal = topic_error(settings, name)
    if refusal is None:
        found, refusal = read_as(settings, name, timeout=30)
        assert found == []
    assert refusal is not None
    assert refusal.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refusal


@pytest.mark.parametrize(
    ("writer", "topic", "reader"),
    [
        (AI, "proposals", acls.GATE),
        (acls.GATE, "decisions.execute", acls.EXECUTOR),
        (acls.GATE, "decisions.approve", acls.EXECUTOR),
        (acls.EXECUTOR, "outcomes", acls.GATE),
        (acls.GATE, "audit", acls.SPLUNK_CONNECT),
        (acls.OPERATOR, "approvals", acls.GATE),
        (acls.OPERATOR, "control", acls.GATE),
        (acls.SLO_SOURCE, "error-budgets", acls.GATE),
        (acls.GATE, "oncall", acls.OPERATOR),
    ],
)
def test_an_allowed_path_works(
    cluster: SecureCluster, writer: str, topic: str, reader: str
) -> None:
    name = cluster.base.topic(topic)
    marker = f"{writer}->{topic}".encode()

    assert produce_as(cluster.as_(writer), name, [marker]) == [None]
    found, error = read_as(cluster.as_(reader), name, until=lambda m: m.value() == marker)

    assert error is None
    assert found
    assert found[-1].value() == marker


def test_a_client_without_credentials_or_with_a_wrong_password_is_not_let_in(
    cluster: SecureCluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    bootstrap = cluster.kafka.bootstrap_servers
    plain = AdminClient({"bootstrap.servers": bootstrap, "logger": CLIENT_LOG})
    with pytest.raises(Exception, match=r"(?i)timed out|transport|disconnect"):
        plain.list_topics(timeout=5)
    wrong = tmp_path_factory.mktemp("wrong") / "ai.properties"
    text = cluster.files[AI].read_text()
    wrong.write_text(
        "\n".join(
            "sasl.password=not-the-password" if line.startswith("sasl.password=") else line
            for line in text.splitlines()
        )
    )
    settings = cluster.base.model_copy(update={"kafka_client_properties": wrong})
    [error] = produce_as(settings, settings.topic("proposals"), [b"x"], timeout=5)
    assert error is not None


def test_the_broker_holds_exactly_the_acls_of_the_plan(cluster: SecureCluster) -> None:
    """One source of truth: the bindings on the broker are the table acl plan prints."""
    from confluent_kafka.admin._acl import (  # noqa: PLC0415
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
    )
    from confluent_kafka.admin._resource import (  # noqa: PLC0415
        ResourcePatternType,
        ResourceType,
    )

    admin = AdminClient(
        {"bootstrap.servers": cluster.kafka.bootstrap_servers, **cluster.kafka.client_config()}
    )
    every = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    on_broker = set(admin.describe_acls(every, request_timeout=30).result(timeout=30))
    planned = set(acls.acl_bindings(acls.grants(cluster.base, ("holmesgpt",))))

    # The session's broker also holds other modules' prefixes: compare this one's.
    prefix = cluster.base.topic_prefix
    assert planned <= on_broker
    assert {b for b in on_broker if b.name.startswith(prefix)} == {
        b for b in planned if b.name.startswith(prefix)
    }

    result = CliRunner().invoke(
        acl,
        ["plan", "--ai-system", "holmesgpt"],
        env={"ESCALATION_TOPIC_PREFIX": cluster.base.topic_prefix},
    )
    assert result.exit_code == 0, result.output
    commands = [line for line in result.output.splitlines() if line.startswith("kafka-acls.sh")]
    operations = sum(line.count("--operation ") for line in commands)
    assert operations == len(planned)


def test_credentials_files_are_readable_by_their_owner_only(cluster: SecureCluster) -> None:
    for path in [*cluster.files.values(), cluster.kafka.credentials_file("admin")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(cluster.kafka.config_file.stat().st_mode) == 0o600


def test_the_security_settings_reach_the_admin_client(cluster: SecureCluster) -> None:
    settings = cluster.as_(acls.OPERATOR)
    assert settings.bootstrap_servers
    config = confluent_config(settings)

    assert config["sasl.username"] == acls.OPERATOR
    assert wait_for_broker(settings.bootstrap_servers, timeout=30, **config) == 1
    broken = settings.model_copy(update={"kafka_client_properties": cluster.base.data_dir / "nope"})
    with pytest.raises(KafkaSecurityError, match="ESCALATION_KAFKA_CLIENT_PROPERTIES"):
        confluent_config(broken)


@pytest.mark.parametrize(("principal", "allowed"), [(AI, True), (acls.OPERATOR, False)])
def test_escalation_publish_takes_the_client_properties_file(
    cluster: SecureCluster, tmp_path: Path, principal: str, allowed: bool
) -> None:
    """The CLI reads ESCALATION_KAFKA_CLIENT_PROPERTIES: an AI publishes, an operator may not."""
    proposal = decision(3, now=dt.datetime.now(dt.UTC), decision_id=f"cli-{principal}")["proposal"]
    source = tmp_path / "proposal.json"
    source.write_bytes(orjson.dumps(proposal))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": cluster.kafka.bootstrap_servers,
        "ESCALATION_TOPIC_PREFIX": cluster.base.topic_prefix,
        "ESCALATION_KAFKA_CLIENT_PROPERTIES": str(cluster.files[principal]),
    }

    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "publish", str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    if allowed:
        assert result.returncode == 0, result.stderr
        assert "published 1 proposal(s)" in result.stdout
    else:
        assert result.returncode != 0
        assert "Topic authorization failed" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("principal", "allowed"), [(acls.OPERATOR, True), (AI, False)])
def test_audit_verify_reads_the_topic_as_its_principal(
    cluster: SecureCluster, principal: str, allowed: bool
) -> None:
    """`audit verify --topic` authenticates with the client properties file; an AI may not
    read the trail."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": cluster.kafka.bootstrap_servers,
        "ESCALATION_TOPIC_PREFIX": cluster.base.topic_prefix,
        "ESCALATION_KAFKA_CLIENT_PROPERTIES": str(cluster.files[principal]),
    }

    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "audit", "verify", "--topic", "--timeout", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert "Traceback" not in result.stderr
    said = (result.stdout + result.stderr).lower()
    # Kafka hides a topic from a principal that may not describe it.
    refused = "authorization" in said or "does not exist" in said
    assert refused is not allowed, result.stdout + result.stderr
    if not allowed:
        assert result.returncode != 0
