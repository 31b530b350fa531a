"""The two reviewed mapping files of the Slack service, validated on start-up.

``users.yaml`` maps Slack user ids to people of the keyring: a click is answered in
the name of the person it maps to, so the file is reviewed like the policy. A Slack
user that is not in it may not answer anything. ``channels.yaml`` names the channel
of each service, with a default for every other service.

Every problem names the file, the line and the field, as the policy loader does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streams.errors import EscalationError

#: Slack user ids (``U`` or, on Enterprise Grid, ``W``) and conversation ids.
SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,30}$")
SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,30}$")
PERSON = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


class SlackConfigError(EscalationError, ValueError):
    """A Slack mapping file is invalid; each problem names file, line and field."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, slots=True)
class Users:
    """Slack user id -> keyring person."""

    people: dict[str, str]
    source: str = "users.yaml"

    def person(self, slack_user: str) -> str | None:
        """The person a Slack user answers as, or ``None`` when unmapped."""
        return self.people.get(slack_user)


@dataclass(frozen=True, slots=True)
class Channels:
    """Service -> Slack channel id, and the default channel."""

    default: str
    services: dict[str, str]
    source: str = "channels.yaml"

    def channel(self, service: str) -> str:
        """Where a decision about ``service`` is posted."""
        return self.services.get(service, self.default)


def _load(text: str | bytes, source: str) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The document as a mapping, and the line of every key (1-based)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise SlackConfigError(f"{source}:{line}: not valid YAML: {problem}") from None
    if not isinstance(data, dict) or root is None:
        raise SlackConfigError(f"{source}:1: must be a mapping, got {type(data).__name__}")
    lines: dict[tuple[str, ...], int] = {}
    duplicates: list[str] = []

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, value in node.value:
                child = (*path, str(key.value))
                if child[-1] in seen:
                    duplicates.append(
                        f"{source}:{key.start_mark.line + 1}: {'.'.join(child)} is defined twice"
                    )
                seen.add(child[-1])
                lines[child] = key.start_mark.line + 1
                walk(value, child)

    walk(root, ())
    if duplicates:
        raise SlackConfigError(duplicates)
    return data, lines


def _line(lines: dict[tuple[str, ...], int], *path: str) -> int:
    for end in range(len(path), 0, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def _unknown(
    data: dict[str, Any], known: Iterable[str], source: str, lines: dict[tuple[str, ...], int]
) -> list[str]:
    return [
        f"{source}:{_line(lines, str(key))}: {key} is not a known key"
        for key in data
        if key not in set(known)
    ]


def parse_users(
    text: str | bytes, *, source: str = "users.yaml", people: Iterable[str] | None = None
) -> Users:
    """Validate ``users.yaml``: ``users: {SLACK_USER_ID: person}``.

    ``people``, when given (the keyring's people), must contain every mapped person.
    """
    data, lines = _load(text, source)
    problems = _unknown(data, ("users", "reviewed_by", "last_reviewed"), source, lines)
    users = data.get("users")
    if not isinstance(users, dict):
        problems.append(
            f"{source}:{_line(lines, 'users')}: users must be a mapping of Slack user id "
            f"to person, got {type(users).__name__}"
        )
        raise SlackConfigError(problems)
    known = set(people) if people is not None else None
    mapping: dict[str, str] = {}
    for slack_user, person in users.items():
        where = f"{source}:{_line(lines, 'users', str(slack_user))}: users.{slack_user}"
        if not isinstance(slack_user, str) or not SLACK_USER.match(slack_user):
            problems.append(f"{where} is not a Slack user id (U... or W...)")
        elif not isinstance(person, str) or not PERSON.match(person):
            problems.append(f"{where} must name a person of the keyring, got {person!r}")
        elif known is not None and person not in known:
            problems.append(f"{where}: {person!r} is not a person of the keyring")
        else:
            mapping[slack_user] = person
    if problems:
        raise SlackConfigError(problems)
    return Users(mapping, source)


def parse_channels(text: str | bytes, *, source: str = "channels.yaml") -> Channels:
    """Validate ``channels.yaml``: ``default: CHANNEL_ID`` and ``services: {service: id}``."""
    data, lines = _load(text, source)
    known = ("default", "services", "reviewed_by", "last_reviewed")
    problems = _unknown(data, known, source, lines)
    default = data.get("default")
    if not isinstance(default, str) or not SLACK_CHANNEL.match(default):
        problems.append(
            f"{source}:{_line(lines, 'default')}: default must be a Slack channel id "
            f"(C..., G...), got {default!r}"
        )
    services = data.get("services", {})
    if services is None:
        services = {}
    if not isinstance(services, dict):
        problems.append(
            f"{source}:{_line(lines, 'services')}: services must be a mapping of service "
            f"to channel id, got {type(services).__name__}"
        )
        services = {}
    mapping: dict[str, str] = {}
    for service, channel in services.items():
        where = f"{source}:{_line(lines, 'services', str(service))}: services.{service}"
        if not isinstance(service, str) or not service:
            problems.append(f"{where}: the service must be a name")
        elif not isinstance(channel, str) or not SLACK_CHANNEL.match(channel):
            problems.append(f"{where} must be a Slack channel id (C..., G...), got {channel!r}")
        else:
            mapping[service] = channel
    if problems:
        raise SlackConfigError(problems)
    assert isinstance(default, str)  # noqa: S101 - checked above
    return Channels(default, mapping, source)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SlackConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_users(path: Path, *, people: Iterable[str] | None = None) -> Users:
    """Load and validate a users file."""
    return parse_users(_read(path), source=str(path), people=people)


def read_channels(path: Path) -> Channels:
    """Load and validate a channels file."""
    return parse_channels(_read(path), source=str(path))
