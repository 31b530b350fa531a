# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Verifying audit chains: each kind of tampering is reported as what it is, once.

Exports are JSON lines of sealed HEC records, several chains interleaved, as the
audit topic holds them; each test tampers with one the way an attacker or a broken
pipeline would.
"""

from __future__ import annotations

import datetime as dt
import importlib
import random
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.audit.chain import GENESIS, ChainHead, event_hash, seal
from streams.audit.cli import audit
from streams.audit.verify import ERROR_KINDS, verify
from streams.models import AuditEvent, encode

if TYPE_CHECKING:
    from pathlib import Path

    from streams.audit.verify import Finding, VerifyReport

# The package exports the function ``verify``, which hides the module's name.
verify_module = importlib.import_module("streams.audit.verify")

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
        data={"level": 2, "route": "approve"},
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


def export(sizes: dict[str, int], *, seed: int = 7) -> list[bytes]:
    """Lines of an export: the chains' events interleaved, each chain in order."""
    queues = {name: chain_events(name, size) for name, size in sizes.items()}
    rng = random.Random(seed)  # noqa: S311 - a test shuffle, not cryptography
    lines = []
    while any(queues.values()):
        name = rng.choice([n for n, q in queues.items() if q])
        lines.append(encode(queues[name].pop(0)))
    return lines


def index_of(lines: list[bytes], chain: str, seq: int) -> int:
    for i, line in enumerate(lines):
        try:
            body = orjson.loads(line)["event"]
        except orjson.JSONDecodeError:
            continue
        if (body["chain"], body["seq"]) == (chain, seq):
            return i
    raise AssertionError((chain, seq))


def heads_of(lines: list[bytes]) -> dict[str, int]:
    heads: dict[str, int] = {}
    for line in lines:
        body = orjson.loads(line)["event"]
        heads[body["chain"]] = max(heads.get(body["chain"], -1), body["seq"])
    return heads


def errors(report: VerifyReport) -> list[tuple[str, str | None, int, int | None]]:
    return [(f.kind, f.chain, f.position, f.seq) for f in report.errors]


def edited(line: bytes, change: Any) -> bytes:
    record = orjson.loads(line)
    change(record)
    return orjson.dumps(record)


SIZES = {"p0": 40, "p1": 25, "p2": 30}


@pytest.fixture
def lines() -> list[bytes]:
    return export(SIZES)


# -- clean exports -------------------------------------------------------------


def test_a_clean_multi_chain_export_verifies(lines: list[bytes]) -> None:
    report = verify(lines, expect_heads={"p0": 39, "p1": 24, "p2": 29})
    assert report.ok
    assert report.findings == ()
    assert report.events == 95
    assert {name: c.events for name, c in report.chains.items()} == SIZES
    assert report.heads["p1"] == ChainHead.of(chain_events("p1", 25)[-1])


def test_records_may_be_lines_text_dicts_or_events(lines: list[bytes]) -> None:
    mixed: list[Any] = []
    for i, line in enumerate(lines):
        mixed.append(
            [line, line.decode(), orjson.loads(line), AuditEvent.model_validate_json(line)][i % 4]
        )
    assert verify(mixed).ok


def test_blank_lines_are_skipped_but_keep_positions_equal_to_line_indexes(
    lines: list[bytes],
) -> None:
    with_blanks = [lines[0], b"\n", *lines[1:]]
    with_blanks[5] = edited(with_blanks[5], lambda r: r["fields"].update(level="4"))
    report = verify(with_blanks)
    assert [f.position for f in report.errors] == [5]


def test_an_empty_export_is_ok_but_an_expected_chain_is_then_truncated() -> None:
    assert verify([]).ok
    report = verify([], expect_heads={"p0": 3})
    assert errors(report) == [("truncation", "p0", 0, None)]


def test_reordering_across_chains_is_not_tampering(lines: list[bytes]) -> None:
    """Only the order within a chain matters; chains interleave freely."""
    chains = [orjson.loads(line)["event"]["chain"] for line in lines]
    swaps = [i for i in range(len(lines) - 1) if chains[i] != chains[i + 1]]
    assert len(swaps) > 10
    for i in swaps[::3]:
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    assert verify(lines).ok


