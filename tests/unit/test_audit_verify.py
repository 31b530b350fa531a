# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Verifying audit chains: each kind of tampering is reported as what it is, once.

Exports are JSON lines, several chains interleaved, in each form ``audit verify``
reads: sealed HEC records as the audit topic holds them, bare event bodies as
Splunk keeps them in ``_raw``, Splunk results holding ``_raw``, lines of a Splunk
search export in JSON, and all of these mixed. Each test tampers with one the way
an attacker or a broken pipeline would.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from types import ModuleType
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.audit
from streams.audit import verify as verify_module
from streams.audit.chain import GENESIS, ChainHead, body_hash, seal
from streams.audit.cli import audit
from streams.audit.verify import ERROR_KINDS, NOTE_KINDS, verify
from streams.models import AuditBody, AuditEvent, encode

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from streams.audit.verify import Finding, VerifyReport

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


def seal_next(
    head: ChainHead, n: int, *, event_id: str | None = None
) -> tuple[AuditEvent, ChainHead]:
    return seal(
        head,
        kind="decision",
        event_id=event_id or f"d-{head.chain}-{n:05d}/decision",
        actor="escalation-gate",
        at=T0 + dt.timedelta(seconds=n),
        decision_id=f"d-{head.chain}-{n:05d}",
        data={"level": 2, "route": "approve", "confidence": 0.93},
        fields={"level": "2", "service": "checkout-api"},
        host="gate-1",
        index="escalation",
    )


def chain_events(chain: str, count: int) -> list[AuditEvent]:
    head = ChainHead.empty(chain)
    events = []
    for n in range(count):
        event, head = seal_next(head, n)
        events.append(event)
    return events


#: How a record is written in an export: ``envelope`` as on the topic, ``body`` as
#: Splunk's ``_raw``, ``raw`` a Splunk result holding ``_raw`` (re-serialised with
#: another key order and whitespace), ``export`` a line of a Splunk search export
#: in JSON; ``mixed`` takes each of them in turn.
SINGLE_FORMATS = ("envelope", "body", "raw", "export")
FORMATS = (*SINGLE_FORMATS, "mixed")


def as_format(event: AuditEvent, fmt: str, n: int = 0) -> bytes:
    """Line ``n`` of an export of ``event`` in the form ``fmt``."""
    if fmt == "mixed":
        fmt = SINGLE_FORMATS[n % len(SINGLE_FORMATS)]
    if fmt == "envelope":
        return encode(event)
    if fmt == "body":
        return encode(event.event)
    body = event.event.model_dump(mode="json")
    raw = json.dumps(dict(sorted(body.items(), reverse=True)), separators=(", ", ": "))
    result = {
        "_raw": raw,
        "_time": event.event.at.isoformat(timespec="milliseconds"),
        "host": event.host,
        "source": event.source,
        "sourcetype": event.sourcetype,
        "index": event.index,
        "splunk_server": "splunk-1",
        "_serial": str(n),
        "kind": event.fields["kind"],
        "chain": event.fields["chain"],
    }
    if fmt == "raw":
        return orjson.dumps(result)
    assert fmt == "export", fmt
    return orjson.dumps({"preview": False, "offset": n, "result": result})


def export(sizes: dict[str, int], *, seed: int = 7, fmt: str = "envelope") -> list[bytes]:
    """Lines of an export: the chains' events interleaved, each chain in order."""
    queues = {name: chain_events(name, size) for name, size in sizes.items()}
    rng = random.Random(seed)  # noqa: S311 - a test shuffle, not cryptography
    lines: list[bytes] = []
    while any(queues.values()):
        name = rng.choice([n for n, q in queues.items() if q])
        lines.append(as_format(queues[name].pop(0), fmt, len(lines)))
    return lines


