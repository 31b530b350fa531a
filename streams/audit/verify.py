# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Verify audit hash chains over an export or a topic read: report each tampering as what it is.

Pure: :func:`verify` takes an iterable of records (raw JSON lines, decoded dicts,
:class:`AuditEvent` or :class:`AuditBody` values) in the order they were stored
and returns a :class:`VerifyReport`. It streams: per chain it keeps a bounded
window of recent events, the seqs still missing and at most one record whose place
is undecided, so an export of millions of events needs little memory.

The hash covers the event body only (see :mod:`streams.audit.chain`), so each
record may be, mixed freely:

* an HEC envelope, as on the audit topic (``{"time": ..., "event": {...}}``);
* a bare body, as Splunk keeps it in ``_raw`` (``{"kind": ..., "chain": ...,
  "seq": ..., "prev_hash": ..., "hash": ..., ...}``);
* a Splunk search result holding the body (or the envelope) as the ``_raw``
  string: ``{"_raw": "..."}``, or a line of a search export in JSON
  (``{"preview": false, "offset": 0, "result": {"_raw": "...", ...}}``). Export
  lines that carry no final result (``{"preview": false, "lastrow": true}``, or
  ``"preview": true`` interim results) are skipped like blank lines.

What is reported, one finding per damaged record where one explains it:

* ``edit``: the event's hash does not recompute; the event was changed after it
  was sealed. Its links are not reported as well.
* ``broken_link``: ``prev_hash`` is not the hash of the previous event (an event
  was changed and re-hashed, or an event was forged into the chain).
* ``gap``: events are missing inside a chain (reported once per run of missing seqs).
* ``reorder``: an event stands out of place (a swapped pair is one ``reorder``).
* ``duplicate``: a chain and seq appear twice (a copied record, or two writers).
* ``truncation``: a chain does not start at seq 0, ends before the seq the caller
  expects (``expect_heads``), or the last line of the input is an incomplete record.
* ``malformed``: a record that is not an audit event.
* ``redelivered`` (a note, not an error): an ``event_id`` sealed again at a later
  seq, which is how the gate records an input redelivered after a crash.
* ``metadata`` (a note, not an error): an envelope whose ``time`` is not the body's
  ``at``, or whose ``fields`` ``kind``, ``chain``, ``proposal_id`` or
  ``decision_id`` differ from the body's. The envelope is not covered by the hash;
  its metadata is a convenience copy for Splunk, and this one is wrong there.

Signed checkpoints (:mod:`streams.audit.checkpoint`) add:

* ``bad_checkpoint``: a checkpoint whose signature fails (bad signature, a key id
  not among the public keys given, unsigned, malformed), or whose signed place is
  not where it stands. Its heads are not used.
* ``checkpoint_mismatch``: the trail's event at a seq a checkpoint signed has
  another hash, or is missing inside the chain: the chain was changed (and
  recomputed) after the checkpoint.
* ``truncation`` also when a chain ends before a seq a checkpoint signed, and when
  the trail does not reach a checkpoint kept outside it (``checkpoints``).
* ``misplaced`` (reading a topic, ``partition_of``): a record of a chain found in
  another audit partition than the one its name ends with.
* ``checkpoint_gap`` (with ``max_gap``): events that no signed checkpoint covered
  within ``max_gap`` seconds (an edit with a recomputation there would go unseen).
* ``unverified`` (a note): a checkpoint whose signature was not checked because no
  public key was given.

To match checkpoints with events in any order (an export sorted by chain), the
verifier keeps 16 bytes of every event's hash (and, with ``max_gap``, 8 bytes of
its instant) per event: 16-24 MB per million events.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from streams.audit.chain import (
    GENESIS,
    ChainHead,
    audit_partition,
    body_hash,
    instant_json,
    is_checkpoint_chain,
)
from streams.audit.checkpoint import check_signature, key_of, parse_checkpoint
from streams.errors import AuditChainError, InputError
from streams.models.audit import AuditBody, AuditEvent
from streams.models.codec import validate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from streams.keys import PublicKeys

FindingKind = Literal[
    "misplaced",
    "bad_checkpoint",
    "checkpoint_mismatch",
    "checkpoint_gap",
    "unverified",
    "edit",
    "gap",
    "reorder",
    "duplicate",
    "broken_link",
    "truncation",
    "malformed",
    "redelivered",
    "metadata",
]

