"""Who may answer from Slack, and the signed answer a click becomes.

A click is answered in the name of the keyring person its Slack user maps to
(``users.yaml``), never in the Slack user's own name. The Slack service checks the
person's role only to give a clear reply at once; the gate checks the signed answer
again and is the authority.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from streams.keys import Signer
from streams.models import ApprovalResponse
from streams.signing import sign_answer

Role = Literal["approve", "reject", "abort"]
CHANNEL = "slack"
#: How long a signed answer stays valid; the gate also bounds its age by the policy.
ANSWER_TTL = dt.timedelta(minutes=10)


class Roles(Protocol):
    """Whether a person holds a role (the keyring's ``roles`` of each person)."""

    def may(self, person: str, role: Role) -> bool: ...


@dataclass(frozen=True, slots=True)
class KeyringRoles:
    """Roles from the keyring: person -> the roles it lists."""

    roles: Mapping[str, frozenset[str]]

    @classmethod
    def of(cls, people: Mapping[str, Any], *, relays: frozenset[str] | None = None) -> KeyringRoles:
        """From the keyring's people (``Keyring.people``: name -> holder with ``roles``),
        limited to the roles the Slack channel may relay (``relays``), as the gate is."""
        return cls(
            {
                name: frozenset(holder.roles) & relays if relays is not None else holder.roles
                for name, holder in people.items()
            }
        )

    def may(self, person: str, role: Role) -> bool:
        return role in self.roles.get(person, frozenset())


def nonce_for(slack_signature: str) -> str:
    """The answer's nonce, derived from the Slack request it came from.

    A replayed request makes the same nonce, so the gate refuses it as replayed even
    if this service forgot the request (a restart inside Slack's five minutes).
    """
    return hashlib.sha256(slack_signature.encode()).hexdigest()[:32]


def signed_answer(
    kind: Role,
    decision_id: str,
    person: str,
    *,
    nonce: str,
    now: dt.datetime,
    signer: Signer,
    change_record: str | None = None,
    false_positive: bool = False,
    reason: str = "",
) -> ApprovalResponse:
    """The one place a Slack click becomes a signed answer on ``approvals``.

    ``user`` is the keyring person the Slack user maps to and ``channel`` is
    ``slack``; ``signer`` is the Slack bridge's own key (a machine channel of the
    keyring, which the gate lets relay only the roles the keyring gives it).
    """
    answer = ApprovalResponse(
        schema_version=1,
        kind=kind,
        decision_id=decision_id,
        user=person,
        channel=CHANNEL,
        change_record=change_record,
        false_positive=false_positive,
        reason=reason,
        nonce=nonce,
        issued_at=now,
        expires_at=now + ANSWER_TTL,
    )
    return sign_answer(answer, signer)
