"""A local stand-in for Slack, for tests: the Web API the service calls, and the
interactivity requests Slack sends back.

``SlackWebAPI`` serves ``POST /api/<method>`` on a loopback port for the real
``slack_sdk.WebClient(base_url=...)``: ``auth.test``, ``chat.postMessage``,
``chat.update``, ``chat.postEphemeral`` and ``views.open``. It checks the bearer
token, the arguments and Slack's documented limits, records every call, keeps the
current state of every message, and answers as Slack's documentation shows
(``{"ok": true, "channel": ..., "ts": ..., "message": {...}}``, or
``{"ok": false, "error": "channel_not_found"}``).

``Slack`` plays Slack's side of interactivity: it builds ``block_actions`` and
``view_submission`` payloads from the messages and modals the service produced,
form-encodes them as ``payload=...`` and signs them exactly as Slack does
(``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret, in
``X-Slack-Signature`` and ``X-Slack-Request-Timestamp``).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "xoxb-test-escalation-bot"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = {"id": "T0ESCTEST", "domain": "escalation-test"}
TRIGGER_SECONDS = 3.0  # Slack: a trigger_id expires three seconds after the interaction


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float


@dataclass
class SlackWebAPI:
    """The Web API stand-in (start it, point ``WebClient(base_url=...)`` at ``url``)."""

    channels: set[str] = field(default_factory=set)
    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    triggers: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def start(self) -> SlackWebAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                kind = self.headers.get("content-type", "")
                if kind.startswith("application/json"):
                    args = json.loads(raw or b"{}")
                else:
                    args = {k: v[0] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
                    for key in ("blocks", "view"):
                        if isinstance(args.get(key), str):
                            args[key] = json.loads(args[key])
                auth = self.headers.get("authorization", "")
                method = self.path.removeprefix("/api/")
                answer = api.answer(method, args, auth)
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------------ answers

    def answer(self, method: str, args: dict[str, Any], auth: str) -> dict[str, Any]:
        with self._lock:
            self.calls.append(Call(method, args, time.time()))
            if auth != f"Bearer {self.token}":
                return {"ok": False, "error": "invalid_auth"}
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            if handler is None:
                return {"ok": False, "error": "unknown_method"}
            return handler(args)

    def _auth_test(self, _args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": f"https://{TEAM['domain']}.slack.com/",
            "team": "Escalation Test",
            "user": "escalation",
            "team_id": TEAM["id"],
            "user_id": "U0ESCBOT",
            "bot_id": "B0ESCBOT",
        }

    def _check_blocks(self, blocks: Any) -> str | None:
        if blocks is None:
            return None
        if not isinstance(blocks, list) or len(blocks) > 50:
            return "invalid_blocks"
        for block in blocks:
            kind = block.get("type")
            if kind == "header" and len(block["text"]["text"]) > 150:
                return "invalid_blocks"
            if kind == "section":
                if "text" in block and len(block["text"]["text"]) > 3000:
                    return "invalid_blocks"
                if len(block.get("fields", [])) > 10:
                    return "invalid_blocks"
                if any(len(f["text"]) > 2000 for f in block.get("fields", [])):
                    return "invalid_blocks"
                if "text" not in block and "fields" not in block:
                    return "invalid_blocks"
            if kind == "actions" and not 0 < len(block["elements"]) <= 25:
                return "invalid_blocks"
            if kind not in {"header", "section", "context", "actions", "divider", "input"}:
                return "invalid_blocks"
        return None

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        channel = args.get("channel")
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        error = self._check_blocks(args.get("blocks"))
        if error:
            return {"ok": False, "error": error}
        ts = f"{int(time.time())}.{next(self._seq):06d}"
        message = {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": "B0ESCBOT",
            "text": args.get("text", ""),
            "blocks": args.get("blocks", []),
            "ts": ts,
        }
        self.messages[(channel, ts)] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        key = (args.get("channel"), args.get("ts"))
        if key not in self.messages:
            return {"ok": False, "error": "message_not_found"}
        error = self._check_blocks(args.get("blocks"))
        if error:
            return {"ok": False, "error": error}
        message = {
            **self.messages[key],  # type: ignore[index]
            "text": args.get("text", ""),
            "blocks": args.get("blocks", []),
            "edited": {"user": "U0ESCBOT", "ts": f"{time.time():.6f}"},
        }
        self.messages[key] = message  # type: ignore[index]
        return {
            "ok": True,
            "channel": key[0],
            "ts": key[1],
            "text": message["text"],
            "message": message,
        }

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        if args.get("channel") not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("user"):
            return {"ok": False, "error": "user_not_in_channel"}
        return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._seq):06d}"}

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        issued = self.triggers.get(str(args.get("trigger_id")))
        if issued is None or time.time() - issued > TRIGGER_SECONDS:
            return {"ok": False, "error": "expired_trigger_id"}
        view = args.get("view") or {}
        if view.get("type") != "modal" or len(view.get("title", {}).get("text", "")) > 24:
            return {"ok": False, "error": "invalid_arguments"}
        return {
            "ok": True,
            "view": {"id": f"V{next(self._seq):08d}", "team_id": TEAM["id"], **view},
        }

    # ------------------------------------------------------------------ queries

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def issue_trigger(self) -> str:
        trigger = f"{int(time.time())}.{next(self._seq)}.trigger"
        with self._lock:
            self.triggers[trigger] = time.time()
        return trigger

    def message_about(self, decision_id: str) -> tuple[str, str, dict[str, Any]] | None:
        """The current message whose blocks name ``decision_id``."""
        with self._lock:
            for (channel, ts), message in self.messages.items():
                if decision_id in json.dumps(message["blocks"]):
                    return channel, ts, message
        return None

    def ephemerals(self, user: str) -> list[str]:
        return [
            c.args.get("text", "")
            for c in self.calls_of("chat.postEphemeral")
            if c.args.get("user") == user
        ]


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The buttons of a message by action id (an answered message has none)."""
    return {
        element["action_id"]: {**element, "block_id": block.get("block_id")}
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    }


