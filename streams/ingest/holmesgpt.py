"""HolmesGPT's answers as proposals: pure mapping, no I/O, no clock (``now`` comes in).

HolmesGPT reports what it found, not this project's proposal. Two of its responses
carry something the gate can decide on (docs/proposers.md has the whole contract):

- an **investigation result** (``/api/investigate``: ``analysis``, ``sections``,
  ``tool_calls``): the proposed remediation is a structured section,
  ``Proposed Action`` (a JSON object), that the caller asks for with the request's
  ``sections``; ``tool_calls`` are the evidence HolmesGPT gathered (read-only tools)
  and are named in the summary.
- a **chat response with** ``pending_approvals`` (``/api/chat`` with
  ``enable_tool_approval``): each pending tool call is one proposal; the tool is the
  action and its parameters the action's parameters and target.

Both arrive wrapped in an envelope (``HolmesEnvelope``) that carries what HolmesGPT's
response does not: the subject of the investigation (its request's ``subject``), the
failure pattern, the environment, and optionally the blast radius and what the
caller knows about its tools (reversible, idempotent). What HolmesGPT does not say
is assumed to be the worst case (not reversible, not idempotent, a whole service's
replicas and traffic), and a missing confidence is low (0.0): the gate then asks a
human. What cannot be mapped raises ``InputError`` naming the field of the input.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictStr, ValidationError

from streams.errors import InputError
from streams.models.base import Count, Id, WireModel
from streams.models.codec import canonical_json, describe_validation_error, parse_json
from streams.models.proposal import BlastRadius, Proposal

AI_SYSTEM = "holmesgpt"
#: Section names the caller requests from HolmesGPT (its request's ``sections``).
SECTION_ACTION = "Proposed Action"
SECTION_CONFIDENCE = "Confidence"
SECTION_PATTERN = "Pattern"
#: Parameters of a pending tool call that name its target, not the action's options.
TARGET_PARAMETERS = {
    "service": "service",
    "name": "service",
    "deployment": "service",
    "namespace": "namespace",
    "kind": "kind",
    "environment": "environment",
}
#: What an unknown blast radius is taken to be: the whole service (fail toward humans).
WORST_BLAST_RADIUS = BlastRadius(
    services=1, namespaces=1, replica_fraction=1.0, traffic_fraction=1.0
)
WORST_ROLLBACK_SECONDS = 86_400
MAX_SUMMARY = 4096
_PERCENT = re.compile(r"^\s*(\d{1,3}(?:\.\d+)?)\s*%\s*$")
_NUMBER = re.compile(r"^\s*([01](?:\.\d+)?|\.\d+)\s*$")


class _Lenient(BaseModel):
    """HolmesGPT's own response models: fields we do not use are ignored, not refused."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class HolmesToolCall(_Lenient):
    """``ToolCallResult`` of an investigation: the evidence, named in the summary."""

    tool_call_id: StrictStr
    tool_name: StrictStr
    description: StrictStr = ""


class HolmesPendingApproval(_Lenient):
    """``PendingToolApproval``: a tool call HolmesGPT wants to run and a human must allow."""

    tool_call_id: Id
    tool_name: Id
    description: StrictStr = ""
    params: dict[str, JsonValue] = Field(default_factory=dict)


class HolmesResponse(_Lenient):
    """``InvestigationResult`` or ``ChatResponse`` (the fields the mapping reads)."""

    analysis: StrictStr | None = None
    sections: dict[str, StrictStr | None] | None = None
    tool_calls: list[HolmesToolCall] | None = None
    pending_approvals: list[HolmesPendingApproval] | None = None
    metadata: dict[str, JsonValue] | None = None


class Subject(WireModel):
    """What HolmesGPT investigated (its request's ``subject``) and where it runs."""

    name: Id | None = None
    namespace: Id | None = None
    kind: Id | None = None
    environment: Id | None = None


class EnvelopeSource(WireModel):
    """The AI system that produced the response (``holmesgpt`` unless told otherwise)."""

    ai_system: Id = AI_SYSTEM
    model: Id | None = None


class ToolSemantics(WireModel):
    """What the caller knows about one of HolmesGPT's tools when run as a remediation."""

    action: Id | None = None
    idempotent: StrictBool = False
    reversible: StrictBool = False
    rollback_seconds: Count = WORST_ROLLBACK_SECONDS


class ProposedAction(WireModel):
    """The ``Proposed Action`` section of an investigation, as a JSON object."""

    type: Id
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    target: Subject = Subject()
    idempotent: StrictBool = False
    reversible: StrictBool = False
    rollback_seconds: Count = WORST_ROLLBACK_SECONDS


