# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Review commands: ``escalation replay``, ``escalation policy test``, ``escalation policy diff``.

The lead's ``streams.cli`` mounts them: ``cli.add_command(replay)``,
``policy.add_command(policy_test, "test")``, ``policy.add_command(policy_diff, "diff")``.
User errors are one line on stderr and exit code 2 (a policy's problems are one line
each), never a traceback. None of these commands writes to Kafka: replay reads the
audit topic with a consumer that neither joins a group nor commits offsets.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from streams.errors import InputError, PolicyError
from streams.files import shown_path
from streams.models.decision import LEVEL_NAMES
from streams.policy import parse_policy
from streams.review.diff import LESS, MORE, NEUTRAL, diff_policies
from streams.review.policytest import CaseResult, parse_case_file, run_case
from streams.review.replay import LEVELS, Record, ReplayReport
from streams.review.replay import replay as replay_records
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streams.models.decision import Condition
    from streams.policy.model import Policy
    from streams.review.replay import ConditionChange, LevelChange

EXIT_FAILED = 1
EXIT_USAGE = 2
#: Replay gives up on the audit topic after this long without a new record.
TOPIC_IDLE_SECONDS = 30.0
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_TOPIC = "--topic"


def _fail(message: str) -> NoReturn:
    click.echo(f"escalation: error: {message}", err=True)
    raise SystemExit(EXIT_USAGE)


def _settings() -> Settings:
    obj = click.get_current_context().obj
    return obj if isinstance(obj, Settings) else Settings()


def _console() -> Console:
    # Resolved at print time so click's runner (and pipes) get plain text.
    # Markup is off: policy data such as ``[holmesgpt]`` must print as written.
    return Console(highlight=False, markup=False)


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file, or print each problem line and exit 2."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        _fail(f"{shown_path(path)}: cannot read policy: {exc.strerror or exc}")
    try:
        return parse_policy(raw, source=shown_path(path))
    except PolicyError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        raise SystemExit(EXIT_USAGE) from None


def parse_instant(option: str, text: str, *, now: dt.datetime) -> dt.datetime:
    """``2026-11-28T10:00:00Z``, a date (UTC midnight), or a duration ago (``7d``, ``12h``)."""
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        return now - dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise InputError(
            option,
            f"expected an ISO 8601 time (2026-11-28T10:00:00Z), a date or a duration "
            f"such as 7d, got {text!r}",
        ) from None
    if parsed.tzinfo is None:
        raise InputError(option, f"{text!r} has no timezone; add Z or an offset such as +00:00")
    return parsed


# ------------------------------------------------------------------------------ replay


