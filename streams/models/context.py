"""The state the gate enriches a proposal with (SPEC section 4)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from streams.models.base import Bool, Count, Fraction, Instant, WireModel


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