class HolmesEnvelope(WireModel):
    """A HolmesGPT response with what the gate needs beside it (docs/proposers.md)."""

    schema_version: int = 1
    proposal_id: Id | None = None
    request_id: Id | None = None
    created_at: dt.datetime | None = None
    source: EnvelopeSource = EnvelopeSource()
    subject: Subject = Subject()
    pattern: Id | None = None
    blast_radius: BlastRadius | None = None
    regulated: tuple[Id, ...] = ()
    tools: dict[Id, ToolSemantics] = Field(default_factory=dict)
    response: dict[str, JsonValue]


def _validated(model: type[Any], value: Any, prefix: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = describe_validation_error(exc)
        field = f"{prefix}.{error.field}" if error.field != "(message)" else prefix
        raise InputError(field, error.reason, kind="schema") from None


def parse_envelope(raw: bytes | str) -> HolmesEnvelope:
    """The envelope of a HolmesGPT response; a bare response is taken as ``response``."""
    obj = parse_json(raw)
    if not isinstance(obj, dict):
        raise InputError("(message)", f"expected a JSON object, got {type(obj).__name__}")
    if "response" not in obj and ("analysis" in obj or "pending_approvals" in obj):
        obj = {"response": obj}
    try:
        return HolmesEnvelope.model_validate(obj)
    except ValidationError as exc:
        raise describe_validation_error(exc) from None


def parse_confidence(text: str | None, field: str) -> float | None:
    """``0.85``, ``.85`` or ``85%`` as a fraction; ``None`` when absent or empty."""
    if text is None or not text.strip():
        return None
    if (m := _PERCENT.match(text)) is not None:
        value = float(m.group(1)) / 100
    elif (m := _NUMBER.match(text)) is not None:
        value = float(m.group(1))
    else:
        raise InputError(field, f"must be a number in [0, 1] or a percentage, got {text[:40]!r}")
    if not 0.0 <= value <= 1.0:
        raise InputError(field, f"must be in [0, 1], got {value}")
    return value


def _chat_fields(analysis: str | None) -> dict[str, Any]:
    """A chat answer asked for with our ``response_format``: a JSON object in ``analysis``."""
    if not analysis or not analysis.lstrip().startswith("{"):
        return {}
    try:
        value = parse_json(analysis)
    except InputError:
        return {}
    return value if isinstance(value, dict) else {}


def _summary(*parts: str | None) -> str:
    text = "\n".join(p.strip() for p in parts if p and p.strip())
    return text if len(text) <= MAX_SUMMARY else text[: MAX_SUMMARY - 3] + "..."


def _digest(*parts: Any) -> str:
    return hashlib.sha256(canonical_json(list(parts))).hexdigest()[:24]


def _target(
    subject: Subject, override: Subject, params: dict[str, JsonValue], where: str
) -> tuple[dict[str, str], dict[str, JsonValue]]:
    """The target from the tool's parameters, then the override, then the subject."""
    found: dict[str, str] = {}
    rest: dict[str, JsonValue] = {}
    for key, value in params.items():
        field = TARGET_PARAMETERS.get(key)
        if field is not None and isinstance(value, str) and value and field not in found:
            found[field] = value
        else:
            rest[key] = value
    for source in (override, subject):
        for field, value in (
            ("service", source.name),
            ("namespace", source.namespace),
            ("kind", source.kind),
            ("environment", source.environment),
        ):
            if value is not None:
                found.setdefault(field, value)
    for field in ("service", "namespace", "kind", "environment"):
        if field not in found:
            name = "name" if field == "service" else field
            raise InputError(
                f"subject.{name}",
                f"the target's {field} is in neither {where} nor the envelope's subject",
            )
    return found, rest


def _confidence(value: float | None) -> dict[str, Any]:
    # Absent means low: 0.0 is below every policy's assist line, so a human decides.
    return {"model": 0.0 if value is None else value, "heuristic": None}


def _proposal(fields: dict[str, Any], field: str) -> Proposal:
    return _validated(Proposal, fields, field)  # type: ignore[no-any-return]


def map_envelope(envelope: HolmesEnvelope, *, now: dt.datetime) -> list[Proposal]:
    """The proposals in a HolmesGPT response; ``InputError`` names what cannot be mapped."""
    response: HolmesResponse = _validated(HolmesResponse, envelope.response, "response")
    created_at = envelope.created_at or now
    if created_at.tzinfo is None:
        raise InputError("created_at", "must carry a timezone")
    metadata_model = (response.metadata or {}).get("model")
    source = {
        "ai_system": envelope.source.ai_system,
        "model": envelope.source.model
        or (metadata_model if isinstance(metadata_model, str) and metadata_model else None),
    }
    blast = envelope.blast_radius or WORST_BLAST_RADIUS
    common = {
        "schema_version": 1,
        "created_at": created_at,
        "source": source,
        "blast_radius": blast.model_dump(),
        "regulated": list(envelope.regulated),
    }
    if response.pending_approvals:
        return _from_approvals(envelope, response, common)
    if response.pending_approvals is not None and response.sections is None:
        raise InputError("response.pending_approvals", "is empty: nothing to propose")
    return [_from_investigation(envelope, response, common)]


def _from_investigation(
    envelope: HolmesEnvelope, response: HolmesResponse, common: dict[str, Any]
) -> Proposal:
    sections = response.sections
    if sections is None:
        raise InputError(
            "response.sections",
            "field required: an investigation proposes its action in the "
            f"{SECTION_ACTION!r} section (docs/proposers.md)",
        )
    field = f"response.sections.{SECTION_ACTION}"
    raw_action = sections.get(SECTION_ACTION)
    if raw_action is None or not raw_action.strip():
        raise InputError(field, "field required: the investigation proposes no action")
    try:
        action_obj = parse_json(raw_action)
    except InputError as exc:
        raise InputError(field, exc.reason, kind="schema") from None
    action: ProposedAction = _validated(ProposedAction, action_obj, field)
    target, parameters = _target(envelope.subject, action.target, action.parameters, field)
    pattern = envelope.pattern or (sections.get(SECTION_PATTERN) or "").strip()
    if not pattern:
        raise InputError(
            "pattern", f"field required (in the envelope or the {SECTION_PATTERN!r} section)"
        )
    confidence = parse_confidence(
        sections.get(SECTION_CONFIDENCE), f"response.sections.{SECTION_CONFIDENCE}"
    )
    evidence = [c.tool_name for c in response.tool_calls or []]
    proposal_id = envelope.proposal_id or "hg-" + _digest(
        envelope.request_id, envelope.response, target
    )
    return _proposal(
        {
            **common,
            "proposal_id": proposal_id,
            "pattern": pattern,
            "action": {
                "type": action.type,
                "target": target,
                "parameters": parameters,
                "idempotent": action.idempotent,
                "reversible": action.reversible,
                "rollback_seconds": action.rollback_seconds,
            },
            "confidence": _confidence(confidence),
            "summary": _summary(
                response.analysis or sections.get("Alert Explanation"),
                None if confidence is not None else "confidence: not reported (taken as 0)",
                f"evidence: {len(evidence)} tool call(s): {', '.join(evidence)}"
                if evidence
                else None,
            ),
        },
        "(proposal)",
    )


def _from_approvals(
    envelope: HolmesEnvelope, response: HolmesResponse, common: dict[str, Any]
) -> list[Proposal]:
    fields = _chat_fields(response.analysis)
    pattern = envelope.pattern or fields.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        raise InputError("pattern", "field required (in the envelope or the analysis' JSON object)")
    reported = fields.get("confidence")
    if reported is not None and (
        not isinstance(reported, int | float) or isinstance(reported, bool)
    ):
        raise InputError("response.analysis.confidence", f"must be a number, got {reported!r}")
    confidence = (
        None
        if reported is None
        else parse_confidence(str(float(reported)), "response.analysis.confidence")
    )
    summary_text = fields.get("summary") if isinstance(fields.get("summary"), str) else None
    out: list[Proposal] = []
    many = len(response.pending_approvals or []) > 1
    for index, approval in enumerate(response.pending_approvals or []):
        where = f"response.pending_approvals[{index}]"
        semantics = envelope.tools.get(approval.tool_name, ToolSemantics())
        target, parameters = _target(
            envelope.subject, Subject(), approval.params, f"{where}.params"
        )
        if envelope.proposal_id is not None:
            proposal_id = f"{envelope.proposal_id}-{index + 1}" if many else envelope.proposal_id
        else:
            proposal_id = "hg-" + _digest(
                envelope.request_id, approval.tool_call_id, approval.tool_name, approval.params
            )
        out.append(
            _proposal(
                {
                    **common,
                    "proposal_id": proposal_id,
                    "pattern": pattern.strip(),
                    "action": {
                        "type": semantics.action or approval.tool_name,
                        "target": target,
                        "parameters": parameters,
                        "idempotent": semantics.idempotent,
                        "reversible": semantics.reversible,
                        "rollback_seconds": semantics.rollback_seconds,
                    },
                    "confidence": _confidence(confidence),
                    "summary": _summary(
                        summary_text or response.analysis,
                        f"tool {approval.tool_name}: {approval.description}",
                        None if confidence is not None else "confidence: not reported (taken as 0)",
                    ),
                },
                where,
            )
        )
    return out


def map_holmesgpt(raw: bytes | str, *, now: dt.datetime) -> list[Proposal]:
    """Parse an envelope (or a bare response) and map it: ``parse_envelope`` + ``map_envelope``."""
    return map_envelope(parse_envelope(raw), now=now)


__all__ = [
    "AI_SYSTEM",
    "SECTION_ACTION",
    "SECTION_CONFIDENCE",
    "SECTION_PATTERN",
    "HolmesEnvelope",
    "HolmesResponse",
    "map_envelope",
    "map_holmesgpt",
    "parse_confidence",
    "parse_envelope",
]
