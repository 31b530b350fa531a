"""``escalation slack``: Block Kit messages for Level 2 and 3 decisions, and the
interactivity endpoint that turns a click into a signed answer on ``approvals``.

Two halves share one store (streams/slack/store.py):

- the *notifier*, a consumer of ``decisions.approve``, ``decisions.execute`` and
  ``audit`` (its own consumer group), folds each record into the
  decision's record with the pure functions of streams/slack/track.py and posts or
  updates the message (``chat.postMessage`` / ``chat.update``) with the blocks of
  streams/slack/blocks.py; it is the only writer of records;
- the *interactivity endpoint*, a Bolt app behind a WSGI server: it verifies
  Slack's signature and timestamp window (slack_sdk's ``SignatureVerifier``),
  refuses replays, acknowledges at once, then maps the Slack user to a keyring
  person, checks the role and the decision's state, and publishes the signed
  answer. Refusals get an ephemeral reply and are counted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app
from slack_bolt import Ack, App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier

from streams.keys import Signer
from streams.models import encode
from streams.models.codec import canonical_json
from streams.slack import blocks, track
from streams.slack.answers import Role, Roles, nonce_for, signed_answer
from streams.slack.config import Channels, Users
from streams.slack.metrics import SlackMetrics
from streams.slack.store import Store

log = logging.getLogger(__name__)

#: Slack's own window (slack_sdk's SignatureVerifier refuses older requests); a
#: request signature is remembered a little longer than that.
REPLAY_KEEP_SECONDS = 6 * 60
RECORD_RETENTION_SECONDS = 7 * 24 * 3600
RETRY_SECONDS = 15.0
MAX_BODY_BYTES = 256 * 1024  # Slack's payloads are a few KB; a message carries at most 50 blocks
#: A decision older than this when the service first reads it is not posted (a new
#: service reads the topics from their beginning; a day covers every open approval of
#: the shipped policy, 10 minutes x 4 escalations).
POST_MAX_AGE_SECONDS = 24 * 3600.0
EVENTS_PATH = "/slack/events"
ROLE_OF: dict[str, Role] = {
    blocks.APPROVE: "approve",
    blocks.REJECT: "reject",
    blocks.REJECT_FP: "reject",
    blocks.ABORT: "abort",
}
ACTION_OF: dict[str, track.Action] = {
    blocks.APPROVE: "approve",
    blocks.REJECT: "reject",
    blocks.REJECT_FP: "reject_false_positive",
    blocks.ABORT: "abort",
}
VERB = {"approve": "approval", "reject": "rejection", "abort": "abort"}


def _digest(record: track.Record) -> str:
    """What the message of a record shows now, as a digest (an update only when it moved)."""
    return hashlib.sha256(canonical_json(blocks.message(record)[1])).hexdigest()


class _At(Clock):
    """A clock stopped at a request's own timestamp: is its signature valid then?"""

    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at


@dataclass(frozen=True, slots=True)
class Publisher:
    """Where answers go: ``produce(topic, key, value)`` and its topic."""

    produce: Callable[[str, bytes, bytes], None]
    topic: str


