"""Reading the user's files for the command line and the worker (the core never does I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from streams.errors import InputError, PolicyError
from streams.models.codec import decode
from streams.policy import Policy, parse_policy
from streams.policy.keyring import Keyring, parse_keyring

M = TypeVar("M", bound=BaseModel)


def shown_path(path: Path | str) -> str:
    """A file name for a one-line message: line breaks and control characters escaped."""
    text = str(path)
    return text if text.isprintable() else repr(text)


def read_bytes(path: Path | str, *, what: str = "file") -> bytes:
    """A file's bytes (``-`` is stdin), or ``InputError`` naming it."""
    if str(path) == "-":
        import sys  # noqa: PLC0415 - only the CLI reads stdin

        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(shown_path(path), f"cannot read {what}: {exc.strerror or exc}") from None


def read_model(model: type[M], path: Path | str) -> M:
    """Decode one JSON document from a file; errors read ``FILE: field: problem``."""
    raw = read_bytes(path, what=model.__name__.lower())
    try:
        return decode(model, raw)
    except InputError as exc:
        name = shown_path(path)
        where = f"{name}: {exc.field}" if exc.field else name
        raise InputError(where, exc.reason, kind=exc.kind) from None


def read_policy(path: Path | str) -> Policy:
    """Load and validate a policy file; ``PolicyError`` lines name file, line and field."""
    name = shown_path(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"{name}: cannot read policy: {exc.strerror or exc}") from None
    return parse_policy(raw, source=name)


def read_keyring(path: Path | str) -> Keyring:
    """Load and validate a keyring file; ``PolicyError`` lines name the file and field."""
    name = shown_path(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PolicyError(f"{name}: cannot read keyring: {exc.strerror or exc}") from None
    return parse_keyring(raw, source=name)
