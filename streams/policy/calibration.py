# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Calibrated confidence: how often an AI system's proposals at a reported confidence
were right, learned from human verdicts and outcomes.

Pure: values in, values out. The state of one AI system (and model) is a small JSON
value, folded one judged proposal at a time by ``record``:

    {"bins": [[n, right, sum_c, sum_c2, sum_cy], ...]}   # one row per confidence bin

(``sum_cy`` is the sum of ``c`` over the right ones.) A proposal is *judged* when its
outcome is known: a successful outcome is right; a failed, suboptimal or not-needed
outcome, or a rejection marked false-positive, is wrong.

The reported confidence ``c`` of a new proposal falls in one of ``bins`` equal bins of
[0, 1]. When that bin holds at least ``min_samples`` judged proposals, the calibrated
confidence is the bin's observed accuracy made monotone across bins (pool adjacent
violators, the isotonic fit of the binned reliability), and never above ``c`` itself.
Below the minimum sample there is no calibrated value and the reported one stands.
The composite becomes ``min(model, heuristic, calibrated)``: calibration can only
lower it, so by the evaluator's monotonicity it never raises a level.

``reliability`` gives the table ``escalation calibration`` prints; ``expected
calibration error`` (ECE) and the Brier score summarise it for Prometheus.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

State = dict[str, Any]
_ROW = 5
#: The bins the gate's state keeps; a policy's ``calibration.bins`` divides it.
STATE_BINS = 100


def calibration_key(ai_system: str, model: str | None) -> str:
    """State key of one AI system and model (``*`` when the model is not reported)."""
    return f"{ai_system}|{model or '*'}"


def bin_of(confidence: float, bins: int) -> int:
    """The bin of a confidence in [0, 1]: ``[0, 1/bins)``, ..., ``[1 - 1/bins, 1]``."""
    return min(bins - 1, max(0, int(confidence * bins)))


def _rows(state: Mapping[str, Any] | None, bins: int) -> list[list[float]]:
    """The state's rows in ``bins`` bins; finer stored bins (a multiple) are summed."""
    rows = [[0.0] * _ROW for _ in range(bins)]
    stored = (state or {}).get("bins")
    if not isinstance(stored, list) or not stored or len(stored) % bins:
        return rows
    group = len(stored) // bins
    for index, row in enumerate(stored):
        if isinstance(row, list) and len(row) == _ROW:
            try:
                values = [float(x) for x in row]
            except (TypeError, ValueError):
                continue  # unreadable: absent (fail toward humans: no calibration credit)
            target = rows[index // group]
            for i, x in enumerate(values):
                target[i] += x
    return rows


def record(state: Mapping[str, Any] | None, *, confidence: float, right: bool, bins: int) -> State:
    """Fold one judged proposal (its reported confidence, right or wrong) into the state."""
    rows = _rows(state, bins)
    c = min(1.0, max(0.0, float(confidence)))
    row = rows[bin_of(c, bins)]
    row[0] += 1
    row[1] += 1 if right else 0
    row[2] += c
    row[3] += c * c
    row[4] += c if right else 0.0
    return {"bins": [[int(r[0]), int(r[1]), r[2], r[3], r[4]] for r in rows]}


@dataclass(frozen=True, slots=True)
class Bin:
    """One row of the reliability table."""

    lower: float
    upper: float
    count: int
    right: int
    mean_confidence: float | None
    accuracy: float | None
    #: The isotonic (monotone) accuracy used for calibration; ``None`` below the sample.
    calibrated: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "right": self.right,
            "mean_confidence": self.mean_confidence,
            "accuracy": self.accuracy,
            "calibrated": self.calibrated,
        }


def _isotonic(values: list[tuple[float, int]]) -> list[float]:
    """Pool adjacent violators: the non-decreasing fit of ``(accuracy, weight)`` rows."""
    blocks: list[list[float]] = []  # [mean, weight, size]
    for value, weight in values:
        blocks.append([value, float(weight), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            b = blocks.pop()
            a = blocks[-1]
            total = a[1] + b[1]
            a[0] = (a[0] * a[1] + b[0] * b[1]) / total if total else min(a[0], b[0])
            a[1], a[2] = total, a[2] + b[2]
    out: list[float] = []
    for mean, _weight, size in blocks:
        out += [mean] * int(size)
    return out


def reliability(state: Mapping[str, Any] | None, *, bins: int, min_samples: int) -> list[Bin]:
    """The reliability table: per bin, how many were judged and how many were right."""
    rows = _rows(state, bins)
    usable = [(i, r) for i, r in enumerate(rows) if r[0] >= min_samples]
    fitted = _isotonic([(r[1] / r[0], int(r[0])) for _, r in usable])
    calibrated = {i: round(v, 6) for (i, _), v in zip(usable, fitted, strict=True)}
    out = []
    for index, row in enumerate(rows):
        n = int(row[0])
        out.append(
            Bin(
                lower=round(index / bins, 6),
                upper=round((index + 1) / bins, 6),
                count=n,
                right=int(row[1]),
                mean_confidence=round(row[2] / n, 6) if n else None,
                accuracy=round(row[1] / n, 6) if n else None,
                calibrated=calibrated.get(index),
            )
        )
    return out


def calibrated(
    state: Mapping[str, Any] | None, confidence: float, *, bins: int, min_samples: int
) -> float | None:
    """The calibrated value of a reported confidence, never above it; ``None``: too few."""
    table = reliability(state, bins=bins, min_samples=min_samples)
    value = table[bin_of(confidence, bins)].calibrated
    if value is None:
        return None
    return min(confidence, value)


def expected_calibration_error(state: Mapping[str, Any] | None, *, bins: int) -> float | None:
    """ECE: the judged-weighted mean of ``|accuracy - mean confidence|`` over the bins."""
    rows = _rows(state, bins)
    total = sum(r[0] for r in rows)
    if not total:
        return None
    return round(sum(abs(r[1] - r[2]) for r in rows if r[0]) / total, 6)


def brier_score(state: Mapping[str, Any] | None, *, bins: int) -> float | None:
    """Mean of ``(c - y)^2`` over every judged proposal (``y`` 1 when right)."""
    rows = _rows(state, bins)
    total = sum(r[0] for r in rows)
    if not total:
        return None
    # sum (c - y)^2 = sum c^2 - 2 sum c*y + sum y^2, and y^2 = y.
    return round(sum(r[3] - 2 * r[4] + r[1] for r in rows) / total, 6)


def composite(model: float, heuristic: float | None, calibrated_value: float | None) -> float:
    """``min(model, heuristic, calibrated)``, leaving out what is absent."""
    return min(v for v in (model, heuristic, calibrated_value) if v is not None)


def judged(
    events: Iterable[tuple[float, bool]], *, bins: int, state: Mapping[str, Any] | None = None
) -> State:
    """Fold many ``(confidence, right)`` pairs (tests, replay, history import)."""
    out: State = dict(state or {"bins": []})
    for confidence, right in events:
        out = record(out, confidence=confidence, right=right, bins=bins)
    return out
