# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Parse a policy document; every problem names the source, line and field.

Pure: takes the document's text, never opens files (the CLI and worker read them).
A document may arrive on ``control`` (a policy reload), so nothing here may take
time or memory exponential in its size: YAML aliases share nodes, and a few lines of
nested aliases describe a billion-element value. The line index visits each node
once, and values are shown through ``reprlib``, which stops after a few items.
"""

from __future__ import annotations

import hashlib
import reprlib
from typing import Any

import yaml
from pydantic import ValidationError

from streams.errors import PolicyError
from streams.policy.model import Policy

Path_ = tuple[str | int, ...]


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        name = str(part) if str(part).isprintable() else repr(str(part))
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out or "(document)"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Lines:
    """Line numbers (1-based) of every key and item in a YAML document."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.lines: dict[Path_, int] = {}
        self.duplicates: list[tuple[Path_, int]] = []
        self._visited: set[int] = set()
        if root is not None:
            self._walk(root, ())

    def _walk(self, node: yaml.Node, path: Path_) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self._visited:  # an alias: its lines were recorded where it was defined
            return
        self._visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*path, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self._walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._walk(item, (*path, index))

    def line(self, path: Path_) -> int:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1


_repr = reprlib.Repr()  # keyword arguments arrived in 3.12
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 50, 50


def _shown(value: Any) -> str:
    text = _repr.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _contradictions(policy: Policy) -> list[tuple[Path_, str]]:
    """Thresholds that are each valid but together make no sense."""
    t = policy.thresholds
    problems: list[tuple[Path_, str]] = []

    def check(ok: bool, path: Path_, message: str) -> None:
        if not ok:
            problems.append((path, message))

    check(
        t.autonomous.min_confidence >= t.supervised.min_confidence,
        ("thresholds", "autonomous", "min_confidence"),
        f"Level 4 confidence {t.autonomous.min_confidence} is below Level 2's "
        f"{t.supervised.min_confidence}",
    )
    check(
        t.supervised.min_confidence >= t.assist.min_confidence,
        ("thresholds", "supervised", "min_confidence"),
        f"Level 2 confidence {t.supervised.min_confidence} is below Level 1's "
        f"{t.assist.min_confidence}",
    )
    check(
        t.conditional.min_seen >= t.supervised.min_seen,
        ("thresholds", "conditional", "min_seen"),
        f"Level 3 needs {t.conditional.min_seen} occurrences, fewer than Level 2's "
        f"{t.supervised.min_seen}",
    )
    check(
        t.autonomous.min_seen >= t.conditional.min_seen,
        ("thresholds", "autonomous", "min_seen"),
        f"Level 4 needs {t.autonomous.min_seen} occurrences, fewer than Level 3's "
        f"{t.conditional.min_seen}",
    )
    check(
        t.autonomous.consistency >= t.conditional.consistency,
        ("thresholds", "autonomous", "consistency"),
        f"Level 4 consistency {t.autonomous.consistency} is below Level 3's "
        f"{t.conditional.consistency}",
    )
    check(
        t.supervised.degraded_error_budget >= t.assist.min_error_budget,
        ("thresholds", "supervised", "degraded_error_budget"),
        f"degraded error budget {t.supervised.degraded_error_budget} is below the Level 1 "
        f"freeze line {t.assist.min_error_budget}",
    )
    check(
        policy.policy.next_review > policy.policy.last_reviewed,
        ("policy", "next_review"),
        f"next review {policy.policy.next_review} is not after last review "
        f"{policy.policy.last_reviewed}",
    )
    check(
        policy.approval.timeout_seconds > 0,
        ("approval", "timeout_seconds"),
        "must be positive",
    )
    for index, approver in enumerate(policy.approval.approvers):
        check(
            approver not in policy.trusted_ai_systems,
            ("approval", "approvers", index),
            f"{approver!r} is a trusted AI system; an AI system may never approve",
        )
    names: set[str] = set()
    for index, quorum in enumerate(policy.approval.quorums):
        at: Path_ = ("approval", "quorums", index)
        check(
            quorum.approvers <= len(set(policy.approval.approvers)),
            (*at, "approvers"),
            f"needs {quorum.approvers} different approvers but approval.approvers lists "
            f"{len(set(policy.approval.approvers))}: such a decision could never be approved",
        )
        check(
            bool(quorum.conditions()),
            at,
            f"quorum {quorum.name!r} sets no condition (regulated, replica_fraction_above, "
            "traffic_fraction_above, services_above, namespaces_above): it would never apply",
        )
        check(quorum.name not in names, (*at, "name"), f"{quorum.name!r} is used twice")
        names.add(quorum.name)
    problems += _oncall_problems(policy)
    return problems


