# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The escalation policy as a validated governance document (SPEC section 5)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, StrictInt, StrictStr

Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False, strict=True)]
Seconds = Annotated[StrictInt, Field(ge=1, le=86_400 * 366)]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]


class PolicyModel(BaseModel):
    """Base of the policy sections: frozen, unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Governance(PolicyModel):
    """Who approved this document, and when it must be reviewed again."""

    name: Name
    version: Name
    scope: StrictStr = ""
    approved_by: Annotated[tuple[Name, ...], Field(min_length=1)]
    last_reviewed: dt.date
    next_review: dt.date


class AssistThresholds(PolicyModel):
    """Level 1 (assist only) when ANY holds."""

    min_confidence: Fraction
    max_false_positive_rate: Fraction
    min_error_budget: Fraction


class SupervisedThresholds(PolicyModel):
    """Level 2 (human approval) when ANY holds."""

    min_confidence: Fraction
    max_replica_fraction: Fraction
    max_services: Annotated[StrictInt, Field(ge=1)]
    max_namespaces: Annotated[StrictInt, Field(ge=1)]
    max_traffic_fraction: Fraction
    require_reversible: StrictBool = True
    max_rollback_seconds: Count
    min_seen: Count
    degraded_error_budget: Fraction


class ConditionalThresholds(PolicyModel):
    """Level 3 (execute, notify, abort window) when ALL hold."""

    min_seen: Count
    consistency: Fraction


class ActionAuthorisation(PolicyModel):
    """The constraint under which one action type may run at Level 4."""

    description: StrictStr = ""
    target_kinds: tuple[Name, ...] | None = None
    excluded_environments: tuple[Name, ...] = ()
    max_parameters: dict[Name, Annotated[float, Field(allow_inf_nan=False, strict=True)]] = Field(
        default_factory=dict
    )


class AutonomousThresholds(PolicyModel):
    """Level 4 (execute and verify) when ALL hold."""

    min_confidence: Fraction
    min_seen: Count
    consistency: Fraction
    require_idempotent: StrictBool = True
    requalification_days: Annotated[StrictInt, Field(ge=1, le=366)]
    actions: dict[Name, ActionAuthorisation]


class Thresholds(PolicyModel):
    """The four rule sets, in the order the evaluator applies them."""

    assist: AssistThresholds
    supervised: SupervisedThresholds
    autonomous: AutonomousThresholds
    conditional: ConditionalThresholds


class Regulated(PolicyModel):
    """Services and namespaces in scope of a regulated framework, by the policy."""

    services: dict[Name, tuple[Name, ...]] = Field(default_factory=dict)
    namespaces: dict[Name, tuple[Name, ...]] = Field(default_factory=dict)


#: The blast-radius bounds a quorum may set (``blast_radius.<name without _above>``).
QUORUM_BOUNDS = (
    "replica_fraction_above",
    "traffic_fraction_above",
    "services_above",
    "namespaces_above",
)


class Quorum(PolicyModel):
    """The two-person rule: a class of Level 2 decisions needs ``approvers`` different
    people to approve; one rejection rejects.

    The quorum applies when ANY of its conditions holds: a regulated framework in
    scope, or a blast radius above one of its bounds. The largest applying quorum wins.
    """

    name: Name
    approvers: Annotated[StrictInt, Field(ge=2, le=10)]
    regulated: StrictBool = False
    replica_fraction_above: Fraction | None = None
    traffic_fraction_above: Fraction | None = None
    services_above: Annotated[StrictInt, Field(ge=1)] | None = None
    namespaces_above: Annotated[StrictInt, Field(ge=1)] | None = None

    def conditions(self) -> tuple[str, ...]:
        """The conditions this quorum sets (a quorum with none never applies)."""
        return (("regulated",) if self.regulated else ()) + tuple(
            name for name in QUORUM_BOUNDS if getattr(self, name) is not None
        )


class Approval(PolicyModel):
    """Level 2: who may approve, how long to wait, whom to page."""

    approvers: Annotated[tuple[Name, ...], Field(min_length=1)]
    timeout_seconds: Seconds
    max_escalations: Annotated[StrictInt, Field(ge=1, le=100)] = 3
    oncall: tuple[Name, ...] = ()
    answer_max_age_seconds: Seconds = 900
    quorums: tuple[Quorum, ...] = ()


class OncallTarget(PolicyModel):
    """One step of the on-call chain: a name the pager pages (Alertmanager's
    ``escalation`` label, which its routes match; PagerDuty's routing)."""

    name: Name
    description: StrictStr = ""


class Oncall(PolicyModel):
    """Whom a page goes to. Approval timeouts walk ``chain`` in order (escalation 1
    pages the first target, 2 the second, ...; past its end, the last again); a failed
    verification pages ``verification_failed`` (default: the chain's first target)."""

    chain: Annotated[tuple[OncallTarget, ...], Field(min_length=1, max_length=100)]
    verification_failed: Name | None = None

    def target(self, escalation_number: int) -> str:
        """The target that escalation ``escalation_number`` (1-based) of a timeout pages."""
        return self.chain[max(0, min(escalation_number, len(self.chain)) - 1)].name

    @property
    def verification_target(self) -> str:
        """The target a failed verification pages."""
        return self.verification_failed or self.chain[0].name


#: A policy without an ``oncall`` section still pages someone (fail toward humans).
DEFAULT_ONCALL = Oncall(chain=(OncallTarget(name="oncall"),))


class SimilarityWeights(PolicyModel):
    """How much each field of a signature counts in the distance (streams/policy/similarity.py)."""

    pattern: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False, strict=True)] = 1.0
    action_type: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False, strict=True)] = 1.0
    target_kind: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False, strict=True)] = 0.3
    namespace: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False, strict=True)] = 0.1
    environment: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False, strict=True)] = 0.3
    parameters: Annotated[float, Field(ge=0.0, le=10.0, allow_inf_nan=False, strict=True)] = 0.2


