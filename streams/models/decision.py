"""The gate's decision (OPA's decision log event is the model) and execute commands."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue
from typing_extensions import TypedDict

from streams.models.base import Bool, Count, Id, Instant, Level, Text, WireModel
from streams.models.context import Context
from streams.models.proposal import Proposal

Route = Literal["execute", "approve", "assist", "manual"]
Trigger = Literal["confidence", "blast_radius", "novelty", "regulatory"]

LEVEL_NAMES: dict[int, str] = {
    0: "manual",
    1: "assisted",
    2: "supervised",
    3: "conditional_autonomous",
    4: "autonomous",
}
ROUTES: dict[int, Route] = {0: "manual", 1: "assist", 2: "approve", 3: "execute", 4: "execute"}


class Condition(TypedDict):
    """One condition the evaluator checked: what it saw, against what, and the verdict.

    ``holds`` is true when the condition's statement is true (for example
    ``composite_confidence < 0.60``); whether that raises or lowers autonomy depends
    on the rule it belongs to. A TypedDict rather than a model: a decision carries
    about thirty of these and ``evaluate`` builds them on the hot path.
    """

    rule: str
    name: str
    observed: JsonValue
    operator: str
    threshold: JsonValue
    holds: bool


class Decision(WireModel):
    """The automation level for one proposal, with every reason for it."""

    type: Literal["decision"] = "decision"
    schema_version: Literal[1] = 1
    decision_id: Id
    proposal_id: Id
    level: Level
    level_name: Id
    route: Route
    deciding_rule: Id
    triggers: tuple[Trigger, ...]
    change_record_required: Bool
    conditions: tuple[Condition, ...]
    policy_version: Id
    policy_digest: Id
    #: sha256 of the keyring in force: who could sign what when this was decided.
    keyring_digest: Text = ""
    decided_at: Instant
    abort_window_ends_at: Instant | None = None
    approval_timeout_at: Instant | None = None
    #: How many different people must approve (the policy's ``approval.quorums``).
    approvals_required: Annotated[int, Field(ge=1, le=10, strict=True)] = 1
    notify_humans: Bool
    proposal: Proposal
    context: Context


def decision_json(decision: Decision) -> dict[str, Any]:
    """``decision.model_dump(mode="json")``, about three times cheaper.

    The conditions are TypedDicts of JSON values already (``evaluate`` builds them
    from finite numbers, strings, booleans, ``None`` and lists), and pydantic's
    ``JsonValue`` serialiser inspects each value's type through a Python callable:
    thirty conditions, sixty calls per decision. Everything else goes through
    pydantic as before. A unit test holds the two equal for every sample scenario.
    """
    out = decision.model_dump(mode="json", exclude={"conditions"})
    out["conditions"] = [dict(condition) for condition in decision.conditions]
    return out


class ExecuteCommand(WireModel):
    """An instruction to executors on ``decisions.execute`` after a human answered.

    ``execute`` follows an accepted Level 2 approval (the approved decision was sent
    on ``decisions.approve`` with the same ``decision_id``); ``abort`` follows an
    abort inside a Level 3 window. ``command_id`` is deterministic, for de-duplication.
    """

    type: Literal["execute", "abort"]
    schema_version: Literal[1] = 1
    command_id: Id
    decision_id: Id
    proposal_id: Id
    level: Level
    by: Id
    change_record: Id | None = None
    issued_at: Instant
    service: Id
    pattern: Id
    action_type: Id


class OncallEscalation(WireModel):
    """A page to on-call: an approval nobody answered, or a failed verification.

    ``target`` is the step of the policy's on-call chain this escalation pages
    (escalation 1 the first, 2 the second, ...); ``None`` from a gate that does not
    know the chain, and the pager then pages its default target.
    """

    type: Literal["escalation"] = "escalation"
    schema_version: Literal[1] = 1
    escalation_id: Id
    decision_id: Id
    proposal_id: Id
    reason: Literal["approval_timeout", "verification_failed"]
    escalation_number: Annotated[Count, Field(ge=1)] = 1
    target: Id | None = None
    level: Level | None = None
    asked: tuple[Id, ...] = ()
    service: Id
    pattern: Id
    action_type: Id
    summary: Text = ""
    at: Instant


class OncallResolution(WireModel):
    """On ``oncall``, after an escalated approval was answered: every page of the
    decision (each alert and incident its escalations opened) is resolved.

    Keyed like the escalations (by service), so it follows them on their partition.
    ``resolution_id`` is deterministic (``DECISION_ID:resolved``), for de-duplication.
    """

    type: Literal["resolved"] = "resolved"
    schema_version: Literal[1] = 1
    resolution_id: Id
    decision_id: Id
    proposal_id: Id
    service: Id
    escalations: Annotated[Count, Field(ge=1)]
    answer: Literal["approve", "reject", "abort"]
    by: Id
    at: Instant
