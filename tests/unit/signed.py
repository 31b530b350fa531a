"""Keys and a keyring for unit tests: the policy's people, a channel, an executor, an SLO
source (made once per test session, in memory), and signing helpers."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import orjson
from pydantic import BaseModel

from streams import keys
from streams.models import encode
from streams.policy.keyring import ROLES, Keyring, keyring_yaml, parse_keyring
from streams.signing import sign, sign_command

APPROVERS = ("alice", "bob", "carol", "dana", "operator")
ONCALL = ("sre-oncall-primary", "sre-oncall-secondary")


@functools.cache
def signer(name: str) -> keys.Signer:
    """The (session-wide) key of a person, channel, executor or SLO source."""
    return keys.generate(name)


@functools.cache
def keyring() -> Keyring:
    """Approvers with every role, on-call with reject/abort/freeze, channel ``slack``
    relaying answers, executor ``executor-1`` and SLO source ``slo-1``."""
    text = keyring_yaml(
        version="test",
        approved_by=["tests"],
        reviewed=dt.date(2026, 12, 1),
        people=[
            *((n, keys.public_pem(signer(n).public), ROLES) for n in APPROVERS),
            *(
                (n, keys.public_pem(signer(n).public), ("reject", "abort", "freeze"))
                for n in ONCALL
            ),
        ],
        channels=[
            ("slack", keys.public_pem(signer("slack").public), ("approve", "reject", "abort"))
        ],
        executors=[("executor-1", keys.public_pem(signer("executor-1").public))],
        slo_sources=[("slo-1", keys.public_pem(signer("slo-1").public))],
    )
    return parse_keyring(text, source="test-keyring.yaml")


def wire(model: BaseModel) -> dict[str, Any]:
    """A message as the gate reads it: its JSON object off the wire."""
    value = orjson.loads(encode(model))
    assert isinstance(value, dict)
    return value


def signed(model: Any, by: str | keys.Signer) -> Any:
    """An answer, outcome or budget signed by ``by`` (a name of the keyring, or a key)."""
    return sign(model, by if isinstance(by, keys.Signer) else signer(by))


def cosigned(command: Any, *by: str | keys.Signer) -> Any:
    """A control command signed by each of ``by`` in turn."""
    for who in by:
        command = sign_command(command, who if isinstance(who, keys.Signer) else signer(who))
    return command
