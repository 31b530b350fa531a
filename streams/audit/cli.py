# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""``escalation audit verify [--topic | FILE] [--expect CHAIN=SEQ ...] [--json]``.

``FILE`` is JSON lines: HEC records as on the audit topic, bare event bodies as
Splunk keeps them in ``_raw``, or Splunk search results holding ``_raw`` (a search
export in JSON), mixed freely (see :mod:`streams.audit.verify`).

Exit codes: 0 when every chain verifies, 1 when anything was found (each finding
is one line on stdout), 2 for a usage error or input that cannot be read (one
line on stderr).
"""

from __future__ import annotations

import logging
import sys
import uuid
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
import orjson
from pydantic import ValidationError

from streams.audit.verify import VerifyReport, verify
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Iterator

USAGE_ERROR = 2
FOUND = 1

# librdkafka logs here rather than to stderr: a broker that cannot be reached is
# reported once, as the command's one-line error. Shown when logging is configured.
CLIENT_LOG = logging.getLogger("streams.audit.librdkafka")
CLIENT_LOG.addHandler(logging.NullHandler())


class _ReadError(Exception):
    """The input could not be read (a file or the topic)."""


def _fail(message: str) -> NoReturn:
    click.echo(f"escalation: error: {message}", err=True)
    sys.exit(USAGE_ERROR)


def _settings() -> Settings:
    obj = click.get_current_context().obj
    if isinstance(obj, Settings):
        return obj
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        _fail(f"{field}: {first['msg']}")


def _parse_expect(values: tuple[str, ...]) -> dict[str, int]:
    heads: dict[str, int] = {}
    for value in values:
        chain, sep, seq = value.partition("=")
        if not sep or not chain or not seq.isdigit():
            _fail(f"--expect: expected CHAIN=SEQ (e.g. p0=41), got {value!r}")
        heads[chain] = int(seq)
    return heads


def _file_lines(path: str) -> Iterator[bytes]:
    if path == "-":
        yield from click.get_binary_stream("stdin")
        return
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - opened here to fail before reading
    except OSError as exc:
        msg = f"{path}: cannot read audit export: {exc.strerror or exc}"
        raise _ReadError(msg) from None
    with handle:
        try:
            yield from handle
        except OSError as exc:
            msg = f"{path}: cannot read audit export: {exc.strerror or exc}"
            raise _ReadError(msg) from None


def _bootstrap(settings: Settings) -> str:
    try:
        # The local-broker fallback lives with the launcher; without it, the setting.
        from streams.kafka.cli import cluster_bootstrap  # noqa: PLC0415
    except ImportError:
        if not settings.bootstrap_servers:
            _fail("KAFKA_BOOTSTRAP_SERVERS is not set: --topic needs a Kafka cluster")
        return settings.bootstrap_servers
    return cluster_bootstrap(settings)


def topic_records(
    servers: str, topic: str, *, timeout: float, where: array[int] | None = None
) -> Iterator[bytes]:
    """Every record of ``topic`` from its beginning to its end as of the start, in order.

    Partitions are read one after the other (a chain lives in one partition, so its
    order is kept). The consumer is assigned partitions directly and never commits:
    reading leaves no trace on the cluster. When ``where`` is given, the partition
    and offset of each record are appended to it, two numbers per record.
    """
    from confluent_kafka import (  # noqa: PLC0415 - only --topic needs a Kafka client
        OFFSET_BEGINNING,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"escalation-audit-verify-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        },
        logger=CLIENT_LOG,
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                msg = f"topic {topic} does not exist on {servers}"
                raise _ReadError(msg)
            ends = {}
            for partition in sorted(found.partitions):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout, cached=False
                )
                if high > low:
                    ends[partition] = high
        except KafkaException as exc:
            msg = f"cannot read {topic} from {servers}: {exc}"
            raise _ReadError(msg) from None
        for partition, end in ends.items():
            consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
            idle = 0.0
            while True:
                message = consumer.poll(1.0)
                if message is None:
                    idle += 1.0
                    if idle >= timeout:
                        msg = f"{topic}[{partition}]: no record for {timeout:.0f}s before its end"
                        raise _ReadError(msg)
                    continue
                idle = 0.0
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001 - documented name
                        break
                    msg = f"cannot read {topic}[{partition}]: {error.str()}"
                    raise _ReadError(msg)
                offset = message.offset()
                if offset is None or offset >= end:
                    break
                if where is not None:
                    where.extend((partition, offset))
                yield message.value() or b""
                if offset >= end - 1:
                    break
            consumer.unassign()
    finally:
        consumer.close()


@dataclass(frozen=True)
class _Source:
    """Where the records came from, to tell a person where a finding is."""

    name: str
    # With --topic: partition and offset of each record, two numbers per position.
    where: array[int] | None = None

    def location(self, position: int) -> str:
        if self.where is None:
            return f"line {position + 1}"
        if 2 * position + 1 < len(self.where):
            return f"partition {self.where[2 * position]} offset {self.where[2 * position + 1]}"
        return "end of topic"


def _print(report: VerifyReport, source: _Source, *, as_json: bool) -> None:
    if as_json:
        out = report.to_dict()
        out["source"] = source.name
        for finding in out["findings"]:
            finding["location"] = source.location(finding["position"])
        click.echo(orjson.dumps(out).decode())
        return
    for finding in report.findings:
        click.echo(f"{finding.line()} ({source.location(finding.position)})")
    if report.ok:
        redelivered = sum(f.kind == "redelivered" for f in report.notes)
        metadata = sum(f.kind == "metadata" for f in report.notes)
        counts = [f"{redelivered} redelivered"] if redelivered else []
        counts += [f"{metadata} with wrong Splunk metadata"] if metadata else []
        extra = f" ({', '.join(counts)})" if counts else ""
        click.echo(f"OK: {report.events} events in {len(report.chains)} chains{extra}")


@click.group("audit")
def audit() -> None:
    """The audit trail on the audit topic (hash-chained Splunk HEC records)."""


@audit.command("verify")
@click.argument("file", required=False, metavar="[FILE|-]")
@click.option(
    "--topic",
    "from_topic",
    is_flag=True,
    help="Read the audit topic from its beginning to its current end.",
)
@click.option(
    "--expect",
    "expects",
    multiple=True,
    metavar="CHAIN=SEQ",
    help="The chain must reach at least this seq (catches a cut-off end). Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    help="With --topic: seconds to wait for the cluster or the next record.",
)
def verify_command(
    file: str | None, from_topic: bool, expects: tuple[str, ...], as_json: bool, timeout: float
) -> None:
    """Verify the hash chains of an audit export (JSON lines) or of the audit topic.

    FILE holds one record a line: an HEC record (as on the topic), a bare event
    body (Splunk's _raw) or a Splunk search result with _raw (a JSON search export).
    Reports every edit, gap, reorder, duplicate, broken link and truncation, one line
    each, and exits 1; prints `OK: N events in M chains` and exits 0 when all verify.
    A redelivered event (same event_id sealed again at the next seq) is a note, and
    so is an HEC record whose Splunk metadata disagrees with its body.
    """
    if from_topic == (file is not None):
        _fail("give an audit export FILE (or - for stdin) or --topic, exactly one")
    heads = _parse_expect(expects)
    if from_topic:
        settings = _settings()
        source = _Source(settings.topic("audit"), array("q"))
        assert source.where is not None  # noqa: S101 - just set
        servers = _bootstrap(settings)
        records = topic_records(servers, source.name, timeout=timeout, where=source.where)
    else:
        assert file is not None  # noqa: S101 - checked above
        source = _Source("<stdin>" if file == "-" else file)
        records = _file_lines(file)
    try:
        report = verify(records, expect_heads=heads)
    except _ReadError as exc:
        _fail(str(exc))
    _print(report, source, as_json=as_json)
    sys.exit(0 if report.ok else FOUND)
