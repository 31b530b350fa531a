"""``escalation kafka up|down|status`` and ``escalation topics create``.

The main CLI mounts ``kafka`` and ``topics`` (``main.add_command(kafka)``). Both take
the ``Settings`` the main CLI put in ``ctx.obj``, or build one from the environment.
Informational lines go to stderr; stdout carries only what scripts read
(``KAFKA_BOOTSTRAP_SERVERS=...``, topic names), so
``eval "$(escalation kafka up --detach)"`` works.
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, NoReturn

import click
from pydantic import ValidationError

from streams.errors import KafkaLauncherError, PolicyError
from streams.kafka import acls
from streams.kafka.admin import create_topics, wait_for_broker
from streams.kafka.launcher import LocalKafka, running_broker, stop_detached
from streams.kafka.security import KafkaSecurityError, confluent_config
from streams.settings import Settings

if TYPE_CHECKING:
    from types import FrameType

USAGE_ERROR = 2
RUNTIME_ERROR = 1


def _fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _info(message: str) -> None:
    click.echo(message, err=True)


def current_settings() -> Settings:
    """The Settings of the main CLI (``ctx.obj``), else one built from the environment."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        found = ctx.find_object(Settings)
        if found is not None:
            return found
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        _fail(f"{field}: {first['msg']}, got {first.get('input')!r}")


def _bootstrap_line(bootstrap: str) -> str:
    return f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}"


class _TerminatedError(Exception):
    """SIGTERM arrived: stop as on Ctrl-C."""


def _raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise _TerminatedError


@click.group("kafka")
def kafka() -> None:
    """The local single-node Apache Kafka (KRaft) the demo and the tests use."""


@kafka.command("up")
@click.option(
    "--detach",
    is_flag=True,
    help="Start the broker in the background and return; stop it with `kafka down`.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Broker port on 127.0.0.1 (default: the previous run's, else a free one).",
)
@click.option(
    "--secure",
    is_flag=True,
    help="SASL/SCRAM-SHA-512 and Kafka's StandardAuthorizer: one principal per party "
    "(credentials in DATA_DIR/kafka/principals/NAME.properties, mode 0600) and the ACLs "
    "of `escalation acl plan`. Needs a data directory of its own.",
)
def up(detach: bool, port: int | None, secure: bool) -> None:
    """Start the local broker; print KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:PORT once it answers.

    Without --detach it runs until Ctrl-C, then stops cleanly.
    """
    settings = current_settings()
    ai_systems = _ai_systems(settings) if secure else ()
    if settings.bootstrap_servers:
        _info(
            f"KAFKA_BOOTSTRAP_SERVERS is set: using the cluster at {settings.bootstrap_servers}; "
            "no local broker started"
        )
        click.echo(_bootstrap_line(settings.bootstrap_servers))
        return
    local = LocalKafka.from_settings(settings, port=port, secure=secure)
    try:
        existing = local.running_elsewhere()
    except KafkaLauncherError as exc:
        _fail(str(exc))
    if existing is not None:
        if not detach:
            _fail(
                f"a local broker already runs in {local.data_dir} (pid {existing.pid}); "
                "stop it with `escalation kafka down`"
            )
        _info(f"the local broker already runs (pid {existing.pid}, data {local.data_dir})")
        if secure:
            running = LocalKafka.from_settings(
                settings,
                port=existing.port,
                controller_port=existing.controller_port,
                secure=True,
            )
            _provision(running, settings, ai_systems)
        click.echo(_bootstrap_line(existing.bootstrap_servers))
        return
    _info(f"starting Apache Kafka {local.version()} (data {local.data_dir}) ...")
    if detach:
        _start(local, detach=True)
        if secure:
            _provision(local, settings, ai_systems)
        _info(
            f"up in {local.last_start_seconds or 0:.1f}s (pid {local.pid}); logs: {local.logs_dir}"
        )
        click.echo(_bootstrap_line(local.bootstrap_servers))
        return
    _run_in_foreground(local, settings, ai_systems)


def _start(local: LocalKafka, *, detach: bool) -> None:
    try:
        local.start(detach=detach)
    except KafkaLauncherError as exc:
        _fail(str(exc), RUNTIME_ERROR)


def _ai_systems(settings: Settings) -> tuple[str, ...]:
    try:
        return acls.trusted_ai_systems(settings)
    except PolicyError as exc:
        _fail(exc.problems[0])
    except KafkaLauncherError as exc:
        _fail(str(exc))


def _provision(local: LocalKafka, settings: Settings, ai_systems: tuple[str, ...]) -> None:
    """Principals and ACLs on a secure local broker; where each principal's credentials are."""
    try:
        files = acls.provision(local, settings, ai_systems)
    except (KafkaLauncherError, KafkaSecurityError) as exc:
        _fail(str(exc), RUNTIME_ERROR)
    _info(f"secure: SASL/SCRAM-SHA-512, StandardAuthorizer, {len(files)} principals with ACLs")
    for name, path in files.items():
        _info(f"  User:{name:<16} ESCALATION_KAFKA_CLIENT_PROPERTIES={path}")
    _info(f"  User:admin (super user)  {local.credentials_file('admin')}")


