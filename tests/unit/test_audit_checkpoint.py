# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Signed checkpoints: every tampering kind an attacker without the gate's key can try.

The trails are built as the worker writes them (tests/unit/audit_trail.py): chains
named by what they seal, several per audit partition, and one checkpoint chain per
writer and partition. Each tampering is checked on the topic's records and on the
forms a Splunk export takes (bare ``_raw`` bodies, ``_raw`` results, export lines).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from audit_trail import T0, Gate, body, last_checkpoint, rehash, trail

from streams import keys
from streams.audit.chain import (
    GENESIS,
    ChainHead,
    audit_partition,
    body_hash,
    chain_for,
    checkpoint_chain,
    seal_json,
)
from streams.audit.checkpoint import (
    checkpoint_payload,
    parse_checkpoint,
    seal_checkpoint,
    writer_id,
)
from streams.audit.verify import verify
from streams.errors import AuditChainError
from streams.models import AuditBody, AuditEvent

if TYPE_CHECKING:
    from streams.audit.verify import VerifyReport

GATE = keys.generate("escalation-gate")
KEYS = keys.PublicKeys([GATE.public])


def kinds(report: VerifyReport) -> list[str]:
    return sorted({f.kind for f in report.errors})


def export(records: list[bytes], fmt: str) -> list[bytes]:
    """The records as a Splunk export of the form ``fmt`` (``topic``: as on the topic)."""
    if fmt == "topic":
        return records
    out = []
    for record in records:
        raw = orjson.dumps(body(record)).decode()
        if fmt == "raw":
            out.append(raw.encode())
        elif fmt == "result":
            out.append(orjson.dumps({"_raw": raw, "_time": "1", "host": "gate-1"}))
        else:
            out.append(orjson.dumps({"preview": False, "result": {"_raw": raw}}))
    return out


def sorted_by_chain(records: list[bytes]) -> list[bytes]:
    """A Splunk export as the docs ask for: `sort 0 chain, num(seq)`."""
    return sorted(records, key=lambda r: (body(r)["chain"], body(r)["seq"]))


FORMATS = ("topic", "raw", "result", "export")


# -- building --------------------------------------------------------------------


def test_a_chain_is_named_by_the_input_topic_and_partition_it_seals() -> None:
    assert chain_for("proposals", 3) == "proposals:3"
    assert audit_partition("proposals:3") == 3
    assert audit_partition(checkpoint_chain("host/1/ab", 2)) == 2
    assert audit_partition("p7") == 7  # chains of earlier versions
    assert audit_partition("nonsense") is None
    with pytest.raises(AuditChainError, match="topic"):
        chain_for("a:b", 1)
    with pytest.raises(AuditChainError, match="partition"):
        chain_for("proposals", -1)
    with pytest.raises(AuditChainError, match="writer"):
        checkpoint_chain("a:b", 1)


def test_a_writer_id_is_new_for_every_process_and_has_no_colon() -> None:
    a, b = writer_id("h:1", 7), writer_id("h:1", 7)
    assert a != b
    assert ":" not in a
    assert a.startswith("h-1/7/")


def test_a_checkpoint_signs_every_head_the_writer_and_its_own_place() -> None:
    own = ChainHead.empty(checkpoint_chain("w", 1))
    heads = {
        "proposals:1": ChainHead("proposals:1", 4, "a" * 64),
        "control:1": ChainHead.empty("control:1"),
    }
    record, new = seal_checkpoint(
        GATE,
        own,
        writer="w",
        partition=1,
        heads=heads,
        at=T0,
        host="gate-1",
        index="escalation",
    )
    event = AuditEvent.model_validate_json(record)
    assert event.event.kind == "checkpoint"
    assert event.event.chain == "checkpoint:w:1"
    assert new == ChainHead(own.chain, 0, event.event.hash)
    assert KEYS.verify(event.event.data) is None
    data = parse_checkpoint(event.event)
    assert data.heads["proposals:1"].seq == 4
    assert data.heads["control:1"].seq == -1
    assert data.heads["control:1"].hash == GENESIS
    assert (data.writer, data.partition, data.seq, data.prev_hash) == (
        "w",
        1,
        0,
        GENESIS,
    )
    assert event.fields["key_id"] == GATE.key_id
    again, _ = seal_checkpoint(
        GATE,
        own,
        writer="w",
        partition=1,
        heads=heads,
        at=T0,
        host="gate-1",
        index="escalation",
    )
    assert again == record  # pure: the same heads and instant give the same bytes


