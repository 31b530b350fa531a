"""Emit a handler's effects: the only place the gate's records leave for the broker."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from streams.audit.chain import chain_for
from streams.handlers import Effects
from streams.handlers.effects import AuditDraft, Send
from streams.kafka.sink import Sink
from streams.keys import Signer
from streams.metrics import Metrics
from streams.models.codec import canonical_json
from streams.settings import Settings
from streams.state.records import StateUpdate, lifecycle_record
from streams.topology.approvals import Approvals
from streams.topology.sealer import Sealer

#: Logical topics whose records carry the gate's signature (streams/keys.py): what
#: executors act on and what pages humans.
SIGNED_TOPICS = frozenset(
    {"decisions.execute", "decisions.approve", "decisions.assist", "decisions.manual", "oncall"}
)


class Emitter:
    """Turns ``Effects`` into records on the broker, sealed audit events, held pending
    entries, folded state and counted metrics."""

    def __init__(
        self,
        settings: Settings,
        *,
        sink: Sink,
        sealer: Sealer,
        approvals: Approvals,
        metrics: Metrics,
        apply_state: Callable[[dict[str, Any]], bool],
        signer: Signer | None = None,
    ) -> None:
        self.sink = sink
        # The gate's key: every record on decisions.* and oncall is signed with it.
        self.signer = signer
        self.sealer = sealer
        self.approvals = approvals
        self.metrics = metrics
        self.apply_state = apply_state
        self._topics: dict[str, str] = {}
        self._topic = settings.topic
        self.audit_topic = settings.topic("audit")
        self.state_topic = settings.topic("state")
        self.lifecycle_topic = settings.topic("lifecycle")

    def topic(self, name: str) -> str:
        """The full name of a logical output topic."""
        full = self._topics.get(name)
        if full is None:
            full = self._topics[name] = self._topic(name)
        return full

    def emit(self, effects: Effects, partition: int, *, source: str) -> None:
        """Emit everything one input on partition ``partition`` of ``source`` caused.

        ``source`` is the logical input topic: the audit events go on its chain for
        that partition (``proposals:3``), in audit partition ``partition``. Audit
        events are sealed first (the one step that can refuse), so nothing is
        produced unless every event has its place on the chain.
        """
        canonical = self._canonical(effects.sends)
        drafts = _reusing(effects.audits, canonical) if canonical else effects.audits
        chain, audits = (
            self.sealer.seal(chain_for(source, partition), drafts) if drafts else ("", [])
        )
        produce = self.sink.produce
        for send in effects.sends:
            if send.topic not in SIGNED_TOPICS:
                value = send.value
            elif send.body is not None and id(send.body) in canonical:
                value = self.signer.signed_record(canonical[id(send.body)])  # type: ignore[union-attr] # _canonical: only with a signer
            else:
                value = self._sign(send)
            produce(self.topic(send.topic), value, key=send.key, partition=send.partition)
        for entry in effects.entries:
            self.approvals.store(partition, entry)
            produce(
                self.lifecycle_topic,
                lifecycle_record("entry", entry),
                key=entry["decision_id"].encode(),
                partition=partition,
            )
        for update in effects.state:
            self.send_state(update)
        for record, draft in zip(audits, effects.audits, strict=True):
            produce(self.audit_topic, record, key=chain.encode(), partition=partition)
            self.metrics.inc(self.metrics.audit_events, draft.kind)
        for count in effects.metrics:
            counter = getattr(self.metrics, count.metric)
            if count.labels:
                self.metrics.inc(counter, *count.labels)
            else:
                counter.inc()

    def _canonical(self, sends: tuple[Send, ...]) -> dict[int, bytes]:
        """The canonical JSON of every body this worker signs, by the body's ``id``.

        Serialised once: the signature is over these bytes, the signed record is
        spliced from them (``Signer.signed_record``), and an audit event whose data
        holds the same body embeds them as they are (``_reusing``). A 5 KB decision
        was serialised five times per proposal before (its record, the signature's
        canonical form, the signed record, the audit event's hash and its envelope).
        """
        if self.signer is None:
            return {}
        return {
            id(send.body): canonical_json(send.body)
            for send in sends
            if send.topic in SIGNED_TOPICS
            and send.body is not None
            and "signature" not in send.body
        }

    def _sign(self, send: Send) -> bytes:
        """The record with the gate's signature (Ed25519 over its canonical JSON, key id).

        Unsigned without a key: executors refuse unsigned records (fail toward humans).
        """
        if self.signer is None:
            return send.value
        body = send.body if send.body is not None else orjson.loads(send.value)
        return orjson.dumps(self.signer.sign(body))

    def send_state(self, update: StateUpdate) -> None:
        """Append a state update to the ``state`` log (and fold it now if it says so)."""
        if update.apply_now:
            # The velocity guard must see a burst as it happens; the fold from the log
            # is then a no-op, by the update's id.
            self.apply_state(update.record())
        self.sink.produce(self.state_topic, update.value(), key=update.kafka_key())


def _reusing(drafts: tuple[AuditDraft, ...], canonical: dict[int, bytes]) -> tuple[AuditDraft, ...]:
    """``drafts`` with each data value that is a body in ``canonical`` replaced by its
    canonical bytes as an ``orjson.Fragment``, which orjson writes as it is. The sealed
    event is the same JSON: the hash is over canonical JSON, which a canonical
    fragment already is (sorted keys, no whitespace, UTC ``Z``), and the envelope
    holds the body in sorted key order instead of the model's (the same object)."""
    out = []
    for draft in drafts:
        data = draft.data
        if any(id(value) in canonical for value in data.values()):
            data = {
                key: orjson.Fragment(canonical[id(value)]) if id(value) in canonical else value
                for key, value in data.items()
            }
            draft = dataclasses.replace(draft, data=data)  # noqa: PLW2901
        out.append(draft)
    return tuple(out)
