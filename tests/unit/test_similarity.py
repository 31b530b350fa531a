"""Near misses (streams/policy/similarity.py), table-driven from similarity_cases.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from streams.policy import Policy
from streams.policy.model import SimilarityPolicy, SimilarityWeights
from streams.policy.similarity import (
    FIELDS,
    Signature,
    classify,
    distance,
    parameters_distance,
    pattern_distance,
)

CASES_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "similarity_cases.yaml"
DOCUMENT = yaml.safe_load(CASES_FILE.read_text())
CASE_KEYS = {"name", "proposal", "kind", "differs", "distance", "nearest", "known_override"}


def _signature(overrides: dict[str, Any]) -> Signature:
    return Signature.from_dict({**DOCUMENT["base"], **overrides})


KNOWN = [_signature(k) for k in DOCUMENT["known"]]


@pytest.mark.parametrize("case", DOCUMENT["cases"], ids=[c["name"] for c in DOCUMENT["cases"]])
def test_similarity_case(case: dict[str, Any], default_policy: Policy) -> None:
    assert set(case) <= CASE_KEYS, case["name"]
    known = [_signature(k) for k in case["known_override"]] if "known_override" in case else KNOWN

    novelty = classify(_signature(case["proposal"]), known, default_policy.similarity)

    assert novelty.kind == case["kind"]
    if "differs" in case:
        assert novelty.nearest is not None
        assert list(novelty.nearest.differs) == case["differs"]
    if "distance" in case:
        assert novelty.nearest is not None
        assert novelty.nearest.distance == pytest.approx(case["distance"], abs=1e-3)
    if "nearest" in case:
        assert novelty.nearest is not None
        assert novelty.nearest.signature == known[case["nearest"]]
    assert novelty.caps_level == (2 if case["kind"] == "similar" else None)


def test_the_default_policy_states_its_measure() -> None:
    policy = SimilarityPolicy()
    assert policy.max_distance == 0.5
    assert policy.weights == SimilarityWeights(
        pattern=1.0, action_type=1.0, target_kind=0.3, namespace=0.1, environment=0.3,
        parameters=0.2,
    )  # fmt: skip


def test_a_tighter_threshold_turns_a_near_miss_novel() -> None:
    near = _signature({"target_kind": "StatefulSet"})

    assert classify(near, KNOWN, SimilarityPolicy()).kind == "similar"
    assert classify(near, KNOWN, SimilarityPolicy(max_distance=0.2)).kind == "novel"


def test_explain_names_the_nearest_signature_what_differs_and_the_distance() -> None:
    novelty = classify(_signature({"environment": "staging"}), KNOWN, SimilarityPolicy())

    shown = novelty.as_dict()

    assert shown["kind"] == "similar"
    assert shown["max_distance"] == 0.5
    assert shown["nearest"]["signature"]["environment"] == "production"
    assert shown["nearest"]["differs"] == ["environment"]
    assert shown["nearest"]["distance"] == pytest.approx(0.3)


def test_signature_round_trips_through_its_dict_and_key() -> None:
    signature = _signature({"parameters": {"b": [1, 2], "a": {"x": None}}})

    assert Signature.from_dict(signature.as_dict()) == signature
    assert signature.key() == Signature.from_dict(signature.as_dict()).key()


def test_pattern_and_parameter_distances_are_bounded() -> None:
    assert pattern_distance("a", "a") == 0.0
    assert pattern_distance("abc", "xyz") == 1.0
    assert parameters_distance((), ()) == 0.0
    assert parameters_distance((("a", "1"),), (("b", "1"),)) == 1.0


names = st.text(alphabet="abc-/", min_size=1, max_size=12)
signatures = st.builds(
    Signature,
    pattern=names,
    action_type=st.sampled_from(["rolling_restart", "scale_up"]),
    target_kind=st.sampled_from(["Deployment", "StatefulSet"]),
    namespace=st.sampled_from(["shop", "billing"]),
    environment=st.sampled_from(["production", "staging"]),
    parameters=st.sampled_from([(), (("replicas_delta", "2"),), (("replicas_delta", "3"),)]),
)


@given(signatures, signatures)
def test_distance_is_zero_exactly_for_the_same_signature_and_symmetric_in_fields(
    a: Signature, b: Signature
) -> None:
    policy = SimilarityPolicy()
    ab, ba = distance(a, b, policy), distance(b, a, policy)

    assert (ab.distance == 0.0) == (a == b)
    assert ab.differs == ba.differs
    assert set(ab.differs) <= set(FIELDS)
    assert ab.distance >= 0.0


@given(signatures, st.lists(signatures, max_size=6))
def test_adding_history_never_makes_a_seen_signature_unseen(
    a: Signature, known: list[Signature]
) -> None:
    policy = SimilarityPolicy()
    assert classify(a, [*known, a], policy).kind == "seen"
    kinds = ["novel", "similar", "seen"]
    before = classify(a, known, policy).kind
    after = classify(a, [*known, *known[:1]], policy).kind
    assert kinds.index(after) >= kinds.index(before)


def test_shipped_policies_state_their_similarity_and_calibration(
    default_policy: Policy, strict_policy: Policy
) -> None:
    assert default_policy.similarity.max_distance == 0.5
    assert default_policy.calibration.min_samples == 20
    assert strict_policy.similarity.max_distance == 0.4
    assert strict_policy.calibration.bins == 20


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("similarity:\n  max_distance: 0\n", "similarity.max_distance must be greater than 0"),
        ("similarity:\n  weights: {pattern: -1}\n", "similarity.weights.pattern"),
        ("similarity:\n  near: 1\n", "similarity.near is not a known key"),
        ("calibration:\n  bins: 0\n", "calibration.bins"),
        ("calibration:\n  min_samples: 1.5\n", "calibration.min_samples"),
    ],
)
def test_a_bad_similarity_or_calibration_section_names_file_line_and_field(
    section: str, message: str
) -> None:
    from streams.errors import PolicyError  # noqa: PLC0415
    from streams.policy import parse_policy  # noqa: PLC0415

    text = (Path(__file__).resolve().parents[2] / "policies" / "escalation-policy.yaml").read_text()
    text = text.split("\nsimilarity:")[0] + "\n" + section
    line = text.count("\n")  # the field is on the section's last line, the file's last

    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="p.yaml")

    assert any(p.startswith(f"p.yaml:{line}") and message in p for p in caught.value.problems), (
        caught.value.problems
    )


def test_a_policy_without_the_sections_gets_the_documented_defaults() -> None:
    from streams.policy import parse_policy  # noqa: PLC0415

    text = (Path(__file__).resolve().parents[2] / "policies" / "escalation-policy.yaml").read_text()
    policy = parse_policy(text.split("\n# Novelty that sees near misses")[0] + "\n")

    assert policy.similarity == SimilarityPolicy()
    assert policy.calibration.bins == 10