class SlackService:
    """The notifier and the interactivity endpoint of one Slack workspace."""

    def __init__(
        self,
        *,
        client: WebClient,
        signing_secret: str,
        signer: Signer,
        users: Users,
        channels: Channels,
        roles: Roles,
        store: Store,
        publisher: Publisher,
        topics: dict[str, str],
        metrics: SlackMetrics,
        users_source: str = "users.yaml",
    ) -> None:
        self.client = client
        self.verifier = SignatureVerifier(signing_secret)
        self._signing_secret = signing_secret
        self._signer = signer
        self.users = users
        self.channels = channels
        self.roles = roles
        self.store = store
        self.publisher = publisher
        #: full topic name -> logical name (``decisions.approve``, ``audit``, ...)
        self.topics = topics
        self.metrics = metrics
        self.users_source = users_source
        self._deadlines: dict[str, float] = {}
        self._out_of_date: set[str] = set()
        self._retried_at = 0.0
        for record in store.records():
            self._track(record)
        self.app = self._bolt()

    # ------------------------------------------------------------------ notifier

    def handle(self, topic: str, value: bytes | None) -> None:
        """One record of the gate's topics."""
        logical = self.topics.get(topic, topic)
        self.metrics.records.labels(logical).inc()
        if not value:
            return
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(body, dict):
            return
        try:
            self._handle(logical, body)
        except (KeyError, TypeError, ValueError) as exc:  # a record we cannot read: skip it
            log.warning("slack: unreadable %s record skipped: %r", logical, exc)

    def _handle(self, logical: str, body: dict[str, Any]) -> None:
        if logical in {"decisions.approve", "decisions.execute"}:
            if body.get("type", "decision") == "decision":
                decision_id = body["decision_id"]
                service = body["proposal"]["action"]["target"]["service"]
                old = self.store.get(decision_id)
                decided = track.epoch(body.get("decided_at")) or 0.0
                if old is None and time.time() - decided > POST_MAX_AGE_SECONDS:
                    return  # a first start reading old topics: do not flood the channels
                self._apply(old, track.on_decision(old, body, self.channels.channel(service)))
            else:
                old = self.store.get(body["decision_id"])
                self._apply(old, track.on_command(old, body))
        elif logical == "audit":
            event = body.get("event", body)
            kind = event.get("kind")
            if kind == "answer_refused":
                self._refused_by_gate(event)
            elif kind == "outcome":
                # The outcome as the gate accepted it (an executor's signed report), not
                # whatever was written to the outcomes topic.
                self._outcome((event.get("data") or {})["outcome"])
            elif isinstance(event.get("decision_id"), str):
                old = self.store.get(event["decision_id"])
                self._apply(old, track.on_audit(old, event))

    def _outcome(self, outcome: dict[str, Any]) -> None:
        old = self.store.get(outcome["decision_id"])
        if old is None and outcome.get("level") == 4 and outcome.get("verification") == "failed":
            self._verification_failed(outcome)
            return
        self._apply(old, track.on_outcome(old, outcome))

    def _apply(self, old: track.Record | None, new: track.Record | None) -> None:
        if new is None or new == old:
            return
        new.setdefault("seen_at", time.time())
        synced = self.sync(new)
        self.store.put(synced, time.time())
        self._track(synced)

    def _track_sync(self, record: track.Record) -> None:
        # A message Slack did not take (an outage, a channel the app is not in yet)
        # is tried again by the tick, not only when the decision's next record comes.
        if record.get("view") is not None and (
            record.get("posted") is None or record.get("rendered") != _digest(record)
        ):
            self._out_of_date.add(record["decision_id"])
        else:
            self._out_of_date.discard(record["decision_id"])

    def retry(self) -> None:
        """Post or update again every message whose last Slack call failed."""
        for decision_id in list(self._out_of_date):
            old = self.store.get(decision_id)
            if old is None:
                self._out_of_date.discard(decision_id)
                continue
            synced = self.sync(old)
            if synced != old:
                self.store.put(synced, time.time())
            self._track(synced)

    def _track(self, record: track.Record) -> None:
        self._track_sync(record)
        view = record.get("view")
        if record.get("level") == 3 and record.get("status") == "open" and view:
            self._deadlines[record["decision_id"]] = float(view["abort_window_ends_at"] or 0)
        else:
            self._deadlines.pop(record["decision_id"], None)

    def sync(self, record: track.Record) -> track.Record:
        """Post the record's message, or update it when what it shows changed."""
        if record.get("view") is None:
            return record
        text, content = blocks.message(record)
        digest = hashlib.sha256(canonical_json(content)).hexdigest()
        posted = record.get("posted")
        if posted is None:
            response = self._call(
                "chat.postMessage",
                self.client.chat_postMessage,
                channel=record["channel"],
                text=text,
                blocks=content,
            )
            if response is None:
                return record
            return {
                **record,
                "posted": {"channel": response["channel"], "ts": response["ts"]},
                "rendered": digest,
            }
        if digest == record.get("rendered"):
            return record
        response = self._call(
            "chat.update",
            self.client.chat_update,
            channel=posted["channel"],
            ts=posted["ts"],
            text=text,
            blocks=content,
        )
        return record if response is None else {**record, "rendered": digest}

    def _call(self, method: str, call: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            response = call(**kwargs)
        except SlackApiError as exc:
            self.metrics.api_calls.labels(method, "error").inc()
            log.warning("slack: %s failed: %s", method, exc.response.get("error"))
            return None
        except OSError as exc:
            self.metrics.api_calls.labels(method, "error").inc()
            log.warning("slack: %s failed: %s", method, exc)
            return None
        self.metrics.api_calls.labels(method, "ok").inc()
        return response

    def tick(self, now: float) -> None:
        """Close the abort windows that ended; retry failed Slack calls now and then."""
        if self._out_of_date and now - self._retried_at >= RETRY_SECONDS:
            self._retried_at = now
            self.retry()
        for decision_id, ends in list(self._deadlines.items()):
            if ends <= now:
                old = self.store.get(decision_id)
                if old is None:
                    self._deadlines.pop(decision_id, None)
                    continue
                closed = track.on_tick(old, now)
                if closed is None:
                    self._deadlines.pop(decision_id, None)
                else:
                    self._apply(old, closed)

    def forget_old(self, now: float) -> None:
        for record in self.store.records():
            if track.expired(record, now, RECORD_RETENTION_SECONDS):
                self.store.delete(record["decision_id"])
        self.store.forget_answers_before(now - RECORD_RETENTION_SECONDS)

    def _verification_failed(self, outcome: dict[str, Any]) -> None:
        key = f"verification:{outcome['decision_id']}"
        if self.store.get(key) is not None:
            return
        channel = self.channels.channel(str(outcome.get("service")))
        content = blocks.verification_failed(outcome, "")
        text = f"Level 4 verification failed on {outcome.get('service')}"
        response = self._call(
            "chat.postMessage", self.client.chat_postMessage, channel=channel, text=text,
            blocks=content,
        )  # fmt: skip
        if response is not None:
            self.store.put({"decision_id": key, "view": None, "status": "notified",
                            "seen_at": time.time()}, time.time())  # fmt: skip

    def _refused_by_gate(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if data.get("channel") != "slack" or not isinstance(data.get("nonce"), str):
            return
        origin = self.store.answer(data["nonce"])
        if origin is None or not origin.get("channel"):
            return
        kind = str(data.get("kind"))
        self.ephemeral(
            origin["channel"],
            origin["slack_user"],
            f":no_entry: The gate refused your {VERB.get(kind, kind)} of "
            f"`{event.get('decision_id')}`: *{data.get('reason')}*. Nothing changed.",
        )

    # ------------------------------------------------------------ interactivity

    def check_request(self, body: str | bytes, headers: dict[str, str]) -> str | None:
        """Why an interactivity request is refused, or ``None`` when it is Slack's own.

        slack_sdk's verifier checks the v0 HMAC and the five-minute window; a request
        outside the window whose signature was valid at its own time is ``stale``.
        """
        timestamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not timestamp or not signature:
            return "unsigned"
        try:
            at = float(int(timestamp))
        except ValueError:
            return "bad_timestamp"
        if self.verifier.is_valid(body, timestamp, signature):
            if not self.store.remember_request(
                signature, now=time.time(), keep_seconds=REPLAY_KEEP_SECONDS
            ):
                return "replayed"
            return None
        if SignatureVerifier(self._signing_secret, clock=_At(at)).is_valid(
            body, timestamp, signature
        ):
            return "stale_request"
        return "bad_signature"

    def _bolt(self) -> App:
        app = App(
            client=self.client,
            signing_secret=self._signing_secret,
            # Verified by our own middleware (below) with slack_sdk's SignatureVerifier,
            # so that a refusal says why, is counted and a replay is refused too.
            request_verification_enabled=False,
            token_verification_enabled=True,
            process_before_response=False,
        )
        app.use(self._verify_middleware)
        for action_id in ROLE_OF:
            app.action(action_id)(self._on_click)
        app.view(blocks.CHANGE_RECORD_VIEW)(self._on_change_record)
        return app

    def _verify_middleware(
        self,
        req: BoltRequest,
        resp: BoltResponse,  # noqa: ARG002 - Bolt passes middleware arguments by these names
        next: Callable[[], BoltResponse],  # noqa: A002 - Bolt's name
    ) -> BoltResponse:
        headers = {k.lower(): v[0] for k, v in req.headers.items() if v}
        reason = self.check_request(req.raw_body, headers)
        if reason is None:
            req.context["slack_signature"] = headers["x-slack-signature"]
            return next()
        self.metrics.refused.labels(reason).inc()
        log.warning("slack: interactivity request refused: %s", reason)
        if reason == "replayed":
            # Slack signed it: the user and channel are real. Nothing is done again.
            user = (req.body.get("user") or {}).get("id")
            channel = (req.body.get("channel") or {}).get("id")
            if user and channel:
                self.ephemeral(
                    channel,
                    user,
                    ":repeat: This click was already received (a replayed request); "
                    "nothing changed.",
                )
            return BoltResponse(status=200, body="")
        return BoltResponse(
            status=401,
            body=orjson.dumps({"ok": False, "error": reason}).decode(),
            headers={"content-type": "application/json"},
        )

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        self._call(
            "chat.postEphemeral",
            self.client.chat_postEphemeral,
            channel=channel,
            user=user,
            text=text,
            blocks=blocks.notice(text),
        )

    def _refuse(self, reason: str, channel: str | None, user: str, text: str) -> None:
        self.metrics.refused.labels(reason).inc()
        if channel:
            self.ephemeral(channel, user, text)

    def _who(
        self, slack_user: str, role: Role, channel: str | None
    ) -> str | None:  # the person, or None after an ephemeral refusal
        person = self.users.person(slack_user)
        if person is None:
            self._refuse(
                "unknown_slack_user",
                channel,
                slack_user,
                f":no_entry: <@{slack_user}> is not in the reviewed list of people who may "
                f"answer from Slack ({self.users_source}); nothing changed.",
            )
            return None
        if not self.roles.may(person, role):
            self._refuse(
                "no_role",
                channel,
                slack_user,
                f":no_entry: {person} may not {role} (no `{role}` role); nothing changed.",
            )
            return None
        return person

    def _on_click(self, ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        ack()  # first: Slack wants an answer within 3 seconds
        action = body["actions"][0]
        action_id = action["action_id"]
        decision_id = str(action.get("value"))
        slack_user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
            "channel_id"
        )
        person = self._who(slack_user, ROLE_OF[action_id], channel)
        if person is None:
            return
        record = self.store.get(decision_id)
        why = track.stale(record, ACTION_OF[action_id], person)
        if why is not None:
            self._refuse("stale_button", channel, slack_user, f":hourglass: {why}")
            return
        assert record is not None  # noqa: S101 - stale() refuses a missing record
        if action_id == blocks.APPROVE and record["view"].get("change_record_required"):
            metadata = {"decision_id": decision_id, "channel": channel}
            self._call(
                "views.open",
                self.client.views_open,
                trigger_id=body["trigger_id"],
                view=blocks.change_record_modal(record, metadata),
            )
            return
        kind: Role = ROLE_OF[action_id]
        self.publish(
            kind,
            decision_id,
            person,
            slack_user=slack_user,
            channel=channel,
            signature=context["slack_signature"],
            false_positive=action_id == blocks.REJECT_FP,
        )

    def _on_change_record(self, ack: Ack, body: dict[str, Any], context: BoltContext) -> None:
        view = body["view"]
        values = view.get("state", {}).get("values", {})
        value = values.get(blocks.CHANGE_RECORD_BLOCK, {}).get(blocks.CHANGE_RECORD_INPUT) or {}
        change_record = str(value.get("value") or "").strip()
        if not change_record or len(change_record) > 256 or not change_record.isprintable():
            ack(
                response_action="errors",
                errors={blocks.CHANGE_RECORD_BLOCK: "Enter the change record id (CHG-...)."},
            )
            return
        ack()
        metadata = orjson.loads(view.get("private_metadata") or "{}")
        decision_id = str(metadata.get("decision_id"))
        channel = metadata.get("channel")
        slack_user = body["user"]["id"]
        person = self._who(slack_user, "approve", channel)
        if person is None:
            return
        why = track.stale(self.store.get(decision_id), "approve", person)
        if why is not None:
            self._refuse("stale_button", channel, slack_user, f":hourglass: {why}")
            return
        self.publish(
            "approve",
            decision_id,
            person,
            slack_user=slack_user,
            channel=channel,
            signature=context["slack_signature"],
            change_record=change_record,
        )

    def publish(
        self,
        kind: Role,
        decision_id: str,
        person: str,
        *,
        slack_user: str,
        channel: str | None,
        signature: str,
        change_record: str | None = None,
        false_positive: bool = False,
    ) -> None:
        """Sign the answer in the person's name and send it to ``approvals``."""
        now = dt.datetime.now(tz=dt.UTC)
        answer = signed_answer(
            kind,
            decision_id,
            person,
            nonce=nonce_for(signature),
            now=now,
            signer=self._signer,
            change_record=change_record,
            false_positive=false_positive,
            reason=f"slack user {slack_user}",
        )
        self.store.remember_answer(
            answer.nonce,
            slack_user=slack_user,
            channel=channel,
            decision_id=decision_id,
            at=now.timestamp(),
        )
        try:
            self.publisher.produce(self.publisher.topic, decision_id.encode(), encode(answer))
        except Exception as exc:
            log.exception("slack: answer not published")
            self._refuse(
                "publish_failed",
                channel,
                slack_user,
                f":warning: Your {VERB[kind]} could not be sent to the gate ({exc}); nothing "
                "changed. Try again, or answer with `escalation " + kind + "`.",
            )
            return
        self.metrics.published.labels(kind).inc()
        fp = " as a false positive" if false_positive else ""
        if channel:
            self.ephemeral(
                channel,
                slack_user,
                f":outbox_tray: Your {VERB[kind]}{fp} of `{decision_id}` was sent to the gate "
                f"as *{person}*. The message changes when the gate accepts it.",
            )

    # ---------------------------------------------------------------------- http

    def wsgi(self) -> Callable[..., Iterable[bytes]]:
        """The WSGI app: ``POST /slack/events`` (Bolt), ``GET /metrics``, ``GET /healthz``."""
        bolt = SlackRequestHandler(self.app, path=EVENTS_PATH)
        metrics = make_wsgi_app(self.metrics.registry)

        def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics(environ, start_response)  # type: ignore[no-any-return]
            if path == "/healthz":
                start_response("200 OK", [("content-type", "text/plain")])
                return [b"ok\n"]
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                # Before Bolt reads it: an interactivity payload is a few kilobytes.
                self.metrics.refused.labels("body_too_large").inc()
                body = orjson.dumps(
                    {"ok": False, "error": "body_too_large", "field": "Content-Length"}
                )
                start_response("413 Payload Too Large", [("content-type", "application/json")])
                return [body]
            return bolt(environ, start_response)

        return app


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("slack http: %s", format % args)


def http_server(service: SlackService, addr: str, port: int) -> WSGIServer:
    """A threading WSGI server for the service (one thread per request)."""
    return make_server(
        addr, port, service.wsgi(), server_class=_ThreadingServer, handler_class=_QuietHandler
    )


def consume(
    service: SlackService,
    consumer: Any,
    topics: list[str],
    stop: threading.Event,
    *,
    tick_seconds: float = 1.0,
) -> None:
    """The notifier loop: read, fold, post/update, commit; tick the abort windows."""

    def assigned(_consumer: Any, _partitions: list[Any]) -> None:
        service.metrics.ready.set(1)

    consumer.subscribe(topics, on_assign=assigned)
    last_forget = time.time()
    while not stop.is_set():
        messages = consumer.consume(num_messages=500, timeout=tick_seconds / 2)
        for message in messages:
            if message.error() is not None:
                continue
            service.handle(message.topic(), message.value())
        if messages:
            consumer.commit(asynchronous=True)
        now = time.time()
        service.tick(now)
        if now - last_forget > 3600:
            last_forget = now
            service.forget_old(now)
