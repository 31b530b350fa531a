"""Calibrated confidence (streams/policy/calibration.py): reliability, ECE, Brier, and
the safety property that calibration never raises a level."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.models import Context, Proposal
from streams.policy import Policy, evaluate
from streams.policy.calibration import (
    STATE_BINS,
    bin_of,
    brier_score,
    calibrated,
    calibration_key,
    composite,
    expected_calibration_error,
    judged,
    record,
    reliability,
)

Builder = Callable[..., tuple[Proposal, Context]]

BINS, MIN = 10, 20


def _state(pairs: list[tuple[float, bool]]) -> dict[str, Any]:
    return judged(pairs, bins=BINS)


def test_a_system_whose_090s_are_right_60_percent_is_calibrated_to_060() -> None:
    state = _state([(0.9, i < 60) for i in range(100)])

    assert calibrated(state, 0.9, bins=BINS, min_samples=MIN) == pytest.approx(0.6)
    assert calibrated(state, 0.95, bins=BINS, min_samples=MIN) == pytest.approx(0.6)


def test_such_a_system_cannot_reach_level_4_on_its_word(
    make_inputs: Builder, default_policy: Policy
) -> None:
    state = _state([(0.9, i < 60) for i in range(100)])
    proposal, context = make_inputs({"confidence": {"model": 0.93, "heuristic": None}})
    value = calibrated(state, proposal.confidence.model, bins=BINS, min_samples=MIN)
    honest = proposal.model_copy(
        update={
            "confidence": proposal.confidence.model_copy(
                update={"model": composite(proposal.confidence.model, None, value)}
            )
        }
    )

    assert evaluate(proposal, context, default_policy).level == 4
    assert evaluate(honest, context, default_policy).level == 2


def test_below_the_minimum_sample_there_is_no_calibrated_value() -> None:
    state = _state([(0.9, False)] * (MIN - 1))

    assert calibrated(state, 0.9, bins=BINS, min_samples=MIN) is None
    assert calibrated(record(state, confidence=0.91, right=False, bins=BINS), 0.9,
                      bins=BINS, min_samples=MIN) == 0.0  # fmt: skip


def test_a_well_calibrated_system_keeps_its_confidence() -> None:
    state = _state([(0.95, True)] * 50)

    assert calibrated(state, 0.93, bins=BINS, min_samples=MIN) == 0.93


def test_reliability_table_counts_each_bin_and_is_monotone() -> None:
    # 0.7s right 90% of the time, 0.9s right 60%: the isotonic fit pools the two.
    state = _state([(0.7, i < 27) for i in range(30)] + [(0.9, i < 18) for i in range(30)])

    table = reliability(state, bins=BINS, min_samples=MIN)

    assert [b.count for b in table] == [0, 0, 0, 0, 0, 0, 0, 30, 0, 30]
    assert table[7].accuracy == pytest.approx(0.9)
    assert table[9].accuracy == pytest.approx(0.6)
    assert table[7].calibrated == table[9].calibrated == pytest.approx(0.75)
    assert table[0].calibrated is None
    assert (table[9].lower, table[9].upper) == (0.9, 1.0)


def test_ece_and_brier_score() -> None:
    state = _state([(0.9, i < 60) for i in range(100)])

    assert expected_calibration_error(state, bins=BINS) == pytest.approx(0.3)
    # 60 right: (0.9 - 1)^2 = 0.01; 40 wrong: 0.81.
    assert brier_score(state, bins=BINS) == pytest.approx((60 * 0.01 + 40 * 0.81) / 100)
    assert expected_calibration_error(None, bins=BINS) is None
    assert brier_score({"bins": []}, bins=BINS) is None


def test_unreadable_state_is_no_calibration_credit() -> None:
    assert calibrated({"bins": "junk"}, 0.9, bins=BINS, min_samples=1) is None
    assert calibrated({"bins": [[1, 2]] * BINS}, 0.9, bins=BINS, min_samples=1) is None


def test_keys_and_bins() -> None:
    assert calibration_key("holmesgpt", None) == "holmesgpt|*"
    assert calibration_key("holmesgpt", "gpt-4.1") == "holmesgpt|gpt-4.1"
    assert [bin_of(c, 10) for c in (0.0, 0.099, 0.1, 0.95, 1.0)] == [0, 0, 1, 9, 9]


def test_composite_is_the_minimum_of_what_is_known() -> None:
    assert composite(0.9, None, None) == 0.9
    assert composite(0.9, 0.8, None) == 0.8
    assert composite(0.9, 0.8, 0.6) == 0.6


fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
histories = st.lists(st.tuples(fractions, st.booleans()), max_size=120)


@settings(max_examples=200, deadline=None)
@given(histories, fractions, st.none() | fractions, st.integers(1, 30))
def test_calibration_never_raises_a_level_above_the_reported_confidence(  # noqa: PLR0917
    make_inputs: Builder,
    default_policy: Policy,
    history: list[tuple[float, bool]],
    model: float,
    heuristic: float | None,
    min_samples: int,
) -> None:
    state = _state(history)
    proposal, context = make_inputs({"confidence": {"model": model, "heuristic": heuristic}})
    reported = proposal.confidence.composite
    value = calibrated(state, model, bins=BINS, min_samples=min_samples)
    lowered = composite(model, heuristic, value)
    honest = proposal.model_copy(
        update={"confidence": proposal.confidence.model_copy(update={"model": lowered})}
    )

    assert lowered <= reported
    assert (
        evaluate(honest, context, default_policy).level
        <= evaluate(proposal, context, default_policy).level
    )


@pytest.mark.parametrize("bins", [1, 2, 5, 10, 20, 100])
def test_the_gates_fine_state_reads_in_any_policy_bins(bins: int) -> None:
    """The state keeps 100 bins; a policy's bins (a divisor) sum them."""
    pairs = [(i / 97, i % 3 != 0) for i in range(98)]
    fine = judged(pairs, bins=STATE_BINS)
    coarse = judged(pairs, bins=bins)

    assert reliability(fine, bins=bins, min_samples=1) == reliability(
        coarse, bins=bins, min_samples=1
    )
    assert expected_calibration_error(fine, bins=bins) == expected_calibration_error(
        coarse, bins=bins
    )
