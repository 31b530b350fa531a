"""PURE: the keyring, the reviewed list of who may sign what (SPEC 6, issue 12).

A governance document like the policy (``policies/keyring.yaml``): people with their
Ed25519 public key and roles, machine channels (a chat bridge, the console) that
verify a person themselves and may relay that person's answer, executors that report
outcomes, and SLO sources that report error budgets. Its sha256 is recorded in every
decision next to the policy's, and a policy may pin it (``keyring_sha256``).

Every signature is checked here (through streams/keys.py) against the raw JSON object
that came off the wire, without its signature fields, so a message re-encoded by
another client verifies as long as its content is the same.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from streams import keys
from streams.errors import KeyFileError, PolicyError
from streams.models.codec import canonical_json

Role = Literal["approve", "reject", "abort", "freeze", "requalify", "load_policy", "import_history"]
ROLES: tuple[Role, ...] = (
    "approve",
    "reject",
    "abort",
    "freeze",
    "requalify",
    "load_policy",
    "import_history",
)
SignerKind = Literal["person", "channel", "executor", "slo_source"]
Name = Annotated[StrictStr, Field(min_length=1, max_length=256)]
Pem = Annotated[StrictStr, Field(min_length=40, max_length=4096)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KeyringGovernance(_Model):
    """Who reviewed this keyring, and when."""

    version: Name
    approved_by: Annotated[tuple[Name, ...], Field(min_length=1)]
    last_reviewed: dt.date


class Person(_Model):
    """A human who signs answers and commands with a key of their own."""

    name: Name
    public_key: Pem
    roles: tuple[Role, ...]


class Channel(_Model):
    """A machine channel that verified a person itself (Slack, the console) and signs
    with its own key; it may relay only ``relays`` (and only for a person who holds
    the role)."""

    name: Name
    public_key: Pem
    relays: tuple[Role, ...]


class Source(_Model):
    """An executor (signs outcomes) or an SLO source (signs error budgets)."""

    name: Name
    public_key: Pem


class KeyringDocument(_Model):
    """The keyring file as data."""

    keyring: KeyringGovernance
    people: tuple[Person, ...] = ()
    channels: tuple[Channel, ...] = ()
    executors: tuple[Source, ...] = ()
    slo_sources: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a key of the keyring."""

    kind: SignerKind
    name: str
    roles: frozenset[str]


@dataclass(frozen=True, slots=True)
class Verified:
    """A signature that verified, and who made it."""

    key_id: str
    holder: Holder


