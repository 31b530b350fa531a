"""The emitter serialises a signed body once (streams/topology/emitter.py ``_canonical``).

The signature, the signed record and the decision's audit event all come from one
canonical serialisation of the decision. What reaches the broker must be the same
JSON, the same signature and the same hash chain as when each is serialised on its
own: the emitter is run both ways on the same decisions (the worker's own ``Sink``
on no broker records what it hands over) and the records compared.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import handlers, samples
from streams.audit.chain import body_hash
from streams.audit.verify import verify
from streams.handlers.effects import Origin
from streams.keys import PublicKeys, generate
from streams.metrics import Metrics
from streams.models.codec import canonical_json
from streams.policy import parse_policy
from streams.settings import Settings
from streams.state.records import budget_update, import_updates, requalification_update
from streams.testing import OfflineSink
from streams.topology.approvals import Approvals
from streams.topology.emitter import Emitter
from streams.topology.mirror import Mirror
from streams.topology.sealer import Sealer

POLICY = Path(__file__).resolve().parents[2] / "policies" / "escalation-policy.yaml"
NOW = dt.datetime(2026, 11, 28, 10, 0, 0, tzinfo=dt.UTC)


def _view() -> Mirror:
    mirror = Mirror("127.0.0.1:1", "state")
    mirror.partitions = 4
    for update in import_updates(samples.history_records(NOW)):
        mirror.apply(update.record())
    for budget in samples.budgets(NOW):
        mirror.apply(budget_update(budget.service, remaining=budget.remaining,
                                   at=NOW.timestamp()).record())  # fmt: skip
    for command in samples.requalifications(NOW):
        update = requalification_update(
            command.pattern or "",
            command.action_type or "",
            op="requalify",
            user=command.user,
            at=NOW.timestamp(),
            reason="test",
        )
        mirror.apply(update.record())
    return mirror


def _emit_all(
    *, reuse: bool, signer: Any, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, bytes]]:
    settings = Settings()
    policy = parse_policy(POLICY.read_text(), source=str(POLICY))
    policy.bind_keyring("0" * 64)
    view = _view()
    sink = OfflineSink()
    emitter = Emitter(settings, sink=sink, sealer=Sealer(settings, {}), approvals=Approvals(),
                      metrics=Metrics(), apply_state=view.apply, signer=signer)  # fmt: skip
    if not reuse:
        monkeypatch.setattr(emitter, "_canonical", lambda _sends: {})
    for number, (_, proposal) in enumerate(samples.stream(40, start=NOW)):
        origin = Origin(settings.topic("proposals"), 0, number, NOW.timestamp() + number,
                        b"key", b"{}")  # fmt: skip
        decided = handlers.decide(proposal, view, policy, origin)
        with sink.held():
            emitter.emit(decided.effects, 0, source="proposals")
    return sink.records


def test_one_serialisation_writes_the_same_records_as_serialising_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = generate("escalation-gate")
    fast = _emit_all(reuse=True, signer=signer, monkeypatch=monkeypatch)
    slow = _emit_all(reuse=False, signer=signer, monkeypatch=monkeypatch)
    assert [t for t, _ in fast] == [t for t, _ in slow]
    # The same JSON values (Ed25519 is deterministic: the same signatures too) ...
    assert [orjson.loads(v) for _, v in fast] == [orjson.loads(v) for _, v in slow]
    # ... and every level reached, so every route's record was compared.
    levels = {orjson.loads(v)["level"] for t, v in fast if ".decisions." in f".{t}"}
    assert levels == {0, 1, 2, 3, 4}


def test_the_records_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = generate("escalation-gate")
    records = _emit_all(reuse=True, signer=signer, monkeypatch=monkeypatch)
    keys = PublicKeys([signer.public])
    signed = [orjson.loads(v) for t, v in records if ".decisions." in f".{t}"]
    assert signed
    assert {keys.verify(body) for body in signed} == {None}
    audit = [v for t, v in records if t.endswith("audit")]
    report = verify(audit)
    assert report.ok, [f.line() for f in report.errors]
    assert report.events == len(audit) == 2 * len(signed)
    for value in audit:  # each event's hash is over its body as it reads
        body = orjson.loads(value)["event"]
        assert body["hash"] == body_hash(body)


def test_a_tampered_decision_in_the_audit_event_fails_verification(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The check above can fail: one changed byte in an embedded decision breaks its hash.
    records = _emit_all(reuse=True, signer=generate("g"), monkeypatch=monkeypatch)
    audit = [v for t, v in records if t.endswith("audit")]
    decided = next(i for i, v in enumerate(audit) if b'"kind":"decision"' in v)
    assert verify(audit).ok
    event = orjson.loads(audit[decided])
    decision = event["event"]["data"]["decision"]
    decision["level"] = (decision["level"] + 1) % 5
    audit[decided] = orjson.dumps(event)
    assert not verify(audit).ok


def test_signed_record_is_sign_serialised() -> None:
    signer = generate("escalation-gate")
    keys = PublicKeys([signer.public])
    for body in ({"b": 1, "a": [1, {"z": None, "y": "ü"}]}, {}, {"at": "2026-11-28T10:00:00Z"}):
        record = signer.signed_record(canonical_json(body))
        assert orjson.loads(record) == signer.sign(body)
        assert keys.verify(orjson.loads(record)) is None
    with pytest.raises(ValueError, match="not the canonical JSON of an object"):
        signer.signed_record(b"[1]")
