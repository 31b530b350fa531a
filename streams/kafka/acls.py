"""Principals and ACLs: one table, applied to the local secure broker and printed for production.

Every party has a Kafka principal of its own (``User:NAME``, SASL/SCRAM) and may touch
only its own topics. ``grants(settings, ai_systems)`` is the one source of truth:

- ``escalation kafka up --secure`` applies it with the Admin API
  (``AdminClient.create_acls``, ``alter_user_scram_credentials``): ``provision``;
- ``escalation acl plan`` prints the same grants as ``kafka-acls.sh`` commands for a
  production cluster: ``kafka_acls_commands``.

Kafka's ``StandardAuthorizer`` denies what no ACL allows. ``READ`` and ``WRITE``
imply ``DESCRIBE``, so the table lists only what a party does.
"""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from streams.errors import KafkaLauncherError
from streams.topology.config import offsets_group

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from confluent_kafka.admin._acl import AclBinding

    from streams.kafka.launcher import LocalKafka
    from streams.settings import Settings

Resource = Literal["topic", "group", "cluster"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["Read", "Write", "Create", "Describe", "DescribeConfigs", "AlterConfigs", "All"]

GATE = "gate"
EXECUTOR = "executor"
SLO_SOURCE = "slo-source"
OPERATOR = "operator"
SPLUNK_CONNECT = "splunk-connect"
INTAKE = "intake"
AI_PREFIX = "ai-"

#: Consumer group prefixes of the operators' tools: audit verify, replay, the console,
#: the pager (its group and its rebuild readers); Slack's group carries the topic prefix.
OPERATOR_GROUPS = (
    "escalation-audit-verify-",
    "escalation-replay-",
    "escalation-console-",
    "escalation-pager",
)
SPLUNK_CONNECT_GROUPS = ("escalation-splunk-connect", "connect-escalation-audit-splunk")
SPLUNK_CONNECT_TOPICS = "_connect-"
#: The audit re-sync's readers (a group id each, never joined).
RESYNC_GROUP = "escalation-audit-resync-"
DECISION_TOPICS = ("decisions.execute", "decisions.approve", "decisions.assist", "decisions.manual")


@dataclass(frozen=True, slots=True)
class Principal:
    """One party with its own credentials."""

    name: str
    role: str


@dataclass(frozen=True, slots=True)
class Grant:
    """Operations a principal may perform on one resource (or resource prefix)."""

    principal: str
    resource: Resource
    name: str
    operations: tuple[Operation, ...]
    pattern: Pattern = "literal"
    why: str = ""


def ai_principal(ai_system: str) -> str:
    """The principal of a trusted AI system: ``ai-holmesgpt``."""
    return f"{AI_PREFIX}{ai_system}"


def executor_group(settings: Settings, team: str = "default") -> str:
    """The consumer group of an executor team (each team its own): ``PREFIX.executor-TEAM``."""
    return f"{settings.topic_prefix}executor-{team}"


def principals(ai_systems: Iterable[str]) -> tuple[Principal, ...]:
    """Every principal: the gate, each trusted AI system, and the other parties."""
    fixed = (
        Principal(GATE, "the escalation gate's workers"),
        Principal(EXECUTOR, "remediation executors"),
        Principal(SLO_SOURCE, "the SLO system publishing error budgets"),
        Principal(OPERATOR, "operators' tools: approvals, control, audit verify"),
        Principal(SPLUNK_CONNECT, "Splunk Connect for Kafka"),
        Principal(INTAKE, "the HTTP intake (escalation ingest): proposals of AI systems"),
    )
    ais = tuple(Principal(ai_principal(name), f"AI system {name}") for name in sorted(ai_systems))
    return fixed[:1] + ais + fixed[1:]


def trusted_ai_systems(settings: Settings) -> tuple[str, ...]:
    """The trusted AI systems of the policy file in the settings."""
    from streams.policy.loader import parse_policy  # noqa: PLC0415

    path = settings.policy_file
    try:
        text = path.read_bytes()
    except OSError as exc:
        msg = f"policy_file: cannot read {path} ({exc.strerror})"
        raise KafkaLauncherError(msg) from None
    return tuple(parse_policy(text, source=str(path)).trusted_ai_systems)


def grants(settings: Settings, ai_systems: Iterable[str]) -> tuple[Grant, ...]:
    """The ACL table (see the module docstring)."""
    t = settings.topic
    faust_prefix = f"{settings.topic_prefix}{settings.app_id}"

    def on_topics(
        principal: str, names: Iterable[str], operations: tuple[Operation, ...], why: str
    ) -> list[Grant]:
        return [Grant(principal, "topic", t(name), operations, why=why) for name in names]

    from streams.kafka.admin import TOPICS  # noqa: PLC0415 - the topic table, by direction

    by_direction = {
        direction: tuple(spec.name for spec in TOPICS if spec.direction == direction)
        for direction in ("in", "out", "internal")
    }
    return (
        *on_topics(GATE, by_direction["in"], ("Read",), "gate input"),
        # Its own logs: the state fold, pending approvals (and whatever internal topic
        # the table in streams/kafka/admin.py gains): only the gate reads or writes them.
        *on_topics(GATE, by_direction["internal"], ("Read", "Write"), "gate log"),
        *on_topics(GATE, by_direction["out"], ("Write",), "gate output"),
        # The audit chain heads are re-read from the audit topic on every assignment.
        Grant(GATE, "topic", t("audit"), ("Read",), why="audit chain re-sync"),
        # A worker announces its policy file on a fresh cluster (policy in force).
        Grant(GATE, "topic", t("control"), ("Write",), why="policy announcement"),
        # A proposal produced with another partitioner than murmur2 is re-produced,
        # unchanged, to its service's partition (streams/handlers/placement.py).
        Grant(GATE, "topic", t("proposals"), ("Write",), why="re-partitions proposals"),
        # `escalation topics create` and the worker's start-up create the topics.
        Grant(
            GATE,
            "topic",
            settings.topic_prefix,
            ("Create", "DescribeConfigs", "AlterConfigs"),
            pattern="prefixed",
            # Input topics are switched to LogAppendTime (the gate's clock) if need be.
            why="creates the gate's topics and keeps their configs",
        ),
        # Faust's own topics: table changelogs, the assignor's leader topic.
        Grant(GATE, "topic", f"{faust_prefix}-", ("All",), pattern="prefixed", why="Faust topics"),
        Grant(GATE, "group", faust_prefix, ("Read",), why="the gate's consumer group"),
        Grant(
            GATE,
            "group",
            offsets_group(faust_prefix),
            ("Read",),
            why="the proposals reader's offsets (streams/topology/lanes.py)",
        ),
        Grant(
            GATE,
            "group",
            RESYNC_GROUP,
            ("Read",),
            pattern="prefixed",
            why="audit chain re-sync readers",
        ),
        *(
            Grant(ai_principal(ai), "topic", t("proposals"), ("Write",), why="proposes")
            for ai in sorted(ai_systems)
        ),
        Grant(EXECUTOR, "topic", t("decisions.execute"), ("Read",), why="what to run"),
        # The approved Level 2 decision carries the action its execute command runs.
        Grant(EXECUTOR, "topic", t("decisions.approve"), ("Read",), why="approved actions"),
        Grant(EXECUTOR, "topic", t("outcomes"), ("Write",), why="reports outcomes"),
        Grant(
            EXECUTOR,
            "group",
            f"{settings.topic_prefix}executor-",
            ("Read",),
            pattern="prefixed",
            why="one consumer group per executor team",
        ),
        Grant(SLO_SOURCE, "topic", t("error-budgets"), ("Write",), why="error budgets"),
        # The HTTP intake publishes what AI systems post with their tokens.
        Grant(INTAKE, "topic", t("proposals"), ("Write",), why="proposals over HTTP"),
        Grant(OPERATOR, "topic", t("control"), ("Write",), why="freeze, requalify, policy load"),
        Grant(OPERATOR, "topic", t("approvals"), ("Write",), why="approve, reject, abort"),
        *on_topics(
            OPERATOR,
            ("audit", *DECISION_TOPICS, "oncall", "outcomes", "dlq"),
            ("Read",),
            "read-only views",
        ),
        *(
            Grant(OPERATOR, "group", group, ("Read",), pattern="prefixed", why="tools' readers")
            for group in OPERATOR_GROUPS
        ),
        Grant(
            OPERATOR, "group", f"{settings.topic_prefix}escalation-slack", ("Read",), why="Slack"
        ),
        Grant(SPLUNK_CONNECT, "topic", t("audit"), ("Read",), why="forwards audit"),
        Grant(
            SPLUNK_CONNECT,
            "topic",
            SPLUNK_CONNECT_TOPICS,
            ("All",),
            pattern="prefixed",
            why="Kafka Connect's own config/offset/status topics",
        ),
        *(
            Grant(SPLUNK_CONNECT, "group", group, ("Read",), why="Connect groups")
            for group in SPLUNK_CONNECT_GROUPS
        ),
    )


# ------------------------------------------------------------ kafka-acls.sh


def kafka_acls_commands(
    table: Sequence[Grant],
    *,
    bootstrap: str = "$KAFKA_BOOTSTRAP_SERVERS",
    command_config: str = "admin.properties",
) -> list[str]:
    """One ``kafka-acls.sh --add`` command per grant (a shell script, when joined)."""
    lines: list[str] = []
    for grant in table:
        parts = [
            "kafka-acls.sh",
            "--bootstrap-server",
            bootstrap,
            "--command-config",
            shlex.quote(command_config),
            "--add",
            "--allow-principal",
            f"User:{grant.principal}",
        ]
        for operation in grant.operations:
            parts += ["--operation", operation]
        if grant.resource == "cluster":
            parts.append("--cluster")
        else:
            parts += [f"--{grant.resource}", shlex.quote(grant.name)]
        parts += ["--resource-pattern-type", grant.pattern]
        lines.append(" ".join(parts))
    return lines


def scram_user_commands(
    names: Iterable[str],
    *,
    bootstrap: str = "$KAFKA_BOOTSTRAP_SERVERS",
    command_config: str = "admin.properties",
) -> list[str]:
    """``kafka-configs.sh`` commands that create each principal's SCRAM-SHA-512 credential."""
    return [
        f"kafka-configs.sh --bootstrap-server {bootstrap} --command-config "
        f"{shlex.quote(command_config)} --alter --entity-type users --entity-name {name} "
        f'--add-config "SCRAM-SHA-512=[iterations=8192,password=$PASSWORD_{_env_name(name)}]"'
        for name in names
    ]


def _env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


# ------------------------------------------------------------ the Admin API


def acl_bindings(table: Iterable[Grant]) -> list[AclBinding]:
    """The grants as confluent-kafka ``AclBinding`` values (ALLOW, any host)."""
    # Re-exported by confluent_kafka.admin, but not in its __all__ (as in admin.py).
    from confluent_kafka.admin._acl import (  # noqa: PLC0415
        AclBinding,
        AclOperation,
        AclPermissionType,
    )
    from confluent_kafka.admin._resource import ResourcePatternType, ResourceType  # noqa: PLC0415

    resources = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP}
    operations = {
        "Read": AclOperation.READ,
        "Write": AclOperation.WRITE,
        "Create": AclOperation.CREATE,
        "Describe": AclOperation.DESCRIBE,
        "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
        "AlterConfigs": AclOperation.ALTER_CONFIGS,
        "All": AclOperation.ALL,
    }
    patterns = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
    bindings: list[AclBinding] = []
    for grant in table:
        resource = ResourceType.BROKER if grant.resource == "cluster" else resources[grant.resource]
        name = "kafka-cluster" if grant.resource == "cluster" else grant.name
        bindings.extend(
            AclBinding(
                resource,
                name,
                patterns[grant.pattern],
                f"User:{grant.principal}",
                "*",
                operations[operation],
                AclPermissionType.ALLOW,
            )
            for operation in grant.operations
        )
    return bindings