# -- edits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("data.level", lambda r: r["event"]["data"].update(level=4)),
        ("fields.level", lambda r: r["fields"].update(level="4")),
        ("time", lambda r: r.update(time=r["time"] + 60)),
        ("index", lambda r: r.update(index="scratch")),
        ("actor", lambda r: r["event"].update(actor="mallory")),
        ("at", lambda r: r["event"].update(at="2026-11-28T09:00:00Z")),
        ("seq", lambda r: r["event"].update(seq=r["event"]["seq"] + 7)),
        ("chain", lambda r: r["event"].update(chain="p1")),
        ("prev_hash", lambda r: r["event"].update(prev_hash="1" * 64)),
        ("hash", lambda r: r["event"].update(hash="2" * 64)),
        ("fields added", lambda r: r["fields"].update(approved_by="alice")),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_edited_record_is_one_edit_finding(lines: list[bytes], name: str, change: Any) -> None:
    at = index_of(lines, "p0", 17)
    lines[at] = edited(lines[at], change)
    report = verify(lines, expect_heads=heads_of(export(SIZES)))
    assert errors(report) == [("edit", "p0", at, 17)], name
    assert "changed after it was sealed" in report.errors[0].message


def test_an_edited_and_rehashed_record_breaks_the_next_link(lines: list[bytes]) -> None:
    """A forger who recomputes the hash still cannot fix the next event's prev_hash."""

    def forge(record: dict[str, Any]) -> None:
        record["event"]["data"]["level"] = 4
        record["event"]["hash"] = event_hash(record)

    at = index_of(lines, "p0", 17)
    lines[at] = edited(lines[at], forge)
    report = verify(lines)
    after = index_of(lines, "p0", 18)
    assert errors(report) == [("broken_link", "p0", after, 18)]
    assert "seq 17" in report.errors[0].message


def test_a_forged_first_event_must_link_to_genesis() -> None:
    lines = export({"p0": 3})

    def forge(record: dict[str, Any]) -> None:
        record["event"]["prev_hash"] = "3" * 64
        record["event"]["hash"] = event_hash(record)

    lines[0] = edited(lines[0], forge)
    report = verify(lines)
    assert [f.kind for f in report.errors] == ["broken_link", "broken_link"]
    assert "genesis" in report.errors[0].message


def test_a_forged_event_inserted_into_a_chain_is_reported() -> None:
    events = chain_events("p0", 6)
    forged, _ = seal_next(ChainHead.of(events[2]), 99, event_id="forged")
    lines = [encode(e) for e in events[:3]] + [encode(forged)] + [encode(e) for e in events[3:]]
    report = verify(lines)
    assert [(f.kind, f.position, f.seq) for f in report.errors] == [("duplicate", 3, 3)]
    assert "the chain continues from the event at position 4" in report.errors[0].message


def test_two_writers_on_one_chain_are_duplicates_without_broken_links() -> None:
    events = chain_events("p0", 6)
    head = ChainHead.of(events[2])
    fork = []
    for n in range(3, 6):
        event, head = seal_next(head, 100 + n)
        fork.append(event)
    lines = [encode(e) for e in events[:3]]
    for real, other in zip(events[3:], fork, strict=True):
        lines += [encode(real), encode(other)]
    report = verify(lines)
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
    lines = export({"p0": 300, "p1": 300})
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


def test_a_redelivered_event_is_a_note_not_an_error() -> None:
    """At-least-once: the same input sealed again gets the same event_id at the next seq."""
    events = chain_events("p0", 3)
    again, head = seal_next(ChainHead.of(events[-1]), 2, event_id=events[-1].event.event_id)
    after, _ = seal_next(head, 3)
    report = verify([encode(e) for e in [*events, again, after]])
    assert report.ok
    assert [(f.kind, f.position, f.seq) for f in report.notes] == [("redelivered", 3, 3)]
    assert "sealed before as seq 2 (position 2)" in report.notes[0].message


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"time": 1.0}', "field required"),
    ],
)
def test_a_record_that_is_not_an_audit_event_is_malformed(
    lines: list[bytes], line: bytes, words: str
) -> None:
    lines.insert(3, line)
    report = verify(lines)
    assert [(f.kind, f.position) for f in report.errors] == [("malformed", 3)]
    assert words in report.errors[0].message


