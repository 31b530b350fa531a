"""The fleet-wide velocity index counts what the scan of every value counted."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.state.fleet import FleetWindow
from streams.state.reducers import build_context

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
T = NOW.timestamp()

entries = st.lists(
    st.tuples(st.integers(-1300, 100), st.sampled_from(["a", "b", "c", "x"]), st.integers(-1, 50)),
    max_size=6,
)
tables = st.dictionaries(st.sampled_from([f"svc-{i}" for i in range(8)]), entries, max_size=8)


def _value(key: str, rows: list[tuple[int, str, int]]) -> dict[str, Any]:
    """A service's entries; a decision id belongs to one service (it derives from the
    proposal), so ids are prefixed with the service."""
    return {"recent": [[T + at, f"{key}:{d}", offset] for at, d, offset in rows]}


def _context(velocity: dict[str, Any], fleet: Any, service: str, offset: int) -> Any:
    return build_context(
        now=NOW,
        decision_id=f"{service}:x",  # a redelivered decision, when its entry is there
        history=None,
        budget=None,
        verdicts=None,
        requalification=None,
        velocity_service=velocity.get(service),
        velocity_fleet=fleet,
        offset=offset,
        freeze={},
        velocity_window_seconds=600,
    )


@given(tables, tables, st.sampled_from([f"svc-{i}" for i in range(9)]), st.integers(-1, 60))
def test_the_index_counts_as_the_scan_through_changes(
    first: dict[str, Any], second: dict[str, Any], service: str, offset: int
) -> None:
    """Values folded, replaced and removed (a prune, a tombstone): the counts agree."""
    velocity: dict[str, Any] = {}
    fleet = FleetWindow()
    for table in (first, second):
        for key, rows in table.items():
            new = _value(key, rows) if rows else None
            fleet.replace(velocity.get(key), new)
            if new is None:
                velocity.pop(key, None)
            else:
                velocity[key] = new
        scanned = _context(velocity, list(velocity.values()), service, offset)
        indexed = _context(velocity, fleet, service, offset)
        assert indexed.recent_autonomous == scanned.recent_autonomous
    assert len(fleet) == sum(len(v["recent"]) for v in velocity.values())


def test_the_window_bounds_are_inclusive() -> None:
    fleet = FleetWindow()
    fleet.replace(None, {"recent": [[100.0, "a"], [160.0, "b"], [161.0, "c"]]})
    assert fleet.count(100.0, 160.0) == 2
    fleet.replace({"recent": [[100.0, "a"]]}, None)
    assert fleet.count(0.0, 1000.0) == 2
