# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The shortcuts ``evaluate`` takes with timestamps give what the stdlib gives.

``streams/policy/evaluate.py`` formats a UTC instant from a table and asks a tzinfo
for its offset directly, instead of through ``datetime``'s generic method calls (see
``_offset`` and ``_isoformat``). Each is held to the ``datetime`` operation it stands
for, on ``datetime``'s own timezones and on the ``TzInfo`` pydantic gives every
timestamp it parses; and the decision fields derived from timestamps are held to a
reference computed the plain way, on inputs parsed from JSON as on the wire.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter

from streams.models import Context, Proposal
from streams.policy import Policy, decision_id_for, evaluate
from streams.policy.evaluate import _isoformat, _offset

Builder = Callable[..., tuple[Proposal, Context]]

PROPERTIES = settings(max_examples=300, deadline=None)
_PARSE = TypeAdapter(AwareDatetime)

offsets = st.one_of(
    st.just(dt.timedelta(0)),
    st.sampled_from([dt.timedelta(hours=5, minutes=30), dt.timedelta(hours=-8)]),
    st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23)),
)
zones = st.one_of(
    st.just(dt.UTC),
    offsets.map(dt.timezone),
    st.timezones(),  # zoneinfo: offsets that change with the date, folds
)
# Every year isoformat can print, microseconds or not.
instants = st.one_of(
    st.datetimes(timezones=zones),
    st.datetimes(timezones=st.just(dt.UTC)).map(lambda t: t.replace(microsecond=0)),
)


def _parsed(instant: dt.datetime, *, zulu: bool) -> dt.datetime:
    """``instant`` through pydantic from its ISO text, as a wire timestamp arrives.

    ISO 8601 (and pydantic) offsets are whole minutes: the wall time of an instant at
    another offset is sent as UTC.
    """
    offset = instant.utcoffset()
    if offset is not None and offset % dt.timedelta(minutes=1):
        instant = instant.replace(tzinfo=dt.UTC)
    text = instant.isoformat()
    if zulu and text.endswith("+00:00"):
        text = text.removesuffix("+00:00") + "Z"
    return _PARSE.validate_json(f'"{text}"')


@PROPERTIES
@given(instant=instants, zulu=st.booleans())
def test_isoformat_is_the_datetime_isoformat(instant: dt.datetime, *, zulu: bool) -> None:
    parsed = _parsed(instant, zulu=zulu)

    assert _isoformat(instant) == instant.isoformat()
    assert _isoformat(parsed) == parsed.isoformat()


@given(instant=st.datetimes())
def test_isoformat_of_a_naive_datetime_is_the_datetime_isoformat(instant: dt.datetime) -> None:
    assert _isoformat(instant) == instant.isoformat()


@PROPERTIES
@given(instant=instants, zulu=st.booleans())
def test_offset_is_the_datetime_utcoffset(instant: dt.datetime, *, zulu: bool) -> None:
    parsed = _parsed(instant, zulu=zulu)

    assert _offset(instant) == instant.utcoffset()
    assert _offset(parsed) == parsed.utcoffset()
    assert _offset(instant.replace(tzinfo=None)) is None


def _wire(instant: dt.datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def _condition(decision: Any, name: str) -> dict[str, Any]:
    (condition,) = (c for c in decision.conditions if c["name"] == name)
    return dict(condition)


# Instants a gate sees: around the shipped policy's review date, in UTC or at an offset
# of whole minutes (as ISO 8601 writes them).
minute_offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: dt.timedelta(minutes=m))
wire_instants = st.datetimes(
    min_value=dt.datetime(2026, 10, 1),  # noqa: DTZ001 - bounds of an aware strategy
    max_value=dt.datetime(2027, 3, 1),  # noqa: DTZ001
    timezones=st.one_of(st.just(dt.UTC), minute_offsets.map(dt.timezone)),
)


@PROPERTIES
@given(
    created_at=wire_instants,
    now=wire_instants,
    requalified_at=st.one_of(st.none(), wire_instants),
)
def test_timestamp_fields_of_a_decision_follow_the_plain_computation(
    default_policy: Policy,
    make_inputs: Builder,
    *,
    created_at: dt.datetime,
    now: dt.datetime,
    requalified_at: dt.datetime | None,
) -> None:
    """Decision id, review date and requalification age, computed the plain way."""
    proposal, context = make_inputs(
        {"created_at": _wire(created_at)},
        {
            "now": _wire(now),
            "requalified_at": None if requalified_at is None else _wire(requalified_at),
        },
    )

    decision = evaluate(proposal, context, default_policy)

    action = proposal.action
    parts = (
        proposal.proposal_id,
        proposal.source.ai_system,
        proposal.created_at.isoformat(),
        proposal.pattern,
        action.type,
        action.target.service,
    )
    key = "\x1f".join(parts)
    expected_id = "d-" + hashlib.sha256(key.encode()).hexdigest()[:32]
    assert decision.decision_id == expected_id
    assert decision_id_for(proposal) == expected_id
    today = context.now.astimezone(dt.UTC).date()
    review = _condition(decision, "review_overdue")
    assert review["observed"] == today.isoformat()
    assert review["holds"] is (today > default_policy.policy.next_review)
    age = _condition(decision, "requalified_days_ago")["observed"]
    if context.requalified_at is None:
        assert age is None
    else:
        seconds = (context.now - context.requalified_at).total_seconds()
        assert age == round(seconds / 86_400, 6)