def test_a_checkpoint_refuses_a_naive_instant() -> None:
    with pytest.raises(AuditChainError, match="at"):
        checkpoint_payload(
            ChainHead.empty("checkpoint:w:0"), writer="w", partition=0, heads={},
            at=dt.datetime(2026, 1, 1),  # noqa: DTZ001 - the point of the test
        )  # fmt: skip


def test_a_checkpoint_sealed_onto_another_place_than_it_signed_is_refused() -> None:
    record, _ = seal_checkpoint(
        GATE, ChainHead.empty("checkpoint:w:0"), writer="w", partition=0, heads={}, at=T0,
        host="gate-1", index="escalation",
    )  # fmt: skip
    moved = body(record)
    moved["seq"] = 5
    moved["hash"] = body_hash(moved)
    with pytest.raises(AuditChainError, match=r"data\.seq"):
        parse_checkpoint(AuditBody.model_validate(moved))


def test_the_checkpointer_keeps_one_chain_per_writer_and_audit_partition() -> None:
    gate = trail(GATE, events=20, every=10)
    checkpoints = [body(r) for r in gate.records() if body(r)["kind"] == "checkpoint"]
    assert {c["chain"] for c in checkpoints} == {
        "checkpoint:gate-1/100/aaaa:0",
        "checkpoint:gate-1/100/aaaa:1",
    }
    for c in checkpoints:
        partition = audit_partition(c["chain"])
        assert set(c["data"]["heads"]) == {
            f"control:{partition}",
            f"proposals:{partition}",
        }
    assert [c["seq"] for c in checkpoints if c["chain"].endswith(":0")] == [0, 1, 2]
    assert checkpoints[-1]["data"]["final"] is True


# -- verifying an intact trail -----------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_intact_trail_verifies_with_every_checkpoint_matched(fmt: str) -> None:
    records = trail(GATE).records()
    report = verify(export(records, fmt), keys=KEYS)
    assert report.ok, [f.line() for f in report.errors]
    assert report.checkpoints == 10  # 4 + 1 final, in each of two partitions
    assert report.unverified == 0
    assert not report.notes


def test_without_a_public_key_checkpoints_are_noted_as_unverified_not_passed_silently() -> None:
    report = verify(trail(GATE).records())
    assert report.ok
    assert report.unverified == 10
    assert {f.kind for f in report.notes} == {"unverified"}


def test_a_retired_key_still_verifies_the_checkpoints_it_signed() -> None:
    old, new = keys.generate(), keys.generate()
    gate = trail(old, events=10, every=5)
    gate.checkpointer.signer = new
    for chain in sorted(gate.heads):
        gate.event(chain)
    gate.checkpoint()
    report = verify(gate.records(), keys=keys.PublicKeys([old.public, new.public]))
    assert report.ok, [f.line() for f in report.errors]
    assert not verify(gate.records(), keys=keys.PublicKeys([new.public])).ok


# -- tampering ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_edit_with_the_whole_chain_recomputed_after_it_is_caught_by_a_later_checkpoint(
    fmt: str,
) -> None:
    records = trail(GATE).records()

    def lower(event: dict[str, Any]) -> None:
        event["data"]["level"] = 4

    forged = rehash(records, "proposals:0", 2, lower)
    # Without checkpoints the chain alone cannot tell (the known limit it fixes):
    plain = [r for r in forged if body(r)["kind"] != "checkpoint"]
    assert verify(export(plain, fmt)).ok
    report = verify(export(forged, fmt), keys=KEYS)
    assert kinds(report) == ["checkpoint_mismatch"], [f.line() for f in report.errors]
    first = report.errors[0]
    assert first.chain == "proposals:0"
    assert "recomputed" in first.message


def test_the_mismatch_names_the_stretch_between_the_last_matching_checkpoint_and_it() -> None:
    gate = trail(GATE, events=80, every=8)
    forged = rehash(gate.records(), "proposals:0", 12, lambda e: e["data"].update(level=0))
    report = verify(forged, keys=KEYS)
    assert not report.ok
    assert "after seq" in report.errors[0].message  # an earlier checkpoint still matched


def test_an_edit_after_the_last_checkpoint_is_not_caught_the_documented_limit() -> None:
    gate = trail(GATE, events=20, every=10, final=False)
    gate.event("proposals:0")  # sealed after the last checkpoint
    last = gate.heads["proposals:0"].seq
    forged = rehash(gate.records(), "proposals:0", last, lambda e: e["data"].update(level=4))
    assert verify(forged, keys=KEYS).ok