ERROR_KINDS: frozenset[str] = frozenset(
    {
        "edit",
        "gap",
        "reorder",
        "duplicate",
        "broken_link",
        "truncation",
        "malformed",
        "bad_checkpoint",
        "checkpoint_mismatch",
        "checkpoint_gap",
        "misplaced",
    }
)
NOTE_KINDS: frozenset[str] = frozenset({"redelivered", "metadata", "unverified"})

#: Recent events remembered per chain, for link checks of out-of-place events and
#: for spotting redeliveries. Tampering farther apart than this is still reported,
#: with less detail in the message.
WINDOW = 4096

Record = bytes | str | dict[str, Any] | AuditEvent | AuditBody

#: Keys of an HEC envelope that a bare body never has.
_ENVELOPE_KEYS = frozenset({"event", "time", "host", "source", "sourcetype", "index", "fields"})
#: Keys of a line of a Splunk search export in JSON (``search/jobs/export``,
#: ``splunk search ... -output json``) around its ``result``.
_SPLUNK_EXPORT_KEYS = frozenset({"result", "preview", "offset", "lastrow", "messages"})
#: The envelope's ``time`` may differ from the body's ``at`` by less than this (s).
_TIME_SLACK = 0.001


class _Skip:
    """A Splunk export line that carries no final result."""


_SKIP = _Skip()


