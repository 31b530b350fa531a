"""The audit trail's completeness on the real broker: head re-sync over shared partitions,
signed checkpoints, and forged or cut topics caught by `escalation audit verify --topic`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from audit_trail import Gate, body, rehash

from streams import keys
from streams.audit.chain import ChainHead, audit_partition
from streams.audit.resync import chain_heads

if TYPE_CHECKING:
    from streams.settings import Settings

GATE = keys.generate("escalation-gate")


def _produce(settings: Settings, records: list[bytes]) -> None:
    """Write records to the audit topic, each to the partition its chain lives in."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "linger.ms": 20})
    topic = settings.topic("audit")
    for n, record in enumerate(records):
        chain = body(record)["chain"]
        partition = audit_partition(chain)
        assert partition is not None
        producer.produce(topic, record, key=chain.encode(), partition=partition)
        if n % 10000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def _verify(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "audit", *args],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def _pub(tmp_path: Path, signer: keys.Signer = GATE) -> str:
    path = tmp_path / f"{signer.key_id}.pub"
    path.write_text(keys.public_pem(signer.public))
    return str(path)


def test_the_resync_finds_each_chains_head_and_a_checkpoint_bounds_the_read(
    settings: Settings, topics: list[str]
) -> None:
    """Partition 0: a rare chain's event 20,000 records back, then a checkpoint; partition 1
    the same without a checkpoint (a trail of an earlier version): read to its beginning."""
    count = 20000
    gate = Gate(GATE, partitions=2, topics=("proposals", "control", "outcomes"))
    for partition in (0, 1):
        gate.event(f"control:{partition}")
        for _ in range(count):
            gate.event(f"proposals:{partition}")
    # A checkpoint in partition 0 only (partition 1 stands for a trail without any).
    ((_, _, record),) = gate.checkpointer.seal(
        {0: {c: h for c, h in gate.heads.items() if c.endswith(":0")}}, gate.now
    )
    gate.partitions[0].append(record)
    for _ in range(50):
        gate.event("proposals:0")
    _produce(settings, gate.records())
    audit = settings.topic("audit")
    wanted = {p: {f"proposals:{p}", f"control:{p}", f"outcomes:{p}"} for p in (0, 1)}

    heads, _ = chain_heads(settings.bootstrap_servers or "", audit, wanted)
    assert {c: heads[c] for c in gate.heads} == gate.heads
    assert heads["outcomes:0"] == ChainHead.empty("outcomes:0")

    started = time.monotonic()
    only0, stats0 = chain_heads(settings.bootstrap_servers or "", audit, {0: wanted[0]})
    with_checkpoint = time.monotonic() - started
    started = time.monotonic()
    only1, stats1 = chain_heads(settings.bootstrap_servers or "", audit, {1: wanted[1]})
    without = time.monotonic() - started
    assert only0["control:0"] == gate.heads["control:0"]
    assert only1["control:1"] == gate.heads["control:1"]
    assert stats0.records <= 2000  # the first window holds the checkpoint
    assert stats1.records == count + 1  # nothing lists control:1 or outcomes:1: read it all
    print(
        f"\nresync of 3 chains over {count} records: with a checkpoint {with_checkpoint:.3f}s "
        f"({stats0.records} records, {stats0.windows} windows); without {without:.3f}s "
        f"({stats1.records} records, {stats1.windows} windows)"
    )


def test_verify_topic_checks_signatures_and_catches_an_edit_recomputed_on_the_topic(
    settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    gate = Gate(GATE)
    for n in range(40):
        gate.event(sorted(gate.heads)[n % 4])
        if n % 10 == 9:
            gate.checkpoint()
    records = gate.records()
    forged = rehash(records, "proposals:1", 3, lambda e: e["data"].update(level=4))
    _produce(settings, forged)
    result = _verify(settings, "verify", "--topic", "--public-key", _pub(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "checkpoint_mismatch" in result.stdout
    assert "chain proposals:1" in result.stdout
    assert "partition 1 offset" in result.stdout


def test_verify_topic_refuses_a_checkpoint_from_an_unknown_key_and_passes_a_known_one(
    settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    gate = Gate(GATE)
    for chain in sorted(gate.heads):
        gate.event(chain)
    gate.checkpoint()
    _produce(settings, gate.records())
    ok = _verify(settings, "verify", "--topic", "--public-key", _pub(tmp_path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "2 signed checkpoints matched" in ok.stdout
    other = keys.generate()
    refused = _verify(settings, "verify", "--topic", "--public-key", _pub(tmp_path, other))
    assert refused.returncode == 1
    assert refused.stdout.count("bad_checkpoint: checkpoint: unknown_key") == 2


def test_checkpoint_out_and_verify_checkpoint_catch_a_topic_that_lost_its_tail(
    settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    """The topic holds an older state than the checkpoint kept outside (a rolled-back or
    truncated topic): `verify --topic --checkpoint FILE` fails."""
    gate = Gate(GATE)
    for chain in sorted(gate.heads):
        gate.event(chain)
    gate.checkpoint()
    older = gate.records()
    for chain in sorted(gate.heads):
        gate.event(chain)
    gate.checkpoint()
    full = gate.records()
    kept = tmp_path / "kept.json"
    source = tmp_path / "full.jsonl"
    source.write_bytes(b"\n".join(full))
    pub = _pub(tmp_path)
    made = _verify(settings, "checkpoint", str(source), "--out", str(kept), "--public-key", pub)
    assert made.returncode == 0, made.stdout + made.stderr
    _produce(settings, older)
    cut = _verify(settings, "verify", "--topic", "--checkpoint", str(kept), "--public-key", pub)
    assert cut.returncode == 1, cut.stdout + cut.stderr
    assert "truncation" in cut.stdout
    assert "kept outside" in cut.stdout
    plain = _verify(settings, "verify", "--topic", "--public-key", pub)
    assert plain.returncode == 0, plain.stdout  # without the kept checkpoint it cannot tell
    from_topic = tmp_path / "from-topic.json"
    made = _verify(settings, "checkpoint", "--topic", "--out", str(from_topic), "--public-key", pub)
    assert made.returncode == 0, made.stdout + made.stderr


def test_audit_checkpoint_on_an_empty_topic_says_so(
    settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    result = _verify(settings, "checkpoint", "--topic", "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("(is the worker writing them?)")