def provision(
    local: LocalKafka,
    settings: Settings,
    ai_systems: Iterable[str],
    *,
    timeout: float = 30.0,
) -> dict[str, Path]:
    """Create every principal (credentials file 0600, SCRAM credential) and every ACL.

    Idempotent: a principal's file is made once and its password kept; SCRAM
    credentials are upserted and ACL bindings are a set. Returns each principal's
    client properties file.
    """
    from confluent_kafka import KafkaException  # noqa: PLC0415
    from confluent_kafka.admin._scram import (  # noqa: PLC0415
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    from streams.kafka.admin import admin_client  # noqa: PLC0415
    from streams.kafka.launcher import SCRAM_MECHANISM  # noqa: PLC0415
    from streams.kafka.security import (  # noqa: PLC0415
        read_client_properties,
        write_client_properties,
    )

    systems = tuple(ai_systems)
    files: dict[str, Path] = {}
    upserts: list[UserScramCredentialAlteration] = []
    for principal in principals(systems):
        path = local.credentials_file(principal.name)
        if not path.exists():
            write_client_properties(
                path,
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": SCRAM_MECHANISM,
                    "sasl.username": principal.name,
                    "sasl.password": secrets.token_urlsafe(24),
                },
            )
        password = read_client_properties(path)["sasl.password"]
        files[principal.name] = path
        upserts.append(
            UserScramCredentialUpsertion(
                principal.name,
                ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                password.encode(),
            )
        )
    admin = admin_client(local.bootstrap_servers, **local.client_config())
    try:
        users = admin.alter_user_scram_credentials(upserts, request_timeout=timeout)
        for future in users.values():
            future.result(timeout=timeout)
        wanted = acl_bindings(grants(settings, systems))
        acls = admin.create_acls(wanted, request_timeout=timeout)
        for future in acls.values():
            future.result(timeout=timeout)
        _wait_applied(admin, set(wanted), timeout=timeout)
    except KafkaException as exc:
        msg = f"provisioning principals and ACLs on {local.bootstrap_servers} failed: {exc}"
        raise KafkaLauncherError(msg) from exc
    return files


def _wait_applied(admin: Any, wanted: set[Any], *, timeout: float) -> None:
    """Return once the broker's authorizer holds every binding in ``wanted``.

    ``create_acls`` returns when the controller has the records; the broker's
    authorizer applies them from the metadata log a moment later, and a client
    refused in between would see a transient authorization error.
    """
    from confluent_kafka.admin._acl import (  # noqa: PLC0415
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
    )
    from confluent_kafka.admin._resource import ResourcePatternType, ResourceType  # noqa: PLC0415

    # None matches any name, principal and host (the stub says str).
    any_: Any = None
    every = AclBindingFilter(
        ResourceType.ANY,
        any_,
        ResourcePatternType.ANY,
        any_,
        any_,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    deadline = time.monotonic() + timeout
    while True:
        held = set(admin.describe_acls(every, request_timeout=timeout).result(timeout=timeout))
        if wanted <= held:
            return
        if time.monotonic() > deadline:
            msg = f"{len(wanted - held)} ACLs were created but not applied within {timeout:g}s"
            raise KafkaLauncherError(msg)
        time.sleep(0.05)  # the authorizer catches up within milliseconds
