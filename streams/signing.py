"""HMAC-SHA256 signatures of human answers over their canonical JSON.

The secret belongs to the approval channel and lives in the gate's settings; it is
never part of a message. The signed bytes are the canonical JSON (sorted keys, no
whitespace, UTC ``Z`` datetimes) of every field except ``signature``.
"""

from __future__ import annotations

import hashlib
import hmac

from streams.models import ApprovalResponse
from streams.models.codec import canonical_json


def signed_bytes(answer: ApprovalResponse) -> bytes:
    """What the signature covers."""
    return canonical_json(answer.model_dump(mode="json", exclude={"signature"}))


def sign(answer: ApprovalResponse, secret: str) -> ApprovalResponse:
    """The same answer with its signature set."""
    digest = hmac.new(secret.encode(), signed_bytes(answer), hashlib.sha256).hexdigest()
    return answer.model_copy(update={"signature": digest})


def signature_ok(answer: ApprovalResponse, secret: str) -> bool:
    """Constant-time check of the answer's signature."""
    if not answer.signature:
        return False
    expected = hmac.new(secret.encode(), signed_bytes(answer), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, answer.signature)
