# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""``escalation audit verify|checkpoint|prove|verify-proof``.

``verify [--topic | FILE] [--checkpoint FILE ...] [--public-key FILE ...]
[--max-gap SECONDS] [--expect CHAIN=SEQ ...] [--json]``: the hash chains and the
signed checkpoints. ``FILE`` is JSON lines: HEC records as on the audit topic,
bare event bodies as Splunk keeps them in ``_raw``, or Splunk search results
holding ``_raw`` (a search export in JSON), mixed freely (see
:mod:`streams.audit.verify`).

``checkpoint --out FILE``: the latest signed checkpoints of the topic, to keep
outside Kafka and Splunk. ``prove DECISION_ID [--topic | FILE] [--out PROOF]``: one
decision's events and their links to a signed checkpoint. ``verify-proof PROOF
--public-key FILE``: check a proof offline.

Exit codes: 0 when everything verifies, 1 when anything was found (each finding
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

from streams import keys as gate_keys
from streams.audit.proof import ProofError, bodies, build_proof, check_proof
from streams.audit.verify import VerifyReport, verify
from streams.errors import KeyFileError
from streams.models.audit import AuditBody
from streams.models.codec import validate
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from streams.audit.verify import Record

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


def _public_keys(files: tuple[str, ...], *, required: bool) -> gate_keys.PublicKeys | None:
    """The gate's public keys: ``--public-key`` files, else the settings' (never made here).

    Without either, ``None`` (checkpoint signatures are then not checked), or a usage
    error when ``required``.
    """
    try:
        if files:
            return gate_keys.PublicKeys.from_pem_files(Path(f) for f in files)
        settings = _settings()
        if settings.gate_public_keys or settings.gate_key_file is not None:
            return gate_keys.gate_public_keys(settings)
        dev = gate_keys.dev_key(settings, "gate")
        pub = dev.with_name(dev.name + ".pub")
        if settings.dev and pub.exists():
            return gate_keys.PublicKeys.from_pem_files([pub])
    except KeyFileError as exc:
        _fail(f"--public-key: {exc}")
    if required:
        _fail(
            "--public-key: the gate's public key is required (or set ESCALATION_GATE_PUBLIC_KEYS)"
        )
    return None


def _checkpoint_bodies(path: str) -> list[AuditBody]:
    """Checkpoints kept outside: a file `audit checkpoint` wrote, or JSON lines of them."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        _fail(f"--checkpoint: {path}: cannot read ({exc.strerror or exc})")
    try:
        whole = orjson.loads(text)
    except orjson.JSONDecodeError:
        whole = None
    if isinstance(whole, dict) and isinstance(whole.get("checkpoints"), list):
        items: list[object] = list(whole["checkpoints"])
    elif isinstance(whole, dict):
        items = [whole]
    else:
        try:
            items = [orjson.loads(line) for line in text.splitlines() if line.strip()]
        except orjson.JSONDecodeError as exc:
            _fail(f"--checkpoint: {path}: not JSON ({exc})")
    out = []
    for n, item in enumerate(items):
        inner = item.get("event", item) if isinstance(item, dict) else item
        try:
            body = validate(AuditBody, inner)
        except ValueError as exc:
            _fail(f"--checkpoint: {path}: checkpoints[{n}].{exc}")
        if body.kind != "checkpoint":
            _fail(
                f"--checkpoint: {path}: checkpoints[{n}].kind: expected checkpoint, got {body.kind}"
            )
        out.append(body)
    if not out:
        _fail(f"--checkpoint: {path}: no checkpoint in it")
    return out


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
    servers: str,
    topic: str,
    *,
    timeout: float,
    where: array[int] | None = None,
    client: dict[str, str] | None = None,
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
            # Client security settings (streams/kafka/security.py).
            **(client or {}),
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

    def partition(self, position: int) -> int | None:
        """The topic partition of the record at ``position`` (``None`` for a file)."""
        if self.where is None or 2 * position >= len(self.where):
            return None
        return self.where[2 * position]

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
        if finding.kind == "unverified":
            continue  # counted in the summary: one line per checkpoint would drown it
        click.echo(f"{finding.line()} ({source.location(finding.position)})")
    if report.ok:
        redelivered = sum(f.kind == "redelivered" for f in report.notes)
        metadata = sum(f.kind == "metadata" for f in report.notes)
        counts = [f"{redelivered} redelivered"] if redelivered else []
        counts += [f"{metadata} with wrong Splunk metadata"] if metadata else []
        if report.unverified:
            counts.append(
                f"{report.checkpoints} checkpoints matched, their signatures NOT checked: "
                "no public key (--public-key FILE)"
            )
        elif report.checkpoints:
            counts.append(f"{report.checkpoints} signed checkpoints matched")
        extra = f" ({', '.join(counts)})" if counts else ""
        click.echo(f"OK: {report.events} events in {len(report.chains)} chains{extra}")


def _timeout(command: Callable[..., None]) -> Callable[..., None]:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=1.0),
        default=30.0,
        show_default=True,
        help="With --topic: seconds to wait for the cluster or the next record.",
    )(command)


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
@click.option(
    "--checkpoint",
    "checkpoint_files",
    multiple=True,
    metavar="FILE",
    help="Signed checkpoints kept outside (from `audit checkpoint --out`): the trail must "
    "reach them. Repeatable.",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    metavar="FILE",
    help="The gate's public key (PEM), current or retired. Repeatable. Default: "
    "ESCALATION_GATE_PUBLIC_KEYS, or the .pub of ESCALATION_GATE_KEY_FILE.",
)
@click.option(
    "--max-gap",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Report events no signed checkpoint covered within this many seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_timeout
def verify_command(  # noqa: PLR0917 - click passes one parameter per option
    file: str | None,
    from_topic: bool,
    expects: tuple[str, ...],
    checkpoint_files: tuple[str, ...],
    public_keys: tuple[str, ...],
    max_gap: float | None,
    as_json: bool,
    timeout: float,
) -> None:
    """Verify the hash chains of an audit export (JSON lines) or of the audit topic.

    FILE holds one record a line: an HEC record (as on the topic), a bare event
    body (Splunk's _raw) or a Splunk search result with _raw (a JSON search export).
    Reports every edit, gap, reorder, duplicate, broken link and truncation, one line
    each, and exits 1; prints `OK: N events in M chains` and exits 0 when all verify.
    A redelivered event (same event_id sealed again at the next seq) is a note, and
    so is an HEC record whose Splunk metadata disagrees with its body.

    Every signed checkpoint in the trail is checked (a bad signature or an unknown
    key id fails) and the trail must hold the heads it signed: an edit followed by
    a recomputation of the chain is caught when any later checkpoint is present.
    """
    heads = _parse_expect(expects)
    outside = [body for path in checkpoint_files for body in _checkpoint_bodies(path)]
    keys = _public_keys(public_keys, required=False)
    source, records = _records(file, from_topic=from_topic, timeout=timeout, where=True)
    try:
        report = verify(
            records,
            expect_heads=heads,
            keys=keys,
            checkpoints=outside,
            max_gap=max_gap,
            partition_of=source.partition if source.where is not None else None,
        )
    except _ReadError as exc:
        _fail(str(exc))
    _print(report, source, as_json=as_json)
    sys.exit(0 if report.ok else FOUND)


def _records(
    file: str | None, *, from_topic: bool, timeout: float, where: bool = False
) -> tuple[_Source, Iterable[Record]]:
    if from_topic == (file is not None):
        _fail("give an audit export FILE (or - for stdin) or --topic, exactly one")
    if from_topic:
        settings = _settings()
        source = _Source(settings.topic("audit"), array("q") if where else None)
        servers = _bootstrap(settings)
        from streams.kafka.security import confluent_config  # noqa: PLC0415

        return source, topic_records(
            servers,
            source.name,
            timeout=timeout,
            where=source.where,
            client=confluent_config(settings),
        )
    assert file is not None  # noqa: S101 - checked above
    return _Source("<stdin>" if file == "-" else file), _file_lines(file)


def _reader(
    file: str | None, *, from_topic: bool, timeout: float
) -> Callable[[], Iterable[Record]]:
    """A trail that can be read more than once (stdin is kept in memory)."""
    if file == "-":
        lines = list(click.get_binary_stream("stdin"))
        return lambda: lines
    return lambda: _records(file, from_topic=from_topic, timeout=timeout)[1]


def _write_new(path: str, data: bytes, option: str) -> None:
    """Write ``data`` to a new file (never over an existing one), or stdout for ``-``."""
    if path == "-":
        click.echo(data.decode())
        return
    try:
        with Path(path).open("xb") as handle:
            handle.write(data + b"\n")
    except FileExistsError:
        _fail(f"{option}: {path} exists; refusing to overwrite it (choose a new name)")
    except OSError as exc:
        _fail(f"{option}: {path}: cannot write ({exc.strerror or exc})")


@audit.command("checkpoint")
@click.argument("file", required=False, metavar="[FILE|-]")
@click.option("--topic", "from_topic", is_flag=True, help="Read the audit topic (the default).")
@click.option("--out", required=True, metavar="FILE", help="New file to write (- for stdout).")
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    metavar="FILE",
    help="Keep only checkpoints that verify with these keys (default: the settings').",
)
@_timeout
def checkpoint_command(
    file: str | None,
    from_topic: bool,
    out: str,
    public_keys: tuple[str, ...],
    timeout: float,
) -> None:
    """Write the latest signed checkpoint of every chain, to keep outside Kafka and Splunk.

    Keep the file where the audit topic's writers cannot change it (WORM storage, a
    ticket, another system); `audit verify --checkpoint FILE` then fails when the
    trail does not reach it (a cut-off end, or a rollback).
    """
    keys = _public_keys(public_keys, required=False)
    if keys is None:
        click.echo("escalation: note: no public key: checkpoints are not verified", err=True)
    latest: dict[str, tuple[int, int]] = {}  # chain -> (signed seq, index in found)
    found: list[AuditBody] = []
    skipped = 0
    _, records = _records(file, from_topic=from_topic or file is None, timeout=timeout)
    try:
        for body in bodies(records):
            if body.kind != "checkpoint":
                continue
            if keys is not None and keys.verify(body.data) is not None:
                skipped += 1
                continue
            heads = body.data.get("heads")
            if not isinstance(heads, dict):
                continue
            found.append(body)
            for chain, head in heads.items():
                seq = head.get("seq", -1) if isinstance(head, dict) else -1
                if isinstance(seq, int) and seq >= latest.get(chain, (-1, -1))[0]:
                    latest[chain] = (seq, len(found) - 1)
    except _ReadError as exc:
        _fail(str(exc))
    keep = sorted({index for _, index in latest.values()})
    if not keep:
        _fail("no signed checkpoint in the trail (is the worker writing them?)")
    chosen = [found[i].model_dump(mode="json") for i in keep]
    document = {
        "schema_version": 1,
        "kind": "audit_checkpoints",
        "chains": len(latest),
        "checkpoints": chosen,
    }
    _write_new(out, orjson.dumps(document, option=orjson.OPT_INDENT_2), "--out")
    newest = max(c["at"] for c in chosen)
    note = f", {skipped} that do not verify skipped" if skipped else ""
    click.echo(
        f"wrote {out}: {len(chosen)} checkpoints covering {len(latest)} chains, "
        f"newest at {newest}{note}",
        err=out == "-",
    )


@audit.command("prove")
@click.argument("decision_id")
@click.argument("file", required=False, metavar="[FILE|-]")
@click.option("--topic", "from_topic", is_flag=True, help="Read the audit topic.")
@click.option("--out", default="-", metavar="FILE", help="Write the proof to a new file.")
@_timeout
def prove_command(
    decision_id: str, file: str | None, from_topic: bool, out: str, timeout: float
) -> None:
    """Print one decision's events and their hash links to the next signed checkpoint.

    `audit verify-proof PROOF --public-key gate.pub` checks it offline: an auditor
    can check one regulated change without the whole trail.
    """
    if from_topic == (file is not None):
        _fail("give an audit export FILE (or - for stdin) or --topic, exactly one")
    read = _reader(file, from_topic=from_topic, timeout=timeout)
    try:
        proof = build_proof(read, decision_id)
    except _ReadError as exc:
        _fail(str(exc))
    except ProofError as exc:
        click.echo(f"escalation: {exc}", err=True)
        sys.exit(FOUND)
    _write_new(out, orjson.dumps(proof, option=orjson.OPT_INDENT_2), "--out")
    if out != "-":
        events = sum(len(s["events"]) for s in proof["segments"])
        click.echo(f"wrote {out}: {events} events on {len(proof['segments'])} chains")


@audit.command("verify-proof")
@click.argument("proof_file", metavar="PROOF.json")
@click.option("--public-key", "public_keys", multiple=True, metavar="FILE",
              help="The gate's public key (PEM). Repeatable.")  # fmt: skip
def verify_proof_command(proof_file: str, public_keys: tuple[str, ...]) -> None:
    """Check one decision's proof offline, with only the gate's public key."""
    keys = _public_keys(public_keys, required=True)
    assert keys is not None  # noqa: S101 - required
    try:
        proof = orjson.loads(Path(proof_file).read_bytes())
    except OSError as exc:
        _fail(f"PROOF.json: {proof_file}: cannot read ({exc.strerror or exc})")
    except orjson.JSONDecodeError as exc:
        _fail(f"PROOF.json: {proof_file}: not JSON ({exc})")
    report = check_proof(proof, keys)
    for problem in report.problems:
        click.echo(f"decision {report.decision_id}: {problem}")
    if not report.ok:
        sys.exit(FOUND)
    kinds = ", ".join(f"{b.kind} ({b.chain} seq {b.seq})" for b in report.events)
    click.echo(f"OK: decision {report.decision_id}: {len(report.events)} events: {kinds}")
    for stamp in report.signed:
        click.echo(f"  sealed under the checkpoint signing {stamp}")
