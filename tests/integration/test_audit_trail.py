"""The audit trail's completeness on the real broker: head re-sync over shared partitions,
signed checkpoints, and forged or cut topics caught by `escalation audit verify --topic`.

The SIGKILL scenario, two real workers starting at once, and `audit checkpoint` from
a file are marked slow (run them with `scripts/test -m slow` or
`.venv/bin/pytest -m slow tests/integration/test_audit_trail.py`); CI keeps the
injected start-up race and the gate's own topic forged and cut."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer
from harness import DecisionReader, Feed, Worker, gate_key, wait_processed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from audit_trail import Gate, body, rehash

from streams import keys, samples
from streams.audit.chain import ChainHead, audit_partition, seal_json
from streams.audit.cli import topic_records
from streams.audit.resync import chain_heads
from streams.kafka.admin import create_topics
from streams.testing import wait_until

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


def test_verify_topic_reports_a_chain_moved_to_another_audit_partition(
    settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    gate = Gate(GATE)
    for chain in sorted(gate.heads):
        gate.event(chain)
    gate.checkpoint()
    _produce(settings, gate.records())
    stray = next(r for r in gate.records() if body(r)["chain"] == "proposals:1")
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(settings.topic("audit"), stray, key=b"proposals:1", partition=0)
    assert producer.flush(30) == 0
    result = _verify(settings, "verify", "--topic", "--public-key", _pub(tmp_path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "misplaced: chain proposals:1 lives in audit partition 1" in result.stdout
    assert "(partition 0 offset" in result.stdout


@pytest.mark.slow  # the gate-topic test covers --checkpoint on the topic in CI
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


# -- the gate's own trail -------------------------------------------------------------

FAST_CHECKPOINTS = {"ESCALATION_AUDIT_CHECKPOINT_SECONDS": "1"}
INPUTS = ("proposals", "outcomes", "error-budgets", "control", "lifecycle", "approvals")


def _read_audit(settings: Settings) -> list[tuple[int, bytes]]:
    """Every record of the audit topic with its partition, partition after partition."""
    where: array[int] = array("q")
    values = list(
        topic_records(settings.bootstrap_servers or "", settings.topic("audit"), timeout=30,
                      where=where)
    )  # fmt: skip
    return [(where[2 * n], value) for n, value in enumerate(values)]


def _uncovered(records: list[tuple[int, bytes]]) -> set[str]:
    """Data chains whose last event no checkpoint has listed yet."""
    last: dict[str, int] = {}
    listed: dict[str, int] = {}
    for _, record in records:
        event = body(record)
        if event["kind"] == "checkpoint":
            for chain, head in event["data"]["heads"].items():
                listed[chain] = max(listed.get(chain, -1), head["seq"])
        else:
            last[event["chain"]] = max(last.get(event["chain"], -1), event["seq"])
    return {chain for chain, seq in last.items() if listed.get(chain, -1) < seq}


def _covered_trail(settings: Settings, timeout: float = 90) -> list[tuple[int, bytes]]:
    """The audit topic once a signed checkpoint covers every chain's last event."""
    found: list[list[tuple[int, bytes]]] = []

    def covered() -> bool:
        found[:] = [_read_audit(settings)]
        return bool(found[0]) and not _uncovered(found[0])

    assert wait_until(covered, timeout=timeout, interval=1.0), _uncovered(found[0])
    return found[0]


def _copy_to(settings: Settings, records: list[tuple[int, bytes]]) -> Settings:
    """The records written, partition for partition, to the audit topic of a new prefix
    (an attacker who rewrote the topic: it is append-only, so a rewrite is a new one)."""
    forged = settings.model_copy(update={"topic_prefix": f"f-{uuid.uuid4().hex[:8]}."})
    create_topics(forged, forged.bootstrap_servers or "")
    producer = Producer({"bootstrap.servers": forged.bootstrap_servers})
    for partition, record in records:
        producer.produce(forged.topic("audit"), record, key=body(record)["chain"].encode(),
                         partition=partition)  # fmt: skip
    assert producer.flush(60) == 0
    return forged


def _stream(feed: Feed, count: int, tag: str) -> list[str]:
    start = dt.datetime.now(tz=dt.UTC)
    proposals = [p for _, p in samples.stream(count, start=start, tag=tag)]
    feed.proposals(proposals)
    return [p.proposal_id for p in proposals]


