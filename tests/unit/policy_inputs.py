"""Inputs for the Slack and two-person tests, importable by name.

``from conftest import ...`` is ambiguous when the unit and integration suites run in
one session (both directories have a ``conftest``), so these tests take their paths
and the input builder from here; it builds what tests/unit/conftest.py's
``build_inputs`` builds.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from streams.models import Context, Proposal
from streams.policy import Policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT_POLICY = ROOT / "policies" / "escalation-policy.yaml"
STRICT_POLICY = ROOT / "policies" / "strict-regulated.yaml"


def load_policy(path: Path) -> Policy:
    return parse_policy(path.read_bytes(), source=path.name)


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_inputs(
    proposal: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None
) -> tuple[Proposal, Context]:
    """The SPEC's example proposal and context (tests/fixtures) with overrides merged in."""
    p = _merge(orjson.loads((FIXTURES / "proposal.json").read_bytes()), proposal or {})
    c = _merge(orjson.loads((FIXTURES / "context.json").read_bytes()), context or {})
    return Proposal.model_validate_json(orjson.dumps(p)), Context.model_validate_json(
        orjson.dumps(c)
    )