def test_a_bare_event_body_says_why_it_cannot_be_verified(lines: list[bytes]) -> None:
    """Splunk's _raw of an /event record is the body alone; its hash covers the envelope."""
    body = orjson.loads(lines[0])["event"]
    report = verify([orjson.dumps(body)])
    assert [(f.kind, f.chain, f.seq) for f in report.errors] == [("malformed", body["chain"], 0)]
    assert "envelope" in report.errors[0].message


# -- every single tampering, anywhere --------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.dictionaries(
        st.sampled_from(["p0", "p1", "p2", "p3"]),
        st.integers(min_value=2, max_value=12),
        min_size=1,
    ),
    seed=st.integers(0, 2**16),
    operation=st.sampled_from(["delete", "swap", "duplicate", "edit"]),
    pick=st.randoms(use_true_random=False),
)
def test_any_single_tampering_is_exactly_one_finding_of_its_kind(
    sizes: dict[str, int], seed: int, operation: str, pick: random.Random
) -> None:
    lines = export(sizes, seed=seed)
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
        lines[at] = edited(lines[at], lambda r: r["event"]["data"].update(level=0))
        kind = "edit"
    report = verify(lines, expect_heads=expected)
    found: list[Finding] = list(report.errors)
    assert [(f.kind, f.chain) for f in found] == [(kind, chain)], [f.line() for f in found]


def test_every_error_kind_is_documented_in_the_module() -> None:
    assert verify_module.__doc__ is not None
    for kind in ERROR_KINDS:
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
    lines[at] = edited(lines[at], lambda r: r["fields"].update(level="4"))
    result = CliRunner().invoke(audit, ["verify", str(write(tmp_path, lines))])
    assert result.exit_code == 1
    out = result.output.splitlines()
    assert len(out) == 2
    assert any(line.startswith(f"position {at} chain p0 seq 16: edit: ") for line in out)
    assert any(": gap: seq 3 missing" in line for line in out)


def test_cli_expect_catches_a_cut_end(tmp_path: Path, lines: list[bytes]) -> None:
    path = write(tmp_path, lines)
    ok = CliRunner().invoke(audit, ["verify", str(path), "--expect", "p0=39", "--expect", "p1=24"])
    assert ok.exit_code == 0, ok.output
    cut = CliRunner().invoke(audit, ["verify", str(path), "--expect", "p0=45"])
    assert cut.exit_code == 1
    assert "truncation: the chain ends at seq 39, expected at least seq 45" in cut.output


def test_cli_reads_stdin_and_prints_json(lines: list[bytes]) -> None:
    lines[-1] = lines[-1][:50]
    result = CliRunner().invoke(audit, ["verify", "-", "--json"], input=b"\n".join(lines))
    assert result.exit_code == 1
    out = orjson.loads(result.output)
    assert out["ok"] is False
    assert out["source"] == "<stdin>"
    assert [f["kind"] for f in out["findings"]] == ["truncation"]
    assert out["findings"][0]["location"] == f"line {len(lines)}"
    assert set(out["chains"]) == {"p0", "p1", "p2"}


def test_cli_json_of_a_clean_export_lists_the_heads(tmp_path: Path, lines: list[bytes]) -> None:
    result = CliRunner().invoke(audit, ["verify", str(write(tmp_path, lines)), "--json"])
    assert result.exit_code == 0
    out = orjson.loads(result.output)
    assert out["ok"] is True
    assert out["events"] == 95
    assert out["chains"]["p0"]["head"]["seq"] == 39


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
    tmp_path: Path, lines: list[bytes], args: list[str], message: str
) -> None:
    path = write(tmp_path, lines)
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
