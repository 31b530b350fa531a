"""``escalation ingest serve``: the HTTP intake where AI systems publish proposals.

Each request goes through the same steps, in this order, and the first that refuses
answers: authenticate the bearer token (401), rate-limit its AI system (429 with
``Retry-After``), bound the body (413), validate it (422 naming the field; a
HolmesGPT response that cannot be mapped also goes to ``dlq``), check that the
proposal is published by the token's own AI system (403), check idempotency on
``proposal_id`` (409 when the id was published with another body), publish and wait
for the broker's acknowledgement (202 with the ``proposal_id``; 503 if the broker
did not acknowledge in time). Every refusal is counted in
``escalation_ingest_refused_total{reason}``.

The body is read as bytes and decoded by the project's own decoder (``streams.models
.codec``), so a field error reads exactly as it does on the dead-letter topic; the
OpenAPI document names the request schemas (``/openapi.json``). Swagger UI is not
served: it loads its scripts from a CDN.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import CollectorRegistry, Counter, make_asgi_app
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from streams.errors import InputError
from streams.ingest.clients import Client, Clients
from streams.ingest.holmesgpt import HolmesEnvelope, map_envelope, parse_envelope
from streams.ingest.letters import dead_letter
from streams.ingest.publisher import Publisher, PublishError
from streams.models.codec import canonical_json, decode, encode
from streams.models.proposal import Proposal

MAX_REMEMBERED = 100_000
PROPOSALS_PATH = "/v1/proposals"
HOLMESGPT_PATH = "/v1/holmesgpt"


class Accepted(BaseModel):
    """202: the broker has every proposal of the request."""

    status: str = "accepted"
    proposal_ids: list[str]
    proposal_id: str
    topic: str
    partition: int
    offset: int
    records: list[dict[str, Any]]


class Refused(BaseModel):
    """4xx/5xx: what was refused, naming the field where there is one."""

    error: str
    field: str | None = None


class IngestMetrics:
    """The intake's own metrics (a registry per app: tests pass a fresh one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.accepted = Counter(
            "escalation_ingest_proposals_total",
            "Proposals accepted by the HTTP intake and acknowledged by the broker",
            ["ai_system", "endpoint"],
            registry=self.registry,
        )
        self.refused = Counter(
            "escalation_ingest_refused_total",
            "Requests refused by the HTTP intake",
            ["reason", "endpoint"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "escalation_ingest_dead_letters_total",
            "Input the intake could not map, sent to the dead-letter topic",
            ["reason", "endpoint"],
            registry=self.registry,
        )


class Refusal(Exception):  # noqa: N818 - a value raised to answer, not an error of ours
    """An HTTP answer other than 202, raised from any step and answered by the route."""

    def __init__(
        self,
        status: int,
        reason: str,
        error: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.reason, self.error, self.field = status, reason, error, field
        self.headers = headers or {}


@dataclass(slots=True)
class _Entry:
    digest: str
    answer: asyncio.Future[dict[str, Any]]


@dataclass(slots=True)
class Ledger:
    """What was published by ``proposal_id``: the body's digest and the 202 it got.

    In memory, bounded (oldest forgotten first): a restart forgets it, and a retry
    after that is published again (the gate decides a redelivered proposal with the
    same ``decision_id``, so consumers de-duplicate it as any redelivery).
    """

    limit: int = MAX_REMEMBERED
    entries: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)

    def check(self, proposal_id: str, digest: str) -> None:
        """A 409 refusal when ``proposal_id`` was published with another body."""
        entry = self.entries.get(proposal_id)
        if entry is not None and entry.digest != digest:
            raise Refusal(
                409,
                "conflict",
                f"proposal_id: {proposal_id!r} was already published with a different body",
                "proposal_id",
            )

    def claim(self, proposal_id: str, digest: str) -> tuple[bool, _Entry]:
        """``(new, entry)``: ``new`` when this request is the one to publish it."""
        self.check(proposal_id, digest)
        entry = self.entries.get(proposal_id)
        if entry is not None:
            return False, entry
        entry = _Entry(digest, asyncio.get_running_loop().create_future())
        self.entries[proposal_id] = entry
        while len(self.entries) > self.limit:
            self.entries.popitem(last=False)
        return True, entry

    def forget(self, proposal_id: str) -> None:
        self.entries.pop(proposal_id, None)


def _component_schemas(*models: type[BaseModel]) -> dict[str, Any]:
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    return dict(top.get("$defs", {}))


def _body_of(model: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}}},
        }
    }


