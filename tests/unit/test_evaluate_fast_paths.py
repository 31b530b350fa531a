# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The shortcuts ``evaluate`` takes give what the plain computation gives.

``streams/policy/evaluate.py`` has orjson write a UTC instant's ISO text and asks a
tzinfo for its offset directly instead of through ``datetime``'s generic method calls
(``_offset``, ``_isoformat``), rounds the requalification age without ``round``'s
decimal conversion when the answer is plain (``_round_6``), and builds a decision's
attributes from a template per level. Each is held to what it stands for: the
timestamp shortcuts on ``datetime``'s own timezones and on the ``TzInfo`` pydantic
gives every timestamp it parses, the rounding on floats near and far from ties, the
decision fields on inputs parsed from JSON as on the wire.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, TypeAdapter

from streams.models import Context, Decision, Proposal
from streams.models.decision import LEVEL_NAMES, ROUTES
from streams.policy import Policy, decision_id_for, evaluate
from streams.policy.evaluate import _isoformat, _offset, _round_6

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


class _Stamp(dt.datetime):
    """A datetime subclass, which orjson does not write."""


@given(instant=instants)
def test_isoformat_of_a_datetime_subclass_is_its_isoformat(instant: dt.datetime) -> None:
    stamp = _Stamp.fromisoformat(instant.isoformat()).replace(tzinfo=instant.tzinfo)

    assert _isoformat(stamp) == stamp.isoformat()


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


def _same_float(a: float, b: float) -> bool:
    """The same float as written: ``-0.0`` is not ``0.0``, and ``nan`` is ``nan``."""
    return repr(a) == repr(b)


# Millionths next to a tie: ``k + 0.5`` millionths and its float neighbours, where the
# product with 1e6 rounds across the half and the shortcut must hand over to ``round``.
near_ties = st.builds(
    lambda k, step: (
        math.nextafter((k + 0.5) / 1e6, math.inf if step > 0 else -math.inf)
        if step
        else (k + 0.5) / 1e6
    ),
    st.integers(0, 2**31),
    st.integers(-1, 1),
)
# Ages as ``evaluate`` computes them: whole microseconds, in days.
ages = st.integers(-(10**13), 10**13).map(lambda us: us / 10**6 / 86_400.0)


@PROPERTIES
@given(value=st.one_of(st.floats(), ages, near_ties, st.floats(-2000.0, 2000.0)))
def test_round_6_is_round_to_six_digits(value: float) -> None:
    assert _same_float(_round_6(value), round(value, 6))


@pytest.mark.parametrize("value", [0.0, -0.0, 5e-7, 4.99e-7, 1e-300, -1e-9, 1073.741824])
def test_round_6_of_edge_values_is_round_to_six_digits(value: float) -> None:
    assert _same_float(_round_6(value), round(value, 6))


@pytest.mark.parametrize(
    ("overrides", "level"),
    [
        ({"source": {"ai_system": "unknown-agent", "model": "m"}}, 0),
        ({"confidence": {"model": 0.5, "heuristic": 0.5}}, 1),
        ({"regulated": ["PCI-DSS"]}, 2),
        ({"action": {"idempotent": False}}, 3),
        ({}, 4),
    ],
)
def test_a_decision_holds_every_field_in_order_with_its_level_values(
    default_policy: Policy,
    make_inputs: Builder,
    overrides: dict[str, Any],
    level: int,
) -> None:
    """The per-level template gives what a Decision built from its values would."""
    base = make_inputs()[0].model_dump(mode="json")
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    proposal, context = make_inputs(base)

    decision = evaluate(proposal, context, default_policy)

    assert decision.level == level
    assert list(decision.__dict__) == list(Decision.model_fields)
    assert decision.level_name == LEVEL_NAMES[level]
    assert decision.route == ROUTES[level]
    regulated = level == 2 and bool(proposal.regulated)
    abort_window = dt.timedelta(seconds=default_policy.abort_window_seconds)
    approval_timeout = dt.timedelta(seconds=default_policy.approval.timeout_seconds)
    now = context.now
    assert decision.notify_humans is (level != 4)
    assert decision.change_record_required is regulated
    assert decision.abort_window_ends_at == (now + abort_window if level == 3 else None)
    assert decision.approval_timeout_at == (now + approval_timeout if level == 2 else None)
    assert decision == Decision.model_validate_json(decision.model_dump_json())
