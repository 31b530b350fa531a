"""The state the gate enriches a proposal with (SPEC section 4)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue, model_validator

from streams.models.base import Bool, Count, Fraction, Id, Instant, StrictFloat, WireModel


class History(WireModel):
    """Prior occurrences of this (pattern, action type) and their outcomes."""

    seen: Count = 0
    successes: Count = 0
    failures: Count = 0

    @model_validator(mode="after")
    def _outcomes_within_seen(self) -> History:
        if self.successes + self.failures > self.seen:
            msg = "successes + failures must not exceed seen"
            raise ValueError(msg)
        return self


class RecentAutonomous(WireModel):
    """Level 3 and 4 executions inside the policy's velocity window."""

    service: Count = 0
    fleet: Count = 0


class SignatureNovelty(WireModel):
    """What the gate knew of a proposal's signature (streams/policy/similarity.py).

    ``seen``: the exact signature has history; ``similar``: the nearest known one is
    within ``max_distance`` (at most Level 2); ``novel``: nothing that near (Level 1).
    ``nearest`` names that signature, ``differs`` its fields that differ.
    """

    kind: Literal["seen", "similar", "novel"]
    max_distance: Annotated[StrictFloat, Field(ge=0.0, allow_inf_nan=False)]
    distance: Annotated[StrictFloat, Field(ge=0.0, allow_inf_nan=False)] | None = None
    differs: tuple[Id, ...] = ()
    nearest: dict[str, JsonValue] | None = None


class Context(WireModel):
    """Everything the evaluator needs beyond the proposal and the policy.

    ``None`` means unknown; unknown state always moves a decision toward humans.
    """

    schema_version: Literal[1] = 1
    now: Instant
    history: History = History()
    error_budget_remaining: Fraction | None = None
    ai_false_positive_rate_7d: Fraction | None = None
    requalified_at: Instant | None = None
    requalification_revoked: Bool = False
    recent_autonomous: RecentAutonomous = RecentAutonomous()
    frozen: Bool = False
    #: The calibrated confidence of the AI system at the reported value (absent: too
    #: few judged proposals, or not tracked); the composite is never above it.
    calibrated_confidence: Fraction | None = None
    #: Near-miss novelty of the proposal's signature (absent: signatures not tracked).
    novelty: SignatureNovelty | None = None
