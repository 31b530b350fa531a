"""PURE: what a handler returns: every consequence of one input, as values.

The topology emits an ``Effects`` only once the handler has returned it whole, so a
handler that raises emits nothing (functional core, imperative shell: STYLE.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from streams.models import AuditKind
from streams.state.records import PendingEntry, StateUpdate

#: Counters of ``streams.metrics.Metrics`` a handler may count.
Counter = Literal[
    "decisions",
    "triggers",
    "dead_letters",
    "policy_rejected",
    "answers_refused",
    "answers_accepted",
    "oncall",
    "commands_refused",
    "inputs_refused",
    "repartitioned",
]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an input record came from: its topic, partition, offset, time and bytes."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds since the epoch, the instant the gate judges it at
    key: bytes | None = None
    value: bytes = b""

    @property
    def instant(self) -> dt.datetime:
        """``timestamp`` as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.timestamp, tz=dt.UTC)

    def update_id(self, table: str) -> str:
        """A deterministic id for a state update this input causes (folds once)."""
        return f"{self.topic}:{self.partition}:{self.offset}:{table}"


@dataclass(frozen=True, slots=True)
class Send:
    """A record for an output topic, by logical name (``decisions.execute``, ``oncall``...).

    Given as bytes (``encoded``), or as the JSON object (``body``) it is serialised
    from only when ``value`` is read: a decision's record is signed and serialised by
    the shell from ``body`` (``Emitter``), so serialising it here too was a 5.5 KB
    ``orjson.dumps`` per proposal thrown away.
    """

    topic: str
    encoded: bytes | None
    key: bytes | None = None
    partition: int | None = None  # None: by key (the producer's murmur2 partitioner)
    body: Mapping[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.encoded is None and self.body is None:
            raise ValueError(f"a record for {self.topic} needs encoded bytes or a body")

    @property
    def value(self) -> bytes:
        """The record's bytes: ``encoded``, else ``body`` as JSON."""
        if self.encoded is not None:
            return self.encoded
        return orjson.dumps(self.body)


@dataclass(frozen=True, slots=True)
class AuditDraft:
    """An audit event before it is sealed onto its chain (the shell holds the heads)."""

    kind: AuditKind
    event_id: str
    at: dt.datetime
    actor: str
    data: dict[str, Any]
    fields: dict[str, str]
    proposal_id: str | None = None
    decision_id: str | None = None


@dataclass(frozen=True, slots=True)
class Count:
    """One increment of a labelled counter."""

    metric: Counter
    labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Effects:
    """Every consequence of one input.

    ``entries`` are pending entries (already one version higher) that the worker
    holds and appends to the ``lifecycle`` log, on the partition of the input.
    """

    sends: tuple[Send, ...] = ()
    audits: tuple[AuditDraft, ...] = ()
    state: tuple[StateUpdate, ...] = ()
    entries: tuple[PendingEntry, ...] = ()
    metrics: tuple[Count, ...] = ()

    def __add__(self, other: Effects) -> Effects:
        return Effects(
            self.sends + other.sends,
            self.audits + other.audits,
            self.state + other.state,
            self.entries + other.entries,
            self.metrics + other.metrics,
        )


NOTHING = Effects()


class StateView(Protocol):
    """Read-only access to the folded state tables (the worker's mirror)."""

    def get(self, table: str, key: str) -> Any:
        """The value of one key, or ``None``."""
        ...

    def values(self, table: str) -> list[Any]:
        """Every value of a table."""
        ...
