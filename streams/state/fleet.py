"""The fleet-wide velocity count without a scan of every service (issue 19).

``build_context`` counts the autonomous executions of the whole fleet inside the
velocity window for every proposal. Summing the ``velocity`` table's values each
time costs one pass over every entry of the last two windows: with a fleet-sized
``max_fleet`` (bench/policy-fleet.yaml) that was 66% of a worker's CPU in the pipeline
bench, about 0.5 ms per proposal per 1,000 recent executions. :class:`FleetWindow`
keeps the instants of every entry in one sorted list, updated when a value changes
(folded, loaded or pruned), so the count is two binary searches.

The scan also skipped the deciding decision's own id in other services' entries; a
decision id derives from its proposal and so belongs to one service, whose entries
``build_context`` counts apart (tests/unit/test_fleet_window.py).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Iterator
from typing import Any


def _instants(value: Any) -> Iterator[float]:
    """The instants of a ``velocity`` value's entries (``[at, decision_id, offset?]``)."""
    if not isinstance(value, dict):
        return
    for entry in value.get("recent", ()):
        try:
            yield float(entry[0])
        except (TypeError, ValueError, IndexError):
            continue


class FleetWindow:
    """Every ``velocity`` entry's instant, sorted: how many fall inside a window."""

    def __init__(self) -> None:
        self.instants: list[float] = []

    def replace(self, old: Any, new: Any) -> None:
        """One service's value changed from ``old`` to ``new`` (either may be ``None``).

        Only the difference moves: a new execution adds one instant, the latest, so it
        goes in at the end of the list (removing and re-inserting every entry of the
        service each time shifted the whole list, a cost that grew with the fleet's
        recent executions: the bench's CPU per proposal rose run over run)."""
        if old is new:
            return
        before = Counter(_instants(old))
        after = Counter(_instants(new))
        instants = self.instants
        for at, times in (before - after).items():
            for _ in range(times):
                i = bisect_left(instants, at)
                if i < len(instants) and instants[i] == at:
                    del instants[i]
        for at, times in (after - before).items():
            for _ in range(times):
                insort(instants, at)

    def count(self, start: float, end: float) -> int:
        """Entries with ``start <= at <= end``."""
        return bisect_right(self.instants, end) - bisect_left(self.instants, start)

    def __len__(self) -> int:
        return len(self.instants)