def message_text(message: dict[str, Any]) -> str:
    """Every text of a message's blocks, joined (for assertions)."""
    parts: list[str] = []
    for block in message["blocks"]:
        if "text" in block:
            parts.append(block["text"]["text"])
        parts.extend(f["text"] for f in block.get("fields", []))
        parts.extend(
            e.get("text", "") for e in block.get("elements", []) if block["type"] == "context"
        )
    return "\n".join(parts)


def sign(body: str, timestamp: int, secret: str = SIGNING_SECRET) -> str:
    """Slack's v0 request signature."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Response:
    status: int
    body: bytes
    elapsed: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Slack:
    """Slack's side of interactivity, aimed at the service's ``/slack/events``."""

    endpoint: str
    api: SlackWebAPI
    secret: str = SIGNING_SECRET

    def post(
        self,
        payload: dict[str, Any],
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        signature: str | None = None,
        body: str | None = None,
    ) -> Response:
        """POST a payload as Slack does; the keyword arguments forge or age it."""
        raw = body if body is not None else urllib.parse.urlencode({"payload": json.dumps(payload)})
        ts = int(time.time()) if timestamp is None else timestamp
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": str(ts),
            "x-slack-signature": signature or sign(raw, ts, secret or self.secret),
        }
        return self.send(raw, headers)

    def send(self, raw: str, headers: dict[str, str]) -> Response:
        request = urllib.request.Request(  # noqa: S310 - a loopback http URL of the test
            self.endpoint, data=raw.encode(), headers=headers
        )
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
                return Response(response.status, response.read(), time.monotonic() - started)
        except urllib.error.HTTPError as exc:
            return Response(exc.code, exc.read(), time.monotonic() - started)

    def click(
        self, user: str, channel: str, ts: str, action_id: str, **post: Any
    ) -> tuple[Response, dict[str, Any]]:
        """A ``block_actions`` request for a button of the message at (channel, ts)."""
        message = self.api.messages[(channel, ts)]
        button = buttons(message).get(action_id)
        assert button is not None, f"no {action_id} button on the message"
        payload = {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM["id"],
            },
            "api_app_id": "A0ESCALATE",
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel,
                "is_ephemeral": False,
            },
            "trigger_id": self.api.issue_trigger(),
            "team": TEAM,
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": "sre-approvals"},
            "message": message,
            "state": {"values": {}},
            "response_url": f"{self.api.url}response/{ts}",
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": button["block_id"],
                    "text": button["text"],
                    "value": button["value"],
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                    **({"style": button["style"]} if "style" in button else {}),
                }
            ],
        }
        return self.post(payload, **post), payload

    def submit(
        self, user: str, view: dict[str, Any], values: dict[str, dict[str, str]], **post: Any
    ) -> Response:
        """A ``view_submission`` of a modal the service opened, with typed-in values."""
        state = {
            block: {
                action: {"type": "plain_text_input", "value": value}
                for action, value in actions.items()
            }
            for block, actions in values.items()
        }
        payload = {
            "type": "view_submission",
            "team": TEAM,
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM["id"],
            },
            "api_app_id": "A0ESCALATE",
            "token": "legacy-verification-token",
            "trigger_id": self.api.issue_trigger(),
            "view": {**view, "state": {"values": state}, "hash": "1.abc"},
            "response_urls": [],
            "is_enterprise_install": False,
        }
        return self.post(payload, **post)


def wait_for(condition: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``condition`` until it returns something truthy; its value, or ``None``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return None