def _unwrap(obj: Any) -> Any:
    """The audit record in one decoded input value, or ``_SKIP``.

    An envelope or a bare body is returned as it is; a Splunk search result gives
    the decoded ``_raw`` it holds. ``InputError`` when a Splunk result holds no
    usable ``_raw``.
    """
    if not isinstance(obj, dict) or "event" in obj:
        return obj
    if "_raw" not in obj and _SPLUNK_EXPORT_KEYS & obj.keys() and not _ENVELOPE_KEYS & obj.keys():
        if obj.get("preview") is True or "result" not in obj:
            return _SKIP  # an interim preview, the end marker or messages
        obj = obj["result"]
        if not isinstance(obj, dict):
            raise InputError("result", "a Splunk search result must be an object", kind="schema")
        if "_raw" not in obj:
            raise InputError(
                "result",
                "a Splunk search result without _raw: export the events' _raw "
                "(for example end the search with | fields _raw)",
                kind="schema",
            )
    if "_raw" not in obj:
        return obj
    raw = obj["_raw"]
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        raise InputError(
            "_raw", f"expected the event's JSON text, got {type(raw).__name__}", kind="schema"
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            "_raw",
            f"not JSON ({exc}): was the event cut by Splunk (TRUNCATE of its sourcetype)?",
            kind="not_json",
        ) from None


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or note) found, at a 0-based position of the input."""

    kind: FindingKind
    chain: str | None
    position: int
    seq: int | None
    message: str

    @property
    def is_error(self) -> bool:
        return self.kind in ERROR_KINDS

    def line(self) -> str:
        """``position 17 chain p0 seq 16: edit: ...``"""
        chain = self.chain if self.chain is not None else "?"
        seq = self.seq if self.seq is not None else "?"
        return f"position {self.position} chain {chain} seq {seq}: {self.kind}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "error": self.is_error,
            "chain": self.chain,
            "position": self.position,
            "seq": self.seq,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class ChainSummary:
    """What was read of one chain: how many events and its highest seq and hash."""

    chain: str
    events: int
    head: ChainHead


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The result of :func:`verify`: findings in input order, and a summary per chain."""

    findings: tuple[Finding, ...]
    records: int
    chains: Mapping[str, ChainSummary]

    @property
    def ok(self) -> bool:
        return not any(f.is_error for f in self.findings)

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.is_error)

    @property
    def notes(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.is_error)

    @property
    def events(self) -> int:
        """Audit events read (records that parsed as events), over all chains."""
        return sum(c.events for c in self.chains.values())

    checkpoints: int = 0
    unverified: int = 0

    @property
    def heads(self) -> dict[str, ChainHead]:
        return {name: c.head for name, c in self.chains.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "unverified_checkpoints": self.unverified,
            "chains": {
                name: {"events": c.events, "head": c.head.to_dict()}
                for name, c in sorted(self.chains.items())
            },
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(slots=True)
class _Seen:
    seq: int
    hash: str
    prev_hash: str
    position: int
    edited: bool


@dataclass(slots=True)
class _Hole:
    lo: int
    hi: int
    position: int  # of the event after which the hole was noticed
    seq: int


_PREFIX = 16  # bytes of each event's hash kept to match checkpoints
_SPARSE = 1 << 20  # a seq this far beyond the dense index goes to a dict (a forged seq)


class _Hashes:
    """16 bytes of the hash of every intact event of a chain, by seq."""

    __slots__ = ("dense", "sparse")

    def __init__(self) -> None:
        self.dense = bytearray()
        self.sparse: dict[int, bytes] = {}

    def put(self, seq: int, digest: str) -> None:
        raw = bytes.fromhex(digest[: 2 * _PREFIX])
        slots = len(self.dense) // _PREFIX
        if seq < slots:
            if not any(self.dense[seq * _PREFIX : (seq + 1) * _PREFIX]):
                self.dense[seq * _PREFIX : (seq + 1) * _PREFIX] = raw
        elif seq < slots + _SPARSE:
            self.dense.extend(bytes(_PREFIX * (seq - slots)))
            self.dense.extend(raw)
        else:
            self.sparse.setdefault(seq, raw)

    def get(self, seq: int) -> bytes | None:
        if 0 <= seq < len(self.dense) // _PREFIX:
            raw = bytes(self.dense[seq * _PREFIX : (seq + 1) * _PREFIX])
            return raw if any(raw) else None
        return self.sparse.get(seq)


@dataclass(slots=True)
class _Claim:
    """A checkpoint's signed head of one chain, still to be matched with the trail."""

    chain: str
    seq: int
    hash: str
    position: int
    what: str  # names the checkpoint in messages


@dataclass(slots=True)
class _Chain:
    name: str
    # Next seq in order: every seq below it was seen or is in ``holes``.
    expected: int = 0
    # An event that jumped ahead of ``expected``, kept until the chain's next event
    # shows whether events are missing before it (a gap) or it came early (reorder).
    pending: _Seen | None = None
    # Seqs above ``expected`` that arrived early and were accepted out of place.
    ahead: set[int] = field(default_factory=set)
    holes: list[_Hole] = field(default_factory=list)
    recent: OrderedDict[int, _Seen] = field(default_factory=OrderedDict)
    by_hash: dict[str, int] = field(default_factory=dict)
    ids: OrderedDict[str, tuple[int, int]] = field(default_factory=OrderedDict)
    # A different event at a seq already taken, with the index of its finding: if
    # the chain goes on from it, the first one was the stray.
    rivals: OrderedDict[int, tuple[_Seen, int]] = field(default_factory=OrderedDict)
    events: int = 0
    head: ChainHead | None = None
    last_position: int = -1
    hashes: _Hashes = field(default_factory=_Hashes)
    # With max_gap: each event's instant by seq (NaN where none) and, per signed
    # seq, the earliest checkpoint instant that signed it.
    instants: array[float] = field(default_factory=lambda: array("d"))
    covered: dict[int, float] = field(default_factory=dict)
    # The highest seq a checkpoint signed that the trail matched.
    matched: int = -1

    def remember(self, seen: _Seen, event_id: str) -> None:
        self.recent[seen.seq] = seen
        self.by_hash[seen.hash] = seen.seq
        if len(self.recent) > WINDOW:
            _, old = self.recent.popitem(last=False)
            if self.by_hash.get(old.hash) == old.seq:
                del self.by_hash[old.hash]
        if event_id not in self.ids:
            self.ids[event_id] = (seen.seq, seen.position)
            if len(self.ids) > WINDOW:
                self.ids.popitem(last=False)
        if self.head is None or seen.seq > self.head.seq:
            self.head = ChainHead(chain=self.name, seq=seen.seq, hash=seen.hash)

    def advance(self) -> None:
        while self.expected in self.ahead:
            self.ahead.discard(self.expected)
            self.expected += 1

    def in_hole(self, seq: int) -> _Hole | None:
        for hole in self.holes:
            if hole.lo <= seq <= hole.hi:
                return hole
        return None

    def fill(self, hole: _Hole, seq: int) -> None:
        index = self.holes.index(hole)
        pieces = [
            _Hole(lo, hi, hole.position, hole.seq)
            for lo, hi in ((hole.lo, seq - 1), (seq + 1, hole.hi))
            if lo <= hi
        ]
        self.holes[index : index + 1] = pieces


def _span(lo: int, hi: int) -> str:
    return f"seq {lo}" if lo == hi else f"seqs {lo}..{hi} ({hi - lo + 1} events)"


class _Verifier:
    def __init__(
        self,
        keys: PublicKeys | None = None,
        max_gap: float | None = None,
        partition_of: Callable[[int], int | None] | None = None,
    ) -> None:
        self.partition_of = partition_of
        self.findings: list[Finding] = []
        self.chains: dict[str, _Chain] = {}
        self.records = 0
        self.keys = keys
        self.max_gap = max_gap
        self.claims: list[_Claim] = []
        self.settle_at = 4096
        self.checkpoints = 0
        self.unverified = 0
        self.latest = -math.inf  # the latest instant in the trail (events, checkpoints)

    def add(
        self, kind: FindingKind, chain: str | None, position: int, seq: int | None, message: str
    ) -> None:
        self.findings.append(Finding(kind, chain, position, seq, message))

    # -- input -----------------------------------------------------------------

    def run(self, records: Iterable[Record]) -> int:
        """Feed every record; returns the position after the last one."""
        unparsed: tuple[int, str, bool] | None = None  # the latest line that is not JSON
        position = -1
        for position, record in enumerate(records):
            if isinstance(record, AuditEvent | AuditBody):
                obj: Any = record
            elif isinstance(record, dict):
                obj = record
            else:
                text = record.strip()
                if not text:
                    continue
                try:
                    obj = orjson.loads(text)
                except orjson.JSONDecodeError as exc:
                    if unparsed is not None:
                        self.add("malformed", None, unparsed[0], None, unparsed[1])
                    # Ran out of input mid-record (orjson counts pos in characters).
                    cut = exc.msg.startswith("unexpected end of data")
                    unparsed = (position, f"not JSON: {exc}", cut)
                    self.records += 1
                    continue
            try:
                obj = _unwrap(obj)
            except InputError as exc:
                obj = exc
            if obj is _SKIP:
                continue
            if unparsed is not None:
                self.add("malformed", None, unparsed[0], None, unparsed[1])
                unparsed = None
            self.records += 1
            self.record(position, obj)
        if unparsed is not None:
            at, message, cut = unparsed
            if cut:
                self.add(
                    "truncation",
                    None,
                    at,
                    None,
                    f"the last record is incomplete ({message}): the export was cut short",
                )
            else:
                self.add("malformed", None, at, None, message)
        return position + 1

    def record(self, position: int, obj: Any) -> None:
        if isinstance(obj, InputError):
            self.add("malformed", None, position, None, f"not an audit event: {obj}")
            return
        envelope: AuditEvent | None = None
        if isinstance(obj, AuditEvent):
            envelope = obj
        elif isinstance(obj, AuditBody):
            body = obj
        else:
            is_envelope = isinstance(obj, dict) and bool(_ENVELOPE_KEYS & obj.keys())
            try:
                if is_envelope:
                    envelope = validate(AuditEvent, obj)
                else:
                    body = validate(AuditBody, obj)
            except InputError as exc:
                self.malformed(position, obj, exc, envelope=is_envelope)
                return
        if envelope is not None:
            body = envelope.event
        edited = body_hash(body.model_dump(mode="json")) != body.hash
        if envelope is not None and not edited:
            self.check_metadata(position, envelope)
        self.place(position, body, edited=edited)
        if self.partition_of is not None:
            self.check_partition(position, body)
        if not edited:
            self.latest = max(self.latest, body.at.timestamp())
            if body.kind == "checkpoint":
                self.checkpoint(position, body)

    def check_partition(self, position: int, body: AuditBody) -> None:
        """On the topic, a chain lives in the audit partition its name ends with."""
        assert self.partition_of is not None  # noqa: S101 - callers check
        stored = self.partition_of(position)
        home = audit_partition(body.chain)
        if stored is not None and home is not None and stored != home:
            self.add(
                "misplaced",
                body.chain,
                position,
                body.seq,
                f"chain {body.chain} lives in audit partition {home}, this record is in "
                f"partition {stored}: moved there, or not written by the gate (the re-sync "
                "of the chain would not see it)",
            )

    def malformed(self, position: int, obj: Any, exc: InputError, *, envelope: bool) -> None:
        body = obj.get("event") if envelope and isinstance(obj, dict) else obj
        chain = seq = None
        if isinstance(body, dict):
            chain = body.get("chain") if isinstance(body.get("chain"), str) else None
            seq = body.get("seq") if type(body.get("seq")) is int else None
        what = "an HEC record" if envelope else "an event body"
        self.add("malformed", chain, position, seq, f"not an audit event ({what}): {exc}")

    def check_metadata(self, position: int, envelope: AuditEvent) -> None:
        """A note when the envelope's Splunk metadata is not what the body says."""
        body = envelope.event
        wrong = []
        if abs(envelope.time - body.at.timestamp()) >= _TIME_SLACK:
            wrong.append("time is not the body's at")
        expected = {
            "kind": body.kind,
            "chain": body.chain,
            "proposal_id": body.proposal_id,
            "decision_id": body.decision_id,
        }
        for key, value in expected.items():
            if value is not None and envelope.fields.get(key) != value:
                wrong.append(f"fields.{key} is not the body's {key}")
        if wrong:
            self.add(
                "metadata",
                body.chain,
                position,
                body.seq,
                f"{', '.join(wrong)}: the envelope is not covered by the hash and Splunk "
                "indexes this event with wrong metadata; its body verifies",
            )

    # -- placing an event in its chain ----------------------------------------

    def attribute(self, body: AuditBody, *, edited: bool) -> tuple[str, int]:
        """Chain and seq of an event; an edited event is placed by what it links to."""
        if not edited:
            return body.chain, body.seq
        # The edit may have changed chain or seq themselves: trust the link instead
        # when it points at an event we know, so one edit is one finding.
        if body.prev_hash == GENESIS:
            return body.chain, 0
        own = self.chains.get(body.chain)
        if own is not None and body.prev_hash in own.by_hash:
            return body.chain, own.by_hash[body.prev_hash] + 1
        for name, chain in self.chains.items():
            if body.prev_hash in chain.by_hash:
                return name, chain.by_hash[body.prev_hash] + 1
        return body.chain, body.seq

    def place(self, position: int, body: AuditBody, *, edited: bool) -> None:
        name, seq = self.attribute(body, edited=edited)
        chain = self.chains.get(name)
        if chain is None:
            chain = self.chains[name] = _Chain(name)
        chain.events += 1
        chain.last_position = position
        if edited:
            self.add(
                "edit",
                name,
                position,
                seq,
                f"hash does not recompute: the event was changed after it was sealed "
                f"(kind {body.kind}, event_id {body.event_id})",
            )
        seen = _Seen(seq, body.hash, body.prev_hash, position, edited)
        if not edited:
            chain.hashes.put(seq, body.hash)
            if self.max_gap is not None and not is_checkpoint_chain(name):
                _put_instant(chain.instants, seq, body.at.timestamp())

        if chain.pending is not None:
            self.settle(chain, next_seq=seq)

        if seq == chain.expected:
            chain.expected += 1
            chain.advance()
        elif seq > chain.expected:
            # Above ``expected``, only events that came early were seen before.
            if seq in chain.ahead:
                self.duplicate(chain, position, seq, seen)
                return
            chain.pending = seen
        else:
            hole = chain.in_hole(seq)
            if hole is None:
                self.duplicate(chain, position, seq, seen)
                return
            chain.fill(hole, seq)
            if not edited:
                last = chain.head.seq if chain.head is not None else seq
                self.add(
                    "reorder",
                    name,
                    position,
                    seq,
                    f"out of place: arrives after seq {last}, where it was missing "
                    f"(noticed at position {hole.position})",
                )
        if not edited:
            self.check_links(chain, seen)
            first = chain.ids.get(body.event_id)
            if first is not None:
                self.add(
                    "redelivered",
                    name,
                    position,
                    seq,
                    f"event_id {body.event_id} was sealed before as seq {first[0]} "
                    f"(position {first[1]}): an input redelivered after a restart",
                )
        chain.remember(seen, body.event_id)

    def settle(self, chain: _Chain, *, next_seq: int | None) -> None:
        """Decide the pending event: it came early, or events are missing before it."""
        pending = chain.pending
        assert pending is not None  # noqa: S101 - callers check
        chain.pending = None
        if next_seq == chain.expected:
            # The chain carries on from where it was: the pending event came early.
            chain.ahead.add(pending.seq)
            if not pending.edited:
                self.add(
                    "reorder",
                    chain.name,
                    pending.position,
                    pending.seq,
                    f"out of place: arrives before {_span(chain.expected, pending.seq - 1)}",
                )
            return
        lo = chain.expected
        for skipped in sorted(s for s in chain.ahead if s < pending.seq):
            if lo <= skipped - 1:
                chain.holes.append(_Hole(lo, skipped - 1, pending.position, pending.seq))
            chain.ahead.discard(skipped)
            lo = skipped + 1
        if lo <= pending.seq - 1:
            chain.holes.append(_Hole(lo, pending.seq - 1, pending.position, pending.seq))
        chain.expected = pending.seq + 1
        chain.advance()

    def duplicate(self, chain: _Chain, position: int, seq: int, seen: _Seen) -> None:
        if seen.edited:
            return  # reported as an edit already
        first = chain.recent.get(seq)
        if first is None:
            message = f"seq {seq} appears again (its first record is too far back to compare)"
        elif first.hash == seen.hash:
            message = f"a copy of the event at position {first.position}"
        else:
            message = (
                f"seq {seq} is already taken by a different event at position "
                f"{first.position}: two writers on one chain, or a forged event"
            )
            chain.rivals[seq] = (seen, len(self.findings))
            if len(chain.rivals) > WINDOW:
                chain.rivals.popitem(last=False)
        self.add("duplicate", chain.name, position, seq, message)

    def continues_from_rival(self, chain: _Chain, seen: _Seen, before: _Seen) -> bool:
        """The chain goes on from the second event at a seq: the first was the stray."""
        rival = chain.rivals.pop(before.seq, None)
        if rival is None or rival[0].hash != seen.prev_hash:
            return False
        other, index = rival
        chain.recent[before.seq] = other
        chain.by_hash[other.hash] = other.seq
        self.findings[index] = Finding(
            "duplicate",
            chain.name,
            before.position,
            before.seq,
            f"seq {before.seq} is taken twice and the chain continues from the event at "
            f"position {other.position}: this one is forged or stray",
        )
        return True

    def check_links(self, chain: _Chain, seen: _Seen) -> None:
        if seen.seq == 0:
            if seen.prev_hash != GENESIS:
                self.add(
                    "broken_link",
                    chain.name,
                    seen.position,
                    0,
                    "the first event of a chain must have the genesis prev_hash (64 zeros)",
                )
        else:
            before = chain.recent.get(seen.seq - 1)
            if (
                before is not None
                and not before.edited
                and seen.prev_hash != before.hash
                and not self.continues_from_rival(chain, seen, before)
            ):
                self.add(
                    "broken_link",
                    chain.name,
                    seen.position,
                    seen.seq,
                    f"prev_hash is not the hash of seq {before.seq} (position "
                    f"{before.position}): that event was changed and re-hashed, or this "
                    "one does not belong here",
                )
                return
        after = chain.recent.get(seen.seq + 1)
        if after is not None and not after.edited and after.prev_hash != seen.hash:
            self.add(
                "broken_link",
                chain.name,
                seen.position,
                seen.seq,
                f"seq {after.seq} (position {after.position}) does not link to this event",
            )

    # -- checkpoints ------------------------------------------------------------

    def checkpoint(self, position: int, body: AuditBody, *, outside: bool = False) -> bool:
        """Check one checkpoint's signature and take its signed heads as claims.

        ``outside``: a checkpoint kept outside the trail (``--checkpoint FILE``),
        which the trail must also reach. Returns whether its heads were taken.
        """
        where = "the checkpoint kept outside" if outside else "checkpoint"
        try:
            data = parse_checkpoint(body)
        except AuditChainError as exc:
            self.add("bad_checkpoint", body.chain, position, body.seq, f"{where}: {exc}")
            return False
        if outside:
            body_ok = body_hash(body.model_dump(mode="json")) == body.hash
            if not body_ok:
                self.add(
                    "bad_checkpoint",
                    body.chain,
                    position,
                    body.seq,
                    f"{where}: its hash does not recompute (the file was changed)",
                )
                return False
        kid = key_of(body) or "?"
        if self.keys is None:
            self.unverified += 1
            self.add(
                "unverified",
                body.chain,
                position,
                body.seq,
                f"{where}'s signature (key {kid}) not checked: no public key given",
            )
        else:
            refusal = check_signature(body, self.keys)
            if refusal is not None:
                reason = {
                    "unknown_key": f"signed by key {kid}, which is not among the gate's "
                    f"public keys given ({', '.join(self.keys.ids()) or 'none'})",
                    "bad_signature": f"the signature (key {kid}) does not match its data: "
                    "forged, or changed after it was signed",
                    "unsigned": "it carries no signature",
                    "malformed_signature": "its signature is malformed",
                }[refusal]
                self.add(
                    "bad_checkpoint",
                    body.chain,
                    position,
                    body.seq,
                    f"{where}: {refusal}: {reason}",
                )
                return False
        self.checkpoints += 1
        what = (
            f"{where} {body.chain} seq {body.seq} (writer {data.writer}, key {kid}, "
            f"at {instant_json(data.at)})"
        )
        at = data.at.timestamp()
        self.latest = max(self.latest, at)
        if outside:
            self.claims.append(_Claim(body.chain, body.seq, body.hash, position, what))
        for name, head in data.heads.items():
            if head.seq < 0:
                continue
            self.claims.append(_Claim(name, head.seq, head.hash, position, what))
            if self.max_gap is not None:
                chain = self.chains.get(name) or self.chains.setdefault(name, _Chain(name))
                first = chain.covered.get(head.seq)
                if first is None or at < first:
                    chain.covered[head.seq] = at
        if len(self.claims) >= self.settle_at:
            self.settle_claims(final=False)
            # Claims that must wait (an export sorted by chain: checkpoints first) are
            # looked at again only once as many more came: linear, not quadratic.
            self.settle_at = max(4096, 2 * len(self.claims))
        return True

    def settle_claims(self, *, final: bool) -> None:
        """Match signed heads with the trail; those not reached yet wait (unless ``final``)."""
        waiting = []
        for claim in self.claims:
            chain = self.chains.get(claim.chain)
            found = chain.hashes.get(claim.seq) if chain is not None else None
            if found is not None:
                assert chain is not None  # noqa: S101 - found implies chain
                if found == bytes.fromhex(claim.hash[: 2 * _PREFIX]):
                    chain.matched = max(chain.matched, claim.seq)
                    continue
                since = (
                    f" and after seq {chain.matched}, which an earlier checkpoint matched"
                    if 0 <= chain.matched < claim.seq
                    else ""
                )
                self.add(
                    "checkpoint_mismatch",
                    claim.chain,
                    claim.position,
                    claim.seq,
                    f"the trail's event at seq {claim.seq} is not the one {claim.what} signed "
                    f"(hash {claim.hash[:16]}...): the chain was changed at or before this "
                    f"seq{since}, and recomputed",
                )
            elif not final:
                waiting.append(claim)
            elif chain is not None and chain.head is not None and claim.seq <= chain.head.seq:
                self.add(
                    "checkpoint_mismatch",
                    claim.chain,
                    claim.position,
                    claim.seq,
                    f"{claim.what} signed seq {claim.seq}, and the trail has no intact event "
                    "there (edited or missing)",
                )
            else:
                end = (
                    f"ends at seq {chain.head.seq}"
                    if chain is not None and chain.head is not None
                    else "has no event"
                )
                self.add(
                    "truncation",
                    claim.chain,
                    claim.position,
                    claim.seq,
                    f"the chain {end} in this trail, but {claim.what} signed seq "
                    f"{claim.seq}: the trail was cut short",
                )
        self.claims = waiting

    def gaps(self) -> None:
        """Runs of events that no checkpoint signed within ``max_gap`` seconds."""
        assert self.max_gap is not None  # noqa: S101 - callers check
        bound = self.max_gap
        for name, chain in sorted(self.chains.items()):
            if is_checkpoint_chain(name) or not chain.instants:
                continue
            signed = sorted(chain.covered.items())
            seqs = [seq for seq, _ in signed]
            # The earliest instant a checkpoint signed each seq or a later one.
            soonest = [at for _, at in signed]
            for i in range(len(soonest) - 2, -1, -1):
                soonest[i] = min(soonest[i], soonest[i + 1])
            run: tuple[int, int, float, float | None] | None = None
            for seq, at in enumerate(chain.instants):
                if math.isnan(at):
                    continue
                i = bisect_left(seqs, seq)
                cover = soonest[i] if i < len(soonest) else None
                late = (cover - at if cover is not None else self.latest - at) > bound
                if late and run is None:
                    run = (seq, seq, at, cover)
                elif late and run is not None:
                    run = (run[0], seq, run[2], cover)
                elif run is not None:
                    self.gap(chain, run, bound)
                    run = None
            if run is not None:
                self.gap(chain, run, bound)

    def gap(self, chain: _Chain, run: tuple[int, int, float, float | None], bound: float) -> None:
        lo, hi, at, cover = run
        if cover is None:
            tail = "no signed checkpoint covers them"
        else:
            tail = f"the first signed checkpoint covering them came {cover - at:.0f}s after"
        self.add(
            "checkpoint_gap",
            chain.name,
            chain.last_position,
            lo,
            f"{_span(lo, hi)} from {_instant(at)}: {tail} (bound {bound:g}s); an edit there "
            "with the chain recomputed would not be caught",
        )

    # -- end of input ----------------------------------------------------------

    def finish(
        self, end: int, expect_heads: Mapping[str, int], outside: Sequence[AuditBody] = ()
    ) -> VerifyReport:
        for body in outside:
            self.checkpoint(end, body, outside=True)
        self.settle_claims(final=True)
        if self.max_gap is not None:
            self.gaps()
        for chain in self.chains.values():
            if chain.pending is not None:
                self.settle(chain, next_seq=None)
            for hole in chain.holes:
                if hole.lo == 0:
                    self.add(
                        "truncation",
                        chain.name,
                        hole.position,
                        hole.seq,
                        f"the chain starts at seq {hole.hi + 1}: {_span(0, hole.hi)} "
                        "missing from its beginning",
                    )
                else:
                    self.add(
                        "gap",
                        chain.name,
                        hole.position,
                        hole.seq,
                        f"{_span(hole.lo, hole.hi)} missing before this event",
                    )
        for name, expected in sorted(expect_heads.items()):
            found = self.chains.get(name)
            if found is None or found.head is None:
                self.add(
                    "truncation",
                    name,
                    end,
                    None,
                    f"no event of chain {name} in the input; expected seqs 0..{expected}",
                )
            elif found.head.seq < expected:
                self.add(
                    "truncation",
                    name,
                    found.last_position,
                    found.head.seq,
                    f"the chain ends at seq {found.head.seq}, expected at least seq "
                    f"{expected}: {_span(found.head.seq + 1, expected)} missing at its end",
                )
        findings = sorted(self.findings, key=lambda f: f.position)
        chains = {
            name: ChainSummary(name, c.events, c.head or ChainHead.empty(name))
            for name, c in self.chains.items()
            if c.events
        }
        return VerifyReport(
            findings=tuple(findings),
            records=self.records,
            chains=chains,
            checkpoints=self.checkpoints,
            unverified=self.unverified,
        )


def _put_instant(instants: array[float], seq: int, at: float) -> None:
    if seq >= len(instants):
        if seq - len(instants) > _SPARSE:
            return  # a forged seq far ahead: not worth the memory of a gap check
        instants.extend([math.nan] * (seq - len(instants) + 1))
    if math.isnan(instants[seq]):
        instants[seq] = at


def _instant(at: float) -> str:
    import datetime as dt  # noqa: PLC0415 - only for messages

    return instant_json(dt.datetime.fromtimestamp(at, tz=dt.UTC))


def verify(
    records: Iterable[Record],
    *,
    expect_heads: Mapping[str, int] | None = None,
    keys: PublicKeys | None = None,
    checkpoints: Sequence[AuditBody] = (),
    max_gap: float | None = None,
    partition_of: Callable[[int], int | None] | None = None,
) -> VerifyReport:
    """Verify the hash chains in ``records``, in the order they were stored.

    ``records`` are raw JSON lines (``bytes``/``str``; blank lines are skipped but
    counted in positions), decoded dicts, :class:`AuditEvent` or :class:`AuditBody`
    values. Each is an HEC record of the audit topic, a bare event body (Splunk's
    ``_raw``) or a Splunk search result holding the body as ``_raw``; kinds may be
    mixed, and events of several chains may be interleaved. ``expect_heads`` maps a
    chain id to the seq its last event must reach at least (for instance the head
    the gate reported), so a cut-off end is noticed.

    Every ``checkpoint`` event is checked against ``keys`` (the gate's public keys;
    ``None``: signatures are not checked, each checkpoint gets an ``unverified``
    note) and the trail must hold the heads it signed. ``checkpoints`` are
    checkpoint bodies kept outside the trail: the trail must reach each one and
    the heads it signed. With ``max_gap`` (seconds), events that no checkpoint
    signed within that time are reported as ``checkpoint_gap``. ``partition_of``
    (reading a topic) gives the audit partition of the record at a position: a
    chain found outside the partition its name ends with is ``misplaced``.
    """
    verifier = _Verifier(keys, max_gap, partition_of)
    end = verifier.run(records)
    return verifier.finish(end, expect_heads or {}, checkpoints)
