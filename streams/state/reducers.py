"""Reducers: ``new_value = apply_x(old_value, event, ...)``, each pure and total.

Every reducer accepts ``None`` (no state yet) and returns a fresh dict; a value it
cannot read is treated as absent, which the evaluator turns into more human
involvement (fail toward humans).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from streams.models.context import Context, History, RecentAutonomous

FP_WINDOW_SECONDS = 7 * 86_400
_BUCKET_SECONDS = 3_600  # FP verdicts are kept in hourly buckets: at most 168 per AI system

State = dict[str, Any]


def history_key(pattern: str, action_type: str) -> str:
    """Table key of the per-(pattern, action type) state."""
    return f"{pattern}|{action_type}"


def _epoch(at: dt.datetime) -> float:
    return at.timestamp()


def apply_history(old: State | None, *, success: bool) -> State:
    """Count one more occurrence of a pattern and its outcome."""
    seen = int((old or {}).get("seen", 0))
    successes = int((old or {}).get("successes", 0))
    failures = int((old or {}).get("failures", 0))
    return {
        "seen": seen + 1,
        "successes": successes + (1 if success else 0),
        "failures": failures + (0 if success else 1),
    }


def apply_verdict(old: State | None, *, at: dt.datetime, false_positive: bool) -> State:
    """Add one human verdict on an AI system's proposal to its rolling 7-day window."""
    bucket = str(int(_epoch(at)) // _BUCKET_SECONDS * _BUCKET_SECONDS)
    buckets: dict[str, list[int]] = {
        k: [int(v[0]), int(v[1])] for k, v in (old or {}).get("buckets", {}).items()
    }
    total, fps = buckets.get(bucket, [0, 0])
    buckets[bucket] = [total + 1, fps + (1 if false_positive else 0)]
    horizon = _epoch(at) - FP_WINDOW_SECONDS - _BUCKET_SECONDS
    return {"buckets": {k: v for k, v in buckets.items() if int(k) >= horizon}}


def ai_fp_rate(value: State | None, now: dt.datetime) -> float | None:
    """False positives / verdicts over the last 7 days; ``None`` when there are none."""
    if not value:
        return None
    start = _epoch(now) - FP_WINDOW_SECONDS
    total = fps = 0
    for key, (count, fp) in value.get("buckets", {}).items():
        if int(key) + _BUCKET_SECONDS > start and int(key) <= _epoch(now):
            total += int(count)
            fps += int(fp)
    if total == 0:
        return None
    return round(fps / total, 6)


def apply_budget(old: State | None, *, remaining: float, at: dt.datetime) -> State:
    """Latest error budget of a service (an older update never replaces a newer one)."""
    if old and float(old.get("at", 0.0)) > _epoch(at):
        return dict(old)
    return {"remaining": remaining, "at": _epoch(at)}


def apply_requalification(
    old: State | None, *, command: str, user: str, at: dt.datetime, reason: str = ""
) -> State:
    """A human re-qualifies an automation, or a bad outcome revokes it."""
    value = dict(old or {})
    if command == "requalify":
        value.update(requalified_at=_epoch(at), by=user, revoked=False, reason=reason)
    else:
        value.update(revoked=True, revoked_at=_epoch(at), revoked_by=user, reason=reason)
    return value


def apply_freeze(old: State | None, *, frozen: bool, user: str, at: dt.datetime) -> State:
    """The operator kill switch for one service or (key ``*``) the whole fleet."""
    del old
    return {"frozen": frozen, "by": user, "at": _epoch(at)}


def record_autonomous(
    old: State | None,
    *,
    decision_id: str,
    at: dt.datetime,
    window_seconds: int,
    offset: int = -1,
) -> State:
    """Remember an autonomous execution for the velocity guard (idempotent by id).

    ``offset`` is the proposal's offset in its partition: a service's proposals share
    one partition, so offsets order them exactly, also when timestamps tie.
    """
    horizon = _epoch(at) - window_seconds
    entries = [e for e in (old or {}).get("recent", []) if float(e[0]) >= horizon]
    if not any(e[1] == decision_id for e in entries):
        entries.append([_epoch(at), decision_id, offset])
    return {"recent": entries}


def recent_autonomous(
    values: Iterable[State | None],
    *,
    now: dt.datetime,
    window_seconds: int,
    exclude: str,
    before_offset: int | None = None,
) -> int:
    """Executions in ``[now - window, now]`` other than ``exclude`` (a redelivered decision).

    With ``before_offset`` (one service's own entries), only those decided before that
    offset count, so a proposal redelivered after a crash sees what it saw the first
    time, not the executions decided after it.
    """
    start = _epoch(now) - window_seconds
    end = _epoch(now)
    count = 0
    for value in values:
        for entry in (value or {}).get("recent", []):
            at, decision_id = float(entry[0]), entry[1]
            offset = int(entry[2]) if len(entry) > 2 else -1
            if not start <= at <= end or decision_id == exclude:
                continue
            if before_offset is not None and offset >= 0 and offset >= before_offset:
                continue
            count += 1
    return count


TABLES = ("history", "verdicts", "budgets", "requalification", "freeze", "velocity", "policy")
_RECENT_IDS = 512  # update ids remembered per key, to drop a redelivered update


def _dedupe(old: State | None, update_id: str | None) -> bool:
    """True when this update was already applied to this key (at-least-once redelivery)."""
    return bool(update_id) and update_id in (old or {}).get("_ids", ())


def _remember(new: State, old: State | None, update_id: str | None) -> State:
    if update_id:
        new["_ids"] = [*(old or {}).get("_ids", []), update_id][-_RECENT_IDS:]
    return new


def apply_update(old: State | None, update: Mapping[str, Any]) -> State | None:
    """Fold one update from the ``state`` log into a key's value; ``None``: ignore it.

    Every worker folds the whole log in order, so every worker holds the same state.
    Deltas (outcomes, verdicts, autonomous executions) carry an ``id`` and are
    applied once per key even when a producer sends them twice; the other updates
    are idempotent by nature (latest wins).
    """
    op = update.get("op")
    update_id = update.get("id")
    if _dedupe(old, update_id):
        return None
    at = _instant(update.get("at")) or dt.datetime.fromtimestamp(0, tz=dt.UTC)
    new: State
    if op == "outcome":
        new = apply_history(old, success=bool(update.get("success")))
    elif op == "verdict":
        new = apply_verdict(old, at=at, false_positive=bool(update.get("false_positive")))
    elif op == "budget":
        remaining = update.get("remaining")
        if not isinstance(remaining, int | float) or not 0.0 <= remaining <= 1.0:
            return None
        new = apply_budget(old, remaining=float(remaining), at=at)
    elif op in {"requalify", "revoke"}:
        new = apply_requalification(
            old, command=str(op), user=str(update.get("user")), at=at,
            reason=str(update.get("reason", "")),
        )  # fmt: skip
    elif op in {"freeze", "unfreeze"}:
        new = apply_freeze(old, frozen=op == "freeze", user=str(update.get("user")), at=at)
    elif op == "autonomous":
        new = record_autonomous(
            old,
            decision_id=str(update.get("decision_id")),
            at=at,
            window_seconds=int(update.get("window_seconds", 600)),
            offset=int(update.get("offset", -1)),
        )
    elif op == "policy":
        new = {k: update.get(k) for k in ("yaml", "digest", "by")}
    else:
        return None
    return _remember(new, old, update_id)


def _instant(epoch: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(float(epoch), tz=dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def build_context(
    *,
    now: dt.datetime,
    decision_id: str,
    history: State | None,
    budget: State | None,
    verdicts: State | None,
    requalification: State | None,
    velocity_service: State | None,
    velocity_fleet: Iterable[State | None],
    offset: int | None = None,
    freeze: Mapping[str, State | None],
    velocity_window_seconds: int,
) -> Context:
    """Assemble the evaluator's context from table values; unreadable state is absent."""
    try:
        hist = History.model_validate(
            {k: v for k, v in (history or {}).items() if k in {"seen", "successes", "failures"}}
        )
    except ValueError:
        hist = History()
    remaining: float | None = None
    if budget and isinstance(budget.get("remaining"), int | float):
        value = float(budget["remaining"])
        remaining = value if 0.0 <= value <= 1.0 else None
    requalified_at = None
    revoked = False
    if requalification:
        requalified_at = _instant(requalification.get("requalified_at"))
        revoked = bool(requalification.get("revoked", False))
    frozen = any(bool(v and v.get("frozen")) for v in freeze.values())
    service_count = recent_autonomous(
        [velocity_service],
        now=now,
        window_seconds=velocity_window_seconds,
        exclude=decision_id,
        before_offset=offset,
    )
    fleet_count = service_count + recent_autonomous(
        (v for v in velocity_fleet if v is not velocity_service),
        now=now,
        window_seconds=velocity_window_seconds,
        exclude=decision_id,
    )
    return Context.model_construct(
        schema_version=1,
        now=now,
        history=hist,
        error_budget_remaining=remaining,
        ai_false_positive_rate_7d=ai_fp_rate(verdicts, now),
        requalified_at=requalified_at,
        requalification_revoked=revoked,
        recent_autonomous=RecentAutonomous.model_construct(
            service=service_count, fleet=fleet_count
        ),
        frozen=frozen,
    )
