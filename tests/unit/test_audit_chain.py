# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Sealing audit events onto a hash chain (streams.audit.chain)."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from streams.audit.chain import GENESIS, ChainHead, body_hash, event_hash, instant_json, seal
from streams.errors import AuditChainError
from streams.models import AuditBody, AuditEvent, canonical_json, decode, encode
from streams.models.base import Instant

T0 = dt.datetime(2026, 11, 28, 10, 0, 5, 123456, tzinfo=dt.UTC)


def sealed(head: ChainHead, n: int = 0, **overrides: Any) -> tuple[AuditEvent, ChainHead]:
    args: dict[str, Any] = {
        "kind": "decision",
        "event_id": f"d-{n:04d}/decision",
        "actor": "escalation-gate",
        "at": T0 + dt.timedelta(seconds=n),
        "proposal_id": f"p-{n:04d}",
        "decision_id": f"d-{n:04d}",
        "data": {"level": 2, "route": "approve", "confidence": 0.93},
        "fields": {"level": "2", "service": "checkout-api", "ai_system": "holmesgpt"},
        "host": "gate-1",
        "index": "escalation",
    }
    args.update(overrides)
    return seal(head, **args)


def test_first_event_of_a_chain_has_seq_0_and_links_to_genesis() -> None:
    event, head = sealed(ChainHead.empty("p3"))
    assert (event.event.chain, event.event.seq, event.event.prev_hash) == ("p3", 0, GENESIS)
    assert head == ChainHead("p3", 0, event.event.hash)


def test_hash_is_sha256_of_the_canonical_body_without_the_hash_field() -> None:
    event, _ = sealed(ChainHead.empty("p0"))
    body = event.event.model_dump(mode="json")
    del body["hash"]
    assert event.event.hash == hashlib.sha256(canonical_json(body)).hexdigest()
    assert body_hash(event.event.model_dump(mode="json")) == event.event.hash


def test_event_hash_takes_an_envelope_or_a_bare_body() -> None:
    event, _ = sealed(ChainHead.empty("p0"))
    assert event_hash(event.model_dump(mode="json")) == event.event.hash
    assert event_hash(event.event.model_dump(mode="json")) == event.event.hash
    with pytest.raises(AuditChainError, match="event: expected an object"):
        event_hash({"event": "not a body"})


def test_hash_still_recomputes_after_a_json_round_trip() -> None:
    event, _ = sealed(ChainHead.empty("p0"))
    again = decode(AuditEvent, encode(event))
    assert again == event
    assert event_hash(orjson.loads(encode(event))) == event.event.hash
    body = decode(AuditBody, encode(event.event))
    assert body_hash(orjson.loads(encode(body))) == event.event.hash


def test_hash_does_not_depend_on_key_order_or_whitespace_of_the_stored_body() -> None:
    """Splunk re-serialises the body as ``_raw``; the hash is of its canonical form."""
    event, _ = sealed(ChainHead.empty("p0"))
    body = event.event.model_dump(mode="json")
    spaced = json.dumps(dict(reversed(list(body.items()))), indent=2)
    assert body_hash(AuditBody.model_validate_json(spaced).model_dump(mode="json")) == (
        event.event.hash
    )


def test_each_event_links_to_the_previous_events_hash() -> None:
    head = ChainHead.empty("p1")
    events = []
    for n in range(5):
        event, head = sealed(head, n)
        events.append(event)
    assert [e.event.seq for e in events] == [0, 1, 2, 3, 4]
    for before, after in itertools.pairwise(events):
        assert after.event.prev_hash == before.event.hash
    assert head == ChainHead.of(events[-1])
    assert head == ChainHead.of(events[-1].event)


def test_sealing_is_deterministic_for_the_same_inputs() -> None:
    first, head1 = sealed(ChainHead.empty("p0"))
    second, head2 = sealed(ChainHead.empty("p0"))
    assert encode(first) == encode(second)
    assert head1 == head2


@pytest.mark.parametrize(
    "change",
    [
        {"at": T0 + dt.timedelta(microseconds=1)},
        {"kind": "outcome"},
        {"data": {"level": 3}},
        {"actor": "alice"},
        {"event_id": "other"},
        {"proposal_id": "p-9999"},
        {"decision_id": None},
    ],
    ids=lambda change: next(iter(change)),
)
def test_any_change_of_the_body_changes_the_hash(change: dict[str, Any]) -> None:
    base, _ = sealed(ChainHead.empty("p0"))
    other, _ = sealed(ChainHead.empty("p0"), **change)
    assert other.event.hash != base.event.hash


def test_chain_seq_and_prev_hash_are_covered() -> None:
    first, _ = sealed(ChainHead.empty("p0"))
    assert sealed(ChainHead.empty("p1"))[0].event.hash != first.event.hash
    assert sealed(ChainHead("p0", 4, "a" * 64))[0].event.hash != first.event.hash
    assert sealed(ChainHead("p0", 4, "b" * 64))[0].event.hash != (
        sealed(ChainHead("p0", 4, "a" * 64))[0].event.hash
    )


