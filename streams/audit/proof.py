# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""One decision's proof: its audit events and the hash links to a signed checkpoint.

An auditor checking one regulated change should not need the whole trail. A proof
holds, for every chain that has an event of the decision, the events from the
decision's first one on that chain to the seq the next signed checkpoint lists,
and that checkpoint. :func:`check_proof` needs only the gate's public key: each
event's hash recomputes, each links to the one before, the last one is the head
the checkpoint signed, and the signature verifies. So the events shown are, byte
for byte, the ones the gate sealed before it signed.

What a proof does not show: that no other event of the decision exists (a proof
is built from a trail, by whoever holds it), and, unlike a Merkle inclusion proof,
it discloses the other events sealed on the same chains between the decision's
and the checkpoint (at most one checkpoint interval of them).

Pure: building takes a callable that yields the trail's records (it is read twice).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.audit.chain import body_hash, instant_json
from streams.audit.checkpoint import check_signature, key_of, parse_checkpoint
from streams.audit.verify import _SKIP, _unwrap
from streams.errors import AuditChainError, InputError
from streams.models.audit import AuditBody, AuditEvent
from streams.models.codec import parse_json, validate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from streams.audit.verify import Record
    from streams.keys import PublicKeys

PROOF_KIND = "audit_proof"


class ProofError(AuditChainError):
    """A proof cannot be built from this trail (no event, no checkpoint after it)."""


def bodies(records: Iterable[Record]) -> Iterator[AuditBody]:
    """The intact audit event bodies among ``records`` (others are skipped)."""
    for record in records:
        if isinstance(record, AuditBody):
            body = record
        elif isinstance(record, AuditEvent):
            body = record.event
        else:
            try:
                obj = record if isinstance(record, dict) else parse_json(record)
                obj = _unwrap(obj)
                if obj is _SKIP or not isinstance(obj, dict):
                    continue
                inner = obj.get("event", obj)
                body = validate(AuditBody, inner)
            except InputError:
                continue
        if body_hash(body.model_dump(mode="json")) == body.hash:
            yield body


@dataclass(slots=True)
class _Plan:
    first: dict[str, int] = field(default_factory=dict)  # chain -> first seq of the decision
    last: dict[str, int] = field(default_factory=dict)
    # chain -> listed seq -> the checkpoint event (chain, seq) that first listed it
    listed: dict[str, dict[int, tuple[str, int]]] = field(default_factory=dict)


def build_proof(read: Callable[[], Iterable[Record]], decision_id: str) -> dict[str, Any]:
    """The proof of ``decision_id``'s events in the trail ``read()`` yields (read twice)."""
    plan = _Plan()
    for body in bodies(read()):
        if body.decision_id == decision_id and body.kind != "checkpoint":
            plan.first[body.chain] = min(plan.first.get(body.chain, body.seq), body.seq)
            plan.last[body.chain] = max(plan.last.get(body.chain, body.seq), body.seq)
        if body.kind == "checkpoint":
            heads = body.data.get("heads")
            if isinstance(heads, dict):
                for chain, head in heads.items():
                    seq = head.get("seq") if isinstance(head, dict) else None
                    if isinstance(seq, int) and seq >= 0:
                        plan.listed.setdefault(chain, {}).setdefault(seq, (body.chain, body.seq))
    if not plan.first:
        raise ProofError(f"decision {decision_id}: no audit event of this decision in the trail")
    upto: dict[str, int] = {}
    covering: dict[tuple[str, int], list[str]] = {}
    for chain, last in sorted(plan.last.items()):
        after = [seq for seq in plan.listed.get(chain, {}) if seq >= last]
        if not after:
            raise ProofError(
                f"decision {decision_id}: no signed checkpoint lists chain {chain} at seq "
                f"{last} or later yet; try again after the next checkpoint "
                "(ESCALATION_AUDIT_CHECKPOINT_SECONDS)"
            )
        upto[chain] = min(after)
        covering.setdefault(plan.listed[chain][upto[chain]], []).append(chain)
    events: dict[str, dict[int, dict[str, Any]]] = {chain: {} for chain in upto}
    checkpoints: dict[str, dict[str, Any]] = {}
    for body in bodies(read()):
        if body.chain in upto and plan.first[body.chain] <= body.seq <= upto[body.chain]:
            events[body.chain].setdefault(body.seq, body.model_dump(mode="json"))
        if body.kind == "checkpoint":
            for covered in covering.get((body.chain, body.seq), ()):
                checkpoints[covered] = body.model_dump(mode="json")
    segments = []
    for chain in sorted(upto):
        seqs = range(plan.first[chain], upto[chain] + 1)
        missing = [seq for seq in seqs if seq not in events[chain]]
        if missing or chain not in checkpoints:
            raise ProofError(
                f"decision {decision_id}: chain {chain} changed while it was read "
                f"(missing seqs {missing[:5]} or its checkpoint); read it again"
            )
        segments.append(
            {
                "chain": chain,
                "events": [events[chain][seq] for seq in seqs],
                "checkpoint": checkpoints[chain],
            }
        )
    return {
        "schema_version": 1,
        "kind": PROOF_KIND,
        "decision_id": decision_id,
        "segments": segments,
    }