def _oncall_problems(policy: Policy) -> list[tuple[Path_, str]]:
    """An on-call chain whose steps repeat, or that timeouts can never walk to its end."""
    chain = policy.oncall.chain
    problems: list[tuple[Path_, str]] = []
    seen: set[str] = set()
    for index, target in enumerate(chain):
        if target.name in seen:
            problems.append(
                (("oncall", "chain", index, "name"), f"{target.name!r} is already in the chain")
            )
        seen.add(target.name)
    if len(chain) > policy.approval.max_escalations:
        never = chain[policy.approval.max_escalations].name
        problems.append(
            (
                ("oncall", "chain", policy.approval.max_escalations),
                (
                    f"the chain has {len(chain)} targets but approval.max_escalations is "
                    f"{policy.approval.max_escalations}: {never!r} would never be paged"
                ),
            )
        )
    return problems


def parse_policy(text: str | bytes, *, source: str = "policy.yaml") -> Policy:
    """Validate a policy document and return it with its digest set.

    Raises ``PolicyError`` whose ``problems`` are lines like
    ``policy.yaml:14: thresholds.autonomous.min_confidence must be in [0, 1], got 1.5``.
    """
    raw = text.encode() if isinstance(text, str) else text
    try:
        # Parsed once: the node tree gives the line numbers, the data is built from it.
        # (Not libyaml's CSafeLoader: its composer recurses in C without a limit, and
        # 100,000 nested brackets crash the process.)
        loader = yaml.SafeLoader(raw)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        raise PolicyError(
            f"{source}:1: not valid YAML: {_one_line(exc.reason)} at byte {exc.position}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{source}:{line}: not valid YAML: {_one_line(problem)}") from None
    except RecursionError:
        raise PolicyError(f"{source}:1: not valid YAML: nested too deeply") from None
    except ValueError as exc:  # PyYAML's date constructor: 2027-02-30
        raise PolicyError(f"{source}:1: not valid YAML: {_one_line(str(exc))}") from None
    lines = _Lines(root)
    problems = [
        f"{source}:{line}: {_dotted(path)} is defined twice" for path, line in lines.duplicates
    ]
    if not isinstance(data, dict):
        problems.append(f"{source}:1: the policy must be a mapping, got {type(data).__name__}")
        raise _error(problems)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            path = tuple(err["loc"])
            if err["type"] == "missing":
                message = "is required"
            elif err["type"] == "extra_forbidden":
                message = "is not a known key"
            else:
                message = f"{err['msg'].lower()}, got {_shown(err.get('input'))}"
                message = message.replace("input should be", "must be")
            problems.append(f"{source}:{lines.line(path)}: {_dotted(path)} {message}")
        raise _error(problems) from None
    problems += [
        f"{source}:{lines.line(path)}: {_dotted(path)}: {message}"
        for path, message in _contradictions(policy)
    ]
    if problems:
        raise _error(problems)
    policy._digest = hashlib.sha256(raw).hexdigest()  # noqa: SLF001 - the loader owns it
    policy._source = source  # noqa: SLF001
    return policy


def _error(problems: list[str]) -> PolicyError:
    return PolicyError(problems)