def _body_slot(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The dict that holds the body in a decoded line and its key (None: the line is it)."""
    if "event" in record:
        return record, "event"
    holder = record.get("result", record)
    if "_raw" in holder:
        return holder, "_raw"
    return record, None


def body_of(line: bytes) -> dict[str, Any]:
    """The event body of an export line, whatever its form."""
    holder, key = _body_slot(orjson.loads(line))
    if key is None:
        return holder
    body = holder[key] if key == "event" else orjson.loads(holder[key])
    assert isinstance(body, dict)
    return body


def edited(line: bytes, change: Callable[[dict[str, Any]], Any]) -> bytes:
    """The line with ``change`` applied to its body, written back in the same form."""
    record = orjson.loads(line)
    holder, key = _body_slot(record)
    if key is None:
        change(record)
    elif key == "event":
        change(holder[key])
    else:
        body = orjson.loads(holder[key])
        change(body)
        holder[key] = json.dumps(body)
    return orjson.dumps(record)


def edited_envelope(line: bytes, change: Callable[[dict[str, Any]], Any]) -> bytes:
    """An HEC record line with ``change`` applied to the whole record."""
    record = orjson.loads(line)
    change(record)
    return orjson.dumps(record)


def rehashed(body: dict[str, Any]) -> None:
    body["hash"] = body_hash(body)


def index_of(lines: list[bytes], chain: str, seq: int) -> int:
    for i, line in enumerate(lines):
        try:
            body = body_of(line)
        except (orjson.JSONDecodeError, KeyError):
            continue
        if (body["chain"], body["seq"]) == (chain, seq):
            return i
    raise AssertionError((chain, seq))


def heads_of(lines: list[bytes]) -> dict[str, int]:
    heads: dict[str, int] = {}
    for line in lines:
        body = body_of(line)
        heads[body["chain"]] = max(heads.get(body["chain"], -1), body["seq"])
    return heads


def errors(report: VerifyReport) -> list[tuple[str, str | None, int, int | None]]:
    return [(f.kind, f.chain, f.position, f.seq) for f in report.errors]


SIZES = {"p0": 40, "p1": 25, "p2": 30}


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def lines(fmt: str) -> list[bytes]:
    """An export in each form: every test that takes it runs once per form."""
    return export(SIZES, fmt=fmt)


@pytest.fixture
def envelopes() -> list[bytes]:
    """An export of HEC records, as from the audit topic."""
    return export(SIZES)


# -- the package -----------------------------------------------------------------


def test_the_module_is_not_shadowed_by_the_function() -> None:
    assert isinstance(streams.audit.verify, ModuleType)
    assert verify_module.verify is verify
    assert streams.audit.verify_records is verify


# -- clean exports -------------------------------------------------------------


def test_a_clean_multi_chain_export_verifies(lines: list[bytes]) -> None:
    report = verify(lines, expect_heads={"p0": 39, "p1": 24, "p2": 29})
    assert report.ok
    assert report.findings == ()
    assert report.events == 95
    assert {name: c.events for name, c in report.chains.items()} == SIZES
    assert report.heads["p1"] == ChainHead.of(chain_events("p1", 25)[-1])


def test_records_may_be_lines_text_dicts_events_or_bodies(envelopes: list[bytes]) -> None:
    mixed: list[Any] = []
    for i, line in enumerate(envelopes):
        event = AuditEvent.model_validate_json(line)
        mixed.append(
            [line, line.decode(), orjson.loads(line), event, event.event, encode(event.event)][
                i % 6
            ]
        )
    assert verify(mixed).ok


def test_the_same_chain_verifies_from_the_topic_and_from_splunk() -> None:
    """One chain, exported from Kafka and from Splunk: the same heads, no finding."""
    topic = verify(export(SIZES))
    for fmt in ("body", "raw", "export"):
        splunk = verify(export(SIZES, fmt=fmt))
        assert splunk.findings == ()
        assert splunk.heads == topic.heads


def test_blank_lines_are_skipped_but_keep_positions_equal_to_line_indexes(
    lines: list[bytes],
) -> None:
    with_blanks = [lines[0], b"\n", *lines[1:]]
    with_blanks[5] = edited(with_blanks[5], lambda b: b["data"].update(level=4))
    report = verify(with_blanks)
    assert [f.position for f in report.errors] == [5]


def test_an_empty_export_is_ok_but_an_expected_chain_is_then_truncated() -> None:
    assert verify([]).ok
    report = verify([], expect_heads={"p0": 3})
    assert errors(report) == [("truncation", "p0", 0, None)]


def test_reordering_across_chains_is_not_tampering(lines: list[bytes]) -> None:
    """Only the order within a chain matters; chains interleave freely."""
    chains = [body_of(line)["chain"] for line in lines]
    swaps = [i for i in range(len(lines) - 1) if chains[i] != chains[i + 1]]
    assert len(swaps) > 10
    for i in swaps[::3]:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    assert verify(lines).ok


# -- edits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("data.level", lambda b: b["data"].update(level=4)),
        ("data added", lambda b: b["data"].update(approved_by="alice")),
        ("actor", lambda b: b.update(actor="mallory")),
        ("at", lambda b: b.update(at="2026-11-28T09:00:00Z")),
        ("kind", lambda b: b.update(kind="outcome")),
        ("event_id", lambda b: b.update(event_id="other")),
        ("decision_id", lambda b: b.update(decision_id=None)),
        ("seq", lambda b: b.update(seq=b["seq"] + 7)),
        ("chain", lambda b: b.update(chain="p1")),
        ("prev_hash", lambda b: b.update(prev_hash="1" * 64)),
        ("hash", lambda b: b.update(hash="2" * 64)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_edited_record_is_one_edit_finding(lines: list[bytes], name: str, change: Any) -> None:
    expected = heads_of(lines)
    at = index_of(lines, "p0", 17)
    lines[at] = edited(lines[at], change)
    report = verify(lines, expect_heads=expected)
    assert errors(report) == [("edit", "p0", at, 17)], name
    assert "changed after it was sealed" in report.errors[0].message


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("fields.level", lambda r: r["fields"].update(level="4")),
        ("fields added", lambda r: r["fields"].update(approved_by="alice")),
        ("fields removed", lambda r: r["fields"].pop("service")),
        ("host", lambda r: r.update(host="elsewhere")),
        ("index", lambda r: r.update(index="scratch")),
        ("source", lambda r: r.update(source="other")),
        ("sourcetype", lambda r: r.update(sourcetype="other:audit")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_edited_envelope_metadata_is_not_covered_and_still_verifies(
    envelopes: list[bytes], name: str, change: Any
) -> None:
    """The envelope is Splunk's convenience copy; the chain protects the body."""
    at = index_of(envelopes, "p0", 17)
    envelopes[at] = edited_envelope(envelopes[at], change)
    report = verify(envelopes, expect_heads=heads_of(envelopes))
    assert report.ok, name
    assert report.findings == (), name


@pytest.mark.parametrize(
    ("name", "change", "words"),
    [
        ("time", lambda r: r.update(time=r["time"] + 60), "time is not the body's at"),
        ("fields.kind", lambda r: r["fields"].update(kind="outcome"), "fields.kind"),
        ("fields.chain", lambda r: r["fields"].update(chain="p9"), "fields.chain"),
        ("fields.decision_id", lambda r: r["fields"].pop("decision_id"), "fields.decision_id"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_envelope_metadata_that_contradicts_the_body_is_a_note(
    envelopes: list[bytes], name: str, change: Any, words: str
) -> None:
    at = index_of(envelopes, "p0", 17)
    envelopes[at] = edited_envelope(envelopes[at], change)
    report = verify(envelopes)
    assert report.ok, name
    assert [(f.kind, f.chain, f.position, f.seq) for f in report.notes] == [
        ("metadata", "p0", at, 17)
    ]
    assert words in report.notes[0].message
    assert "not covered by the hash" in report.notes[0].message


def test_an_edited_body_inside_an_envelope_is_an_edit_even_with_matching_metadata(
    envelopes: list[bytes],
) -> None:
    """Editing ``at`` and ``time`` together is still an edit of the body."""

    def change(record: dict[str, Any]) -> None:
        record["event"]["at"] = "2026-11-28T09:00:00Z"
        record["time"] = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC).timestamp()

    at = index_of(envelopes, "p1", 4)
    envelopes[at] = edited_envelope(envelopes[at], change)
    report = verify(envelopes)
    assert errors(report) == [("edit", "p1", at, 4)]
    assert report.notes == ()


def test_an_edited_and_rehashed_record_breaks_the_next_link(lines: list[bytes]) -> None:
    """A forger who recomputes the hash still cannot fix the next event's prev_hash."""

    def forge(body: dict[str, Any]) -> None:
        body["data"]["level"] = 4
        rehashed(body)

    at = index_of(lines, "p0", 17)
    lines[at] = edited(lines[at], forge)
    report = verify(lines)
    after = index_of(lines, "p0", 18)
    assert errors(report) == [("broken_link", "p0", after, 18)]
    assert "seq 17" in report.errors[0].message


@pytest.mark.parametrize("fmt", SINGLE_FORMATS)
def test_a_forged_first_event_must_link_to_genesis(fmt: str) -> None:
    lines = export({"p0": 3}, fmt=fmt)

    def forge(body: dict[str, Any]) -> None:
        body["prev_hash"] = "3" * 64
        rehashed(body)

    lines[0] = edited(lines[0], forge)
    report = verify(lines)
    assert [f.kind for f in report.errors] == ["broken_link", "broken_link"]
    assert "genesis" in report.errors[0].message


@pytest.mark.parametrize("fmt", SINGLE_FORMATS)
def test_a_forged_event_inserted_into_a_chain_is_reported(fmt: str) -> None:
    events = chain_events("p0", 6)
    forged, _ = seal_next(ChainHead.of(events[2]), 99, event_id="forged")
    lines = [as_format(e, fmt, i) for i, e in enumerate([*events[:3], forged, *events[3:]])]
    report = verify(lines)
    assert [(f.kind, f.position, f.seq) for f in report.errors] == [("duplicate", 3, 3)]
    assert "the chain continues from the event at position 4" in report.errors[0].message


@pytest.mark.parametrize("fmt", SINGLE_FORMATS)
def test_two_writers_on_one_chain_are_duplicates_without_broken_links(fmt: str) -> None:
    events = chain_events("p0", 6)
    head = ChainHead.of(events[2])
    fork = []
    for n in range(3, 6):
        event, head = seal_next(head, 100 + n)
        fork.append(event)
    ordered = events[:3]
    for real, other in zip(events[3:], fork, strict=True):
        ordered += [real, other]
    report = verify([as_format(e, fmt, i) for i, e in enumerate(ordered)])
    assert [(f.kind, f.position, f.seq) for f in report.errors] == [
        ("duplicate", 4, 3),
        ("duplicate", 6, 4),
        ("duplicate", 8, 5),
    ]
    assert "already taken by a different event at position 3" in report.errors[0].message


# -- gaps, reorders, duplicates ---------------------------------------------------


def test_a_deleted_record_is_one_gap(lines: list[bytes]) -> None:
    del lines[index_of(lines, "p1", 12)]
    report = verify(lines)
    assert errors(report) == [("gap", "p1", index_of(lines, "p1", 13), 13)]
    assert "seq 12 missing" in report.errors[0].message


def test_a_deleted_run_of_records_is_one_gap(lines: list[bytes]) -> None:
    for seq in (12, 13, 14):
        del lines[index_of(lines, "p2", seq)]
    report = verify(lines)
    assert errors(report) == [("gap", "p2", index_of(lines, "p2", 15), 15)]
    assert "seqs 12..14 (3 events) missing" in report.errors[0].message


def test_a_swapped_pair_is_one_reorder(lines: list[bytes]) -> None:
    a, b = index_of(lines, "p0", 20), index_of(lines, "p0", 21)
    lines[a], lines[b] = lines[b], lines[a]
    report = verify(lines)
    assert errors(report) == [("reorder", "p0", a, 21)]


def test_a_record_moved_far_earlier_is_one_reorder(lines: list[bytes]) -> None:
    record = lines.pop(index_of(lines, "p0", 30))
    at = index_of(lines, "p0", 10)
    lines.insert(at, record)
    report = verify(lines)
    assert errors(report) == [("reorder", "p0", at, 30)]


def test_a_record_moved_far_later_is_one_reorder(lines: list[bytes]) -> None:
    record = lines.pop(index_of(lines, "p0", 10))
    lines.insert(index_of(lines, "p0", 30), record)
    report = verify(lines)
    assert errors(report) == [("reorder", "p0", index_of(lines, "p0", 10), 10)]


def test_a_copied_record_is_one_duplicate(lines: list[bytes]) -> None:
    at = index_of(lines, "p2", 5)
    lines.insert(at + 1, lines[at])
    report = verify(lines)
    assert errors(report) == [("duplicate", "p2", at + 1, 5)]
    assert f"a copy of the event at position {at}" in report.errors[0].message


def test_a_copy_in_another_form_is_still_a_duplicate(envelopes: list[bytes]) -> None:
    """The same event from the topic and from Splunk, in one file, is one event twice."""
    at = index_of(envelopes, "p2", 5)
    event = AuditEvent.model_validate_json(envelopes[at])
    envelopes.insert(at + 1, as_format(event, "export", 3))
    report = verify(envelopes)
    assert errors(report) == [("duplicate", "p2", at + 1, 5)]
    assert f"a copy of the event at position {at}" in report.errors[0].message


def test_a_copy_far_from_its_original_is_still_a_duplicate(
    lines: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(verify_module, "WINDOW", 4)
    lines.append(lines[index_of(lines, "p0", 1)])
    report = verify(lines)
    assert errors(report) == [("duplicate", "p0", len(lines) - 1, 1)]


def test_long_chains_keep_small_state_and_still_find_a_far_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(verify_module, "WINDOW", 8)
    lines = export({"p0": 300, "p1": 300}, fmt="mixed")
    record = lines.pop(index_of(lines, "p1", 20))
    lines.insert(index_of(lines, "p1", 250), record)
    report = verify(lines)
    assert [(f.kind, f.chain, f.seq) for f in report.errors] == [("reorder", "p1", 20)]


# -- truncation ---------------------------------------------------------------------


def test_dropping_the_last_records_is_a_truncation_against_the_expected_heads(
    lines: list[bytes],
) -> None:
    expected = heads_of(lines)
    for seq in (38, 39):
        del lines[index_of(lines, "p0", seq)]
    report = verify(lines, expect_heads=expected)
    assert errors(report) == [("truncation", "p0", index_of(lines, "p0", 37), 37)]
    assert "seqs 38..39 (2 events) missing at its end" in report.errors[0].message


def test_a_chain_missing_entirely_is_a_truncation(lines: list[bytes]) -> None:
    report = verify(lines, expect_heads={"p7": 0})
    assert errors(report) == [("truncation", "p7", len(lines), None)]


def test_a_last_line_cut_in_half_is_a_truncation(lines: list[bytes]) -> None:
    lines[-1] = lines[-1][: len(lines[-1]) // 2]
    report = verify(lines)
    assert errors(report) == [("truncation", None, len(lines) - 1, None)]
    assert "incomplete" in report.errors[0].message


def test_a_cut_last_line_with_non_ascii_text_is_a_truncation() -> None:
    head = ChainHead.empty("p0")
    event, _ = seal(
        head,
        kind="rejection",
        event_id="r-1",
        actor="zoë",
        at=T0,
        data={"note": "redémarrage refusé " * 20},
        fields={},
        host="gate-1",
        index="escalation",
    )
    line = encode(event)
    report = verify([line[: line.index(b"refus") + 3]])
    assert errors(report) == [("truncation", None, 0, None)]


def test_a_line_cut_in_half_inside_the_export_is_malformed_and_a_gap(lines: list[bytes]) -> None:
    at = index_of(lines, "p0", 5)
    lines[at] = lines[at][:100]
    report = verify(lines)
    assert errors(report) == [
        ("malformed", None, at, None),
        ("gap", "p0", index_of(lines, "p0", 6), 6),
    ]


def test_dropping_the_first_records_is_a_truncation_at_the_start(lines: list[bytes]) -> None:
    for seq in range(4):
        del lines[index_of(lines, "p2", seq)]
    report = verify(lines)
    assert errors(report) == [("truncation", "p2", index_of(lines, "p2", 4), 4)]
    assert "starts at seq 4" in report.errors[0].message


# -- redelivery and malformed input -----------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_redelivered_event_is_a_note_not_an_error(fmt: str) -> None:
    """At-least-once: the same input sealed again gets the same event_id at the next seq."""
    events = chain_events("p0", 3)
    again, head = seal_next(ChainHead.of(events[-1]), 2, event_id=events[-1].event.event_id)
    after, _ = seal_next(head, 3)
    report = verify([as_format(e, fmt, i) for i, e in enumerate([*events, again, after])])
    assert report.ok
    assert [(f.kind, f.position, f.seq) for f in report.notes] == [("redelivered", 3, 3)]
    assert "sealed before as seq 2 (position 2)" in report.notes[0].message


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"time": 1.0}', "field required"),
        (b"{}", "kind: field required"),
        (b'{"kind": "decision", "chain": "p0"}', "event_id: field required"),
        (b'{"_raw": "{\\"kind\\": \\"decis"}', "_raw: not JSON"),
        (b'{"_raw": 7}', "_raw: expected the event's JSON text"),
        (b'{"preview": false, "result": {"kind": "decision"}}', "without _raw"),
        (b'{"preview": false, "result": "x"}', "must be an object"),
    ],
)
def test_a_record_that_is_not_an_audit_event_is_malformed(
    lines: list[bytes], line: bytes, words: str
) -> None:
    lines.insert(3, line)
    report = verify(lines)
    assert [(f.kind, f.position) for f in report.errors] == [("malformed", 3)]
    assert words in report.errors[0].message


def test_a_malformed_body_names_its_chain_and_seq_when_it_can(envelopes: list[bytes]) -> None:
    body = body_of(envelopes[0])
    del body["actor"]
    report = verify([orjson.dumps(body)])
    assert errors(report) == [("malformed", body["chain"], 0, body["seq"])]
    assert "actor: field required" in report.errors[0].message


def test_a_truncated_raw_hints_at_splunks_truncate(envelopes: list[bytes]) -> None:
    raw = orjson.dumps(body_of(envelopes[0])).decode()
    report = verify([orjson.dumps({"_raw": raw[:80]})])
    assert errors(report) == [("malformed", None, 0, None)]
    assert "TRUNCATE" in report.errors[0].message


def test_splunk_export_lines_without_a_final_result_are_skipped() -> None:
    """The end marker, messages and interim previews carry no event."""
    lines = export({"p0": 4}, fmt="export")
    preview = orjson.loads(lines[1])
    preview["preview"] = True
    preview["result"]["_raw"] = "{}"
    with_extras = [
        orjson.dumps(preview),
        *lines,
        b'{"preview":false,"lastrow":true}',
        b'{"messages":[{"type":"INFO","text":"Your timerange was substituted"}]}',
    ]
    report = verify(with_extras, expect_heads={"p0": 3})
    assert report.findings == ()
    assert report.records == 4
    assert report.events == 4


def test_a_raw_holding_the_whole_envelope_verifies() -> None:
    """With splunk.hec.json.event.formatted=false, _raw is the record as on the topic."""
    events = chain_events("p0", 3)
    report = verify([orjson.dumps({"_raw": encode(e).decode()}) for e in events])
    assert report.ok
    assert report.events == 3


# -- every single tampering, anywhere --------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.dictionaries(
        st.sampled_from(["p0", "p1", "p2", "p3"]),
        st.integers(min_value=2, max_value=12),
        min_size=1,
    ),
    seed=st.integers(0, 2**16),
    fmt=st.sampled_from(FORMATS),
    operation=st.sampled_from(["delete", "swap", "duplicate", "edit"]),
    pick=st.randoms(use_true_random=False),
)
def test_any_single_tampering_is_exactly_one_finding_of_its_kind(
    sizes: dict[str, int], seed: int, fmt: str, operation: str, pick: random.Random
) -> None:
    lines = export(sizes, seed=seed, fmt=fmt)
    expected = heads_of(lines)
    chain = pick.choice(sorted(sizes))
    seq = pick.randrange(sizes[chain] - (1 if operation == "swap" else 0))
    at = index_of(lines, chain, seq)
    if operation == "delete":
        del lines[at]
        kind = "truncation" if seq in (0, sizes[chain] - 1) else "gap"
    elif operation == "swap":
        other = index_of(lines, chain, seq + 1)
        lines[at], lines[other] = lines[other], lines[at]
        kind = "reorder"
    elif operation == "duplicate":
        lines.insert(pick.randrange(at + 1, len(lines) + 1), lines[at])
        kind = "duplicate"
    else:
        lines[at] = edited(lines[at], lambda b: b["data"].update(level=0))
        kind = "edit"
    report = verify(lines, expect_heads=expected)
    found: list[Finding] = list(report.errors)
    assert [(f.kind, f.chain) for f in found] == [(kind, chain)], [f.line() for f in found]