def _run_in_foreground(local: LocalKafka, settings: Settings, ai_systems: tuple[str, ...]) -> None:
    # SIGTERM (systemd, a supervisor, `kill`) stops the broker as cleanly as Ctrl-C.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _start(local, detach=False)
        if local.secure:
            _provision(local, settings, ai_systems)
        _info(
            f"up in {local.last_start_seconds or 0:.1f}s; logs: {local.logs_dir}; Ctrl-C stops it"
        )
        click.echo(_bootstrap_line(local.bootstrap_servers))
        code = local.wait()
        _fail(f"the broker exited on its own (code {code}); see {local.logs_dir}", RUNTIME_ERROR)
    except (KeyboardInterrupt, _TerminatedError):
        _info("stopping the local broker ...")
    finally:
        local.stop()
        signal.signal(signal.SIGTERM, previous)


@kafka.command("down")
def down() -> None:
    """Stop the local broker started by `kafka up` (its data is kept)."""
    settings = current_settings()
    data_dir = settings.data_dir / "kafka"
    try:
        stopped = stop_detached(data_dir)
    except KafkaLauncherError as exc:
        _fail(str(exc))
    if stopped is None:
        _info(f"no local broker runs in {data_dir.absolute()}")
        return
    _info(f"stopped the local broker at {stopped.bootstrap_servers} (data kept in {data_dir})")


@kafka.command("status")
def status() -> None:
    """Print KAFKA_BOOTSTRAP_SERVERS of the running local broker; exit 1 if none runs."""
    settings = current_settings()
    data_dir = settings.data_dir / "kafka"
    try:
        state = running_broker(data_dir)
    except KafkaLauncherError as exc:
        _fail(str(exc))
    if state is None:
        _info(f"no local broker runs in {data_dir.absolute()}")
        sys.exit(RUNTIME_ERROR)
    _info(f"running: pid {state.pid}, Apache Kafka {state.kafka_version}, since {state.started_at}")
    click.echo(_bootstrap_line(state.bootstrap_servers))


def cluster_bootstrap(settings: Settings) -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the running local broker's address; exit 2 if neither."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    try:
        state = running_broker(settings.data_dir / "kafka")
    except KafkaLauncherError as exc:
        _fail(str(exc))
    if state is None:
        _fail(
            "KAFKA_BOOTSTRAP_SERVERS is not set and no local broker runs: "
            "set it, or start one with `escalation kafka up --detach`"
        )
    return state.bootstrap_servers


@click.group("topics")
def topics() -> None:
    """The gate's Kafka topics."""


@topics.command("create")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the cluster.",
)
def create(timeout: float) -> None:
    """Create every topic with its configuration (idempotent); print their names."""
    settings = current_settings()
    bootstrap = cluster_bootstrap(settings)
    try:
        security = confluent_config(settings)
    except KafkaSecurityError as exc:
        _fail(str(exc))
    try:
        wait_for_broker(bootstrap, timeout=timeout, **security)
        names = create_topics(settings, bootstrap, timeout=timeout)
    except KafkaLauncherError as exc:
        _fail(str(exc), RUNTIME_ERROR)
    for name in names:
        click.echo(name)
    _info(f"{len(names)} topics ready on {bootstrap}")


@click.group("acl")
def acl() -> None:
    """Kafka principals and ACLs: who may read and write which topic."""


@acl.command("plan")
@click.option(
    "--bootstrap-server",
    "bootstrap",
    default="$KAFKA_BOOTSTRAP_SERVERS",
    show_default=True,
    help="The --bootstrap-server the printed commands use.",
)
@click.option(
    "--command-config",
    default="admin.properties",
    show_default=True,
    help="An admin's client properties file, for the printed commands.",
)
@click.option(
    "--ai-system",
    "ai_system",
    multiple=True,
    help="A trusted AI system (repeatable). Default: the policy's trusted_ai_systems.",
)
@click.option(
    "--users/--no-users",
    default=True,
    show_default=True,
    help="Also print kafka-configs.sh commands creating each principal's SCRAM credential.",
)
def plan(bootstrap: str, command_config: str, ai_system: tuple[str, ...], users: bool) -> None:
    """Print the ACLs of `kafka up --secure` as kafka-acls.sh commands for a production cluster.

    The same table (streams/kafka/acls.py) is applied to the local secure broker. Topic
    names carry ESCALATION_TOPIC_PREFIX; the gate's group is PREFIX + ESCALATION_APP_ID.
    """
    settings = current_settings()
    systems = ai_system or _ai_systems(settings)
    table = acls.grants(settings, systems)
    click.echo("#!/bin/sh")
    click.echo(f"# Escalation Gate ACLs for topic prefix {settings.topic_prefix!r}.")
    click.echo("# Run with an admin principal; the brokers need authorizer.class.name=")
    click.echo("# org.apache.kafka.metadata.authorizer.StandardAuthorizer and")
    click.echo("# allow.everyone.if.no.acl.found=false.")
    click.echo("set -eu")
    if users:
        click.echo("# Principals (SCRAM-SHA-512; set PASSWORD_<NAME> for each first):")
        for principal in acls.principals(systems):
            click.echo(f"#   User:{principal.name}: {principal.role}")
        names = [principal.name for principal in acls.principals(systems)]
        for line in acls.scram_user_commands(
            names, bootstrap=bootstrap, command_config=command_config
        ):
            click.echo(line)
    current = None
    for grant, line in zip(
        table,
        acls.kafka_acls_commands(table, bootstrap=bootstrap, command_config=command_config),
        strict=True,
    ):
        if grant.principal != current:
            current = grant.principal
            click.echo(f"# User:{current}")
        click.echo(line)
