"""Who may publish over HTTP, and as which AI system: a reviewed YAML file of token hashes.

```yaml
# ingest-clients.yaml: reviewed like the policy; holds no secret, only sha256 hashes.
clients:
  - ai_system: holmesgpt
    token_sha256: [3f1c...]            # `escalation ingest token`: prints a token and its hash
    rate_limit: 10/second;300/minute   # the `limits` notation; default 5/second
```

Tokens are 32 random bytes (256 bits) made by ``escalation ingest token``, so a plain
sha256 of them cannot be brute-forced and needs no slow password hash; the file
holds only hashes, and a leaked file gives no token. Several hashes per AI system
let a token be rotated without downtime. A token names exactly one AI system; a
request may only publish proposals whose ``source.ai_system`` is that system.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Annotated

import yaml
from limits import RateLimitItem, parse_many
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from streams.errors import InputError
from streams.models.codec import describe_validation_error

DEFAULT_RATE_LIMIT = "5/second"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _ClientEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ai_system: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    token_sha256: Annotated[tuple[StrictStr, ...], Field(min_length=1)]
    rate_limit: StrictStr = DEFAULT_RATE_LIMIT

    @field_validator("token_sha256", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _HEX64.match(item):
                msg = f"must be 64 lowercase hex digits (a sha256), got {item[:20]!r}"
                raise ValueError(msg)
        return value

    @field_validator("rate_limit")
    @classmethod
    def _limit(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError:
            msg = f"must be a rate such as 10/second or 10/second;300/minute, got {value!r}"
            raise ValueError(msg) from None
        return value


class _ClientsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: tuple[_ClientEntry, ...]


@dataclass(frozen=True, slots=True)
class Client:
    """One AI system allowed to publish: its token hashes and its rate limits."""

    ai_system: str
    token_hashes: tuple[bytes, ...]
    limits: tuple[RateLimitItem, ...]


def token_hash(token: str) -> str:
    """The sha256 (hex) of a bearer token, as the clients file stores it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh bearer token and its hash: ``(token, token_sha256)``."""
    token = "eg_" + secrets.token_urlsafe(32)
    return token, token_hash(token)


class Clients:
    """The AI systems the intake accepts, looked up by bearer token."""

    def __init__(self, clients: tuple[Client, ...]) -> None:
        self.clients = clients
        names = [c.ai_system for c in clients]
        if len(set(names)) != len(names):
            msg = "an ai_system is listed twice"
            raise InputError("clients", msg)

    @classmethod
    def parse(cls, text: str | bytes, *, source: str = "clients.yaml") -> Clients:
        """Validate a clients file; ``InputError`` names the file and field."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(source, f"not valid YAML: {' '.join(str(exc).split())}") from None
        try:
            parsed = _ClientsFile.model_validate(data)
        except ValidationError as exc:
            error = describe_validation_error(exc)
            raise InputError(f"{source}: {error.field}", error.reason) from None
        return cls(
            tuple(
                Client(
                    ai_system=entry.ai_system,
                    token_hashes=tuple(bytes.fromhex(h) for h in entry.token_sha256),
                    limits=tuple(parse_many(entry.rate_limit)),
                )
                for entry in parsed.clients
            )
        )

    def authenticate(self, token: str) -> Client | None:
        """The client whose token this is, or ``None``; compared in constant time."""
        digest = hashlib.sha256(token.encode()).digest()
        found: Client | None = None
        for client in self.clients:
            for expected in client.token_hashes:
                # Every hash is compared, so the time taken does not tell which matched.
                if hmac.compare_digest(digest, expected):
                    found = client
        return found
