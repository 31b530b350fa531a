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
from streams.state.fleet import FleetWindow

FP_WINDOW_SECONDS = 7 * 86_400
_BUCKET_SECONDS = 3_600  # FP verdicts are kept in hourly buckets: at most 168 per AI system
#: Schema version of the records on ``state`` and ``state.folded``. Records without one
#: were written before versions existed and read as version 1.
STATE_SCHEMA_VERSION = 1
#: ``prune`` keeps this much more than a window, so that a proposal redelivered after a
#: crash (judged at its own, earlier, timestamp) still sees what it saw the first time.
PRUNE_MARGIN = 2
PRUNED = ("velocity", "verdicts")  # the tables ``prune`` shortens; the others keep every key

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
    one partition, so offsets order them exactly, also when timestamps tie. The value
    keeps its window, so that :func:`prune` knows what it may drop.
    """
    horizon = _epoch(at) - window_seconds
    entries = [e for e in (old or {}).get("recent", []) if float(e[0]) >= horizon]
    if not any(e[1] == decision_id for e in entries):
        entries.append([_epoch(at), decision_id, offset])
    return {"recent": entries, "window": window_seconds}


def prune(table: str, value: State | None, now: float) -> State | None:
    """``value`` without the entries its window no longer needs; ``None``: drop the key.

    Velocity entries older than ``PRUNE_MARGIN`` windows and verdict buckets older than
    ``PRUNE_MARGIN`` weeks leave the value; a value left with none leaves its table
    (and, written by its owner, the compacted ``state.folded``). Every reader already
    ignores what is pruned (``recent_autonomous``, ``ai_fp_rate``), so pruning changes
    memory, never a decision. Other tables are returned as they are.
    """
    if value is None:
        return None
    if table == "velocity":
        window = float(value.get("window", 600))
        horizon = now - PRUNE_MARGIN * window
        recent = [e for e in value.get("recent", []) if float(e[0]) >= horizon]
        if not recent:
            return None
        if len(recent) == len(value.get("recent", [])):
            return value
        return {**value, "recent": recent}
    if table == "verdicts":
        horizon = now - PRUNE_MARGIN * FP_WINDOW_SECONDS - _BUCKET_SECONDS
        buckets = value.get("buckets", {})
        kept = {k: v for k, v in buckets.items() if int(k) >= horizon}
        if not kept:
            return None
        if len(kept) == len(buckets):
            return value
        return {**value, "buckets": kept}
    return value


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


TABLES = (
    "history",
    "verdicts",
    "budgets",
    "requalification",
    "freeze",
    "velocity",
    "policy",
    "signatures",
    "calibration",
)
_RECENT_IDS = 64  # other update ids remembered per key, to drop a redelivered update
IMPORT_PREFIX = "import:"  # ids of imported history, derived from the content


def _origin(update_id: str) -> tuple[str, int] | None:
    """``(topic:partition:table, offset)`` of an id ``topic:partition:offset:table``.

    Those ids (``Origin.update_id``) name the input record that caused the update. A
    worker handles an input partition in offset order, so per key and input partition
    the highest offset folded is a watermark: anything at or below it is a redelivery.
    Memory per key: one number per input partition, however many updates it folded.
    """
    parts = update_id.split(":")
    if len(parts) != 4 or not parts[2].isdigit():  # topic:partition:offset:table
        return None
    return f"{parts[0]}:{parts[1]}:{parts[3]}", int(parts[2])


def _dedupe(old: State | None, update_id: str | None) -> bool:
    """True when this update was already applied to this key (at-least-once redelivery)."""
    if not update_id:
        return False
    origin = _origin(update_id)
    if origin is not None:
        source, offset = origin
        mark = (old or {}).get("_wm", {}).get(source)
        return isinstance(mark, int) and offset <= mark
    if update_id.startswith(IMPORT_PREFIX):
        return update_id in (old or {}).get("_imports", ())
    return update_id in (old or {}).get("_ids", ())


def _remember(new: State, old: State | None, update_id: str | None) -> State:
    marks = (old or {}).get("_wm")
    ids = (old or {}).get("_ids")
    imports = (old or {}).get("_imports")
    if update_id:
        origin = _origin(update_id)
        if origin is not None:
            marks = {**(marks or {}), origin[0]: origin[1]}
        elif update_id.startswith(IMPORT_PREFIX):
            # Every import id is kept: a rerun of the same file, however much later,
            # folds nothing (one id per imported batch and key: streams/history_import.py).
            imports = [*(imports or []), update_id]
        elif new.get("recent") is None:  # velocity entries carry their own ids
            ids = [*(ids or []), update_id][-_RECENT_IDS:]
    if marks:
        new["_wm"] = marks
    if ids:
        new["_ids"] = ids
    if imports:
        new["_imports"] = imports
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
    version = update.get("v", 1)
    if not isinstance(version, int) or version > STATE_SCHEMA_VERSION:
        return None  # written by a newer gate: never guessed at (the mirror logs it)
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
    elif op in {"signature", "judged"}:
        from streams.state.trust import apply_trust_update  # noqa: PLC0415 - trust imports us

        trusted = apply_trust_update(old, update)
        if trusted is None:
            return None
        new = trusted
    elif op == "outcomes":
        new = _apply_counts(old, update)
    elif op == "verdicts":
        new = _apply_buckets(old, update)
    else:
        return None
    return _remember(new, old, update_id)


def _apply_counts(old: State | None, update: Mapping[str, Any]) -> State:
    """Several outcomes of one pattern and action at once (an imported batch)."""
    value = {k: int((old or {}).get(k, 0)) for k in ("seen", "successes", "failures")}
    for k in value:
        count = update.get(k, 0)
        value[k] += count if isinstance(count, int) and count > 0 else 0
    return value


def _apply_buckets(old: State | None, update: Mapping[str, Any]) -> State:
    """Several verdicts on one AI system at once, by hour (an imported batch)."""
    buckets: dict[str, list[int]] = {
        k: [int(v[0]), int(v[1])] for k, v in (old or {}).get("buckets", {}).items()
    }
    newest = max((int(k) for k in buckets), default=0)
    for hour, counts in dict(update.get("buckets") or {}).items():
        try:
            start = int(hour) // _BUCKET_SECONDS * _BUCKET_SECONDS
            total, fps = int(counts[0]), int(counts[1])
        except (TypeError, ValueError, IndexError):
            continue
        if total <= 0 or not 0 <= fps <= total:
            continue
        current = buckets.get(str(start), [0, 0])
        buckets[str(start)] = [current[0] + total, current[1] + fps]
        newest = max(newest, start)
    horizon = newest - FP_WINDOW_SECONDS - _BUCKET_SECONDS
    return {"buckets": {k: v for k, v in buckets.items() if int(k) >= horizon}}


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
    velocity_fleet: Iterable[State | None] | FleetWindow,
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
    if isinstance(velocity_fleet, FleetWindow):
        # Every service's entries in the window, less this service's own (counted
        # above, with the redelivery rule): two binary searches, not a scan.
        end = _epoch(now)
        own = recent_autonomous(
            [velocity_service], now=now, window_seconds=velocity_window_seconds, exclude=""
        )
        others = velocity_fleet.count(end - velocity_window_seconds, end) - own
    else:
        others = recent_autonomous(
            (v for v in velocity_fleet if v is not velocity_service),
            now=now,
            window_seconds=velocity_window_seconds,
            exclude=decision_id,
        )
    fleet_count = service_count + others
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
