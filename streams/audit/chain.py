# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The audit hash chain: seal an event onto the head of its chain.

Pure: no Kafka, no clock, no files. The caller passes the head it keeps and the
instant of the event, and gets back the sealed event and the new head.

How the chain is kept
---------------------
* **One chain per writer.** A chain id names what it seals: ``proposals:3`` holds the
  events derived from partition 3 of ``proposals`` (:func:`chain_for`); only the
  worker the consumer group gives that topic-partition appends to it. Checkpoints go
  on a chain of their writer's own (:func:`checkpoint_chain`). A chain's events are
  produced to audit partition N (the number its name ends with), keyed by the chain
  id, so a chain lives in one audit partition, in order; several chains share one.
  (Earlier versions named chains ``p3`` by partition number alone; those still verify.)
* **The head is state.** The worker keeps each chain's :class:`ChainHead` in a
  changelogged Faust table (``to_dict``/``from_dict``) and passes it to :func:`seal`.
* **Re-sync on assignment.** A table can lag the audit topic (a crash between
  producing an audit event and writing the head's changelog). So when a worker is
  assigned a partition, it reads the last record of that chain from the audit topic
  and takes the head from it (:meth:`ChainHead.of`) before sealing anything: the
  audit topic, not the table, is the truth about where a chain ends.
* **At-least-once.** ``event_id`` is deterministic, derived from the input (for
  example ``decision_id`` + ``kind``). An input redelivered after a crash is sealed
  again with the *same* ``event_id`` at the *next* ``seq``: the chain stays linked,
  and ``verify`` reports the repeat as a ``redelivered`` note, not an error.
  Consumers de-duplicate on ``event_id``. Two records with the same chain and
  ``seq`` can only come from a copied record or a second writer, and ``verify``
  reports them as a ``duplicate`` error.

The hash
--------
``event.hash`` is the sha256 (hex) of the canonical JSON (sorted keys, no
whitespace) of the event *body* (:class:`AuditBody` in its JSON form) with
``hash`` left out. So it covers every field of the body: ``at``, ``kind``,
``chain``, ``seq``, ``prev_hash``, ``event_id``, ``actor``, the ids and ``data``.
Editing any of them, or moving an event to another place in the chain, breaks the
chain.

The envelope around the body (``time``, ``host``, ``source``, ``sourcetype``,
``index``, ``fields``) is *not* covered. It is derived from the body for Splunk
(``time`` is ``at``; ``fields`` are indexed copies of what people search by), and
Splunk Connect for Kafka with ``splunk.hec.json.event.formatted=true`` turns it
into metadata and keeps only the body as ``_raw``. Hashing the body alone is what
lets an export of ``_raw`` from Splunk be verified just like the topic.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from streams.errors import AuditChainError
from streams.models.audit import AuditBody, AuditEvent
from streams.models.codec import canonical_json

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from pydantic import JsonValue

    from streams.models.audit import AuditKind

#: ``prev_hash`` of the first event of every chain.
GENESIS = "0" * 64

DEFAULT_SOURCE = "escalation-gate"
DEFAULT_SOURCETYPE = "escalation:audit"

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

#: Chains of signed checkpoints: ``checkpoint:WRITER:PARTITION`` (streams/audit/checkpoint.py).
CHECKPOINT_CHAIN_PREFIX = "checkpoint:"
_LEGACY_CHAIN = re.compile(r"^p(\d+)$")


def chain_for(topic: str, partition: int) -> str:
    """The chain that seals the events derived from one input partition: ``proposals:3``.

    ``topic`` is the logical input topic (without the prefix). A Kafka consumer group
    gives each topic-partition to one member at a time, so a chain named by what it
    seals has one writer by construction, whatever the assignor does with the other
    topics' partitions of the same number. Its events go to audit partition
    ``partition``, which several chains (one per input topic) share.
    """
    if not topic or ":" in topic:
        raise AuditChainError(f"topic: a logical topic name without ':', got {topic!r}")
    if isinstance(partition, bool) or not isinstance(partition, int) or partition < 0:
        raise AuditChainError(f"partition: must be an int >= 0, got {partition!r}")
    return f"{topic}:{partition}"


def checkpoint_chain(writer: str, partition: int) -> str:
    """The chain of one writer's checkpoints in one audit partition.

    A writer id is new for every worker process, so this chain has one writer too.
    """
    if not writer or ":" in writer:
        raise AuditChainError(f"writer: an id without ':', got {writer!r}")
    return f"{CHECKPOINT_CHAIN_PREFIX}{writer}:{partition}"


def is_checkpoint_chain(chain: str) -> bool:
    """True for a chain of signed checkpoints."""
    return chain.startswith(CHECKPOINT_CHAIN_PREFIX)


def audit_partition(chain: str) -> int | None:
    """The audit partition a chain lives in: the number its name ends with.

    ``proposals:3`` and ``checkpoint:W:3`` live in partition 3; so does ``p3``, a chain
    of earlier versions (named by partition number alone). ``None`` for other names.
    """
    legacy = _LEGACY_CHAIN.match(chain)
    if legacy:
        return int(legacy.group(1))
    _, sep, number = chain.rpartition(":")
    return int(number) if sep and number.isdigit() else None


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where a chain ends: the ``seq`` and ``hash`` of its last event.

    The head of an empty chain has ``seq`` -1 and ``hash`` :data:`GENESIS`, so the
    first event sealed onto it gets ``seq`` 0 and ``prev_hash`` GENESIS.
    """

    chain: str
    seq: int = -1
    hash: str = GENESIS

    def __post_init__(self) -> None:
        if not self.chain:
            msg = "chain: must be a non-empty id"
            raise AuditChainError(msg)
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < -1:
            raise AuditChainError(f"chain {self.chain}: seq must be an int >= -1, got {self.seq!r}")
        if not isinstance(self.hash, str) or not _SHA256_HEX.match(self.hash):
            raise AuditChainError(
                f"chain {self.chain}: hash must be 64 lowercase hex digits, got {self.hash!r}"
            )
        if self.seq == -1 and self.hash != GENESIS:
            raise AuditChainError(f"chain {self.chain}: an empty chain's hash must be GENESIS")

    @classmethod
    def empty(cls, chain: str) -> ChainHead:
        """The head of a chain with no events yet."""
        return cls(chain=chain)

    @classmethod
    def of(cls, event: AuditEvent | AuditBody) -> ChainHead:
        """The head of a chain whose last event is ``event`` (re-sync from the topic)."""
        body = event.event if isinstance(event, AuditEvent) else event
        return cls(chain=body.chain, seq=body.seq, hash=body.hash)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict, for a Faust table value."""
        return {"chain": self.chain, "seq": self.seq, "hash": self.hash}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> ChainHead:
        """The inverse of :meth:`to_dict`; ``AuditChainError`` when it is not one."""
        try:
            return cls(chain=value["chain"], seq=value["seq"], hash=value["hash"])
        except (KeyError, TypeError) as exc:
            raise AuditChainError(f"not a chain head: {value!r}") from exc


def instant_json(at: datetime) -> str:
    """An aware datetime as pydantic's JSON mode writes it: ISO 8601, ``Z`` for UTC."""
    text = at.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def body_hash(body: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of an event body dict, its ``hash`` left out.

    ``body`` is the JSON form of an :class:`AuditBody` (``model_dump(mode="json")``),
    with or without ``hash``.
    """
    return hashlib.sha256(
        canonical_json({k: v for k, v in body.items() if k != "hash"})
    ).hexdigest()


def event_hash(record: Mapping[str, Any]) -> str:
    """The hash of a record: of its ``event`` body for an envelope, else of the body itself.

    ``record`` is the JSON form of an :class:`AuditEvent` (an HEC envelope, from the
    topic) or of an :class:`AuditBody` (a bare body, as Splunk keeps it in
    ``_raw``). Only the body is hashed: the envelope's metadata is not covered.
    """
    if "event" not in record:
        return body_hash(record)
    body = record["event"]
    if not isinstance(body, dict):
        msg = "event: expected an object"
        raise AuditChainError(msg)
    return body_hash(body)


def seal(
    head: ChainHead,
    *,
    kind: AuditKind,
    event_id: str,
    actor: str,
    at: datetime,
    proposal_id: str | None = None,
    decision_id: str | None = None,
    data: Mapping[str, JsonValue],
    fields: Mapping[str, str],
    host: str,
    source: str = DEFAULT_SOURCE,
    sourcetype: str = DEFAULT_SOURCETYPE,
    index: str,
) -> tuple[AuditEvent, ChainHead]:
    """Seal one audit event onto ``head``: returns the event and the chain's new head.

    ``fields`` become the HEC indexed fields (flat strings people search by, such
    as ``level``, ``service``, ``ai_system``, ``pattern``); ``kind`` and ``chain``,
    and ``proposal_id`` and ``decision_id`` when given, are always set from the
    arguments. The envelope (``time`` from ``at``, ``host``, ``source``,
    ``sourcetype``, ``index``, ``fields``) is derived for Splunk and is not covered
    by the hash; the body is. The same arguments always give the same event, byte
    for byte.
    """
    record, new_head = seal_json(
        head,
        kind=kind,
        event_id=event_id,
        actor=actor,
        at=at,
        proposal_id=proposal_id,
        decision_id=decision_id,
        data=dict(data),
        fields=fields,
        host=host,
        source=source,
        sourcetype=sourcetype,
        index=index,
    )
    # The validating path: what seal_json wrote must be a valid AuditEvent.
    try:
        return AuditEvent.model_validate_json(record), new_head
    except ValueError as exc:
        raise AuditChainError(f"cannot seal a {kind} event: {exc}") from exc


def seal_json(
    head: ChainHead,
    *,
    kind: AuditKind,
    event_id: str,
    actor: str,
    at: datetime,
    proposal_id: str | None = None,
    decision_id: str | None = None,
    data: dict[str, Any],
    fields: Mapping[str, str],
    host: str,
    source: str = DEFAULT_SOURCE,
    sourcetype: str = DEFAULT_SOURCETYPE,
    index: str,
) -> tuple[bytes, ChainHead]:
    """:func:`seal` for the worker's hot path: the record's JSON bytes, and the new head.

    ``data`` must already be in JSON form (e.g. ``model_dump(mode="json")``): it is
    neither validated nor copied, which is what makes this several times cheaper than
    building the models. The bytes decode to the same :class:`AuditEvent` that
    :func:`seal` returns for the same arguments (a unit test holds them equal), so
    ``escalation audit verify`` checks both alike.
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise AuditChainError(f"at: must be timezone-aware, got naive {at.isoformat()}")
    indexed = {**fields, "kind": kind, "chain": head.chain}
    if proposal_id is not None:
        indexed["proposal_id"] = proposal_id
    if decision_id is not None:
        indexed["decision_id"] = decision_id
    # The body as AuditBody.model_dump(mode="json") writes it (same keys, same order,
    # the instant as pydantic writes it), without building the model.
    body: dict[str, Any] = {
        "schema_version": 1,
        "kind": kind,
        "event_id": event_id,
        "chain": head.chain,
        "seq": head.seq + 1,
        "prev_hash": head.hash,
        "hash": GENESIS,
        "at": instant_json(at),
        "proposal_id": proposal_id,
        "decision_id": decision_id,
        "actor": actor,
        "data": data,
    }
    digest = body_hash(body)
    body["hash"] = digest
    envelope = {
        "time": at.timestamp(),
        "host": host,
        "source": source,
        "sourcetype": sourcetype,
        "index": index,
        "event": body,
        "fields": indexed,
    }
    return orjson.dumps(envelope), ChainHead(chain=head.chain, seq=head.seq + 1, hash=digest)
