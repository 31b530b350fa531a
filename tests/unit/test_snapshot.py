"""The folded state (state.folded) and the reducers' bounded memory, without a broker.

The broker-level proof (retention and compaction really run, every worker restarted)
is tests/integration/test_state_retention.py; here the same fold is simulated: the
``state`` log is a list per partition, ``state.folded`` a dict per partition (what
compaction leaves: the latest record of each key).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.state import apply_update
from streams.state.records import (
    StateUpdate,
    budget_update,
    freeze_update,
    import_updates,
    outcome_update,
    policy_update,
    requalification_update,
    velocity_update,
    verdict_update,
)
from streams.state.reducers import STATE_SCHEMA_VERSION, ai_fp_rate, prune, recent_autonomous
from streams.topology import snapshot
from streams.topology.mirror import Mirror
from streams.topology.snapshot import Snapshots, marker_record, read_record, value_record

NOW = dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC).timestamp()
PARTITIONS = 4


def _fold(updates: list[dict[str, Any]]) -> Any:
    value = None
    for update in updates:
        new = apply_update(value, update)
        value = new if new is not None else value
    return value


# --------------------------------------------------------------------- reducers


def test_an_origin_id_is_a_watermark_per_input_partition() -> None:
    def outcome(partition: int, offset: int) -> dict[str, Any]:
        return outcome_update(
            "p", "a", success=True, update_id=f"t.outcomes:{partition}:{offset}:history"
        ).record()

    # Redelivery after a crash repeats offsets 5 and 6 of partition 0; partition 1 is
    # independent of partition 0's watermark.
    value = _fold([outcome(0, o) for o in (4, 5, 6, 5, 6, 7)] + [outcome(1, 2), outcome(1, 2)])
    assert value["seen"] == 5
    assert value["_wm"] == {"t.outcomes:0:history": 7, "t.outcomes:1:history": 2}
    assert "_ids" not in value


def test_memory_per_key_does_not_grow_with_updates() -> None:
    updates = [
        outcome_update("p", "a", success=i % 3 != 0, update_id=f"t.outcomes:{i % 4}:{i}:history")
        for i in range(20_000)
    ]
    value = _fold([u.record() for u in updates])
    assert value["seen"] == 20_000
    assert len(orjson.dumps(value)) < 300
    # Ids that name no input record are remembered, but only the last 64.
    other = _fold([{"op": "outcome", "success": True, "id": f"x{i}"} for i in range(1_000)])
    assert len(other["_ids"]) == 64


def test_velocity_entries_need_no_id_list() -> None:
    updates = [
        velocity_update("svc", decision_id=f"d{i}", at=NOW + i, offset=i, window_seconds=600)
        for i in range(50)
    ]
    value = _fold([u.record() for u in updates] + [updates[3].record()])
    assert len(value["recent"]) == 50
    assert "_ids" not in value
    assert value["window"] == 600


def test_a_newer_schema_version_is_left_alone() -> None:
    record = freeze_update("*", op="freeze", user="alice", at=NOW).record()
    assert record["v"] == STATE_SCHEMA_VERSION
    assert apply_update(None, {**record, "v": STATE_SCHEMA_VERSION + 1}) is None
    assert apply_update(None, {**record, "v": "2"}) is None
    # Written before versions existed: version 1.
    assert apply_update(None, {k: v for k, v in record.items() if k != "v"}) is not None


def test_prune_drops_what_the_windows_no_longer_need() -> None:
    velocity = _fold(
        [
            velocity_update(
                "svc", decision_id=f"d{i}", at=at, offset=i, window_seconds=600
            ).record()
            for i, at in enumerate([NOW - 5_000, NOW - 1_300, NOW - 100])
        ]
    )
    # Entries older than two windows leave; readers saw none of them anyway.
    before = recent_autonomous(
        [velocity], now=dt.datetime.fromtimestamp(NOW, tz=dt.UTC), window_seconds=600, exclude=""
    )
    pruned = prune("velocity", velocity, NOW)
    assert pruned is not None
    assert [e[1] for e in pruned["recent"]] == ["d2"]
    after = recent_autonomous(
        [pruned], now=dt.datetime.fromtimestamp(NOW, tz=dt.UTC), window_seconds=600, exclude=""
    )
    assert before == after == 1
    assert prune("velocity", pruned, NOW + 2_000) is None

    week = 7 * 86_400
    verdicts = _fold(
        [
            verdict_update("holmes", false_positive=fp, at=at, update_id=None).record()
            for fp, at in [(True, NOW - 3 * week), (False, NOW - 2), (True, NOW - 1)]
        ]
    )
    now = dt.datetime.fromtimestamp(NOW, tz=dt.UTC)
    kept = prune("verdicts", verdicts, NOW)
    assert kept is not None
    assert ai_fp_rate(kept, now) == ai_fp_rate(verdicts, now) == 0.5
    assert prune("verdicts", kept, NOW + 3 * week) is None
    # Other tables are never pruned.
    freeze = _fold([freeze_update("*", op="freeze", user="a", at=NOW - 10 * week).record()])
    assert prune("freeze", freeze, NOW) is freeze


def _incidents(count: int, *, seed: int = 1) -> list[Any]:
    from streams.models import HistoryRecord  # noqa: PLC0415

    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    return [
        HistoryRecord.model_validate(
            {
                "schema_version": 1,
                "pattern": f"pattern-{rng.randrange(5)}",
                "action_type": "rolling_restart",
                "ai_system": f"ai-{rng.randrange(2)}",
                "outcome": rng.choice(["success", "failure"]),
                "verdict": rng.choice(["true_positive", "false_positive"]),
                "at": dt.datetime.fromtimestamp(NOW - rng.randrange(86_400), tz=dt.UTC),
            }
        )
        for _ in range(count)
    ]


def test_an_imported_batch_folds_as_its_incidents_would_and_only_once() -> None:
    from streams.state.records import history_updates  # noqa: PLC0415

    incidents = _incidents(500)
    batch = import_updates(incidents)
    # A few updates per batch: one per (pattern, action), one per AI system.
    assert len(batch) <= 5 + 2
    one_by_one: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in incidents:
        for update in history_updates(record):
            one_by_one.setdefault((update.table, update.key), []).append(update.record())
    batched: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for update in batch * 2:  # the same file imported twice
        batched.setdefault((update.table, update.key), []).append(update.record())
    now = dt.datetime.fromtimestamp(NOW, tz=dt.UTC)
    for (table, key), updates in one_by_one.items():
        expected, got = _fold(updates), _fold(batched[(table, key)])
        if table == "history":
            assert {k: got[k] for k in ("seen", "successes", "failures")} == {
                k: expected[k] for k in ("seen", "successes", "failures")
            }
        else:
            assert ai_fp_rate(got, now) == ai_fp_rate(expected, now)
            assert got["buckets"] == expected["buckets"]
    # Same content, same ids; another batch, another id.
    assert import_updates(incidents)[0].body["id"] == batch[0].body["id"]
    assert import_updates(incidents[:499])[0].body["id"] != batch[0].body["id"]


# ------------------------------------------------------------- state.folded codec


def test_folded_records_read_back() -> None:
    key, value = value_record("freeze", "*", {"frozen": True}, 42)
    folded = read_record(key, value)
    assert (folded.kind, folded.table, folded.key, folded.value, folded.through) == (
        "value",
        "freeze",
        "*",
        {"frozen": True},
        42,
    )
    key, tomb = value_record("velocity", "svc|x", None, 7)
    assert tomb is None
    assert (read_record(key, tomb).kind, read_record(key, tomb).key) == ("tombstone", "svc|x")
    key, marker = marker_record(99, at=NOW, keys=3)
    assert (read_record(key, marker).kind, read_record(key, marker).through) == ("marker", 99)
    newer = orjson.dumps({**orjson.loads(value or b"{}"), "v": STATE_SCHEMA_VERSION + 1})
    assert read_record(b"freeze|*", newer).kind == "newer"
    for bad in (b"not json", b"[]", b'{"through": -1}', b'{"through": 1, "table": 3}'):
        assert read_record(b"x|y", bad).kind == "unreadable"
    assert read_record(None, b"{}").kind == "unreadable"


# ---------------------------------------------------- the fold, simulated end to end


class Cluster:
    """``state`` as lists, ``state.folded`` as what compaction leaves of it."""

    def __init__(self) -> None:
        self.state: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
        self.folded: dict[int, dict[bytes, bytes | None]] = {p: {} for p in range(PARTITIONS)}
        self.written: list[tuple[int, bytes]] = []

    def send(self, update: StateUpdate) -> None:
        hasher = Mirror("x", "state")
        hasher.partitions = PARTITIONS
        partition = hasher.partition_of(update.table, update.key)
        self.state[partition].append(update.value())

    def produce(self, key: bytes, value: bytes | None, partition: int) -> None:
        folded = self.folded[partition]
        folded.pop(key, None)  # compaction keeps the latest, in the latest's place
        folded[key] = value
        self.written.append((partition, key))

    def mirror(self) -> Mirror:
        """A worker starting: state.folded first, then state from each marker."""
        mirror = Mirror("x", "state")
        mirror.partitions = PARTITIONS
        for partition, records in self.folded.items():
            for key, value in records.items():
                mirror.load_record(partition, key, value)
        mirror.loaded_all()
        mirror.positions = {p: mirror.folded_through.get(p, 0) for p in range(PARTITIONS)}
        self.catch_up(mirror)
        mirror.caught_up_now()
        return mirror

    def catch_up(self, mirror: Mirror) -> None:
        for partition, records in self.state.items():
            for offset in range(mirror.positions.get(partition, 0), len(records)):
                mirror.apply_record(records[offset], partition, offset)
                mirror.positions[partition] = offset + 1


def _updates(rng: random.Random, count: int) -> list[StateUpdate]:
    out: list[StateUpdate] = []
    for i in range(count):
        kind = rng.randrange(6)
        pattern = f"pattern-{rng.randrange(20)}"
        service = f"svc-{rng.randrange(10)}"
        update: StateUpdate
        if kind == 0:
            origin = f"t.outcomes:{i % 3}:{i}:history"
            update = outcome_update(
                pattern, "restart", success=rng.random() < 0.7, update_id=origin
            )
        elif kind == 1:
            ai_system, at = f"ai-{rng.randrange(3)}", NOW - rng.randrange(3_600)
            fp = rng.random() < 0.2
            update = verdict_update(
                ai_system, false_positive=fp, at=at, update_id=f"t.o:{i % 3}:{i}:v"
            )
        elif kind == 2:
            update = budget_update(service, remaining=rng.random(), at=NOW + i)
        elif kind == 3:
            op = rng.choice(["freeze", "unfreeze"])
            update = freeze_update(rng.choice(["*", "svc-1"]), op=op, user="alice", at=NOW + i)
        elif kind == 4:
            op = "requalify" if rng.random() < 0.7 else "revoke"
            update = requalification_update(
                pattern, "restart", op=op, user="bob", at=NOW + i, reason="review"
            )
        else:
            at = NOW - rng.randrange(120)
            update = velocity_update(
                service, decision_id=f"d{i}", at=at, offset=i, window_seconds=600
            )
        out.append(update)
        if rng.random() < 0.1:  # a redelivery
            out.append(out[rng.randrange(len(out))])
    out.append(policy_update(yaml="policy: {}", digest="abc", by="carol"))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_a_restart_from_state_folded_holds_what_folding_everything_holds(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    cluster = Cluster()
    updates = _updates(rng, 600)
    owner = cluster.mirror()  # an empty cluster
    snapshots = Snapshots(
        owner, cluster.produce, owned=lambda: range(PARTITIONS), clock=lambda: NOW
    )
    cut = rng.randrange(100, 500)
    for number, update in enumerate(updates):
        cluster.send(update)
        if number % 50 == 0:
            cluster.catch_up(owner)
            snapshots.write()
        if number == cut:
            # A round cut short by a crash: some keys written past their marker.
            cluster.catch_up(owner)
            budget = [rng.randrange(1, 6)]

            def crashing(
                key: bytes, value: bytes | None, partition: int, budget: list[int] = budget
            ) -> None:
                if budget[0] > 0:
                    budget[0] -= 1
                    cluster.produce(key, value, partition)

            Snapshots(owner, crashing, owned=lambda: range(PARTITIONS), clock=lambda: NOW).write()
    cluster.catch_up(owner)
    everything = Cluster()
    everything.state = cluster.state
    reference = everything.mirror()  # no state.folded: every update from the beginning
    restarted = cluster.mirror()
    assert restarted.loaded > 0
    assert sum(restarted.folded_through.values()) > 0
    for table in reference.data:
        assert restarted.data[table] == reference.data[table] == owner.data[table], table


def test_a_round_writes_only_what_changed_and_a_marker() -> None:
    cluster = Cluster()
    mirror = cluster.mirror()
    writes = Snapshots(mirror, cluster.produce, owned=lambda: [0, 1, 2, 3], clock=lambda: NOW)
    for service in ("svc-1", "svc-2", "svc-3"):
        cluster.send(budget_update(service, remaining=0.5, at=NOW))
    cluster.catch_up(mirror)
    assert writes.write() == 3 + PARTITIONS  # three keys, a marker per partition
    assert writes.write() == 0  # nothing changed
    cluster.send(budget_update("svc-2", remaining=0.4, at=NOW + 1))
    cluster.catch_up(mirror)
    written = len(cluster.written)
    assert writes.write() == 2  # svc-2 and its partition's marker
    assert [key for _, key in cluster.written[written:]] == [b"budgets|svc-2", b"_marker"]
    # Not the owner: nothing.
    idle = Snapshots(mirror, cluster.produce, owned=set, clock=lambda: NOW)
    assert idle.write() == 0


def test_a_key_its_window_emptied_leaves_state_folded() -> None:
    cluster = Cluster()
    mirror = cluster.mirror()
    clock = [NOW]
    writes = Snapshots(
        mirror, cluster.produce, owned=lambda: range(PARTITIONS), clock=lambda: clock[0]
    )
    cluster.send(velocity_update("svc", decision_id="d1", at=NOW, offset=1, window_seconds=600))
    cluster.send(verdict_update("holmes", false_positive=True, at=NOW, update_id="t.o:0:1:v"))
    cluster.catch_up(mirror)
    writes.write()
    folded = {k: v for records in cluster.folded.values() for k, v in records.items()}
    assert folded[b"velocity|svc"] is not None
    clock[0] = NOW + 1_300  # two windows later: the velocity entry leaves
    writes.write()
    folded = {k: v for records in cluster.folded.values() for k, v in records.items()}
    assert folded[b"velocity|svc"] is None  # a tombstone: compaction removes the key
    assert "svc" not in mirror.data["velocity"]
    assert folded[b"verdicts|holmes"] is not None
    clock[0] = NOW + 15 * 86_400 + 7_200
    writes.write()
    folded = {k: v for records in cluster.folded.values() for k, v in records.items()}
    assert folded[b"verdicts|holmes"] is None
    assert cluster.mirror().data["verdicts"] == {}
    assert cluster.mirror().data["velocity"] == {}


def test_the_timer_prunes_in_slices_and_writes_what_a_whole_round_writes() -> None:
    """``tick`` prunes a slice of keys, and writes a slice of records, per turn of the
    event loop (another task runs between slices), and ends where one ``write`` would:
    the same keys and values."""

    def fleet(cluster: Cluster) -> Mirror:
        mirror = cluster.mirror()
        for n in range(2 * snapshot.SLICE + 10):  # three slices
            at = NOW if n % 2 else NOW + 1_000  # half of them expire by NOW + 1_300
            cluster.send(
                velocity_update(f"s{n}", decision_id=f"d{n}", at=at, offset=n, window_seconds=600)
            )
        cluster.catch_up(mirror)
        return mirror

    whole, sliced = Cluster(), Cluster()
    mirrors = fleet(whole), fleet(sliced)
    later = NOW + 1_300
    owned = lambda: range(PARTITIONS)  # noqa: E731
    Snapshots(mirrors[0], whole.produce, owned=owned, clock=lambda: later).write()
    turns: list[int] = []
    writes: list[int] = []

    async def other_task() -> None:
        while True:
            turns.append(len(mirrors[1].data["velocity"]))
            writes.append(len(sliced.written))
            await asyncio.sleep(0)

    async def run() -> None:
        watcher = asyncio.create_task(other_task())
        await asyncio.sleep(0)
        await Snapshots(mirrors[1], sliced.produce, owned=owned, clock=lambda: later).tick()
        watcher.cancel()

    asyncio.run(run())
    assert len(set(turns)) >= 3  # the other task ran between slices, seeing fewer keys
    assert len(set(writes)) >= 3  # and between slices of the records written
    assert mirrors[1].data == mirrors[0].data
    assert len(mirrors[1].data["velocity"]) == snapshot.SLICE + 5
    assert sliced.folded == whole.folded


def test_a_round_the_partition_is_revoked_from_writes_no_marker() -> None:
    """A revoke between two slices of a round: the rest is not written and there is no
    marker (the next owner may be writing the partition); owned again, the whole round
    is written from where the last marker left off."""
    cluster = Cluster()
    mirror = cluster.mirror()
    for n in range(6 * snapshot.SLICE):  # about 1,500 keys a partition
        cluster.send(budget_update(f"svc-{n}", remaining=0.5, at=NOW))
    cluster.catch_up(mirror)
    owned = set(range(PARTITIONS))
    busiest = max(range(PARTITIONS), key=lambda p: len(cluster.state[p]))
    assert len(cluster.state[busiest]) > snapshot.SLICE  # its round has several slices

    revoked: list[int] = []

    def produce(key: bytes, value: bytes | None, partition: int) -> None:
        cluster.produce(key, value, partition)
        if partition == busiest and not revoked:  # revoked while its first slice is
            owned.discard(busiest)  # being written, once
            revoked.append(busiest)

    writes = Snapshots(mirror, produce, owned=lambda: owned, clock=lambda: NOW)
    asyncio.run(writes.tick())
    ours = [key for p, key in cluster.written if p == busiest]
    assert 0 < len(ours) <= snapshot.SLICE
    assert b"_marker" not in ours
    assert busiest not in writes.written
    others = {p for p, key in cluster.written if key == b"_marker"}
    assert others == set(range(PARTITIONS)) - {busiest}
    owned.add(busiest)
    asyncio.run(writes.tick())
    ours = [key for p, key in cluster.written if p == busiest]
    assert ours[-1] == b"_marker"
    assert writes.written[busiest] == len(cluster.state[busiest])
    restarted = cluster.mirror()
    assert restarted.data["budgets"] == mirror.data["budgets"]


def test_a_value_the_producer_refuses_holds_the_marker_back() -> None:
    cluster = Cluster()
    mirror = cluster.mirror()
    cluster.send(budget_update("svc-1", remaining=0.5, at=NOW))
    cluster.catch_up(mirror)

    def refuse(key: bytes, value: bytes | None, partition: int) -> None:
        if key != b"_marker":
            raise BufferError("Broker: Message size too large")
        cluster.produce(key, value, partition)

    writes = Snapshots(mirror, refuse, owned=lambda: range(PARTITIONS), clock=lambda: NOW)
    writes.write()
    assert writes.failures == 1
    partition = mirror.partition_of("budgets", "svc-1")
    assert b"_marker" not in cluster.folded[partition]
    # The next worker folds that partition from its beginning: nothing is lost.
    assert cluster.mirror().data["budgets"]["svc-1"]["remaining"] == 0.5


def test_the_partition_of_a_key_is_kafkas_murmur2() -> None:
    from aiokafka.partitioner import murmur2  # noqa: PLC0415

    mirror = Mirror("x", "state")
    mirror.partitions = 12
    for table, key in [("freeze", "*"), ("policy", "current"), ("history", "a|b")]:
        expected = (murmur2(f"{table}|{key}".encode()) & 0x7FFFFFFF) % 12
        assert mirror.partition_of(table, key) == expected


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "state-log-c6d95d7.jsonl"


def test_a_state_log_written_before_state_folded_is_taken_over() -> None:
    """Upgrade without loss: the recorded ``state`` of c6d95d7 (no schema version, no
    ``state.folded``) folds as it did, is written to ``state.folded``, and a restart
    from that alone (the old log deleted) holds the same."""
    lines = [orjson.loads(line) for line in FIXTURE.read_bytes().splitlines()]
    assert lines
    assert all("v" not in line["value"] for line in lines)  # written before versions
    cluster = Cluster()
    hasher = Mirror("x", "state")
    hasher.partitions = PARTITIONS
    for line in lines:
        value = line["value"]
        partition = hasher.partition_of(value["table"], value["key"])
        cluster.state[partition].append(orjson.dumps(value))
    upgraded = cluster.mirror()
    data = upgraded.data
    history = data["history"]["oom-kill/stateless-deployment|rolling_restart"]
    assert (history["seen"], history["successes"], history["failures"]) == (43, 42, 1)
    assert data["freeze"]["checkout-api"]["frozen"] is True
    assert data["freeze"]["search-api"]["frozen"] is False
    assert data["requalification"]["oom-kill/stateless-deployment|rolling_restart"]["by"] == "alice"
    assert data["budgets"]["checkout-api"]["remaining"] == 0.9
    assert data["policy"]["current"]["by"] == "alice"
    buckets = data["verdicts"]["holmesgpt"]["buckets"]
    assert sum(b[0] for b in buckets.values()) == 40
    assert sum(b[1] for b in buckets.values()) == 4
    assert data["velocity"]["search-api"]["recent"][0][1] == "d-fixture-1"
    Snapshots(upgraded, cluster.produce, owned=lambda: range(PARTITIONS), clock=lambda: 0.0).write()
    cluster.state = {p: [] for p in range(PARTITIONS)}  # retention ran: the old log is gone
    restarted = cluster.mirror()
    # Markers past the end of the (now empty) log: nothing more to fold.
    restarted.positions = dict.fromkeys(range(PARTITIONS), 0)
    assert restarted.data == upgraded.data