def test_the_start_up_race_that_shared_a_chain_cannot_any_more(
    settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    """The experiment's race, injected: partition 2 of `proposals` on one worker and of
    `control` on another, both sealing into audit partition 2 at the same time. Named
    by partition number (`p2`, as before) the chain had two writers; named by what they
    seal, each chain has one, and the re-sync finds both heads."""
    # Each writer holds (and signs) only the chains of its own assignment.
    first = Gate(GATE, partitions=3, topics=("proposals",), writer="w1/1/a")
    second = Gate(GATE, partitions=3, topics=("control",), writer="w2/2/b")
    old_heads = [ChainHead.empty("p2"), ChainHead.empty("p2")]  # each worker's own head
    old: list[bytes] = []
    for n in range(10):  # interleaved, as two workers' producers would write them
        first.event("proposals:2", decision_id=f"d-a{n}")
        second.event("control:2", decision_id=f"d-b{n}")
        for w in (0, 1):
            record, old_heads[w] = seal_json(
                old_heads[w], kind="decision", event_id=f"d-{w}-{n}:decision",
                actor="escalation-gate", at=first.now, data={}, fields={}, host="h",
                index="escalation",
            )  # fmt: skip
            old.append(record)
    first.checkpoint()
    second.checkpoint()
    _produce(settings, [*first.partitions[2], *second.partitions[2]])
    new = _verify(settings, "verify", "--topic", "--public-key", _pub(tmp_path))
    assert new.returncode == 0, new.stdout + new.stderr
    heads, _ = chain_heads(
        settings.bootstrap_servers or "", settings.topic("audit"), {2: {"proposals:2", "control:2"}}
    )
    assert heads == {
        "proposals:2": first.heads["proposals:2"],
        "control:2": second.heads["control:2"],
    }

    # The same two writers with the chain named by partition number alone:
    legacy = settings.model_copy(update={"topic_prefix": f"o-{uuid.uuid4().hex[:8]}."})
    create_topics(legacy, legacy.bootstrap_servers or "")
    _produce(legacy, old)
    shared = _verify(legacy, "verify", "--topic")
    assert shared.returncode == 1
    assert "two writers on one chain" in shared.stdout


def _writers_per_chain(records: list[tuple[int, bytes]]) -> dict[str, list[tuple[str, int]]]:
    """For each chain, (writer, signed seq) of every checkpoint listing it, in topic order."""
    out: dict[str, list[tuple[str, int]]] = {}
    for _, record in records:
        event = body(record)
        if event["kind"] == "checkpoint":
            for chain, head in event["data"]["heads"].items():
                out.setdefault(chain, []).append((event["data"]["writer"], head["seq"]))
    return out


@pytest.mark.slow  # ~30 s; CI keeps the injected race and the gate-topic test
def test_two_workers_starting_at_once_write_each_chain_alone_and_sign_it(
    settings: Settings, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    workers = [start_worker(f"w{i}", ready=False, env=FAST_CHECKPOINTS) for i in range(2)]
    for w in workers:
        w.wait_ready()
    feed = Feed(settings)
    feed.seed_samples(*workers)
    ids = _stream(feed, 60, "race-")
    feed.control("freeze", user="alice", service="payments-api")
    feed.budget("checkout-api", 0.9)
    with DecisionReader(settings) as reader:
        reader.wait_for(ids, timeout=120)
    wait_processed(settings, feed.sent, timeout=120)
    records = _covered_trail(settings)

    for partition, record in records:  # every chain lives in the partition it names
        assert audit_partition(body(record)["chain"]) == partition
    data_chains = {body(r)["chain"] for _, r in records if body(r)["kind"] != "checkpoint"}
    assert data_chains <= {f"{t}:{p}" for t in INPUTS for p in range(settings.partitions)}
    writers = {body(r)["data"]["writer"] for _, r in records if body(r)["kind"] == "checkpoint"}
    assert len(writers) == 2, writers
    for chain, signed in _writers_per_chain(records).items():
        # A chain passes from one writer to the next with its head; two writers at once
        # would each sign their own seqs, and the signed seqs would go back.
        seqs = [seq for _, seq in signed]
        assert seqs == sorted(seqs), (chain, signed)
    result = _verify(settings, "verify", "--topic", "--public-key", f"{gate_key(settings)}.pub",
                     "--max-gap", "120")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "signed checkpoints matched" in result.stdout
    assert "duplicate" not in result.stdout


def test_an_edit_recomputed_on_the_gates_topic_and_a_cut_topic_are_caught(
    settings: Settings, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    worker = start_worker("w1", env=FAST_CHECKPOINTS)
    feed = Feed(settings)
    feed.seed_samples(worker)
    ids = _stream(feed, 30, "forge-")
    with DecisionReader(settings) as reader:
        decided = reader.wait_for(ids, timeout=120)
    wait_processed(settings, feed.sent, timeout=120)
    records = _covered_trail(settings)
    pub = f"{gate_key(settings)}.pub"
    intact = _verify(settings, "verify", "--topic", "--public-key", pub)
    assert intact.returncode == 0, intact.stdout + intact.stderr

    # An attacker rewrites one decision to Level 4 and recomputes its chain after it.
    target = next(
        body(r) for _, r in records
        if body(r)["kind"] == "decision" and body(r)["decision_id"] in
        {d["decision_id"] for d in decided.values()}
    )  # fmt: skip

    def autonomous(event: dict[str, Any]) -> None:
        event["data"]["decision"]["level"] = 4

    partitions = [p for p, _ in records]
    forged_values = rehash([r for _, r in records], target["chain"], target["seq"], autonomous)
    forged = _copy_to(settings, list(zip(partitions, forged_values, strict=True)))
    caught = _verify(forged, "verify", "--topic", "--public-key", pub)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "checkpoint_mismatch" in caught.stdout
    assert f"chain {target['chain']}" in caught.stdout
    assert "edit:" not in caught.stdout  # every hash recomputes: only the signature tells

    # The checkpoint kept outside, then the topic rolled back before its last checkpoint.
    kept = tmp_path / "kept.json"
    made = _verify(settings, "checkpoint", "--topic", "--out", str(kept), "--public-key", pub)
    assert made.returncode == 0, made.stdout + made.stderr
    partition = audit_partition(target["chain"])
    mine = [n for n, (p, _) in enumerate(records) if p == partition]
    last_checkpoint = max(n for n in mine if body(records[n][1])["kind"] == "checkpoint")
    cut = _copy_to(settings, [pr for n, pr in enumerate(records) if n < last_checkpoint
                              or pr[0] != partition])  # fmt: skip
    alone = _verify(cut, "verify", "--topic", "--public-key", pub)
    assert alone.returncode == 0, alone.stdout  # whole in itself: nothing inside tells
    against = _verify(cut, "verify", "--topic", "--public-key", pub, "--checkpoint", str(kept))
    assert against.returncode == 1, against.stdout + against.stderr
    assert "truncation" in against.stdout
    assert "kept outside" in against.stdout

    # One decision's proof, checked offline with the public key only.
    proof = tmp_path / "proof.json"
    proved = _verify(settings, "prove", target["decision_id"], "--topic", "--out", str(proof))
    assert proved.returncode == 0, proved.stdout + proved.stderr
    checked = _verify(settings, "verify-proof", str(proof), "--public-key", pub)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith(f"OK: decision {target['decision_id']}")

    # A worker that stops signs its chains' final heads on the way out.
    stopping = dt.datetime.now(tz=dt.UTC)
    worker.stop()
    finals = [
        body(r) for _, r in _read_audit(settings)
        if body(r)["kind"] == "checkpoint" and body(r)["data"]["final"]
        and dt.datetime.fromisoformat(body(r)["at"]) >= stopping
    ]  # fmt: skip
    assert finals, "no final checkpoint after the worker stopped"


@pytest.mark.slow
def test_after_a_sigkill_mid_stream_the_signed_trail_verifies(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    workers = [start_worker(f"w{i}", ready=False, env=FAST_CHECKPOINTS) for i in range(2)]
    for w in workers:
        w.wait_ready()
    feed = Feed(settings)
    feed.seed_samples(*workers)
    start = dt.datetime.now(tz=dt.UTC)
    stream = [p for _, p in samples.stream(300, start=start, tag="kill-")]
    with DecisionReader(settings) as reader:
        for i in range(0, len(stream), 20):
            feed.proposals(stream[i : i + 20])
            if i == 100:
                workers[1].kill()
                start_worker("w1-restarted", ready=False, env=FAST_CHECKPOINTS)
        reader.wait_for([p.proposal_id for p in stream], timeout=300)
    wait_processed(settings, feed.sent, timeout=180)
    records = _covered_trail(settings, timeout=120)
    revoked = [body(r) for _, r in records
               if body(r)["kind"] == "checkpoint" and body(r)["data"]["final"]]  # fmt: skip
    assert revoked, "no final checkpoint at the rebalance"
    result = _verify(settings, "verify", "--topic", "--public-key", f"{gate_key(settings)}.pub",
                     "--max-gap", "180")  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
