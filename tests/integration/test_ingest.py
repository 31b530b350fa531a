"""The HTTP intake and ``escalation ingest holmesgpt`` on the real broker.

One intake per module (uvicorn in a thread, its own topic prefix); every refusal the
intake promises is tried over HTTP and its absence on the topic proven by reading up
to a later marker proposal.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from harness import DecisionReader, Reader

from streams.ingest.app import IngestMetrics, create_app
from streams.ingest.clients import Clients, token_hash
from streams.ingest.publisher import Publisher
from streams.kafka.admin import create_topics
from streams.settings import Settings
from streams.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
HOLMES = ROOT / "tests" / "fixtures" / "holmesgpt"
BASE = orjson.loads((ROOT / "tests" / "fixtures" / "proposal.json").read_bytes())
TOKENS = {"holmesgpt": "tok-holmes-" + uuid.uuid4().hex, "k8sgpt": "tok-k8s-" + uuid.uuid4().hex}
SLOW_TOKEN = "tok-slow-" + uuid.uuid4().hex


class Intake:
    """A running intake: its base URL, its settings and a reader of its topics."""

    def __init__(self, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)

    def post(self, path: str, body: Any, token: str | None = TOKENS["holmesgpt"]) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.http.post(path, content=content, headers=headers)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.http.get("/metrics/").text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def proposal(**overrides: Any) -> dict[str, Any]:
    return {**BASE, "proposal_id": "p-" + uuid.uuid4().hex[:12], **overrides}


@pytest.fixture(scope="module")
def intake(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Intake]:
    prefix = f"t-{uuid.uuid4().hex[:8]}."
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        topic_prefix=prefix,
        data_dir=tmp_path_factory.mktemp("ingest"),
    )
    create_topics(settings, kafka_bootstrap)
    clients = Clients.parse(
        orjson.dumps(
            {
                "clients": [
                    {"ai_system": name, "token_sha256": token_hash(token),
                     "rate_limit": "50/second"}
                    for name, token in TOKENS.items()
                ]
                + [
                    {"ai_system": "slowbot", "token_sha256": token_hash(SLOW_TOKEN),
                     "rate_limit": "2/minute"},
                ]
            }
        )
    )  # fmt: skip
    publisher = Publisher(kafka_bootstrap)
    app = create_app(
        clients=clients,
        publisher=publisher,
        proposals_topic=settings.topic("proposals"),
        dlq_topic=settings.topic("dlq"),
        max_body_bytes=settings.max_message_bytes,
        metrics=IngestMetrics(),
    )
    import socket  # noqa: PLC0415

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, timeout=60), "intake did not start"
    running = Intake(settings, f"http://127.0.0.1:{sock.getsockname()[1]}")
    try:
        yield running
    finally:
        server.should_exit = True
        thread.join(30)
        publisher.close()
        running.http.close()


def records_until_marker(intake: Intake, topic: str, marker_id: str) -> list[dict[str, Any]]:
    """Every record of ``topic`` up to the marker proposal (published last)."""
    with Reader(intake.settings.bootstrap_servers or "", [intake.settings.topic(topic)]) as r:
        assert r.wait(
            lambda rd: any(v.get("proposal_id") == marker_id for v in rd.values()), timeout=90
        ), "the marker never arrived"
        return r.values()


def marker(intake: Intake) -> str:
    body = proposal()
    response = intake.post("/v1/proposals", body)
    assert response.status_code == 202, response.text
    return str(body["proposal_id"])


def test_a_proposal_is_answered_202_once_the_broker_has_it(intake: Intake) -> None:
    body = proposal()

    response = intake.post("/v1/proposals", body)

    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["proposal_id"] == body["proposal_id"]
    assert answer["proposal_ids"] == [body["proposal_id"]]
    assert answer["topic"] == intake.settings.topic("proposals")
    with Reader(intake.settings.bootstrap_servers or "", [answer["topic"]]) as reader:
        assert reader.wait(
            lambda r: any(m.offset() == answer["offset"] for m in r.messages), timeout=60
        )
        [record] = [
            m
            for m in reader.messages
            if m.partition() == answer["partition"] and m.offset() == answer["offset"]
        ]
        assert orjson.loads(record.value())["proposal_id"] == body["proposal_id"]
        assert record.key() == b"checkout-api"


def test_the_same_proposal_twice_is_the_same_202_and_one_record(intake: Intake) -> None:
    body = proposal()

    first = intake.post("/v1/proposals", body)
    again = intake.post("/v1/proposals", body)
    changed = intake.post("/v1/proposals", {**body, "summary": "something else"})

    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert changed.status_code == 409
    assert changed.json()["field"] == "proposal_id"
    values = records_until_marker(intake, "proposals", marker(intake))
    assert [v["summary"] for v in values if v["proposal_id"] == body["proposal_id"]] == [
        body["summary"]
    ]
    assert intake.metric("escalation_ingest_refused_total", reason="conflict") >= 1


@pytest.mark.parametrize(
    ("token", "error"),
    [
        (None, "authorization: a bearer token is required"),
        ("not-a-token", "authorization: unknown bearer token"),
    ],
)
def test_a_request_without_a_known_token_is_401_and_publishes_nothing(
    intake: Intake, token: str | None, error: str
) -> None:
    body = proposal()
    before = intake.metric("escalation_ingest_refused_total", reason="unauthenticated")

    response = intake.post("/v1/proposals", body, token=token)

    assert response.status_code == 401
    assert response.json()["error"] == error
    assert response.headers["www-authenticate"].startswith("Bearer")
    values = records_until_marker(intake, "proposals", marker(intake))
    assert body["proposal_id"] not in {v["proposal_id"] for v in values}
    assert intake.metric("escalation_ingest_refused_total", reason="unauthenticated") == before + 1


@pytest.mark.parametrize("path", ["/v1/proposals", "/v1/holmesgpt"])
def test_an_ai_system_cannot_publish_as_another_one(intake: Intake, path: str) -> None:
    """k8sgpt's token with a proposal that claims to come from holmesgpt: 403, nothing sent."""
    if path == "/v1/proposals":
        body: Any = proposal()
        ids = {body["proposal_id"]}
    else:
        body = orjson.loads((HOLMES / "investigation.json").read_bytes())
        body["proposal_id"] = "hg-forged-" + uuid.uuid4().hex[:8]
        ids = {body["proposal_id"]}
    before = intake.metric("escalation_ingest_refused_total", reason="forbidden")

    response = intake.post(path, body, token=TOKENS["k8sgpt"])

    assert response.status_code == 403, response.text
    assert response.json()["field"] == "source.ai_system"
    assert "'k8sgpt', not 'holmesgpt'" in response.json()["error"]
    values = records_until_marker(intake, "proposals", marker(intake))
    assert not ids & {v["proposal_id"] for v in values}
    assert intake.metric("escalation_ingest_refused_total", reason="forbidden") == before + 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"confidence": {"model": 1.5}}, "confidence.model"),
        ({"action": {**BASE["action"], "target": {"service": "x"}}}, "action.target.namespace"),
        ({"created_at": 12345}, "created_at"),
    ],
)
def test_an_invalid_proposal_is_422_naming_the_field(
    intake: Intake, change: dict[str, Any], field: str
) -> None:
    response = intake.post("/v1/proposals", proposal(**change))

    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(field + ":")


