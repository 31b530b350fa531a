"""The policy loader on ``approval.quorums`` (the two-person rule): valid quorums load,
and a quorum that could never be met, or never applies, is refused naming file:line."""

from __future__ import annotations

import pytest
from policy_inputs import DEFAULT_POLICY

from streams.errors import PolicyError
from streams.policy import Policy, parse_policy

ANCHOR = "  answer_max_age_seconds:"


def with_quorums(text: str) -> str:
    raw = DEFAULT_POLICY.read_text()
    assert raw.count(ANCHOR) == 1
    return raw.replace(ANCHOR, "  quorums:\n" + text + ANCHOR)


def line_of(document: str, needle: str) -> int:
    return next(n for n, line in enumerate(document.splitlines(), 1) if needle in line)


def test_quorums_load_with_their_conditions() -> None:
    policy: Policy = parse_policy(
        with_quorums(
            "    - {name: regulated, approvers: 2, regulated: true}\n"
            "    - {name: wide, approvers: 3, replica_fraction_above: 0.5, services_above: 2}\n"
        )
    )
    regulated, wide = policy.approval.quorums
    assert (regulated.approvers, regulated.conditions()) == (2, ("regulated",))
    assert wide.conditions() == ("replica_fraction_above", "services_above")


def test_a_policy_without_quorums_has_none() -> None:
    assert parse_policy(DEFAULT_POLICY.read_bytes()).approval.quorums == ()


@pytest.mark.parametrize(
    ("quorums", "needle", "problem"),
    [
        (
            "    - {name: five, approvers: 5, regulated: true}\n",
            "name: five",
            (
                "approval.quorums[0].approvers: needs 5 different approvers but approval.approvers "
                "lists 4"
            ),
        ),
        (
            "    - {name: idle, approvers: 2}\n",
            "name: idle",
            "approval.quorums[0]: quorum 'idle' sets no condition",
        ),
        (
            (
                "    - {name: a, approvers: 2, regulated: true}\n"
                "    - {name: a, approvers: 2, services_above: 2}\n"
            ),
            "services_above: 2",
            "approval.quorums[1].name: 'a' is used twice",
        ),
        (
            "    - {name: one, approvers: 1, regulated: true}\n",
            "name: one",
            "approval.quorums[0].approvers must be greater than or equal to 2",
        ),
        (
            "    - {name: big, approvers: 2, replica_fraction_above: 1.5}\n",
            "name: big",
            "approval.quorums[0].replica_fraction_above must be less than or equal to 1",
        ),
        (
            "    - {name: typo, approvers: 2, regulatd: true}\n",
            "name: typo",
            "approval.quorums[0].regulatd is not a known key",
        ),
    ],
)
def test_a_bad_quorum_names_file_line_and_field(quorums: str, needle: str, problem: str) -> None:
    document = with_quorums(quorums)
    with pytest.raises(PolicyError) as info:
        parse_policy(document, source="policy.yaml")
    expected = f"policy.yaml:{line_of(document, needle)}: {problem}"
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems
