# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Signed checkpoints of the audit chains: what makes a recomputed chain detectable.

The hash chain alone is keyless: whoever can write the audit topic or the Splunk
index can change an event and recompute every later hash. A checkpoint is an audit
event whose ``data`` lists, for every chain its writer holds in one audit partition,
the chain's ``seq`` and head hash, signed with the gate's Ed25519 key
(:mod:`streams.keys`). ``escalation audit verify`` checks each signature and that
the trail holds exactly those hashes at those seqs: an edit is caught, however
much of the chain was recomputed after it, as long as one later checkpoint of
that chain is present (and kept outside Kafka and Splunk, a cut-off end too).

Where checkpoints live
----------------------
A writer (one worker process: :func:`writer_id`) writes one checkpoint per audit
partition it holds chains in, onto a chain of its own in that partition
(``checkpoint:WRITER:N``, :func:`streams.audit.chain.checkpoint_chain`), so every
checkpoint chain has one writer, and each audit partition carries an index of its
own chains' heads: the re-sync after an assignment reads a partition backwards only
as far as its newest checkpoints (:mod:`streams.audit.heads`).

What is signed
--------------
``data`` is ``{"schema_version", "writer", "partition", "chain", "seq", "prev_hash",
"at", "final", "heads": {CHAIN: {"seq", "hash"}}, "signature"}``: the heads, the
writer, the instant, and the checkpoint's own place in its chain (``chain``,
``seq``, ``prev_hash``, ``at`` repeat the body's), so a checkpoint cannot be moved,
dropped from the middle of its chain or re-dated without its signature failing.
``final`` marks the checkpoint of a writer giving its chains up (revoked, stopping).
An empty chain is listed with seq -1 and the genesis hash: the partition's index
then says the chain has no events, without reading the partition to its beginning.

Pure: the caller passes the signer, the heads and the instant.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, JsonValue, StrictBool, StrictInt

from streams.audit.chain import (
    GENESIS,
    ChainHead,
    audit_partition,
    checkpoint_chain,
    instant_json,
    seal_json,
)
from streams.errors import AuditChainError, InputError
from streams.models.audit import AuditBody, Sha256Hex
from streams.models.base import Count, Id, Instant, WireModel
from streams.models.codec import validate

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from streams.keys import PublicKeys, Refusal, Signer

ACTOR = "escalation-gate"


class SignedHead(WireModel):
    """A chain's head as a checkpoint lists it (seq -1: the chain has no event)."""

    seq: Annotated[StrictInt, Field(ge=-1, le=2**31)]
    hash: Sha256Hex


class CheckpointData(WireModel):
    """The signed ``data`` of a ``checkpoint`` audit event."""

    schema_version: Literal[1] = 1
    writer: Id
    partition: Count
    chain: Id
    seq: Count
    prev_hash: Sha256Hex
    at: Instant
    final: StrictBool = False
    heads: dict[Id, SignedHead]
    signature: dict[str, JsonValue]


def writer_id(host: str | None = None, pid: int | None = None, token: str | None = None) -> str:
    """A writer identity new for every process: ``HOST/PID/TOKEN`` (``:`` replaced)."""
    host = (host or socket.gethostname() or "host").replace(":", "-")
    pid = os.getpid() if pid is None else pid
    token = token or uuid.uuid4().hex[:12]
    return f"{host}/{pid}/{token}"