_ANSWERS: dict[int | str, dict[str, Any]] = {
    202: {"model": Accepted, "description": "Acknowledged by the broker"},
    401: {"model": Refused, "description": "No or unknown bearer token"},
    403: {"model": Refused, "description": "source.ai_system is not the token's AI system"},
    409: {"model": Refused, "description": "proposal_id already published with another body"},
    413: {"model": Refused, "description": "Body larger than ESCALATION_MAX_MESSAGE_BYTES"},
    422: {"model": Refused, "description": "Invalid body; names the field"},
    429: {"model": Refused, "description": "Rate limit of the AI system; see Retry-After"},
    503: {"model": Refused, "description": "The broker did not acknowledge in time"},
}


def create_app(
    *,
    clients: Clients,
    publisher: Publisher,
    proposals_topic: str,
    dlq_topic: str,
    max_body_bytes: int,
    metrics: IngestMetrics | None = None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(tz=dt.UTC),
) -> FastAPI:
    """The intake's ASGI app; the caller owns ``publisher`` (and closes it)."""
    metrics = metrics or IngestMetrics()
    limiter = MovingWindowRateLimiter(MemoryStorage())
    ledger = Ledger()
    app = FastAPI(
        title="Escalation Gate intake",
        version="1",
        summary="AI systems publish remediation proposals; the gate decides their level.",
        docs_url=None,
        redoc_url=None,
    )
    app.mount("/metrics", make_asgi_app(registry=metrics.registry))

    def authenticate(request: Request) -> Client:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refusal(
                401,
                "unauthenticated",
                "authorization: a bearer token is required",
                "authorization",
                {"WWW-Authenticate": "Bearer"},
            )
        client = clients.authenticate(token.strip())
        if client is None:
            raise Refusal(
                401,
                "unauthenticated",
                "authorization: unknown bearer token",
                "authorization",
                {"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return client

    def rate_limit(client: Client) -> None:
        refused = [item for item in client.limits if not limiter.hit(item, client.ai_system)]
        if refused:
            reset = max(limiter.get_window_stats(i, client.ai_system).reset_time for i in refused)
            wait = max(1, math.ceil(reset - time.time()))
            raise Refusal(
                429,
                "rate_limited",
                f"rate limit of {client.ai_system} exceeded ({'; '.join(str(i) for i in refused)})",
                None,
                {"Retry-After": str(wait)},
            )

    async def body(request: Request) -> bytes:
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise Refusal(
                413, "too_large", f"(body): {len(raw)} bytes exceeds {max_body_bytes}", "(body)"
            )
        return raw

    def as_itself(client: Client, proposals: list[Proposal]) -> None:
        for proposal in proposals:
            if proposal.source.ai_system != client.ai_system:
                raise Refusal(
                    403,
                    "forbidden",
                    f"source.ai_system: this token publishes as {client.ai_system!r}, "
                    f"not {proposal.source.ai_system!r}",
                    "source.ai_system",
                )

    async def publish(
        client: Client, items: list[tuple[Proposal, str]], endpoint: str
    ) -> dict[str, Any]:
        for proposal, digest in items:  # refuse before claiming anything
            ledger.check(proposal.proposal_id, digest)
        claims = [(p, *ledger.claim(p.proposal_id, digest)) for p, digest in items]
        answers: list[dict[str, Any]] = []
        for proposal, new, entry in claims:
            if not new:
                answers.append(await asyncio.shield(entry.answer))
                continue
            try:
                partition, offset = await publisher.send(
                    proposals_topic, encode(proposal), proposal.action.target.service.encode()
                )
            except PublishError as exc:
                ledger.forget(proposal.proposal_id)
                entry.answer.set_exception(exc)
                entry.answer.exception()  # retrieved: a waiter re-raises it, none is fine
                raise Refusal(503, "unavailable", str(exc)) from None
            answer = {"proposal_id": proposal.proposal_id, "partition": partition, "offset": offset}
            entry.answer.set_result(answer)
            metrics.accepted.labels(client.ai_system, endpoint).inc()
            answers.append(answer)
        ids = [a["proposal_id"] for a in answers]
        return {
            "status": "accepted",
            "proposal_ids": ids,
            "proposal_id": ids[0],
            "topic": proposals_topic,
            "partition": answers[0]["partition"],
            "offset": answers[0]["offset"],
            "records": answers,
        }

    async def answer(endpoint: str, step: Callable[[], Any]) -> JSONResponse:
        try:
            return JSONResponse(await step(), status_code=202)
        except Refusal as refusal:
            metrics.refused.labels(refusal.reason, endpoint).inc()
            return JSONResponse(
                {"error": refusal.error, "field": refusal.field},
                status_code=refusal.status,
                headers=refusal.headers,
            )

    def invalid(error: InputError) -> Refusal:
        status = 413 if error.kind == "too_large" else 422
        return Refusal(status, "invalid", str(error), error.field or "(body)")

    @app.post(
        PROPOSALS_PATH,
        status_code=202,
        responses=_ANSWERS,
        openapi_extra=_body_of("Proposal"),
        summary="Publish one proposal (schemas/proposal.json)",
    )
    async def post_proposal(request: Request) -> JSONResponse:
        async def step() -> dict[str, Any]:
            client = authenticate(request)
            rate_limit(client)
            raw = await body(request)
            try:
                proposal = decode(Proposal, raw)
            except InputError as exc:
                raise invalid(exc) from None
            as_itself(client, [proposal])
            digest = hashlib.sha256(encode(proposal)).hexdigest()
            return await publish(client, [(proposal, digest)], PROPOSALS_PATH)

        return await answer(PROPOSALS_PATH, step)

    @app.post(
        HOLMESGPT_PATH,
        status_code=202,
        responses=_ANSWERS,
        openapi_extra=_body_of("HolmesEnvelope"),
        summary="Publish the proposals in a HolmesGPT response (docs/proposers.md)",
    )
    async def post_holmesgpt(request: Request) -> JSONResponse:
        async def step() -> dict[str, Any]:
            client = authenticate(request)
            rate_limit(client)
            raw = await body(request)
            try:
                envelope = parse_envelope(raw)
                proposals = map_envelope(envelope, now=clock())
            except InputError as exc:
                letter = dead_letter(raw, exc, where=f"http:{HOLMESGPT_PATH}", at=clock())
                try:
                    await publisher.send(dlq_topic, encode(letter))
                except PublishError as err:
                    raise Refusal(503, "unavailable", str(err)) from None
                metrics.dead_letters.labels(letter.reason, HOLMESGPT_PATH).inc()
                raise invalid(exc) from None
            as_itself(client, proposals)
            return await publish(
                client, [(p, _digest(p, envelope)) for p in proposals], HOLMESGPT_PATH
            )

        return await answer(HOLMESGPT_PATH, step)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    schemas = _component_schemas(Proposal, HolmesEnvelope)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            document.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _digest(proposal: Proposal, envelope: HolmesEnvelope) -> str:
    """The body a retry must repeat: without ``created_at`` when the intake chose it."""
    body = proposal.model_dump(mode="json")
    if envelope.created_at is None:
        body.pop("created_at")
    return hashlib.sha256(canonical_json(body)).hexdigest()