def _file_records(path: str) -> Iterator[Record]:
    """Non-blank lines of a JSON-lines export, each tagged ``FILE:LINE``."""
    if path == "-":
        stream = click.get_binary_stream("stdin")
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield Record(f"<stdin>:{number}", line)
        return
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed below; opened early to fail early
    except OSError as exc:
        raise InputError(path, f"cannot read audit export: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield Record(f"{path}:{number}", line)
        except OSError as exc:
            raise InputError(path, f"cannot read audit export: {exc.strerror or exc}") from None


def _bootstrap(settings: Settings) -> str:
    try:
        from streams.kafka.cli import cluster_bootstrap  # noqa: PLC0415 - optional subsystem
    except ImportError:
        if settings.bootstrap_servers:
            return settings.bootstrap_servers
        raise InputError(_TOPIC, "KAFKA_BOOTSTRAP_SERVERS is not set") from None
    return cluster_bootstrap(settings)


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("streams.review.replay.kafka")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _topic_records(settings: Settings) -> Iterator[Record]:
    """Every record of the audit topic from the beginning to the current end.

    The consumer is assigned partitions directly (no group membership) and never
    commits, so reading leaves no trace on the cluster.
    """
    from confluent_kafka import (  # noqa: PLC0415 - only --topic needs a Kafka client
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    from streams.kafka.security import confluent_config  # noqa: PLC0415

    topic = settings.topic("audit")
    servers = _bootstrap(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"escalation-replay-{uuid.uuid4().hex}",
            **confluent_config(settings),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # librdkafka would print every failed connection on stderr; the one-line
            # error below says what went wrong.
            "logger": _quiet_logger(),
        }
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                raise InputError(_TOPIC, f"topic {topic} does not exist on {servers}")
            ends: dict[int, int] = {}
            for partition in sorted(found.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10, cached=False
                )
                if high > low:
                    ends[partition] = high
        except KafkaException as exc:
            reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else exc
            raise InputError(_TOPIC, f"cannot read {topic} from {servers}: {reason}") from None
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        idle_since = dt.datetime.now(dt.UTC)
        while ends:
            message = consumer.poll(1.0)
            now = dt.datetime.now(dt.UTC)
            if message is None:
                if (now - idle_since).total_seconds() > TOPIC_IDLE_SECONDS:
                    raise InputError(
                        _TOPIC,
                        f"no record from {topic} for {TOPIC_IDLE_SECONDS:.0f}s before its end",
                    )
                continue
            idle_since = now
            partition, offset = message.partition(), message.offset()
            if partition is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - the documented constant
                    ends.pop(partition, None)
                    continue
                raise InputError(_TOPIC, f"cannot read {topic}: {error.str()}")
            end = ends.get(partition)
            if end is None or offset is None or offset >= end:
                ends.pop(partition, None)
                continue
            if offset >= end - 1:
                ends.pop(partition)
            yield Record(f"{topic}[{partition}]@{offset}", message.value() or b"")
    finally:
        consumer.close()


def _level(level: int) -> str:
    return f"L{level} {LEVEL_NAMES[level]}"


def _verdict(holds: bool | None) -> str:
    return "-" if holds is None else ("holds" if holds else "no")


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _condition_line(change: ConditionChange) -> str:
    threshold = (
        _shown(change.new_threshold)
        if change.old_threshold == change.new_threshold
        else f"{_shown(change.old_threshold)} -> {_shown(change.new_threshold)}"
    )
    return (
        f"{change.rule}.{change.name}: {_shown(change.observed)} {change.operator} {threshold}: "
        f"{_verdict(change.old_holds)} -> {_verdict(change.new_holds)}"
    )


def _matrix_table(report: ReplayReport) -> Table:
    table = Table(
        title="Recorded level (rows) -> level under the new policy (columns)", box=box.SIMPLE
    )
    table.add_column("recorded")
    for level in LEVELS:
        table.add_column(f"L{level}", justify="right")
    table.add_column("total", justify="right")
    for old in LEVELS:
        cells: list[Text | str] = []
        for new in LEVELS:
            count = report.matrix[old][new]
            style = "dim" if new == old or count == 0 else ("bold red" if new > old else "green")
            cells.append(Text(str(count), style=style))
        table.add_row(_level(old), *cells, str(sum(report.matrix[old])))
    return table


def _changes_table(title: str, changes: list[LevelChange], limit: int) -> Table:
    # Two columns fold well in a narrow terminal; the details cell reads top-down.
    table = Table(title=title, box=box.SIMPLE, show_lines=True, title_justify="left")
    table.add_column("level", no_wrap=True)
    table.add_column("decision, deciding rule, conditions whose verdict changed", overflow="fold")
    for change in changes[:limit]:
        details = Text()
        details.append(change.service, style="bold")
        details.append(f"  {change.pattern} / {change.action_type}  {change.proposal_id}\n")
        details.append(f"rule: {change.old_rule} -> {change.new_rule}")
        for condition in change.conditions:
            details.append(f"\n  {_condition_line(condition)}")
        style = "bold red" if change.gains_autonomy else "green"
        table.add_row(Text(f"L{change.old_level} -> L{change.new_level}", style=style), details)
    return table


def _print_report(report: ReplayReport, source: str, limit: int) -> None:
    console = _console()
    under = ", ".join(f"{v} ({n})" for v, n in report.decided_under.items()) or "-"
    window = ""
    if report.since or report.until:
        since = report.since.isoformat() if report.since else "the beginning"
        until = report.until.isoformat() if report.until else "the end"
        window = f", decided from {since} to {until}"
    # Prose lines are soft-wrapped (the terminal wraps them; a pipe keeps one line each).
    console.print(
        f"Replayed {report.replayed} decisions from {source}{window} under policy "
        f"{report.policy_version} (sha256 {report.policy_digest[:12]}); recorded under {under}.",
        soft_wrap=True,
    )
    console.print(
        f"{len(report.gains)} would gain autonomy, {len(report.losses)} would lose it, "
        f"{report.unchanged} unchanged"
        + (f" ({report.rule_changes} decided by another rule)" if report.rule_changes else "")
        + ".",
        soft_wrap=True,
    )
    console.print(_matrix_table(report))
    for title, changes in (
        ("Gain autonomy (less human involvement)", report.gains),
        ("Lose autonomy (more human involvement)", report.losses),
    ):
        if not changes:
            continue
        console.print(_changes_table(f"{title}: {len(changes)}", changes, limit))
        if len(changes) > limit:
            console.print(
                f"... and {len(changes) - limit} more (--limit, or --json for all)", soft_wrap=True
            )
    skipped = [
        f"{report.duplicates} duplicate decision events (redeliveries, first kept)",
        f"{report.other_kinds} events of other kinds",
    ]
    if report.since or report.until:
        skipped.append(f"{report.outside_window} decisions outside the window")
    console.print(f"Read {report.records} records; skipped {'; '.join(skipped)}.", soft_wrap=True)
    if report.malformed:
        console.print(
            Text(f"{report.malformed} malformed records, first at:", style="bold"), soft_wrap=True
        )
        for where, error in report.malformed_examples:
            console.print(Text(f"  {where}: {error}"), soft_wrap=True)


@click.command("replay")
@click.option(
    "--policy",
    "policy_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The candidate policy to re-decide recorded decisions under.",
)
@click.option(
    "--since", help="Only decisions decided at or after: ISO 8601, a date, or 7d / 12h ago."
)
@click.option("--until", help="Only decisions decided at or before (same forms as --since).")
@click.option(
    "--topic", "from_topic", is_flag=True, help="Read the audit topic, beginning to current end."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows shown per table of changes (--json lists all).",
)
@click.argument("file", required=False, type=click.Path(dir_okay=False, allow_dash=True))
def replay(
    *,
    policy_file: str,
    since: str | None,
    until: str | None,
    from_topic: bool,
    as_json: bool,
    limit: int,
    file: str | None,
) -> None:
    """Re-decide recorded decisions under another policy; report which levels would change.

    Reads FILE (a JSON-lines audit export, - for stdin) or, with --topic, the audit
    topic. Writes nothing to Kafka.
    """
    if from_topic == (file is not None):
        _fail("give an audit export FILE or --topic (exactly one)")
    new_policy = load_policy(policy_file)
    now = dt.datetime.now(dt.UTC)
    try:
        start = parse_instant("--since", since, now=now) if since else None
        end = parse_instant("--until", until, now=now) if until else None
    except InputError as exc:
        _fail(str(exc))
    if start and end and start > end:
        _fail(f"--since {since} is after --until {until}")
    if file is not None:
        records, source = _file_records(file), ("<stdin>" if file == "-" else file)
    else:
        settings = _settings()
        records, source = _topic_records(settings), settings.topic("audit")
    try:
        report = replay_records(records, new_policy, since=start, until=end)
    except InputError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(report.to_json())
    else:
        _print_report(report, source, limit)


# ------------------------------------------------------------------------- policy test


def _case_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        _fail(f"{path}: no such file or directory")
    files = sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())
    if not files:
        _fail(f"{path}: no *.yaml case files")
    return files


def _condition_text(condition: Condition) -> str:
    return (
        f"{condition['rule']}.{condition['name']}: observed {_shown(condition['observed'])} "
        f"{condition['operator']} {_shown(condition['threshold'])}"
    )


def _report_failure(result: CaseResult) -> None:
    click.echo(f"FAIL {result.case.where}")
    for mismatch in result.mismatches:
        click.echo(f"  {mismatch}")
    click.echo("  conditions that held:")
    for condition in result.held:
        click.echo(f"    {_condition_text(condition)}")
    if result.unmet:
        click.echo("  not met (Level 4 / Level 3 need all of these):")
        for condition in result.unmet:
            click.echo(f"    {_condition_text(condition)}")


@click.command("test")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Policy to test.  [default: the configured policy file]",
)
@click.option("-v", "--verbose", is_flag=True, help="List passing cases too.")
def policy_test(directory: Path, policy_file: str | None, verbose: bool) -> None:
    """Run a policy's test cases (YAML files in DIRECTORY, or one file), like `opa test`."""
    policy = load_policy(policy_file or _settings().policy_file)
    cases = []
    for path in _case_files(directory):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            _fail(f"{path}: cannot read case file: {exc.strerror or exc}")
        try:
            cases += parse_case_file(raw, source=str(path))
        except (InputError, UnicodeDecodeError) as exc:
            _fail(str(exc))
    failed = 0
    for case in cases:
        result = run_case(case, policy)
        if result.passed:
            if verbose:
                click.echo(f"PASS {case.where}")
            continue
        failed += 1
        _report_failure(result)
    click.echo(
        f"{len(cases) - failed} passed, {failed} failed (policy {policy.version}, {policy.source})"
    )
    if failed:
        raise SystemExit(EXIT_FAILED)