class Keyring:
    """A validated keyring: public keys by id, and who holds each."""

    def __init__(self, document: KeyringDocument, digest: str) -> None:
        self.document = document
        self.digest = digest
        self.version = document.keyring.version
        self._holders: dict[str, Holder] = {}
        self.people: dict[str, Holder] = {}
        public: list[Any] = []
        entries: list[tuple[SignerKind, str, str, Iterable[str]]] = [
            *(("person", p.name, p.public_key, p.roles) for p in document.people),
            *(("channel", c.name, c.public_key, c.relays) for c in document.channels),
            *(("executor", e.name, e.public_key, ()) for e in document.executors),
            *(("slo_source", s.name, s.public_key, ()) for s in document.slo_sources),
        ]
        for kind, name, pem, roles in entries:
            key = keys.parse_public(pem, source=f"keyring {kind} {name}")
            holder = Holder(kind, name, frozenset(roles))
            self._holders[keys.key_id(key)] = holder
            if kind == "person":
                self.people[name] = holder
            public.append(key)
        self._keys = keys.PublicKeys(public)

    def holder(self, key_id: str) -> Holder | None:
        """Who holds the key ``key_id``."""
        return self._holders.get(key_id)

    def verify(self, body: Mapping[str, Any], signature: Any) -> Verified | str:
        """Check one signature over ``body`` (without its signature fields).

        A ``Verified`` naming the holder, or the refusal: ``unsigned``,
        ``malformed_signature``, ``unknown_key`` or ``forged``.
        """
        if signature is None:
            return "unsigned"
        if (
            not isinstance(signature, Mapping)
            or signature.get("alg") != keys.ALG
            or not isinstance(signature.get("key_id"), str)
            or not isinstance(signature.get("sig"), str)
        ):
            return "malformed_signature"
        kid = signature["key_id"]
        refusal = self._keys.verify_bytes(canonical_json(body), kid, signature["sig"])
        if refusal == "bad_signature":
            return "forged"
        if refusal is not None:
            return refusal
        holder = self._holders[kid]
        return Verified(kid, holder)

    def authorize(
        self,
        body: Mapping[str, Any],
        signature: Any,
        *,
        user: str,
        role: Role,
        ai_systems: Iterable[str] = (),
    ) -> Verified | str:
        """A person's (or a channel's, for that person) signed act in ``role``.

        Refused: a failed signature (above); ``ai_system`` when ``user`` is an AI
        system; ``signer_is_not_user`` when a person signs for someone else;
        ``channel_may_not_relay`` when a channel relays a role it was not given;
        ``unknown_person`` or ``role_missing`` for the person named; ``not_a_person``
        for an executor's or SLO source's key.
        """
        verified = self.verify(body, signature)
        if isinstance(verified, str):
            return verified
        if user in set(ai_systems):
            return "ai_system"
        holder = verified.holder
        if holder.kind == "person":
            if holder.name != user:
                return "signer_is_not_user"
        elif holder.kind == "channel":
            if role not in holder.roles:
                return "channel_may_not_relay"
        else:
            return "not_a_person"
        person = self.people.get(user)
        if person is None:
            return "unknown_person"
        if role not in person.roles:
            return "role_missing"
        return verified

    def authorize_source(
        self, body: Mapping[str, Any], signature: Any, kind: Literal["executor", "slo_source"]
    ) -> Verified | str:
        """An outcome (``executor``) or an error budget (``slo_source``), signed."""
        verified = self.verify(body, signature)
        if isinstance(verified, str):
            return verified
        if verified.holder.kind != kind:
            return f"not_an_{kind}" if kind == "executor" else "not_an_slo_source"
        return verified


def without(body: Mapping[str, Any], *fields: str) -> dict[str, Any]:
    """``body`` without its signature fields: the bytes every signature covers."""
    return {k: v for k, v in body.items() if k not in fields}


def parse_keyring(text: str | bytes, *, source: str = "keyring.yaml") -> Keyring:
    """Validate a keyring document; ``PolicyError`` naming file and field otherwise."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        data = yaml.safe_load(raw)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise PolicyError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the keyring must be a mapping")
    try:
        document = KeyringDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PolicyError(f"{source}: {where}: {first['msg']}") from None
    problems: list[str] = []
    seen: dict[str, str] = {}  # key id -> where it is listed
    for section in ("people", "channels", "executors", "slo_sources"):
        names: set[str] = set()
        for index, entry in enumerate(getattr(document, section)):
            where = f"{source}: {section}[{index}]"
            if entry.name in names:
                problems.append(f"{where}.name: {entry.name!r} is listed twice")
            names.add(entry.name)
            try:
                kid = keys.key_id(keys.parse_public(entry.public_key, source=where))
            except KeyFileError as exc:
                problems.append(f"{where}.public_key: {exc}")
                continue
            if kid in seen:
                problems.append(f"{where}.public_key: the same key as {seen[kid]}")
            seen[kid] = f"{section}[{index}] ({entry.name})"
    if problems:
        raise PolicyError(problems)
    return Keyring(document, hashlib.sha256(raw).hexdigest())


def keyring_yaml(
    *,
    version: str,
    approved_by: Iterable[str],
    reviewed: dt.date,
    people: Iterable[tuple[str, str, Iterable[str]]] = (),
    channels: Iterable[tuple[str, str, Iterable[str]]] = (),
    executors: Iterable[tuple[str, str]] = (),
    slo_sources: Iterable[tuple[str, str]] = (),
) -> str:
    """A keyring document's text (``escalation keys`` and development mode write one)."""
    document = {
        "keyring": {
            "version": version,
            "approved_by": list(approved_by),
            "last_reviewed": reviewed.isoformat(),
        },
        "people": [{"name": n, "roles": list(r), "public_key": k} for n, k, r in people],
        "channels": [{"name": n, "relays": list(r), "public_key": k} for n, k, r in channels],
        "executors": [{"name": n, "public_key": k} for n, k in executors],
        "slo_sources": [{"name": n, "public_key": k} for n, k in slo_sources],
    }
    return yaml.safe_dump(document, sort_keys=False)