@dataclass(frozen=True, slots=True)
class ProofReport:
    """What :func:`check_proof` found: problems (none: the proof holds) and the events."""

    decision_id: str
    problems: tuple[str, ...]
    events: tuple[AuditBody, ...]
    signed: tuple[str, ...]  # "key K at T" of each checkpoint

    @property
    def ok(self) -> bool:
        return not self.problems


def check_proof(proof: Any, keys: PublicKeys) -> ProofReport:
    """Check a proof offline with the gate's public keys only."""
    if not isinstance(proof, dict) or proof.get("kind") != PROOF_KIND:
        return ProofReport("?", (f"kind: not an audit proof (expected {PROOF_KIND!r})",), (), ())
    decision_id = proof.get("decision_id")
    segments = proof.get("segments")
    if not isinstance(decision_id, str) or not decision_id:
        return ProofReport("?", ("decision_id: a non-empty string is required",), (), ())
    if not isinstance(segments, list) or not segments:
        return ProofReport(decision_id, ("segments: a non-empty list is required",), (), ())
    problems: list[str] = []
    shown: list[AuditBody] = []
    signed: list[str] = []
    for n, segment in enumerate(segments):
        where = f"segments[{n}]"
        try:
            found, stamp = _segment(segment, decision_id, keys, where)
        except AuditChainError as exc:
            problems.append(str(exc))
            continue
        shown.extend(found)
        signed.append(stamp)
    return ProofReport(decision_id, tuple(problems), tuple(shown), tuple(signed))


def _body(value: Any, where: str) -> AuditBody:
    try:
        body = validate(AuditBody, value)
    except InputError as exc:
        raise AuditChainError(f"{where}.{exc}") from None
    if body_hash(body.model_dump(mode="json")) != body.hash:
        raise AuditChainError(f"{where}: hash does not recompute: the event was changed")
    return body


def _segment(
    segment: Any, decision_id: str, keys: PublicKeys, where: str
) -> tuple[list[AuditBody], str]:
    if not isinstance(segment, dict):
        raise AuditChainError(f"{where}: expected an object")
    chain = segment.get("chain")
    events = segment.get("events")
    if not isinstance(events, list) or not events:
        raise AuditChainError(f"{where}.events: a non-empty list is required")
    bodies_ = [_body(e, f"{where}.events[{i}]") for i, e in enumerate(events)]
    first = bodies_[0]
    if first.decision_id != decision_id:
        raise AuditChainError(
            f"{where}.events[0]: not an event of decision {decision_id} (it is {first.decision_id})"
        )
    for i, (before, after) in enumerate(itertools.pairwise(bodies_), start=1):
        if after.chain != chain or before.chain != chain:
            raise AuditChainError(f"{where}.events[{i}]: not on chain {chain}")
        if after.seq != before.seq + 1 or after.prev_hash != before.hash:
            raise AuditChainError(
                f"{where}.events[{i}]: does not link to the event before it (seq {after.seq} "
                f"after {before.seq}): an event was removed, inserted or changed"
            )
    last = bodies_[-1]
    checkpoint = _body(segment.get("checkpoint"), f"{where}.checkpoint")
    if checkpoint.kind != "checkpoint":
        raise AuditChainError(f"{where}.checkpoint: not a checkpoint event")
    data = parse_checkpoint(checkpoint)
    refusal = check_signature(checkpoint, keys)
    kid = key_of(checkpoint) or "?"
    if refusal is not None:
        raise AuditChainError(
            f"{where}.checkpoint: {refusal}: the signature (key {kid}) does not verify with "
            f"the gate's public keys given ({', '.join(keys.ids()) or 'none'})"
        )
    head = data.heads.get(str(chain))
    if head is None or head.seq != last.seq or head.hash != last.hash:
        raise AuditChainError(
            f"{where}: the checkpoint does not sign chain {chain} at seq {last.seq} with the "
            "last event's hash: the events are not the ones the gate sealed"
        )
    own = [b for b in bodies_ if b.decision_id == decision_id]
    return own, f"chain {chain} seq {last.seq}: key {kid} at {instant_json(data.at)}"
