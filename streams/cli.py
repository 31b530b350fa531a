"""The ``escalation`` command line (SPEC section 8).

User errors are one line on stderr naming the field, and exit code 2; never a
traceback. Heavy imports (faust, Kafka clients) happen inside the commands that
need them, so ``escalation explain`` starts fast.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson
from pydantic import ValidationError

from streams.errors import EscalationError, InputError, KeyFileError, PolicyError
from streams.settings import Settings

EXIT_USAGE = 2


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{name} must be a finite number, got {value}")
    return value


def _fail(message: str) -> NoReturn:
    click.echo(f"escalation: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def settings_from(ctx: click.Context) -> Settings:
    """The settings object built once by the root command."""
    obj = ctx.find_root().obj
    if isinstance(obj, Settings):
        return obj
    return Settings()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--bootstrap-servers",
    envvar="KAFKA_BOOTSTRAP_SERVERS",
    show_envvar=True,
    default=None,
    help="Kafka cluster. Unset: the local broker (`escalation kafka up`, or the demo's).",
)
@click.option(
    "--topic-prefix",
    envvar="ESCALATION_TOPIC_PREFIX",
    show_envvar=True,
    default=None,
    help="Prefix of every topic name.  [default: escalation.]",
)
@click.version_option(package_name="escalation-gate")
@click.pass_context
def cli(ctx: click.Context, bootstrap_servers: str | None, topic_prefix: str | None) -> None:
    """Escalation Gate: route AI-proposed remediations to a human-approved automation level."""
    overrides: dict[str, Any] = {}
    if bootstrap_servers:
        overrides["bootstrap_servers"] = bootstrap_servers
    if topic_prefix is not None:
        overrides["topic_prefix"] = topic_prefix
    try:
        ctx.obj = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        _fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")


# --------------------------------------------------------------------------- explain


def _explain_table(decision: Any) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    colour = {0: "red", 1: "yellow", 2: "cyan", 3: "green", 4: "bold green"}[decision.level]
    console.print(
        f"[{colour}]Level {decision.level} ({decision.level_name})[/] -> "
        f"decisions.{decision.route}   rule: {decision.deciding_rule}"
    )
    console.print(
        f"triggers: {', '.join(decision.triggers) or 'none'}   "
        f"change record required: {'yes' if decision.change_record_required else 'no'}   "
        f"approvers required: {decision.approvals_required}   "
        f"policy v{decision.policy_version} ({decision.policy_digest[:12]})"
    )
    table = Table(show_lines=False)
    for column in ("rule", "condition", "observed", "op", "threshold", "holds"):
        table.add_column(column)
    for c in decision.conditions:
        table.add_row(
            c["rule"],
            c["name"],
            orjson.dumps(c["observed"]).decode(),
            c["operator"],
            orjson.dumps(c["threshold"]).decode(),
            "[bold]yes[/]" if c["holds"] else "no",
        )
    console.print(table)


@cli.command()
@click.argument("proposal_file", metavar="PROPOSAL.json", type=click.Path(dir_okay=False))
@click.option(
    "--context",
    "context_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="Context JSON (history, budget, FP rate, now, ...).",
)
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def explain(
    ctx: click.Context,
    proposal_file: str,
    context_file: str,
    policy_file: str | None,
    as_json: bool,
) -> None:
    """Decide one proposal offline and explain why (uses the context's `now`)."""
    from streams.files import read_model, read_policy  # noqa: PLC0415
    from streams.models import Context, Proposal  # noqa: PLC0415
    from streams.policy import evaluate  # noqa: PLC0415

    settings = settings_from(ctx)
    proposal = read_model(Proposal, proposal_file)
    context = read_model(Context, context_file)
    policy = read_policy(policy_file or settings.policy_file)
    decision = evaluate(proposal, context, policy)
    if as_json:
        out = decision.model_dump(mode="json", include={
            "decision_id", "proposal_id", "level", "level_name", "route", "deciding_rule",
            "triggers", "change_record_required", "conditions", "policy_version",
            "policy_digest", "abort_window_ends_at", "approval_timeout_at", "approvals_required",
        })  # fmt: skip
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        _explain_table(decision)


# ---------------------------------------------------------------------------- policy


@cli.group()
def policy() -> None:
    """Validate, test and compare escalation policies."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def policy_check(files: tuple[str, ...]) -> None:
    """Validate policy files; each problem names file, line and field."""
    from streams.files import read_policy  # noqa: PLC0415

    failed = False
    for name in files:
        try:
            loaded = read_policy(name)
        except PolicyError as exc:
            failed = True
            for line in exc.problems:
                click.echo(line, err=True)
            continue
        click.echo(
            f"{name}: OK: {loaded.policy.name} v{loaded.version}, next review "
            f"{loaded.policy.next_review}, sha256 {loaded.digest}"
        )
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------- run and feed


def _bootstrap(ctx: click.Context) -> str:
    from streams.kafka.cli import cluster_bootstrap  # noqa: PLC0415

    return cluster_bootstrap(settings_from(ctx))


@cli.command()
@click.option("--log-level", default="WARNING", show_default=True, help="Faust log level.")
@click.pass_context
def worker(ctx: click.Context, log_level: str) -> None:
    """Run the gate (a Faust worker); start several to share the partitions."""
    from streams.topology.worker import run_worker  # noqa: PLC0415

    run_worker(settings_from(ctx), _bootstrap(ctx), loglevel=log_level)


def _json_documents(path: str) -> list[tuple[str, bytes]]:
    """One JSON object, or JSON lines: ``(where, bytes)`` per document."""
    from streams.files import read_bytes, shown_path  # noqa: PLC0415

    raw = read_bytes(path, what="input")
    name = shown_path(path)
    stripped = raw.strip()
    if not stripped:
        raise InputError(name, "no JSON documents")
    if stripped.startswith(b"{") and b"\n{" not in stripped:
        return [(name, stripped)]
    return [
        (f"{name}:{number}", line)
        for number, line in enumerate(raw.splitlines(), start=1)
        if line.strip()
    ]


def _decode_all(model: Any, path: str) -> list[Any]:
    from streams.models import decode  # noqa: PLC0415

    out = []
    for where, doc in _json_documents(path):
        try:
            out.append(decode(model, doc))
        except InputError as exc:
            raise InputError(f"{where}: {exc.field}" if exc.field else where, exc.reason) from None
    return out


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.kafka.admin import producer_config  # noqa: PLC0415
    from streams.kafka.security import confluent_config  # noqa: PLC0415

    # The client security settings (KAFKA_SECURITY_PROTOCOL..., a client properties file).
    security = confluent_config(settings_from(click.get_current_context()))
    producer = Producer(producer_config(bootstrap, **security))
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let it drain, never a traceback
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failures:
        raise EscalationError(
            f"{remaining + len(failures)} of {len(messages)} messages not delivered to {topic}"
            + (f": {failures[0]}" if failures else "")
        )


@cli.command()
@click.argument("source", metavar="FILE.json|-")
@click.pass_context
def publish(ctx: click.Context, source: str) -> None:
    """Send proposals (one JSON object or JSON lines), keyed by target service."""
    from streams.models import Proposal, encode  # noqa: PLC0415

    proposals = _decode_all(Proposal, source)
    settings = settings_from(ctx)
    _produce(
        _bootstrap(ctx),
        settings.topic("proposals"),
        [(p.action.target.service.encode(), encode(p)) for p in proposals],
    )
    click.echo(f"published {len(proposals)} proposal(s) to {settings.topic('proposals')}")


@cli.group()
def history() -> None:
    """Incident history that makes a new deployment useful on day one."""


@history.command("import")
@click.argument("source", metavar="FILE.jsonl|-")
@click.option("--as", "user", required=True, help="Who imports (keyring role import_history).")
@click.option("--progress", is_flag=True, help="A progress bar on stderr (default: on a terminal).")
@click.pass_context
def history_import(ctx: click.Context, source: str, user: str, progress: bool) -> None:
    """Seed incident history and AI verdicts from past incidents (JSON lines, streamed)."""
    from streams.history_import import Sender, producer_for, run_import  # noqa: PLC0415
    from streams.identities import person_key  # noqa: PLC0415
    from streams.models import HistoryRecord, encode  # noqa: PLC0415
    from streams.signing import history_commands, sign_command  # noqa: PLC0415

    settings = settings_from(ctx)
    sender = Sender(producer_for(_bootstrap(ctx)), settings.topic("control"))
    signers: list[Any] = []  # the key is read with the first batch: a bad file is named first

    def send(batch: list[HistoryRecord]) -> None:
        # Signed batches of at most 500 on ``control``: the gate checks the
        # import_history role and folds them (ids from content: a rerun counts once).
        if not signers:
            signers.append(person_key(settings, user))
        for command in history_commands(batch, user=user):
            sender.send(b"control", encode(sign_command(command, signers[0])))

    # The file is streamed (streams/history_import.py): memory does not grow with it.
    report = run_import(source, send, progress=progress or sys.stderr.isatty())
    sender.close()
    click.echo(report.summary(settings.topic("control")))


@cli.command()
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1, max=10_000),
    callback=lambda _ctx, _param, value: _finite("--rate", value),
    default=5.0,
    show_default=True,
    help="Speed of the story: 5 is real time, 10 twice as fast.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many decisions (default: run until Ctrl-C).",
)
@click.pass_context
def demo(ctx: click.Context, rate: float, count: int | None) -> None:
    """Start a local Kafka and a worker, seed history, and show decisions live."""
    from streams.demo import run_demo  # noqa: PLC0415

    run_demo(settings_from(ctx), rate=rate, count=count)


@cli.command()
@click.argument("pattern")
@click.argument("action_type")
@click.option("--as", "user", required=True, help="The human re-qualifying this automation.")
@click.option("--reason", default="re-qualification review", show_default=True)
@click.pass_context
def requalify(ctx: click.Context, pattern: str, action_type: str, user: str, reason: str) -> None:
    """Re-qualify a Level 4 automation (pattern, action type) after human review."""
    _control(ctx, "requalify", user=user, pattern=pattern, action_type=action_type, reason=reason)


@cli.command()
@click.option("--service", default=None, help="Freeze one service (default: the whole fleet).")
@click.option("--as", "user", required=True)
@click.option("--reason", default="")
@click.pass_context
def freeze(ctx: click.Context, service: str | None, user: str, reason: str) -> None:
    """Kill switch: every decision for the scope drops to Level 1 until unfrozen."""
    _control(ctx, "freeze", user=user, service=service, reason=reason)


@cli.command()
@click.option("--service", default=None)
@click.option("--as", "user", required=True)
@click.option("--reason", default="")
@click.pass_context
def unfreeze(ctx: click.Context, service: str | None, user: str, reason: str) -> None:
    """Lift a freeze."""
    _control(ctx, "unfreeze", user=user, service=service, reason=reason)


@policy.command("load")
@click.argument("policy_file", type=click.Path(dir_okay=False))
@click.option("--as", "user", required=True, help="Who loads it (keyring role load_policy).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the signed request here instead of sending it (for a second signer).",
)
@click.pass_context
def policy_load(ctx: click.Context, policy_file: str, user: str, out: str | None) -> None:
    """Send a reviewed policy to the workers, signed by you (keyring role load_policy).

    A policy that grants more autonomy than the one in force needs a second person:
    write the signed request with --out, and they send it with `policy cosign`.
    """
    from streams.files import read_policy  # noqa: PLC0415

    loaded = read_policy(policy_file)
    text = Path(policy_file).read_text(encoding="utf-8")
    _control(
        ctx, "reload_policy", user=user, policy_yaml=text, reason=f"v{loaded.version}", out=out
    )


@policy.command("cosign")
@click.argument("request", type=click.Path(dir_okay=False, exists=True))
@click.option("--as", "user", required=True, help="The second person (role load_policy).")
@click.pass_context
def policy_cosign(ctx: click.Context, request: str, user: str) -> None:
    """Add your signature to a policy load request (`policy load --out`) and send it."""
    from streams.files import read_model  # noqa: PLC0415
    from streams.identities import person_key  # noqa: PLC0415
    from streams.models import ControlCommand, encode  # noqa: PLC0415
    from streams.signing import sign_command  # noqa: PLC0415

    settings = settings_from(ctx)
    command = read_model(ControlCommand, request)
    signed = sign_command(command, person_key(settings, user))
    _produce(_bootstrap(ctx), settings.topic("control"), [(b"control", encode(signed))])
    click.echo(f"{command.command} signed by {len(signed.signatures)} people sent to "
               f"{settings.topic('control')}")  # fmt: skip


def _control(ctx: click.Context, command: str, *, out: str | None = None, **fields: Any) -> None:
    import datetime as dt  # noqa: PLC0415

    from streams.identities import person_key  # noqa: PLC0415
    from streams.models import ControlCommand, encode  # noqa: PLC0415
    from streams.signing import sign_command  # noqa: PLC0415

    try:
        message = ControlCommand(
            schema_version=1, command=command, at=dt.datetime.now(tz=dt.UTC), **fields
        )
    except ValidationError as exc:
        from streams.models.codec import describe_validation_error  # noqa: PLC0415

        raise describe_validation_error(exc) from None
    settings = settings_from(ctx)
    signed = sign_command(message, person_key(settings, message.user))
    if out is not None:
        Path(out).write_bytes(encode(signed))
        click.echo(f"{command} signed by {message.user} written to {out} (not sent)")
        return
    _produce(_bootstrap(ctx), settings.topic("control"), [(b"control", encode(signed))])
    click.echo(f"{command} signed by {message.user} sent to {settings.topic('control')}")


def _answer(ctx: click.Context, kind: str, decision_id: str, **fields: Any) -> None:
    import datetime as dt  # noqa: PLC0415
    import secrets  # noqa: PLC0415

    from streams.identities import person_key  # noqa: PLC0415
    from streams.models import ApprovalResponse, encode  # noqa: PLC0415
    from streams.signing import sign_answer  # noqa: PLC0415

    settings = settings_from(ctx)
    now = dt.datetime.now(tz=dt.UTC)
    try:
        answer = ApprovalResponse(
            schema_version=1,
            kind=kind,
            decision_id=decision_id,
            nonce=secrets.token_hex(16),
            issued_at=now,
            expires_at=now + dt.timedelta(minutes=15),
            **fields,
        )
    except ValidationError as exc:
        from streams.models.codec import describe_validation_error  # noqa: PLC0415

        raise describe_validation_error(exc) from None
    signed = sign_answer(answer, person_key(settings, answer.user))
    _produce(_bootstrap(ctx), settings.topic("approvals"), [(decision_id.encode(), encode(signed))])
    click.echo(f"{kind} of {decision_id} by {answer.user} sent (signed, nonce {answer.nonce})")


_as = click.option("--as", "user", required=True, help="Who answers (must be a policy approver).")
_reason = click.option("--reason", default="", help="Free text for the audit trail.")


@cli.command()
@click.argument("decision_id")
@_as
@click.option("--change-record", default=None, help="Change record id (regulated actions).")
@_reason
@click.pass_context
def approve(
    ctx: click.Context, decision_id: str, user: str, change_record: str | None, reason: str
) -> None:
    """Approve a Level 2 decision (signed with your key: KEY_DIR/NAME.key)."""
    _answer(ctx, "approve", decision_id, user=user, change_record=change_record, reason=reason)


@cli.command()
@click.argument("decision_id")
@_as
@click.option("--false-positive", is_flag=True, help="The AI was wrong: counts in its FP rate.")
@_reason
@click.pass_context
def reject(
    ctx: click.Context, decision_id: str, user: str, false_positive: bool, reason: str
) -> None:
    """Reject a Level 2 decision."""
    _answer(ctx, "reject", decision_id, user=user, false_positive=false_positive, reason=reason)


@cli.command()
@click.argument("decision_id")
@_as
@_reason
@click.pass_context
def abort(ctx: click.Context, decision_id: str, user: str, reason: str) -> None:
    """Abort a Level 3 execution inside its abort window."""
    _answer(ctx, "abort", decision_id, user=user, reason=reason)


def _mount_subsystem_commands() -> None:
    """Commands that live beside their subsystem."""
    from streams.audit.cli import audit  # noqa: PLC0415
    from streams.kafka.cli import kafka, topics  # noqa: PLC0415
    from streams.review.cli import policy_diff, policy_test, replay  # noqa: PLC0415

    cli.add_command(kafka)
    cli.add_command(topics)
    cli.add_command(audit)
    cli.add_command(replay)
    _mount_executor_commands()
    from streams.ingest.cli import ingest  # noqa: PLC0415
    from streams.review.trust_cli import calibration, replay_trust  # noqa: PLC0415

    cli.add_command(ingest)
    cli.add_command(calibration)
    cli.add_command(replay_trust)
    policy.add_command(policy_test, "test")
    policy.add_command(policy_diff, "diff")
    from streams.console.cli import console  # noqa: PLC0415

    cli.add_command(console)
    from streams.slack.cli import slack  # noqa: PLC0415

    cli.add_command(slack)
    from streams.oncall.cli import pager  # noqa: PLC0415

    cli.add_command(pager)


def _mount_executor_commands() -> None:
    """The executors' side: the reference executor, ACLs, signing keys (issue 13)."""
    from streams.executor.cli import executor  # noqa: PLC0415
    from streams.kafka.cli import acl  # noqa: PLC0415
    from streams.keys_cli import keys  # noqa: PLC0415

    cli.add_command(executor)
    cli.add_command(acl)
    cli.add_command(keys)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: one-line errors, exit code 2 for user error."""
    _mount_subsystem_commands()
    try:
        cli.main(args=argv, prog_name="escalation", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("escalation: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _fail(" ".join(exc.format_message().split()))
    except PolicyError as exc:
        for line in exc.problems:
            click.echo(f"escalation: error: {line}", err=True)
        sys.exit(EXIT_USAGE)
    except (InputError, KeyFileError) as exc:
        _fail(str(exc))
    except EscalationError as exc:
        click.echo(f"escalation: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