def test_not_json_is_422(intake: Intake) -> None:
    response = intake.post("/v1/proposals", b"{not json")

    assert response.status_code == 422
    assert "not JSON" in response.json()["error"]


def test_an_ai_system_over_its_rate_limit_gets_429_with_retry_after(intake: Intake) -> None:
    answers = [
        intake.post("/v1/proposals", proposal(source={"ai_system": "slowbot"}), token=SLOW_TOKEN)
        for _ in range(3)
    ]

    assert [a.status_code for a in answers] == [202, 202, 429]
    assert 1 <= int(answers[2].headers["retry-after"]) <= 60
    # Another AI system is not held back by slowbot's limit.
    assert intake.post("/v1/proposals", proposal()).status_code == 202
    assert intake.metric("escalation_ingest_refused_total", reason="rate_limited") >= 1


def test_a_holmesgpt_chat_response_publishes_one_proposal_per_pending_approval(
    intake: Intake,
) -> None:
    body = orjson.loads((HOLMES / "chat-two-approvals.json").read_bytes())
    body["request_id"] = "chat-" + uuid.uuid4().hex[:8]

    response = intake.post("/v1/holmesgpt", body)
    again = intake.post("/v1/holmesgpt", body)

    assert response.status_code == 202, response.text
    assert again.json() == response.json()
    ids = response.json()["proposal_ids"]
    assert len(ids) == 2
    values = {v["proposal_id"]: v for v in records_until_marker(intake, "proposals", ids[-1])}
    assert [values[i]["action"]["type"] for i in ids] == ["rolling_restart", "scale_up"]
    assert values[ids[1]]["action"]["parameters"] == {"replicas_delta": 2}
    assert values[ids[0]]["confidence"] == {"model": 0.88, "heuristic": None}