class SimilarityPolicy(PolicyModel):
    """Near misses: a known signature within ``max_distance`` makes a proposal *similar*
    (at most Level 2); nothing that near makes it novel (Level 1)."""

    max_distance: Annotated[float, Field(gt=0.0, le=10.0, allow_inf_nan=False, strict=True)] = 0.5
    weights: SimilarityWeights = SimilarityWeights()


class CalibrationPolicy(PolicyModel):
    """Calibrated confidence (streams/policy/calibration.py): reported confidence is
    binned, and a bin with at least ``min_samples`` judged proposals replaces the
    reported value by how often they were right (only ever lowering it)."""

    #: Divides the 100 bins the gate's state keeps (streams/policy/calibration.py).
    bins: Literal[1, 2, 4, 5, 10, 20, 25, 50, 100] = 10
    min_samples: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 20


class Velocity(PolicyModel):
    """At most this many autonomous executions per window, per service and fleet-wide."""

    window_seconds: Seconds
    max_per_service: Annotated[StrictInt, Field(ge=1)]
    max_fleet: Annotated[StrictInt, Field(ge=1)]


class Policy(PolicyModel):
    """A versioned, human-approved escalation policy.

    ``digest`` is the sha256 of the document's bytes, set by the loader, so every
    decision names exactly the text it was decided under.
    """

    policy: Governance
    trusted_ai_systems: Annotated[tuple[Name, ...], Field(min_length=0)]
    thresholds: Thresholds
    shared_infrastructure: tuple[Name, ...] = ()
    regulated: Regulated = Regulated()
    approval: Approval
    oncall: Oncall = DEFAULT_ONCALL
    abort_window_seconds: Seconds
    velocity: Velocity
    similarity: SimilarityPolicy = SimilarityPolicy()
    calibration: CalibrationPolicy = CalibrationPolicy()

    _digest: str = PrivateAttr(default="")
    _source: str = PrivateAttr(default="")
    #: The keyring this policy accepts (sha256 of its file); unset: any reviewed keyring.
    keyring_sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    # The keyring in force with this policy, set by the gate (recorded in decisions).
    _keyring_digest: str = PrivateAttr(default="")
    # What the evaluator derives from this policy once (streams/policy/evaluate.py).
    _plan: Any = PrivateAttr(default=None)

    @property
    def version(self) -> str:
        """The policy's version string, such as ``1.3``."""
        return self.policy.version

    @property
    def digest(self) -> str:
        """sha256 (hex) of the policy file's bytes."""
        return self._digest

    @property
    def evaluation_plan(self) -> Any:
        """The evaluator's precomputed view of this policy (``None`` until first use)."""
        return self._plan

    @property
    def keyring_digest(self) -> str:
        """sha256 of the keyring in force with this policy ("" when none is bound)."""
        return self._keyring_digest

    def bind_keyring(self, digest: str) -> None:
        """Record the keyring in force with this policy in its decisions."""
        self._keyring_digest = digest
        self._plan = None

    def keep_evaluation_plan(self, plan: Any) -> None:
        """Keep the evaluator's view on the policy (a private attribute: frozen allows it)."""
        self._plan = plan

    @property
    def source(self) -> str:
        """Where the policy was read from (a path, or ``control`` for a reload)."""
        return self._source

    def regulated_frameworks(self, service: str, namespace: str) -> tuple[str, ...]:
        """Frameworks the policy puts in scope for a target service or namespace."""
        return self.regulated.services.get(service, ()) + self.regulated.namespaces.get(
            namespace, ()
        )
