# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Shared fixtures of the unit suite: sample inputs, the shipped policies, a builder.

The base proposal and context are the SPEC's examples (tests/fixtures/*.json); under
the default policy they decide Level 4, so each table-driven case states only what
it changes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.models import Context, Proposal
from streams.policy import Policy, parse_policy

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
POLICIES = ROOT / "policies"
DEFAULT_POLICY = POLICIES / "escalation-policy.yaml"
STRICT_POLICY = POLICIES / "strict-regulated.yaml"

Inputs = tuple[Proposal, Context]
Builder = Callable[..., Inputs]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: mappings merge, everything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_json(name: str) -> dict[str, Any]:
    value = orjson.loads((FIXTURES / name).read_bytes())
    assert isinstance(value, dict)
    return value


def load_policy(path: Path) -> Policy:
    return parse_policy(path.read_bytes(), source=path.name)


def build_inputs(
    proposal: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
    *,
    base_proposal: Mapping[str, Any] | None = None,
    base_context: Mapping[str, Any] | None = None,
) -> Inputs:
    """Validate the base inputs with overrides merged in, from JSON as on the wire."""
    p = deep_merge(base_proposal or load_json("proposal.json"), proposal or {})
    c = deep_merge(base_context or load_json("context.json"), context or {})
    return Proposal.model_validate_json(orjson.dumps(p)), Context.model_validate_json(
        orjson.dumps(c)
    )


@pytest.fixture
def base_proposal() -> dict[str, Any]:
    """The SPEC section 3 proposal as a dict (a fresh copy per test)."""
    return load_json("proposal.json")


@pytest.fixture
def base_context() -> dict[str, Any]:
    """The SPEC section 4 context as a dict (a fresh copy per test)."""
    return load_json("context.json")


@pytest.fixture(scope="session")
def default_policy() -> Policy:
    """The shipped v1.3 policy, loaded the way the CLI loads it."""
    return load_policy(DEFAULT_POLICY)


@pytest.fixture(scope="session")
def strict_policy() -> Policy:
    """The stricter example policy for a regulated organisation."""
    return load_policy(STRICT_POLICY)


@pytest.fixture(scope="session")
def make_inputs() -> Builder:
    """``make_inputs(proposal_overrides, context_overrides) -> (Proposal, Context)``."""
    base_p, base_c = load_json("proposal.json"), load_json("context.json")

    def make(
        proposal: Mapping[str, Any] | None = None, context: Mapping[str, Any] | None = None
    ) -> Inputs:
        return build_inputs(proposal, context, base_proposal=base_p, base_context=base_c)

    return make