@pytest.mark.parametrize("fmt", ["topic", "raw"])
def test_a_tail_cut_before_the_last_checkpoint_is_truncation(fmt: str) -> None:
    """The last checkpoint stays; the events it signed are cut (an export's chain tail)."""
    records = trail(GATE).records()
    last = max(body(r)["seq"] for r in records if body(r)["chain"] == "proposals:1")
    cut = [
        r for r in records if not (body(r)["chain"] == "proposals:1" and body(r)["seq"] >= last - 1)
    ]
    report = verify(export(sorted_by_chain(cut), fmt), keys=KEYS)
    assert kinds(report) == ["truncation"], [f.line() for f in report.errors]
    assert "cut short" in report.errors[0].message


def _cut_partition_tail(records: list[bytes], partition: int, keep: int) -> list[bytes]:
    """The audit topic with partition ``partition`` rolled back to its first ``keep`` records."""
    mine = [r for r in records if audit_partition(body(r)["chain"]) == partition]
    gone = set(map(id, mine[keep:]))
    return [r for r in records if id(r) not in gone]


def test_a_tail_cut_that_takes_the_last_checkpoint_too_needs_the_checkpoint_kept_outside() -> None:
    gate = trail(GATE, events=40, every=10)
    records = gate.records()
    outside = AuditBody.model_validate(last_checkpoint(records))  # `audit checkpoint --out`
    mine = [r for r in records if audit_partition(body(r)["chain"]) == 1]
    ckpt_positions = [i for i, r in enumerate(mine) if body(r)["kind"] == "checkpoint"]
    cut = _cut_partition_tail(records, 1, ckpt_positions[-2] + 1)  # back to an older checkpoint
    assert verify(cut, keys=KEYS).ok  # the trail alone cannot tell
    report = verify(cut, keys=KEYS, checkpoints=[outside])
    assert "truncation" in kinds(report), [f.line() for f in report.errors]
    assert any("kept outside" in f.message for f in report.errors)


def test_a_tail_cut_after_the_last_checkpoint_passes_unless_a_later_checkpoint_is_kept() -> None:
    gate = trail(GATE, events=40, every=10, final=False)
    records = gate.records()
    kept_early = AuditBody.model_validate(last_checkpoint(records))
    for chain in sorted(gate.heads):
        gate.event(chain)
    full = gate.records()
    cut = records  # the events after the last checkpoint are gone
    assert verify(cut, keys=KEYS, checkpoints=[kept_early]).ok  # it reaches what was kept
    gate.checkpoint()
    kept_late = AuditBody.model_validate(last_checkpoint(gate.records()))
    report = verify(cut, keys=KEYS, checkpoints=[kept_late])
    assert "truncation" in kinds(report)
    assert verify(full, keys=KEYS, checkpoints=[kept_early]).ok


def test_a_checkpoint_kept_outside_that_was_changed_is_refused() -> None:
    records = trail(GATE).records()
    outside = last_checkpoint(records)
    outside["data"]["heads"]["proposals:1"]["seq"] -= 1
    outside["hash"] = body_hash(outside)
    report = verify(records, keys=KEYS, checkpoints=[AuditBody.model_validate(outside)])
    assert kinds(report) == ["bad_checkpoint"]
    assert "bad_signature" in report.errors[0].message


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_checkpoint_with_a_bad_signature_is_an_error_and_its_heads_are_not_used(
    fmt: str,
) -> None:
    records = trail(GATE).records()

    def lie(event: dict[str, Any]) -> None:
        event["data"]["heads"]["proposals:0"]["hash"] = "f" * 64  # re-hashed, not re-signed

    target = next(
        body(r)
        for r in records
        if body(r)["kind"] == "checkpoint" and body(r)["chain"].endswith(":0")
    )
    forged = rehash(records, target["chain"], target["seq"], lie)
    report = verify(export(forged, fmt), keys=KEYS)
    assert kinds(report) == ["bad_checkpoint"], [f.line() for f in report.errors]
    assert "bad_signature" in report.errors[0].message


def test_a_checkpoint_from_an_unknown_key_is_an_error() -> None:
    intruder = keys.generate("intruder")
    gate = Gate(intruder)
    for chain in sorted(gate.heads):
        gate.event(chain)
    gate.checkpoint()
    report = verify(gate.records(), keys=KEYS)
    assert kinds(report) == ["bad_checkpoint"]
    assert all("unknown_key" in f.message and intruder.key_id in f.message for f in report.errors)


