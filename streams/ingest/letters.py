"""Dead letters of the intake: what could not become a proposal, with its original bytes.

The same ``DeadLetter`` the gate writes for its own input (``streams/models``). Input
that did not come from a Kafka topic names where it came from instead
(``http:/v1/holmesgpt``, ``file:response.json``), with partition and offset ``-1``.
"""

from __future__ import annotations

import base64
import datetime as dt

from streams.errors import InputError
from streams.models.messages import DeadLetter

MAX_ERROR = 4000


def dead_letter(raw: bytes, error: InputError, *, where: str, at: dt.datetime) -> DeadLetter:
    """The dead letter of ``raw``, refused with ``error``, received at ``at`` from ``where``."""
    reason = error.kind if error.kind in {"not_json", "schema", "too_large"} else "schema"
    return DeadLetter(
        schema_version=1,
        reason=reason,
        error=str(error)[:MAX_ERROR],
        topic=where,
        partition=-1,
        offset=-1,
        key_b64=None,
        value_b64=base64.b64encode(raw).decode(),
        received_at=at,
    )
