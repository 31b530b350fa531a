"""PURE: the state behind near-miss novelty and calibrated confidence, and the two
context values the evaluator reads from it.

Two tables, folded like the others from the ``state`` log:

- ``signatures``, keyed by ``pattern|action_type`` (``history_key``): the signatures
  of that pattern and action the gate has seen an outcome of,
  ``{"known": [signature, ...]}`` (at most ``MAX_SIGNATURES`` per key, newest kept);
- ``calibration``, keyed by ``ai_system|model`` (``calibration_key``): the binned
  reliability state of ``streams/policy/calibration.py``.

Their updates are ``{"op": "signature", "signature": {...}}`` and ``{"op": "judged",
"confidence": c, "right": bool, "bins": n}``; ``apply_trust_update`` folds one, and
returns ``None`` for an update it does not know (the caller ignores it).

``trust_inputs`` turns the folded tables into ``Context.novelty`` and
``Context.calibrated_confidence``. Without the tables (a worker that does not fold
them yet) both are ``None`` and decisions are what they always were.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from streams.models.context import SignatureNovelty
from streams.policy.calibration import (
    STATE_BINS,
    brier_score,
    calibrated,
    calibration_key,
    expected_calibration_error,
    record,
)
from streams.policy.similarity import (
    Kind,
    Neighbour,
    Novelty,
    Signature,
    parameters_distance,
    pattern_distance,
)
from streams.state.reducers import history_key

if TYPE_CHECKING:
    from streams.models.proposal import Proposal
    from streams.policy.model import Policy, SimilarityPolicy

MAX_SIGNATURES = 256
TRUST_TABLES = ("signatures", "calibration")
State = dict[str, Any]


def signature_update(signature: Signature, update_id: str | None = None) -> dict[str, Any]:
    """The state update that makes ``signature`` known (an outcome of it arrived)."""
    update: dict[str, Any] = {"op": "signature", "signature": signature.as_dict()}
    if update_id:
        update["id"] = update_id
    return update


def judged_update(
    confidence: float, *, right: bool, bins: int = STATE_BINS, update_id: str | None = None
) -> dict[str, Any]:
    """The state update of one judged proposal of an AI system (and model)."""
    update: dict[str, Any] = {
        "op": "judged",
        "confidence": float(confidence),
        "right": bool(right),
        "bins": int(bins),
    }
    if update_id:
        update["id"] = update_id
    return update


def apply_trust_update(old: State | None, update: Mapping[str, Any]) -> State | None:
    """Fold one ``signature`` or ``judged`` update; ``None`` for anything else or junk."""
    op = update.get("op")
    if op == "signature":
        value = update.get("signature")
        if not isinstance(value, Mapping):
            return None
        try:
            signature = Signature.from_dict(value)
        except (KeyError, TypeError, ValueError):
            return None
        known = [k for k in (old or {}).get("known", []) if isinstance(k, dict)]
        shown = signature.as_dict()
        if shown not in known:
            known.append(shown)
        return {"known": known[-MAX_SIGNATURES:]}
    if op == "judged":
        confidence, bins = update.get("confidence"), update.get("bins")
        if not isinstance(confidence, int | float) or not isinstance(bins, int) or bins < 1:
            return None
        if not 0.0 <= float(confidence) <= 1.0:
            return None
        return record(old, confidence=float(confidence), right=bool(update.get("right")), bins=bins)
    return None


# Parsed signatures of each folded value, by identity: the mirror replaces a value
# when it folds an update, so a value object is parsed once. Each entry holds its
# value, so an id cannot be reused while the entry lives.
_PARSED: dict[int, tuple[Any, tuple[Signature, ...]]] = {}
_MAX_PARSED = 4096


def _signatures(value: Any) -> tuple[Signature, ...]:
    entry = _PARSED.get(id(value))
    if entry is not None and entry[0] is value:
        return entry[1]
    parsed: list[Signature] = []
    for item in (value or {}).get("known", []) if isinstance(value, Mapping) else []:
        try:
            parsed.append(Signature.from_dict(item))
        except (KeyError, TypeError, ValueError):
            continue  # unreadable: not known (fail toward humans)
    if len(_PARSED) >= _MAX_PARSED:
        _PARSED.clear()
    _PARSED[id(value)] = (value, tuple(parsed))
    return tuple(parsed)


@functools.lru_cache(maxsize=65_536)
def _pattern_distance(a: str, b: str) -> float:
    return pattern_distance(a, b)


class _Index:
    """Known signatures grouped by pattern, with a set for the exact match."""

    __slots__ = ("by_pattern", "exact", "memo", "values")

    def __init__(self, values: list[Any], signatures: list[Signature]) -> None:
        self.values = values  # held, so the ids in the cache key stay theirs
        self.exact = frozenset(signatures)
        self.by_pattern: dict[str, list[Signature]] = {}
        for signature in sorted(set(signatures)):
            self.by_pattern.setdefault(signature.pattern, []).append(signature)
        self.memo: dict[tuple[Signature, int], tuple[SimilarityPolicy, Novelty]] = {}


_INDEX: dict[tuple[int, ...], _Index] = {}
_MAX_INDEXES = 8
_MAX_MEMO = 65_536


def _index(values: list[Any]) -> _Index:
    # The index holds the values, so while it lives no other object has their ids.
    key = tuple(map(id, values))
    index = _INDEX.get(key)
    if index is None:
        if len(_INDEX) >= _MAX_INDEXES:
            _INDEX.clear()
        index = _Index(values, [s for v in values for s in _signatures(v)])
        _INDEX[key] = index
    return index


def _differs(a: Signature, b: Signature) -> tuple[str, ...]:
    return tuple(
        name
        for name, differ in (
            ("pattern", a.pattern != b.pattern),
            ("action_type", a.action_type != b.action_type),
            ("target_kind", a.target_kind != b.target_kind),
            ("namespace", a.namespace != b.namespace),
            ("environment", a.environment != b.environment),
            ("parameters", a.parameters != b.parameters),
        )
        if differ
    )


def _classify(signature: Signature, index: _Index, policy: SimilarityPolicy) -> Novelty:
    """``similarity.classify`` over an index: exact match by set, patterns nearest first
    (none farther than the best so far, or than the threshold once one was looked at),
    and each signature's answer remembered while the index lives. The same kind as
    ``classify``; for a novel one the nearest shown is among the patterns looked at."""
    memo_key = (signature, id(policy))
    found = index.memo.get(memo_key)
    if found is not None and found[0] is policy:
        return found[1]
    if signature in index.exact:
        seen = Novelty("seen", Neighbour(signature, 0.0, ()), policy.max_distance)
        index.memo[memo_key] = (policy, seen)
        return seen
    w = policy.weights
    patterns = sorted(
        (w.pattern * _pattern_distance(signature.pattern, pattern), pattern)
        for pattern in index.by_pattern
    )
    best: Neighbour | None = None
    for pattern_part, pattern in patterns:
        if best is not None and pattern_part > best.distance:
            break
        if pattern_part > policy.max_distance and best is not None:
            # Every signature left is farther than the threshold: novel is decided,
            # and the nearest shown is the nearest of the patterns looked at.
            break
        for other in index.by_pattern[pattern]:
            total = (
                pattern_part
                + w.action_type * (signature.action_type != other.action_type)
                + w.target_kind * (signature.target_kind != other.target_kind)
                + w.namespace * (signature.namespace != other.namespace)
                + w.environment * (signature.environment != other.environment)
                + w.parameters * parameters_distance(signature.parameters, other.parameters)
            )
            if (
                best is None
                or total < best.distance
                or (total == best.distance and other < best.signature)
            ):
                best = Neighbour(other, total, _differs(signature, other))
    kind: Kind = "similar" if best is not None and best.distance <= policy.max_distance else "novel"
    novelty = Novelty(kind, best, policy.max_distance)
    if len(index.memo) >= _MAX_MEMO:
        index.memo.clear()
    index.memo[memo_key] = (policy, novelty)
    return novelty


def novelty_of(
    proposal: Proposal, values: Iterable[Any], policy: Policy, *, own: Any, seen: int
) -> SignatureNovelty | None:
    """``Context.novelty`` from the ``signatures`` table; ``None`` when nothing is known.

    ``own`` is the value of the proposal's own ``pattern|action`` key. A signature
    counts as novel or similar only when that key has signatures (or the pattern was
    never seen): history from before signatures were kept (``history import``) makes
    a seen pattern neither novel nor "similar to another pattern".
    """
    index = _index(list(values))
    if not index.exact:
        return None
    novelty = _classify(Signature.of(proposal), index, policy.similarity)
    tracked = bool(_signatures(own))
    if novelty.kind != "seen" and not tracked and seen > 0:
        # Untracked history (imported before signatures were kept): the pattern itself
        # was seen, so neither "novel" nor "similar to another" describes it; the
        # evaluator's own seen == 0 rule applies.
        return None
    shown = _SHOWN.get(id(novelty))
    if shown is None or shown[0] is not novelty:
        nearest = novelty.nearest
        value = SignatureNovelty.model_construct(
            kind=novelty.kind,
            max_distance=novelty.max_distance,
            distance=None if nearest is None else round(nearest.distance, 6),
            differs=() if nearest is None else nearest.differs,
            nearest=None if nearest is None else nearest.signature.as_dict(),
        )
        if len(_SHOWN) >= _MAX_MEMO:
            _SHOWN.clear()
        shown = _SHOWN[id(novelty)] = (novelty, value)
    return shown[1]


# Context values by the Novelty they show (frozen models: shared safely).
_SHOWN: dict[int, tuple[Novelty, SignatureNovelty]] = {}


def calibrated_of(proposal: Proposal, value: Any, policy: Policy) -> float | None:
    """``Context.calibrated_confidence`` from the ``calibration`` table's value."""
    if not value:
        return None
    c = policy.calibration
    return calibrated(value, proposal.confidence.model, bins=c.bins, min_samples=c.min_samples)


def trust_inputs(
    proposal: Proposal, view: Any, policy: Policy, *, seen: int
) -> tuple[SignatureNovelty | None, float | None]:
    """Both context values from a state view; ``(None, None)`` without the tables."""
    try:
        values = view.values("signatures")
        own = view.get("signatures", history_key(proposal.pattern, proposal.action.type))
        source = proposal.source
        cal = view.get("calibration", calibration_key(source.ai_system, source.model))
    except KeyError:  # a mirror that does not fold these tables (yet)
        return None, None
    return novelty_of(proposal, values, policy, own=own, seen=seen), calibrated_of(
        proposal, cal, policy
    )


def calibration_errors(
    values: Mapping[str, Any], policy: Policy
) -> list[tuple[str, str, float, float]]:
    """``(ai_system, model, ece, brier)`` of every key of the ``calibration`` table, for
    the ``escalation_ai_calibration_error{ai_system,model,measure}`` gauge."""
    bins = policy.calibration.bins
    out = []
    for key, value in sorted(values.items()):
        ece = expected_calibration_error(value, bins=bins)
        brier = brier_score(value, bins=bins)
        if ece is None or brier is None:
            continue
        ai_system, _, model = key.partition("|")
        out.append((ai_system, model, ece, brier))
    return out