def checkpoint_payload(
    own: ChainHead,
    *,
    writer: str,
    partition: int,
    heads: Mapping[str, ChainHead],
    at: datetime,
    final: bool = False,
) -> dict[str, Any]:
    """The unsigned ``data`` of the checkpoint sealed next onto ``own``."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise AuditChainError(f"at: must be timezone-aware, got naive {at.isoformat()}")
    return {
        "schema_version": 1,
        "writer": writer,
        "partition": partition,
        "chain": own.chain,
        "seq": own.seq + 1,
        "prev_hash": own.hash,
        "at": instant_json(at),
        "final": final,
        "heads": {
            name: {"seq": head.seq, "hash": head.hash} for name, head in sorted(heads.items())
        },
    }


def seal_checkpoint(
    signer: Signer,
    own: ChainHead,
    *,
    writer: str,
    partition: int,
    heads: Mapping[str, ChainHead],
    at: datetime,
    host: str,
    index: str,
    final: bool = False,
) -> tuple[bytes, ChainHead]:
    """Sign the heads and seal the checkpoint onto ``own``: the record's bytes, its new head."""
    data = signer.sign(
        checkpoint_payload(own, writer=writer, partition=partition, heads=heads, at=at, final=final)
    )
    return seal_json(
        own,
        kind="checkpoint",
        event_id=f"{own.chain}:{own.seq + 1}",
        actor=ACTOR,
        at=at,
        data=data,
        fields={"writer": writer, "partition": str(partition), "key_id": signer.key_id},
        host=host,
        index=index,
    )


def heads_by_partition(heads: Mapping[str, ChainHead]) -> dict[int, dict[str, ChainHead]]:
    """Chain heads grouped by the audit partition their chains live in (for ``seal``)."""
    grouped: dict[int, dict[str, ChainHead]] = {}
    for name, head in heads.items():
        partition = audit_partition(name)
        if partition is None:
            raise AuditChainError(f"chain {name}: its name does not say its audit partition")
        grouped.setdefault(partition, {})[name] = head
    return grouped


@dataclass(slots=True)
class Checkpointer:
    """One writer's checkpoint chains, one per audit partition (no I/O: records out).

    The worker calls :meth:`seal` every ``ESCALATION_AUDIT_CHECKPOINT_SECONDS``, and
    with ``final=True`` when partitions are revoked and when it stops, and produces
    each record to its audit partition.
    """

    signer: Signer
    writer: str
    host: str
    index: str
    own: dict[int, ChainHead] = field(default_factory=dict)

    def seal(
        self,
        heads: Mapping[int, Mapping[str, ChainHead]],
        at: datetime,
        *,
        final: bool = False,
    ) -> list[tuple[int, str, bytes]]:
        """One checkpoint per audit partition in ``heads``: ``(partition, key, record)``."""
        out = []
        for partition, chains in sorted(heads.items()):
            own = self.own.get(partition) or ChainHead.empty(
                checkpoint_chain(self.writer, partition)
            )
            record, self.own[partition] = seal_checkpoint(
                self.signer,
                own,
                writer=self.writer,
                partition=partition,
                heads=chains,
                at=at,
                host=self.host,
                index=self.index,
                final=final,
            )
            out.append((partition, own.chain, record))
        return out


def parse_checkpoint(body: AuditBody) -> CheckpointData:
    """The checkpoint in a ``checkpoint`` event, its signed place checked against the body.

    ``AuditChainError`` naming the field when ``data`` is not a checkpoint, or when the
    place it signs (chain, seq, prev_hash, at) is not where the event stands.
    """
    try:
        data = validate(CheckpointData, body.data)
    except InputError as exc:
        raise AuditChainError(f"data.{exc}") from None
    for name in ("chain", "seq", "prev_hash", "at"):
        if getattr(data, name) != getattr(body, name):
            raise AuditChainError(
                f"data.{name}: the signed {name} is {getattr(data, name)!s}, the event's is "
                f"{getattr(body, name)!s}: the checkpoint was moved or re-sealed"
            )
    for chain, head in data.heads.items():
        if head.seq == -1 and head.hash != GENESIS:
            raise AuditChainError(f"data.heads.{chain}: an empty chain's hash must be GENESIS")
    return data


def check_signature(body: AuditBody, keys: PublicKeys) -> Refusal | None:
    """``None`` when the checkpoint's ``data`` carries a valid signature by one of ``keys``."""
    return keys.verify(body.data)


def key_of(body: AuditBody) -> str | None:
    """The key id a checkpoint claims (unverified), for messages."""
    signature = body.data.get("signature")
    if isinstance(signature, dict) and isinstance(signature.get("key_id"), str):
        return str(signature["key_id"])
    return None