def test_every_finding_kind_is_documented_in_the_module() -> None:
    assert verify_module.__doc__ is not None
    for kind in ERROR_KINDS | NOTE_KINDS:
        assert f"``{kind}``" in verify_module.__doc__
    assert GENESIS == "0" * 64


# -- the command line ------------------------------------------------------------------


def write(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(line.rstrip(b"\n") + b"\n" for line in lines))
    return path


def test_cli_prints_ok_and_exits_0_for_a_clean_export(tmp_path: Path, lines: list[bytes]) -> None:
    result = CliRunner().invoke(audit, ["verify", str(write(tmp_path, lines))])
    assert result.exit_code == 0, result.output
    assert result.output == "OK: 95 events in 3 chains\n"


def test_cli_prints_one_line_per_finding_and_exits_1(tmp_path: Path, lines: list[bytes]) -> None:
    del lines[index_of(lines, "p1", 3)]
    at = index_of(lines, "p0", 16)
    lines[at] = edited(lines[at], lambda b: b["data"].update(level=4))
    result = CliRunner().invoke(audit, ["verify", str(write(tmp_path, lines))])
    assert result.exit_code == 1
    out = result.output.splitlines()
    assert len(out) == 2
    assert any(line.startswith(f"position {at} chain p0 seq 16: edit: ") for line in out)
    assert any(": gap: seq 3 missing" in line for line in out)


