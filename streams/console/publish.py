"""What the console writes: signed answers on ``approvals``, commands on ``control``.

The console is a machine channel: it signs with its own key (``ESCALATION_CONSOLE_KEY_FILE``)
and names the person signed in as ``user``, with ``channel: "console"``. Every
change a page makes goes through :meth:`Publisher.answer` or
:meth:`Publisher.control`; nothing else in the console writes anywhere.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from streams import signing
from streams.errors import EscalationError
from streams.keys import Signer, generate, load_private, write_private
from streams.models import ApprovalResponse, ControlCommand, encode
from streams.models.codec import describe_validation_error

if TYPE_CHECKING:
    from streams.settings import Settings

CHANNEL = "console"
ANSWER_LIFETIME = dt.timedelta(minutes=15)


class ConsoleError(EscalationError):
    """The console cannot start or cannot deliver a message."""


def console_signer(settings: Settings) -> Signer:
    """The console's key: ``ESCALATION_CONSOLE_KEY_FILE``; in development mode the one
    under ``DATA_DIR/keys/channels`` (made once). Unset outside development mode, it is
    refused."""
    if settings.console_key_file is not None:
        return load_private(settings.console_key_file, name=CHANNEL)
    if not settings.dev:
        msg = (
            "ESCALATION_CONSOLE_KEY_FILE is not set: the console signs what it sends with a "
            "key of its own; or run in development mode (ESCALATION_DEV=1)"
        )
        raise ConsoleError(msg)
    # Where development mode keeps the channels' keys (streams/identities.py).
    path = settings.data_dir / "keys" / "channels" / f"{CHANNEL}.key"
    if not path.exists():
        write_private(generate(CHANNEL), path)
    return load_private(path, name=CHANNEL)


def sign_answer(answer: ApprovalResponse, signer: Signer) -> ApprovalResponse:
    """The one place an answer is signed: by the console's key, for the person named in
    ``user`` (the keyring lists the console as a channel that may relay answers)."""
    return signing.sign_answer(answer, signer)


def control_bytes(command: ControlCommand, signer: Signer) -> bytes:
    """The one place a control command is signed (by the console, for ``user``) and encoded."""
    return encode(signing.sign_command(command, signer))


def build_answer(
    kind: str,
    decision_id: str,
    user: str,
    *,
    now: dt.datetime,
    change_record: str | None = None,
    false_positive: bool = False,
    reason: str = "",
) -> ApprovalResponse:
    """An unsigned answer; ``InputError`` naming the field when a value is not valid."""
    try:
        return ApprovalResponse(
            schema_version=1,
            kind=kind,
            decision_id=decision_id,
            user=user,
            channel=CHANNEL,
            change_record=change_record or None,
            false_positive=false_positive,
            reason=reason,
            nonce=secrets.token_hex(16),
            issued_at=now,
            expires_at=now + ANSWER_LIFETIME,
        )
    except ValidationError as exc:
        raise describe_validation_error(exc) from None


def build_control(
    command: str, user: str, *, now: dt.datetime, service: str | None = None, reason: str = ""
) -> ControlCommand:
    """A freeze or unfreeze; ``InputError`` naming the field when a value is not valid."""
    try:
        return ControlCommand(
            schema_version=1,
            command=command,
            user=user,
            service=service or None,
            reason=reason,
            at=now,
        )
    except ValidationError as exc:
        raise describe_validation_error(exc) from None


class Publisher:
    """Delivers the console's messages; each call waits until the broker has it."""

    def __init__(self, settings: Settings, bootstrap: str, signer: Signer) -> None:
        from confluent_kafka import Producer  # noqa: PLC0415

        from streams.kafka.admin import producer_config  # noqa: PLC0415
        from streams.kafka.security import confluent_config  # noqa: PLC0415

        self.settings = settings
        self.signer = signer
        self._producer = Producer(producer_config(bootstrap, **confluent_config(settings)))

    def answer(self, answer: ApprovalResponse) -> ApprovalResponse:
        signed = sign_answer(answer, self.signer)
        self._send("approvals", answer.decision_id.encode(), encode(signed))
        return signed

    def control(self, command: ControlCommand) -> None:
        self._send("control", b"control", control_bytes(command, self.signer))

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        self._producer.produce(
            self.settings.topic(topic), key=key, value=value, on_delivery=delivered
        )
        if self._producer.flush(15) or failures:
            raise ConsoleError(
                f"not delivered to {self.settings.topic(topic)}: "
                + (failures[0] if failures else "timed out")
            )
