"""Signing the messages people and sources send: answers, commands, outcomes, budgets.

Every signature is Ed25519 (streams/keys.py) over the canonical JSON (sorted keys, no
whitespace, UTC ``Z`` datetimes) of the message's JSON form without its signature
field(s). The gate checks them against the keyring (streams/policy/keyring.py), over
the JSON object it read off the wire.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import TypeVar

from pydantic import BaseModel

from streams.keys import ALG, Signer
from streams.models import ApprovalResponse, ControlCommand, HistoryRecord
from streams.models.codec import canonical_json
from streams.models.messages import MAX_IMPORT_RECORDS, Signature

M = TypeVar("M", bound=BaseModel)


def signature_of(model: BaseModel, signer: Signer, *, field: str) -> Signature:
    """``signer``'s signature over ``model`` without ``field``."""
    body = model.model_dump(mode="json", exclude={field})
    return Signature(alg=ALG, key_id=signer.key_id, sig=signer.sign_bytes(canonical_json(body)))


def sign(model: M, signer: Signer) -> M:
    """A message with one ``signature`` field (answer, outcome, budget), signed."""
    return model.model_copy(update={"signature": signature_of(model, signer, field="signature")})


def sign_answer(answer: ApprovalResponse, signer: Signer) -> ApprovalResponse:
    """A human's answer signed by that person, or by the channel that verified them."""
    return sign(answer, signer)


def sign_command(command: ControlCommand, signer: Signer) -> ControlCommand:
    """``command`` with one more signature (a co-signer of a two-person command)."""
    signature = signature_of(command, signer, field="signatures")
    return command.model_copy(update={"signatures": (*command.signatures, signature)})


def history_commands(records: Iterable[HistoryRecord], *, user: str) -> Iterator[ControlCommand]:
    """Past incidents as ``import_history`` commands of at most 500 records (unsigned)."""
    batch: list[HistoryRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == MAX_IMPORT_RECORDS:
            yield _import(batch, user)
            batch = []
    if batch:
        yield _import(batch, user)


def _import(batch: list[HistoryRecord], user: str) -> ControlCommand:
    return ControlCommand(
        schema_version=1,
        command="import_history",
        user=user,
        records=tuple(batch),
        reason=f"{len(batch)} past incident(s)",
        at=dt.datetime.now(tz=dt.UTC),
    )
