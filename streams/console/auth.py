"""Who is signed in: an authenticating proxy's user header, or a local account.

* Behind oauth2-proxy (or any proxy following its convention) the proxy
  authenticates and passes the person in a header (``X-Forwarded-User`` by
  default). The header is believed only on connections from the addresses in
  ``ESCALATION_CONSOLE_TRUSTED_PROXIES``; from anywhere else it is ignored.
* Local accounts (the demo, small teams): a file of ``name:argon2-hash`` lines
  written by ``escalation console add-user``; passwords are hashed and checked
  with argon2-cffi (argon2id).

Sessions are signed cookies (Starlette's ``SessionMiddleware``, itsdangerous).
Every form carries the session's CSRF token; a POST without it is refused (403).
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from streams.errors import EscalationError, InputError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from starlette.requests import Request

#: A person's name: what the gate's policy lists as an approver.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$")
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

_HASHER = PasswordHasher()
# Checked against when the name is unknown, so a wrong name costs what a wrong password does.
_DUMMY = _HASHER.hash(secrets.token_hex(16))


class AccountsError(EscalationError, ValueError):
    """The accounts file cannot be read or written."""


def valid_name(name: str, field: str = "name") -> str:
    if not NAME.match(name):
        raise InputError(
            field, f"must be 1-128 letters, digits or ._@+- (starting alnum), got {name[:60]!r}"
        )
    return name


@dataclass(frozen=True, slots=True)
class Accounts:
    """Local accounts: name -> argon2 hash."""

    hashes: dict[str, str]

    @classmethod
    def load(cls, path: Path | None) -> Accounts:
        if path is None:
            return cls({})
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls({})
        except OSError as exc:
            raise AccountsError(f"{path}: cannot read ({exc.strerror})") from None
        hashes: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            name, sep, digest = stripped.partition(":")
            if not sep or not NAME.match(name) or not digest.startswith("$argon2"):
                raise AccountsError(f"{path}:{number}: expected name:$argon2id$..., got {line!r}")
            hashes[name] = digest
        return cls(hashes)

    def check(self, name: str, password: str) -> bool:
        """True when ``password`` is the account's (constant work for unknown names)."""
        digest = self.hashes.get(name)
        try:
            return _HASHER.verify(digest or _DUMMY, password) and digest is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False


class AccountsFile:
    """The accounts file, read again when it changes (``add-user`` on a running console
    takes effect without a restart; a removed account is signed out at its next request)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._accounts = Accounts({})
        self._lock = threading.Lock()
        self._current()

    def _current(self) -> Accounts:
        if self.path is None:
            return self._accounts
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            stamp = (0, 0)
        with self._lock:
            if stamp != self._stamp:
                self._accounts = Accounts.load(self.path)
                self._stamp = stamp
            return self._accounts

    @property
    def hashes(self) -> dict[str, str]:
        return self._current().hashes

    def check(self, name: str, password: str) -> bool:
        return self._current().check(name, password)


def add_user(path: Path, name: str, password: str, *, replace: bool = False) -> None:
    """Add (or with ``replace`` change) a local account; the file is kept mode 0600."""
    valid_name(name, "NAME")
    if len(password) < 8:
        raise InputError("password", "must be at least 8 characters")
    accounts = Accounts.load(path)
    if name in accounts.hashes and not replace:
        raise InputError("NAME", f"{name} already has an account (use --replace)")
    hashes = {**accounts.hashes, name: _HASHER.hash(password)}
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{n}:{h}\n" for n, h in sorted(hashes.items()))
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# escalation console accounts: name:argon2 hash\n" + body)
    temporary.replace(path)


@dataclass(frozen=True, slots=True)
class Auth:
    """How a request's person is found."""

    accounts: Accounts | AccountsFile
    trusted_proxies: frozenset[str]
    user_header: str

    @classmethod
    def of(
        cls, accounts: Accounts | AccountsFile, proxies: str | Iterable[str], header: str
    ) -> Auth:
        items = proxies.split(",") if isinstance(proxies, str) else list(proxies)
        return cls(accounts, frozenset(p.strip() for p in items if p.strip()), header.lower())

    def user(self, request: Request) -> str | None:
        """The signed-in person, or ``None``."""
        client = request.client.host if request.client else ""
        if client in self.trusted_proxies:
            named = request.headers.get(self.user_header, "").strip()
            if named and NAME.match(named):
                return named
        user = request.session.get("user")
        if isinstance(user, str) and user in self.accounts.hashes:
            return user
        return None


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session[CSRF_FIELD] = token
    return token


def csrf_ok(request: Request, sent: object) -> bool:
    expected = request.session.get(CSRF_FIELD)
    if not isinstance(expected, str) or not isinstance(sent, str) or not sent:
        return False
    return hmac.compare_digest(expected.encode(), sent.encode())