def test_cli_counts_the_notes_on_its_ok_line(tmp_path: Path, envelopes: list[bytes]) -> None:
    at = index_of(envelopes, "p0", 16)
    envelopes[at] = edited_envelope(envelopes[at], lambda r: r.update(time=0.0))
    result = CliRunner().invoke(audit, ["verify", str(write(tmp_path, envelopes))])
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[0].startswith(f"position {at} chain p0 seq 16: metadata: time is not")
    assert out[1] == "OK: 95 events in 3 chains (1 with wrong Splunk metadata)"


def test_cli_expect_catches_a_cut_end(tmp_path: Path, envelopes: list[bytes]) -> None:
    path = write(tmp_path, envelopes)
    ok = CliRunner().invoke(audit, ["verify", str(path), "--expect", "p0=39", "--expect", "p1=24"])
    assert ok.exit_code == 0, ok.output
    cut = CliRunner().invoke(audit, ["verify", str(path), "--expect", "p0=45"])
    assert cut.exit_code == 1
    assert "truncation: the chain ends at seq 39, expected at least seq 45" in cut.output


def test_cli_reads_stdin_and_prints_json(envelopes: list[bytes]) -> None:
    envelopes[-1] = envelopes[-1][:50]
    result = CliRunner().invoke(audit, ["verify", "-", "--json"], input=b"\n".join(envelopes))
    assert result.exit_code == 1
    out = orjson.loads(result.output)
    assert out["ok"] is False
    assert out["source"] == "<stdin>"
    assert [f["kind"] for f in out["findings"]] == ["truncation"]
    assert out["findings"][0]["location"] == f"line {len(envelopes)}"
    assert set(out["chains"]) == {"p0", "p1", "p2"}


