"""HolmesGPT's responses (recorded from its own models) mapped to proposals."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.errors import InputError
from streams.ingest.clients import Clients, new_token, token_hash
from streams.ingest.holmesgpt import map_holmesgpt, parse_confidence
from streams.ingest.letters import dead_letter
from streams.models import DeadLetter, Proposal, decode, encode

HOLMES = Path(__file__).resolve().parents[1] / "fixtures" / "holmesgpt"
NOW = dt.datetime(2026, 11, 28, 10, 0, 5, tzinfo=dt.UTC)


def _load(name: str) -> dict[str, Any]:
    value = orjson.loads((HOLMES / name).read_bytes())
    assert isinstance(value, dict)
    return value


def _map(value: dict[str, Any] | str) -> list[Proposal]:
    raw = (HOLMES / value).read_bytes() if isinstance(value, str) else orjson.dumps(value)
    return map_holmesgpt(raw, now=NOW)


def test_an_investigation_maps_its_sections_to_one_proposal() -> None:
    [proposal] = _map("investigation.json")

    assert proposal.source.ai_system == "holmesgpt"
    assert proposal.source.model == "gpt-4.1"  # from the response's metadata
    assert proposal.pattern == "oom-kill/stateless-deployment"
    assert proposal.action.type == "rolling_restart"
    assert proposal.action.target.model_dump() == {
        "service": "checkout-api",
        "namespace": "shop",
        "environment": "production",
        "kind": "Deployment",
    }
    assert (proposal.action.reversible, proposal.action.rollback_seconds) == (True, 60)
    assert proposal.confidence.model == 0.92
    assert proposal.confidence.heuristic is None
    assert proposal.summary.startswith("checkout-api pods were OOMKilled")
    assert "evidence: 2 tool call(s): kubectl_describe, fetch_pod_logs" in proposal.summary
    assert proposal.created_at == dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
    assert decode(Proposal, encode(proposal)) == proposal


def test_an_unreported_confidence_is_low_and_said_so() -> None:
    [proposal] = _map("investigation-no-confidence.json")

    assert proposal.confidence.model == 0.0
    assert "confidence: not reported" in proposal.summary


def test_a_percentage_confidence_is_a_fraction() -> None:
    [proposal] = _map("investigation-percent-confidence.json")

    assert proposal.confidence.model == pytest.approx(0.85)


def test_unknown_blast_radius_and_reversibility_are_the_worst_case() -> None:
    value = _load("chat-no-confidence.json")

    [proposal] = _map(value)

    assert proposal.blast_radius.replica_fraction == 1.0
    assert proposal.blast_radius.traffic_fraction == 1.0
    assert proposal.action.reversible is False
    assert proposal.action.idempotent is False
    assert proposal.action.type == "kubernetes_rollout_restart"  # the tool is the action


def test_each_pending_approval_is_one_proposal_with_the_tool_parameters() -> None:
    restart, scale = _map("chat-two-approvals.json")

    assert (restart.action.type, scale.action.type) == ("rolling_restart", "scale_up")
    assert scale.action.parameters == {"replicas_delta": 2}
    assert scale.action.target.service == "checkout-api"
    assert restart.confidence.model == 0.88
    assert restart.summary.startswith("checkout-api leaks its cache")
    assert restart.proposal_id != scale.proposal_id


def test_proposal_ids_are_deterministic_so_a_retry_is_idempotent() -> None:
    first = [p.proposal_id for p in _map("chat-two-approvals.json")]
    again = [p.proposal_id for p in _map("chat-two-approvals.json")]
    value = _load("chat-two-approvals.json")
    value["request_id"] = "another-request"

    assert first == again
    assert [p.proposal_id for p in _map(value)] != first


def test_an_envelope_proposal_id_is_kept_and_numbered_for_several_approvals() -> None:
    value = _load("chat-two-approvals.json")
    value["proposal_id"] = "hg-42"

    assert [p.proposal_id for p in _map(value)] == ["hg-42-1", "hg-42-2"]


def test_a_bare_response_is_accepted_when_the_action_names_its_target() -> None:
    value = _load("investigation-bare.json")
    action = orjson.loads(value["sections"]["Proposed Action"])
    action["target"] = {
        "name": "checkout-api",
        "namespace": "shop",
        "kind": "Deployment",
        "environment": "staging",
    }
    value["sections"]["Proposed Action"] = orjson.dumps(action).decode()

    [proposal] = _map(value)

    assert proposal.action.target.environment == "staging"
    assert proposal.created_at == NOW  # no envelope: the instant it was received


@pytest.mark.parametrize(
    ("name", "field", "message"),
    [
        ("investigation-no-action.json", "response.sections.Proposed Action", "field required"),
        ("investigation-bad-confidence.json", "response.sections.Confidence", "must be a number"),
        ("investigation-bare.json", "subject.name", "neither"),
        ("chat-no-namespace.json", "subject.namespace", "neither"),
    ],
)
def test_what_cannot_be_mapped_names_the_field(name: str, field: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        _map(name)

    assert caught.value.field == field
    assert message in caught.value.reason


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"response": {"analysis": "x", "sections": {"Proposed Action": "{not json"}}},
         "response.sections.Proposed Action"),
        ({"response": {"analysis": "x", "sections": {"Proposed Action": '{"type": 3}'}}},
         "response.sections.Proposed Action.type"),
        ({"response": {"analysis": "x", "pending_approvals": []}}, "response.pending_approvals"),
        ({"response": {"pending_approvals": [{"tool_name": "t"}]}},
         "response.pending_approvals[0].tool_call_id"),
        ({"pattern": None, "response": {"analysis": "no JSON here", "pending_approvals": [
            {"tool_call_id": "c", "tool_name": "t", "params": {}}]}}, "pattern"),
        ({"blast_radius": {"services": 0}}, "blast_radius.services"),
        ({"unknown": 1}, "unknown"),
    ],
)  # fmt: skip
def test_malformed_envelopes_name_the_field(change: dict[str, Any], field: str) -> None:
    value = {**_load("investigation.json"), **change}

    with pytest.raises(InputError) as caught:
        _map(value)

    assert caught.value.field == field


def test_a_chat_confidence_that_is_not_a_number_names_the_field() -> None:
    value = _load("chat-approval.json")
    value["response"]["analysis"] = orjson.dumps({"pattern": "p", "confidence": "high"}).decode()

    with pytest.raises(InputError) as caught:
        _map(value)

    assert caught.value.field == "response.analysis.confidence"


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.9", 0.9), (" .75 ", 0.75), ("1", 1.0), ("0", 0.0), ("85%", 0.85), ("100 %", 1.0),
     (None, None), ("  ", None)],
)  # fmt: skip
def test_confidence_forms(text: str | None, value: float | None) -> None:
    assert parse_confidence(text, "f") == (pytest.approx(value) if value is not None else None)


@pytest.mark.parametrize("text", ["1.5", "150%", "high", "-0.1", "nan", "0.9 or so"])
def test_confidence_out_of_range_or_words_is_an_error(text: str) -> None:
    with pytest.raises(InputError, match=r"^f: "):
        parse_confidence(text, "f")


def test_a_dead_letter_keeps_the_original_bytes_and_names_its_origin() -> None:
    raw = (HOLMES / "investigation-no-action.json").read_bytes()
    with pytest.raises(InputError) as caught:
        map_holmesgpt(raw, now=NOW)

    letter = dead_letter(raw, caught.value, where="file:x.json", at=NOW)

    assert base64.b64decode(letter.value_b64) == raw
    assert (letter.topic, letter.partition, letter.offset) == ("file:x.json", -1, -1)
    assert letter.reason == "schema"
    assert letter.error.startswith("response.sections.Proposed Action: field required")
    assert decode(DeadLetter, encode(letter)) == letter


def test_not_json_is_a_not_json_dead_letter() -> None:
    with pytest.raises(InputError) as caught:
        map_holmesgpt(b"{oops", now=NOW)

    assert dead_letter(b"{oops", caught.value, where="w", at=NOW).reason == "not_json"


def test_clients_authenticate_by_token_hash_only() -> None:
    token, digest = new_token()
    clients = Clients.parse(
        f"clients:\n  - ai_system: holmesgpt\n    token_sha256: [{digest}]\n"
        "    rate_limit: 10/second;100/minute\n"
    )

    client = clients.authenticate(token)

    assert client is not None
    assert client.ai_system == "holmesgpt"
    assert [str(i) for i in client.limits] == ["10 per 1 second", "100 per 1 minute"]
    assert clients.authenticate(token + "x") is None
    assert clients.authenticate(digest) is None  # the hash is not a token
    assert token_hash(token) == digest


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("clients:\n  - ai_system: a\n    token_sha256: [abc]\n", "clients[0].token_sha256"),
        ("clients:\n  - ai_system: a\n    token_sha256: " + "a" * 64 + "\n    rate_limit: fast\n",
         "clients[0].rate_limit"),
        ("clients:\n  - token_sha256: " + "a" * 64 + "\n", "clients[0].ai_system"),
        ("clients:\n  - ai_system: a\n    token: x\n    token_sha256: " + "a" * 64 + "\n",
         "clients[0].token"),
        ("clients: [\n", "c.yaml"),
    ],
)  # fmt: skip
def test_a_bad_clients_file_names_the_field(text: str, field: str) -> None:
    with pytest.raises(InputError) as caught:
        Clients.parse(text, source="c.yaml")

    assert str(caught.value).startswith("c.yaml")
    assert field in str(caught.value)