def test_an_unsigned_checkpoint_is_an_error() -> None:
    gate = trail(GATE, events=8, every=4)
    records = gate.records()
    target = last_checkpoint(records)
    forged = rehash(records, target["chain"], target["seq"], lambda e: e["data"].pop("signature"))
    report = verify(forged, keys=KEYS)
    assert kinds(report) == ["bad_checkpoint"]


def test_a_checkpoint_dropped_from_the_middle_of_its_chain_is_caught_even_when_recomputed() -> None:
    records = trail(GATE).records()
    target = [body(r) for r in records if body(r)["chain"] == "checkpoint:gate-1/100/aaaa:0"][1]
    without = [r for r in records if body(r) != target]
    forged = rehash(
        without,
        target["chain"],
        target["seq"] + 1,
        lambda e: e.update(seq=e["seq"] - 1),
    )
    # Re-number what followed: the signed seq and prev_hash no longer match the place.
    fixed = []
    for record in forged:
        envelope = orjson.loads(record)
        event = envelope["event"]
        if event["chain"] == target["chain"] and event["seq"] > target["seq"]:
            event["seq"] -= 1
            event["hash"] = body_hash(event)
        fixed.append(orjson.dumps(envelope))
    assert not verify(fixed, keys=KEYS).ok
    assert "bad_checkpoint" in kinds(verify(fixed, keys=KEYS))


def test_chains_interleaved_in_another_order_across_audit_partitions_still_verify() -> None:
    """Order between audit partitions means nothing: any interleaving of them is intact."""
    gate = trail(GATE)
    zero, one = gate.partitions[0], gate.partitions[1]
    interleaved = [r for pair in zip(one, zero, strict=True) for r in pair]
    report = verify(interleaved, keys=KEYS)
    assert report.ok, [f.line() for f in report.errors]
    assert verify([*one, *zero], keys=KEYS).ok


def test_a_chain_moved_to_another_audit_partition_out_of_order_is_reported() -> None:
    """Events of proposals:0 moved into partition 1's stretch of the topic, after later ones."""
    gate = trail(GATE)
    moved = [r for r in gate.partitions[0] if body(r)["chain"] == "proposals:0"][2:4]
    zero = [r for r in gate.partitions[0] if r not in moved]
    records = [*zero, *gate.partitions[1], *moved]
    report = verify(records, keys=KEYS)
    assert "reorder" in kinds(report), [f.line() for f in report.errors]


def test_events_no_checkpoint_covered_within_the_bound_are_a_checkpoint_gap() -> None:
    gate = trail(GATE, events=40, every=10)  # one event a second, a checkpoint every 10
    assert verify(gate.records(), keys=KEYS, max_gap=15).ok
    report = verify(gate.records(), keys=KEYS, max_gap=5)
    assert kinds(report) == ["checkpoint_gap"]
    # The writer's checkpoints stop while events go on (a checkpoint chain's tail cut):
    for _ in range(30):
        gate.event("control:1")
    report = verify(gate.records(), keys=KEYS, max_gap=15)
    gaps = [f for f in report.errors if f.kind == "checkpoint_gap"]
    assert [f.chain for f in gaps] == ["control:1"]
    assert "no signed checkpoint covers them" in gaps[0].message


def test_a_trail_of_an_earlier_version_without_checkpoints_verifies_as_before() -> None:
    head = ChainHead.empty("p0")
    records = []
    for n in range(5):
        record, head = seal_json_legacy(head, n)
        records.append(record)
    assert verify(records, keys=KEYS).ok
    assert kinds(verify(records, keys=KEYS, max_gap=1)) == ["checkpoint_gap"]


def seal_json_legacy(head: ChainHead, n: int) -> tuple[bytes, ChainHead]:
    return seal_json(
        head, kind="decision", event_id=f"d{n}:decision", actor="escalation-gate",
        at=T0 + dt.timedelta(seconds=60 * n), data={}, fields={}, host="h", index="escalation",
    )  # fmt: skip


def test_on_the_topic_a_chain_found_in_another_audit_partition_is_misplaced() -> None:
    gate = trail(GATE, events=8, every=4)
    records = gate.records()
    partitions = [audit_partition(body(r)["chain"]) for r in records]
    assert verify(records, keys=KEYS, partition_of=lambda n: partitions[n]).ok
    moved = next(n for n, r in enumerate(records) if body(r)["chain"] == "proposals:1")
    partitions[moved] = 0  # the record now stands in partition 0's stretch of the topic
    report = verify(records, keys=KEYS, partition_of=lambda n: partitions[n])
    assert kinds(report) == ["misplaced"]
    assert "lives in audit partition 1" in report.errors[0].message
