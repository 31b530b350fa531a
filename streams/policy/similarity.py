# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Novelty that sees near misses: a proposal's signature against the ones with history.

Pure: values in, values out; no clock, no files, no Kafka.

A **signature** is what makes two proposals "the same situation": the failure
pattern, the action type, the target's kind, namespace and environment, and the
action's parameters. The gate keeps the signatures it has history for (proposals
whose outcome it learned). A new proposal is then

- **seen** when its exact signature is known;
- **similar** when the nearest known signature is within the policy's
  ``similarity.max_distance`` (the same pattern on another kind of target, with
  other parameters or in another environment, or a pattern name close to a known
  one): the gate has only *superficially similar* experience, the article's
  hardest case, and the proposal cannot reach Level 3 or 4;
- **novel** when nothing is that near (Level 1, as ``seen == 0`` always was).

The distance is a weighted sum over the signature's fields, each difference in
[0, 1]: pattern names by ``1 - difflib.SequenceMatcher.ratio()`` (0 for the same
name, near 0 for a one-letter change), parameters by the Jaccard distance of their
``key=value`` pairs, and the other fields 0 (equal) or 1 (different). The weights
and the threshold are policy data (``similarity`` in the policy file), so a reviewer
sees and approves what "near" means; ``explain`` shows the nearest known signature,
which fields differ and the distance.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from streams.models.proposal import Proposal
    from streams.policy.model import SimilarityPolicy

FIELDS = ("pattern", "action_type", "target_kind", "namespace", "environment", "parameters")
Kind = Literal["seen", "similar", "novel"]


@dataclass(frozen=True, slots=True, order=True)
class Signature:
    """What makes two proposals the same situation (``parameters`` as sorted JSON pairs)."""

    pattern: str
    action_type: str
    target_kind: str
    namespace: str
    environment: str
    parameters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, proposal: Proposal) -> Signature:
        """The signature of a proposal."""
        action = proposal.action
        target = action.target
        return cls(
            pattern=proposal.pattern,
            action_type=action.type,
            target_kind=target.kind,
            namespace=target.namespace,
            environment=target.environment,
            parameters=_pairs(action.parameters),
        )

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> Signature:
        """The inverse of ``as_dict`` (state values, audit records)."""
        params = value.get("parameters") or {}
        return cls(
            pattern=str(value["pattern"]),
            action_type=str(value["action_type"]),
            target_kind=str(value["target_kind"]),
            namespace=str(value["namespace"]),
            environment=str(value["environment"]),
            parameters=_pairs(params) if isinstance(params, Mapping) else (),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; ``parameters`` as an object again."""
        return {
            "pattern": self.pattern,
            "action_type": self.action_type,
            "target_kind": self.target_kind,
            "namespace": self.namespace,
            "environment": self.environment,
            "parameters": {k: orjson.loads(v) for k, v in self.parameters},
        }

    def key(self) -> str:
        """A stable text key (the state table's key of this signature)."""
        return orjson.dumps(self.as_dict(), option=orjson.OPT_SORT_KEYS).decode()


def _pairs(parameters: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted(
            (str(k), orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode())
            for k, v in parameters.items()
        )
    )


def pattern_distance(a: str, b: str) -> float:
    """0 for the same pattern name, up to 1 for nothing in common."""
    if a == b:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def parameters_distance(a: tuple[tuple[str, str], ...], b: tuple[tuple[str, str], ...]) -> float:
    """Jaccard distance of the ``key=value`` pairs; 0 when both are empty."""
    left, right = set(a), set(b)
    union = left | right
    if not union:
        return 0.0
    return 1.0 - len(left & right) / len(union)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A known signature, how far it is and which fields differ (in ``FIELDS`` order)."""

    signature: Signature
    distance: float
    differs: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature.as_dict(),
            "distance": round(self.distance, 6),
            "differs": list(self.differs),
        }


def distance(a: Signature, b: Signature, policy: SimilarityPolicy) -> Neighbour:
    """How far ``b`` is from ``a`` under the policy's weights (``b`` is the neighbour)."""
    w = policy.weights
    parts = {
        "pattern": w.pattern * pattern_distance(a.pattern, b.pattern),
        "action_type": w.action_type * (a.action_type != b.action_type),
        "target_kind": w.target_kind * (a.target_kind != b.target_kind),
        "namespace": w.namespace * (a.namespace != b.namespace),
        "environment": w.environment * (a.environment != b.environment),
        "parameters": w.parameters * parameters_distance(a.parameters, b.parameters),
    }
    differs = tuple(
        name
        for name in FIELDS
        if (
            getattr(a, name) != getattr(b, name)
            if name != "parameters"
            else a.parameters != b.parameters
        )
    )
    return Neighbour(b, sum(parts.values()), differs)


@dataclass(frozen=True, slots=True)
class Novelty:
    """``seen``, ``similar`` or ``novel``, with the nearest known signature (if any)."""

    kind: Kind
    nearest: Neighbour | None
    max_distance: float

    @property
    def caps_level(self) -> int | None:
        """The highest level this novelty allows (``None``: no cap of its own)."""
        return 2 if self.kind == "similar" else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "max_distance": self.max_distance,
            "nearest": None if self.nearest is None else self.nearest.as_dict(),
        }


def classify(signature: Signature, known: Iterable[Signature], policy: SimilarityPolicy) -> Novelty:
    """Compare ``signature`` with every known one; the nearest decides (ties: sorted first)."""
    nearest: Neighbour | None = None
    for other in known:
        if other == signature:
            return Novelty("seen", Neighbour(other, 0.0, ()), policy.max_distance)
        candidate = distance(signature, other, policy)
        if (
            nearest is None
            or candidate.distance < nearest.distance
            or (candidate.distance == nearest.distance and other < nearest.signature)
        ):
            nearest = candidate
    if nearest is not None and nearest.distance <= policy.max_distance:
        return Novelty("similar", nearest, policy.max_distance)
    return Novelty("novel", nearest, policy.max_distance)
