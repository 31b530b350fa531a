"""The proposal an AI system publishes on ``proposals`` (SPEC section 3)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, JsonValue, model_validator

from streams.models.base import Bool, Count, Fraction, Id, Instant, Text, WireModel


class Source(WireModel):
    """The AI system (and model) that produced the proposal."""

    ai_system: Id
    model: Id | None = None


class Target(WireModel):
    """What the action would touch."""

    service: Id
    namespace: Id
    environment: Id
    kind: Id


class Action(WireModel):
    """The remediation the AI system proposes."""

    type: Id
    target: Target
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    idempotent: Bool
    reversible: Bool
    rollback_seconds: Annotated[Count, Field(le=86_400 * 365)]


class Confidence(WireModel):
    """Model-reported and heuristic confidence; the composite is their minimum."""

    model: Fraction
    heuristic: Fraction | None = None

    @property
    def composite(self) -> float:
        """``min(model, heuristic)``, or ``model`` alone without a heuristic."""
        if self.heuristic is None:
            return self.model
        return min(self.model, self.heuristic)


class BlastRadius(WireModel):
    """How much infrastructure the action affects."""

    services: Annotated[Count, Field(ge=1)]
    namespaces: Annotated[Count, Field(ge=1)]
    replica_fraction: Fraction
    traffic_fraction: Fraction


class Proposal(WireModel):
    """A remediation proposed by an AI system, before the gate decides on it."""

    schema_version: Literal[1]
    proposal_id: Id
    created_at: Instant
    source: Source
    pattern: Id
    action: Action
    confidence: Confidence
    blast_radius: BlastRadius
    regulated: tuple[Id, ...] = ()
    summary: Text = ""

    @model_validator(mode="after")
    def _frameworks_unique(self) -> Proposal:
        if len(set(self.regulated)) != len(self.regulated):
            msg = "regulated lists a framework twice"
            raise ValueError(msg)
        return self