@pytest.mark.parametrize(
    "change",
    [
        {"host": "gate-2"},
        {"index": "other"},
        {"source": "other"},
        {"sourcetype": "other:audit"},
        {"fields": {"level": "3"}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_the_envelope_metadata_is_not_covered(change: dict[str, Any]) -> None:
    """Splunk keeps only the body as _raw: the chain protects the body alone."""
    base, _ = sealed(ChainHead.empty("p0"))
    other, _ = sealed(ChainHead.empty("p0"), **change)
    assert other.event == base.event
    assert other != base


def test_envelope_carries_the_hec_metadata_and_the_indexed_fields() -> None:
    event, _ = sealed(ChainHead.empty("p2"))
    assert event.time == T0.timestamp()
    assert (event.host, event.source, event.sourcetype, event.index) == (
        "gate-1",
        "escalation-gate",
        "escalation:audit",
        "escalation",
    )
    assert event.fields == {
        "level": "2",
        "service": "checkout-api",
        "ai_system": "holmesgpt",
        "kind": "decision",
        "chain": "p2",
        "proposal_id": "p-0000",
        "decision_id": "d-0000",
    }


def test_kind_and_chain_fields_come_from_the_event_not_the_caller() -> None:
    event, _ = sealed(ChainHead.empty("p2"), fields={"kind": "forged", "chain": "p9"})
    assert (event.fields["kind"], event.fields["chain"]) == ("decision", "p2")


def test_ids_are_left_out_of_fields_when_unknown() -> None:
    event, _ = sealed(ChainHead.empty("p0"), kind="policy_load", proposal_id=None, decision_id=None)
    assert "decision_id" not in event.fields
    assert "proposal_id" not in event.fields


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(AuditChainError, match="timezone-aware"):
        sealed(ChainHead.empty("p0"), at=dt.datetime(2026, 11, 28, 10, 0))  # noqa: DTZ001


def test_seal_continues_from_a_head_restored_from_its_dict() -> None:
    event, head = sealed(ChainHead.empty("p0"))
    restored = ChainHead.from_dict(orjson.loads(orjson.dumps(head.to_dict())))
    assert restored == head
    nxt, _ = sealed(restored, 1)
    assert (nxt.event.seq, nxt.event.prev_hash) == (1, event.event.hash)


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"chain": "p0", "seq": 0},
        {"chain": "", "seq": 0, "hash": GENESIS},
        {"chain": "p0", "seq": -2, "hash": GENESIS},
        {"chain": "p0", "seq": True, "hash": GENESIS},
        {"chain": "p0", "seq": 3, "hash": "ABC"},
        {"chain": "p0", "seq": -1, "hash": "1" * 64},
    ],
)
def test_a_stored_head_that_is_not_one_is_refused(value: dict[str, Any]) -> None:
    with pytest.raises(AuditChainError):
        ChainHead.from_dict(value)


@pytest.mark.parametrize("module", ["streams.audit.chain", "streams.audit.verify"])
def test_chain_and_verify_are_pure(module: str) -> None:
    """Importing them loads no Kafka client, stream framework or metrics library."""
    code = (
        f"import sys, {module}; "
        "bad = {'faust', 'confluent_kafka', 'aiokafka', 'prometheus_client'} & set(sys.modules); "
        "sys.exit(', '.join(sorted(bad)) or 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_fast_seal_writes_the_same_event_as_the_validating_seal() -> None:
    """The worker's hot path (seal_json) and seal() must agree byte for byte in meaning."""
    import datetime as dt  # noqa: PLC0415

    from streams.audit.chain import ChainHead, seal, seal_json  # noqa: PLC0415
    from streams.models import AuditEvent, decode  # noqa: PLC0415

    head = ChainHead.empty("p1")
    at = dt.datetime(2026, 11, 28, 10, 0, 5, 123456, tzinfo=dt.UTC)
    args = {
        "kind": "decision",
        "event_id": "d-1:decision",
        "actor": "escalation-gate",
        "at": at,
        "proposal_id": "p-1",
        "decision_id": "d-1",
        "data": {"decision": {"level": 4, "x": [1.5, None, "é"], "nested": {"b": 1, "a": 2}}},
        "fields": {"level": "4", "service": "checkout-api"},
        "host": "h",
        "index": "escalation",
    }
    for _ in range(3):
        validated, head_a = seal(head, **args)
        fast, head_b = seal_json(head, **args)
        assert decode(AuditEvent, fast) == validated
        assert head_a == head_b
        head = head_a


@given(
    at=st.datetimes(
        min_value=dt.datetime(1970, 1, 2),  # noqa: DTZ001 - hypothesis wants naive bounds
        max_value=dt.datetime(9998, 12, 31),  # noqa: DTZ001
        timezones=st.sampled_from(
            [
                dt.UTC,
                dt.timezone(dt.timedelta(hours=5, minutes=30)),
                dt.timezone(-dt.timedelta(hours=8)),
            ]
        ),
    )
)
def test_instant_json_writes_what_pydantic_writes(at: dt.datetime) -> None:
    # seal_json builds the body by hand: its instants must match the model's JSON form.
    expected = TypeAdapter(Instant).dump_python(at, mode="json")
    assert instant_json(at) == expected
