"""``escalation executor --run CMD [--verify CMD] [--rollback CMD]``: the reference executor."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import TYPE_CHECKING, NoReturn

import click

from streams.errors import EscalationError

if TYPE_CHECKING:
    from types import FrameType

USAGE_ERROR = 2


def _fail(message: str, code: int = USAGE_ERROR) -> NoReturn:
    click.echo(f"escalation executor: error: {message}", err=True)
    sys.exit(code)


@click.command("executor")
@click.option("--run", "run_command", required=True, help="Shell command that performs the action.")
@click.option(
    "--verify",
    "verify_command",
    default=None,
    help="Shell command that verifies a Level 4 action (exit 0: passed).",
)
@click.option(
    "--rollback",
    "rollback_command",
    default=None,
    help="Shell command that undoes a Level 3 action aborted inside its window.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=300.0,
    show_default=True,
    help="Seconds each command may run before it is killed (and counts as failed).",
)
@click.option(
    "--team",
    default="default",
    show_default=True,
    help="Executor team: the consumer group is PREFIX + 'executor-' + TEAM.",
)
@click.option(
    "--max-age",
    type=click.FloatRange(min=1.0),
    default=900.0,
    show_default=True,
    help="Refuse (as stale) a decision or execute command older than this many seconds.",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    help="A new consumer group starts at the topics' beginning (default: their end).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9465,
    show_default=True,
    help="Prometheus metrics port on ESCALATION_METRICS_ADDR (0: any free port).",
)
@click.option("--log-level", default="WARNING", show_default=True)
def executor(  # noqa: PLR0917 - click passes one parameter per option
    run_command: str,
    verify_command: str | None,
    rollback_command: str | None,
    timeout: float,
    team: str,
    max_age: float,
    from_beginning: bool,
    metrics_port: int,
    log_level: str,
) -> None:
    """Run CMD once for every action the gate signed on decisions.execute.

    CMD sees ESCALATION_DECISION_ID, _ACTION_TYPE, _SERVICE, _NAMESPACE, _KIND,
    _PARAMETERS (JSON), _LEVEL (and _PROPOSAL_ID, _ENVIRONMENT, _PATTERN, _COMMAND_ID,
    _STEP). Unsigned, forged or tampered records, Levels 0 and 1, and Level 2 without
    the gate's execute command are refused and counted, never run. Outcomes go to
    the outcomes topic signed with ESCALATION_EXECUTOR_KEY_FILE. One line per action
    on stdout.
    """
    from prometheus_client import start_http_server  # noqa: PLC0415

    from streams.executor.runner import ShellCommand  # noqa: PLC0415
    from streams.executor.service import Executor  # noqa: PLC0415
    from streams.kafka.cli import cluster_bootstrap, current_settings  # noqa: PLC0415
    from streams.kafka.security import KafkaSecurityError, confluent_config  # noqa: PLC0415

    logging.basicConfig(level=log_level.upper(), stream=sys.stderr)
    settings = current_settings()
    bootstrap = cluster_bootstrap(settings)
    if settings.bootstrap_servers != bootstrap:
        settings = settings.model_copy(update={"bootstrap_servers": bootstrap})
    try:
        confluent_config(settings)
    except KafkaSecurityError as exc:
        _fail(str(exc))
    try:
        service = Executor(
            settings,
            ShellCommand(run_command, timeout=timeout),
            verifier=ShellCommand(verify_command, timeout=timeout) if verify_command else None,
            rollback=ShellCommand(rollback_command, timeout=timeout) if rollback_command else None,
            team=team,
            max_age=max_age,
            from_beginning=from_beginning,
        )
    except EscalationError as exc:
        _fail(str(exc))
    server, _thread = start_http_server(
        metrics_port, addr=settings.metrics_addr, registry=service.metrics.registry
    )
    click.echo(
        f"executor {service.group}: keys {', '.join(service.keys.ids())}; "
        f"metrics on {settings.metrics_addr}:{server.server_port}",
        err=True,
    )
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        service.run(stop)
    except EscalationError as exc:
        _fail(str(exc), 1)
    finally:
        service.close()
        server.shutdown()
