"""A local stand-in for PagerDuty's Events API v2 (PagerDuty cannot run here).

It answers ``POST /v2/enqueue`` as PagerDuty documents it (developer.pagerduty.com,
"Send Alert Event" / "Events API v2 Overview"): ``202 Accepted`` with
``{"status": "success", "message": "Event processed", "dedup_key": KEY}``, and
``400 Bad Request`` with ``{"status": "invalid event", "message": "Event object is
invalid", "errors": [...]}`` for an invalid event (a routing key that is not 32
characters, an unknown ``event_action``, a trigger without ``payload.summary``,
``payload.source`` or a valid ``payload.severity``, a resolve without
``dedup_key``, ...). PagerDuty's own client (``pagerduty.EventsApiV2Client``) only
speaks HTTPS, so the stand-in serves TLS with a certificate made for 127.0.0.1; its
CA file is what the pager's ``ESCALATION_PAGERDUTY_CA_FILE`` trusts.

It keeps PagerDuty's alert state per (routing key, dedup key): a trigger opens an
alert (a trigger for an open one is de-duplicated into it), a resolve closes it, a
trigger after a resolve opens a new one. ``fail_next`` makes it answer the next
events with an error status (503 or 429 as PagerDuty does under load).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): (cert, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pagerduty-standin")])
    now = dt.datetime.now(tz=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "standin-cert.pem", directory / "standin-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def problems(event: Any) -> list[str]:
    """Why PagerDuty would refuse ``event`` (empty: it is valid)."""
    if not isinstance(event, dict):
        return ["Event object must be a JSON object"]
    errors = []
    routing_key = event.get("routing_key")
    if not isinstance(routing_key, str):
        errors.append("'routing_key' is missing or blank")
    elif len(routing_key) != 32:
        errors.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    action = event.get("event_action")
    if action not in ACTIONS:
        errors.append(
            "'event_action' is invalid (must be one of the following: "
            "'trigger', 'acknowledge' or 'resolve')"
        )
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action in {"acknowledge", "resolve"} and not dedup_key:
        errors.append("'dedup_key' is missing or blank")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or blank")
        else:
            summary = payload.get("summary")
            if not isinstance(summary, str) or not summary:
                errors.append("'payload.summary' is missing or blank")
            elif len(summary) > 1024:
                errors.append("'payload.summary' is too long (maximum is 1024 characters)")
            if not isinstance(payload.get("source"), str) or not payload["source"]:
                errors.append("'payload.source' is missing or blank")
            if payload.get("severity") not in SEVERITIES:
                errors.append(
                    "'payload.severity' is invalid (must be one of the following: "
                    "'critical', 'warning', 'error' or 'info')"
                )
            stamp = payload.get("timestamp")
            if stamp is not None:
                try:
                    dt.datetime.fromisoformat(str(stamp))
                except ValueError:
                    errors.append("'payload.timestamp' is invalid (must be ISO 8601)")
    return errors


@dataclass
class Alert:
    """One PagerDuty alert, as its dedup key names it."""

    routing_key: str
    dedup_key: str
    status: str
    events: list[dict[str, Any]] = field(default_factory=list)


class PagerDutyStandIn:
    """The stand-in server: ``url`` to point a client at, ``ca_file`` to trust."""

    def __init__(self, directory: Path) -> None:
        self.cert_file, key_file = make_certificate(directory)
        self.ca_file = self.cert_file
        self.events: list[dict[str, Any]] = []  # every valid event, in arrival order
        self.refused: list[dict[str, Any]] = []  # (event, errors) of every 400
        self.alerts: dict[tuple[str, str], list[Alert]] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path != "/v2/enqueue":
                    self._answer(404, {"status": "Not Found", "message": "Not Found"})
                    return
                status, body = outer.receive(raw)
                self._answer(status, body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer the next ``count`` events with ``status`` (e.g. 503), as under load."""
        with self._lock:
            self._failures += [status] * count

    def receive(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """One ``POST /v2/enqueue``: PagerDuty's status code and body."""
        with self._lock:
            if self._failures:
                status = self._failures.pop(0)
                return status, {"status": "error", "message": "Service unavailable"}
            try:
                event = json.loads(raw)
            except ValueError:
                event = None
            errors = problems(event)
            if errors:
                self.refused.append({"event": event, "errors": errors})
                return 400, {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": errors,
                }
            assert isinstance(event, dict)
            dedup_key = event.get("dedup_key") or uuid.uuid4().hex
            event = {**event, "dedup_key": dedup_key}
            self.events.append(event)
            history = self.alerts.setdefault((event["routing_key"], dedup_key), [])
            current = history[-1] if history else None
            action = event["event_action"]
            if action == "trigger":
                if current is None or current.status == "resolved":
                    current = Alert(event["routing_key"], dedup_key, "triggered")
                    history.append(current)
                current.events.append(event)
            elif current is not None and current.status != "resolved":
                current.status = "resolved" if action == "resolve" else "acknowledged"
                current.events.append(event)
            return 202, {"status": "success", "message": "Event processed", "dedup_key": dedup_key}

    def status(self, dedup_key: str) -> str | None:
        """The latest alert's status under ``dedup_key`` (any routing key), or None."""
        with self._lock:
            found = [h[-1] for (_, key), h in self.alerts.items() if key == dedup_key and h]
        return found[-1].status if found else None

    def incidents(self, dedup_key: str) -> int:
        """How many alerts ``dedup_key`` opened (a re-trigger of an open one opens none)."""
        with self._lock:
            return sum(len(h) for (_, key), h in self.alerts.items() if key == dedup_key)

    def events_for(self, prefix: str) -> list[dict[str, Any]]:
        """Valid events whose dedup key starts with ``prefix``."""
        with self._lock:
            return [e for e in self.events if str(e.get("dedup_key", "")).startswith(prefix)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