def test_cli_json_of_a_clean_export_lists_the_heads(tmp_path: Path, lines: list[bytes]) -> None:
    result = CliRunner().invoke(audit, ["verify", str(write(tmp_path, lines)), "--json"])
    assert result.exit_code == 0
    out = orjson.loads(result.output)
    assert out["ok"] is True
    assert out["events"] == 95
    assert out["chains"]["p0"]["head"]["seq"] == 39


def test_cli_verifies_a_splunk_search_export(tmp_path: Path) -> None:
    """``search/jobs/export`` with output_mode=json: one result a line, then the end marker."""
    lines = [*export(SIZES, fmt="export"), b'{"preview":false,"lastrow":true}']
    lines[-2] = orjson.dumps({**orjson.loads(lines[-2]), "lastrow": True})
    result = CliRunner().invoke(audit, ["verify", str(write(tmp_path, lines)), "--expect", "p0=39"])
    assert result.exit_code == 0, result.output
    assert result.output == "OK: 95 events in 3 chains\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one"),
        (["--topic", "x.jsonl"], "exactly one"),
        (["{missing}"], "cannot read audit export"),
        (["{file}", "--expect", "p0"], "--expect: expected CHAIN=SEQ"),
        (["{file}", "--expect", "p0=-1"], "--expect: expected CHAIN=SEQ"),
    ],
)
def test_cli_usage_errors_are_one_line_and_exit_2(
    tmp_path: Path, envelopes: list[bytes], args: list[str], message: str
) -> None:
    path = write(tmp_path, envelopes)
    argv = [a.format(file=path, missing=tmp_path / "nope.jsonl") for a in ["verify", *args]]
    result = CliRunner().invoke(audit, argv)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert message in result.stderr


def test_cli_topic_without_a_cluster_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("ESCALATION_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("ESCALATION_DATA_DIR", "/nonexistent/escalation-test")
    result = CliRunner().invoke(audit, ["verify", "--topic"])
    assert result.exit_code == 2
    assert "KAFKA_BOOTSTRAP_SERVERS is not set" in result.stderr
    assert result.stderr.count("\n") == 1


def test_audit_body_values_are_accepted_directly() -> None:
    bodies = [e.event for e in chain_events("p0", 5)]
    assert all(isinstance(b, AuditBody) for b in bodies)
    assert verify(bodies, expect_heads={"p0": 4}).ok