def test_an_unmappable_holmesgpt_response_is_422_and_goes_to_the_dead_letter_topic(
    intake: Intake,
) -> None:
    raw = (HOLMES / "investigation-no-action.json").read_bytes()
    raw = raw.replace(b"inv-20261128-0001", uuid.uuid4().hex.encode())
    before = intake.metric("escalation_ingest_dead_letters_total", reason="schema")

    response = intake.post("/v1/holmesgpt", raw)

    assert response.status_code == 422
    assert response.json()["field"] == "response.sections.Proposed Action"
    with Reader(intake.settings.bootstrap_servers or "", [intake.settings.topic("dlq")]) as r:
        assert r.wait(
            lambda rd: any(base64.b64decode(v["value_b64"]) == raw for v in rd.values()),
            timeout=60,
        )
        [letter] = [v for v in r.values() if base64.b64decode(v["value_b64"]) == raw]
    assert letter["topic"] == "http:/v1/holmesgpt"
    assert letter["reason"] == "schema"
    assert letter["error"].startswith("response.sections.Proposed Action:")
    assert intake.metric("escalation_ingest_dead_letters_total", reason="schema") == before + 1


def test_the_openapi_document_names_both_endpoints_and_their_schemas(intake: Intake) -> None:
    document = intake.http.get("/openapi.json").json()

    assert {"/v1/proposals", "/v1/holmesgpt"} <= set(document["paths"])
    post = document["paths"]["/v1/proposals"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Proposal"
    }
    assert {"202", "401", "403", "409", "422", "429"} <= set(post["responses"])
    schemas = document["components"]["schemas"]
    assert {"Proposal", "HolmesEnvelope", "Target"} <= set(schemas)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_ingest_holmesgpt_cli_publishes_and_dead_letters(intake: Intake, tmp_path: Path) -> None:
    good = orjson.loads((HOLMES / "investigation.json").read_bytes())
    good["proposal_id"] = "hg-cli-" + uuid.uuid4().hex[:8]
    (tmp_path / "good.json").write_bytes(orjson.dumps(good))
    bad = (HOLMES / "investigation-bad-confidence.json").read_bytes()
    bad = bad.replace(b"inv-20261128-0001", uuid.uuid4().hex.encode())
    (tmp_path / "bad.json").write_bytes(bad)

    published = _cli(intake.settings, "ingest", "holmesgpt", str(tmp_path / "good.json"))
    refused = _cli(intake.settings, "ingest", "holmesgpt", str(tmp_path / "bad.json"))

    assert published.returncode == 0, published.stderr
    assert good["proposal_id"] in published.stdout
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "response.sections.Confidence: must be a number" in refused.stderr
    values = records_until_marker(intake, "proposals", good["proposal_id"])
    assert any(v["proposal_id"] == good["proposal_id"] for v in values)
    with Reader(intake.settings.bootstrap_servers or "", [intake.settings.topic("dlq")]) as r:
        assert r.wait(
            lambda rd: any(base64.b64decode(v["value_b64"]) == bad for v in rd.values()),
            timeout=60,
        )


@pytest.mark.slow  # a worker of its own (about a minute); test_trust.py covers the worker
def test_a_holmesgpt_proposal_over_http_is_decided_by_the_gate(
    settings: Settings, worker: Any, kafka_bootstrap: str
) -> None:
    """End to end: intake -> proposals -> worker -> a decision naming the proposal."""
    publisher = Publisher(kafka_bootstrap)
    token = "tok-e2e-" + uuid.uuid4().hex
    app = create_app(
        clients=Clients.parse(
            orjson.dumps(
                {"clients": [{"ai_system": "holmesgpt", "token_sha256": token_hash(token)}]}
            )
        ),
        publisher=publisher,
        proposals_topic=settings.topic("proposals"),
        dlq_topic=settings.topic("dlq"),
        max_body_bytes=settings.max_message_bytes,
    )
    body = orjson.loads((HOLMES / "investigation.json").read_bytes())
    try:
        transport = httpx.ASGITransport(app=app)

        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://intake") as c:
                return await c.post(
                    "/v1/holmesgpt",
                    content=orjson.dumps(body),
                    headers={"authorization": f"Bearer {token}"},
                )

        import asyncio  # noqa: PLC0415

        response = asyncio.run(send())
        assert response.status_code == 202, response.text
        [proposal_id] = response.json()["proposal_ids"]
        with DecisionReader(settings) as reader:
            decision = reader.wait_for([proposal_id], timeout=90)[proposal_id]
        # The worker has no history of this pattern: novel, assist only.
        assert decision["level"] == 1
        assert "novelty" in decision["triggers"]
        assert decision["proposal"]["source"]["ai_system"] == "holmesgpt"
        assert decision["proposal"]["created_at"] == "2026-11-28T10:00:00Z"
        assert dt.datetime.fromisoformat(decision["decided_at"]).tzinfo is not None
    finally:
        publisher.close()
