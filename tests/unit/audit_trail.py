# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""A gate's audit trail in memory: chains named by what they seal, signed checkpoints.

Used by the audit unit tests to build trails as the worker writes them (several
chains per audit partition, one checkpoint chain per writer and partition) and to
tamper with them the way an attacker who can write the topic or the index would.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import orjson

from streams import keys
from streams.audit.chain import ChainHead, body_hash, chain_for, seal_json
from streams.audit.checkpoint import Checkpointer

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)


class Gate:
    """One writer sealing events and checkpoints; records kept per audit partition."""

    def __init__(
        self,
        signer: keys.Signer,
        *,
        writer: str = "gate-1/100/aaaa",
        partitions: int = 2,
        topics: tuple[str, ...] = ("proposals", "control"),
    ) -> None:
        self.heads = {
            chain_for(t, p): ChainHead.empty(chain_for(t, p))
            for t in topics
            for p in range(partitions)
        }
        self.checkpointer = Checkpointer(signer, writer, host="gate-1", index="escalation")
        self.partitions: dict[int, list[bytes]] = defaultdict(list)
        self.now = T0
        self.count = 0

    def tick(self, seconds: float = 1.0) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now

    def event(self, chain: str, *, decision_id: str | None = None, kind: str = "decision") -> bytes:
        self.count += 1
        decision_id = decision_id or f"d-{self.count:05d}"
        record, self.heads[chain] = seal_json(
            self.heads[chain],
            kind=kind,  # type: ignore[arg-type]
            event_id=f"{decision_id}:{kind}",
            actor="escalation-gate",
            at=self.tick(),
            decision_id=decision_id,
            data={"level": 2, "n": self.count},
            fields={"level": "2"},
            host="gate-1",
            index="escalation",
        )
        self.partitions[int(chain.rsplit(":", 1)[1])].append(record)
        return record

    def checkpoint(self, *, final: bool = False) -> list[bytes]:
        by_partition: dict[int, dict[str, ChainHead]] = defaultdict(dict)
        for name, head in self.heads.items():
            by_partition[int(name.rsplit(":", 1)[1])][name] = head
        out = []
        for partition, _, record in self.checkpointer.seal(by_partition, self.now, final=final):
            self.partitions[partition].append(record)
            out.append(record)
        return out

    def records(self) -> list[bytes]:
        """The audit topic as `audit verify --topic` reads it: partition after partition."""
        return [r for p in sorted(self.partitions) for r in self.partitions[p]]


def trail(signer: keys.Signer, *, events: int = 40, every: int = 10, final: bool = True) -> Gate:
    """A gate that sealed ``events`` over its chains, a checkpoint every ``every`` events."""
    gate = Gate(signer)
    chains = sorted(gate.heads)
    for n in range(events):
        gate.event(chains[n % len(chains)])
        if (n + 1) % every == 0:
            gate.checkpoint()
    if final:
        gate.checkpoint(final=True)
    return gate


def body(record: bytes) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(record)["event"]
    return value


def rehash(records: list[bytes], chain: str, from_seq: int, change: Any) -> list[bytes]:
    """Change chain's event at ``from_seq`` with ``change(body)`` and recompute every later
    hash of that chain, as an attacker without the key would."""
    out = []
    prev: str | None = None
    for record in records:
        envelope = orjson.loads(record)
        event = envelope["event"]
        if event["chain"] == chain and event["seq"] >= from_seq:
            if event["seq"] == from_seq:
                change(event)
            if prev is not None:
                event["prev_hash"] = prev
            event["hash"] = body_hash(event)
            prev = event["hash"]
            out.append(orjson.dumps(envelope))
        else:
            out.append(record)
    return out


def last_checkpoint(records: list[bytes]) -> dict[str, Any]:
    return [body(r) for r in records if body(r)["kind"] == "checkpoint"][-1]
