# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Finding each chain's head when several chains share one audit partition.

The partition is fed to :class:`HeadScan` backwards, one window at a time (each
window in offset order), as streams/audit/resync.py reads it from the broker.
"""

from __future__ import annotations

from audit_trail import Gate, body

from streams import keys
from streams.audit.chain import ChainHead
from streams.audit.heads import HeadScan

GATE = keys.generate("escalation-gate")
KEYS = keys.PublicKeys([GATE.public])


def scan(records: list[bytes], wanted: set[str], step: int, **kw: object) -> HeadScan:
    """Feed ``records`` (one partition, offset order) backwards in windows of ``step``."""
    result = HeadScan(frozenset(wanted), **kw)  # type: ignore[arg-type]
    end = len(records)
    while not result.done and end > 0:
        start = max(0, end - step)
        result.window(records[start:end])
        end = start
    return result


def test_each_chain_gets_its_own_last_event_even_when_another_chain_wrote_after_it() -> None:
    gate = Gate(GATE, partitions=1)
    gate.event("control:0")
    for _ in range(50):
        gate.event("proposals:0")
    records = gate.partitions[0]
    found = scan(records, {"control:0", "proposals:0"}, step=10)
    assert found.result() == {
        "control:0": ChainHead("control:0", 0, body(records[0])["hash"]),
        "proposals:0": ChainHead("proposals:0", 49, body(records[-1])["hash"]),
    }
    assert found.windows == 6  # without a checkpoint: back to control:0's only event


def test_a_checkpoint_stops_the_scan_for_every_chain_it_lists() -> None:
    gate = Gate(GATE, partitions=1)
    gate.event("control:0")
    for _ in range(500):
        gate.event("proposals:0")
    gate.checkpoint()
    for _ in range(5):
        gate.event("proposals:0")
    records = gate.partitions[0]
    found = scan(records, {"control:0", "proposals:0"}, step=10)
    assert found.windows == 1
    assert found.records == 10
    assert found.result()["control:0"] == gate.heads["control:0"]
    assert found.result()["proposals:0"] == gate.heads["proposals:0"]


def test_an_empty_chain_listed_by_a_checkpoint_is_resolved_as_empty_without_reading_on() -> None:
    gate = Gate(GATE, partitions=1, topics=("proposals", "error-budgets"))
    for _ in range(100):
        gate.event("proposals:0")
    gate.checkpoint()
    found = scan(gate.partitions[0], {"error-budgets:0"}, step=5)
    assert found.windows == 1
    assert found.result() == {"error-budgets:0": ChainHead.empty("error-budgets:0")}


def test_a_chain_the_partition_says_nothing_about_is_empty_after_reading_it_all() -> None:
    gate = Gate(GATE, partitions=1)
    for _ in range(20):
        gate.event("proposals:0")
    found = scan(gate.partitions[0], {"outcomes:0"}, step=8)
    assert found.result() == {"outcomes:0": ChainHead.empty("outcomes:0")}
    assert found.records == 20


def test_a_forged_checkpoint_cannot_move_a_head_when_keys_are_given() -> None:
    gate = Gate(GATE, partitions=1)
    for _ in range(5):
        gate.event("proposals:0")
    honest = gate.heads["proposals:0"]
    intruder = Gate(keys.generate(), partitions=1, writer="evil/1/x")
    intruder.heads["proposals:0"] = ChainHead("proposals:0", 999, "e" * 64)
    intruder.checkpoint()
    records = [*gate.partitions[0], *intruder.partitions[0]]
    fooled = scan(records, {"proposals:0"}, step=100)
    assert fooled.result()["proposals:0"].seq == 999  # without keys: the newest word wins
    found = scan(records, {"proposals:0"}, step=100, keys=KEYS)
    assert found.result()["proposals:0"] == honest
    assert found.unreadable == 1


def test_unreadable_records_are_skipped_and_counted() -> None:
    gate = Gate(GATE, partitions=1)
    gate.event("proposals:0")
    found = scan(
        [*gate.partitions[0], b"not json", b'{"event": {"chain": 1}}'], {"proposals:0"}, 10
    )
    assert found.result()["proposals:0"] == gate.heads["proposals:0"]
    assert found.unreadable == 2