# ------------------------------------------------------------------------- policy diff


@click.command("diff")
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--fail-on-more-autonomy",
    is_flag=True,
    help="Exit 1 when any change grants more autonomy (for CI review gates).",
)
def policy_diff(old: str, new: str, as_json: bool, fail_on_more_autonomy: bool) -> None:
    """Say what NEW changes against OLD, and whether each change grants more autonomy."""
    before, after = load_policy(old), load_policy(new)
    result = diff_policies(before, after)
    if as_json:
        payload = result.as_dict()
        payload["old"]["file"], payload["new"]["file"] = old, new
        import orjson  # noqa: PLC0415 - keeps the text path light

        click.echo(orjson.dumps(payload).decode())
    else:
        click.echo(f"Policy {before.version} ({old}) -> {after.version} ({new})")
        if not result.changes:
            click.echo("  no changes")
        section = ""
        for change in result.changes:
            if change.section != section:
                section = change.section
                click.echo(f"{section}:")
            click.echo(f"  {change.line}")
        click.echo(
            f"{len(result.changes)} changes: {len(result.by_direction(MORE))} more autonomy, "
            f"{len(result.by_direction(LESS))} less autonomy, "
            f"{len(result.by_direction(NEUTRAL))} neutral"
        )
    if fail_on_more_autonomy and result.grants_more_autonomy:
        raise SystemExit(EXIT_FAILED)
