"""The stall watchdog's rule (streams.topology.pending.stalled), without a broker."""

from __future__ import annotations

from streams.topology.pending import Progress, stalled

TP = ("escalation.proposals", 2)


def test_a_partition_whose_commit_does_not_move_while_input_waits_is_stalled() -> None:
    seen: Progress = {}
    assert stalled(seen, {TP: (10, 50)}, now=0.0, after=90.0) == []
    assert stalled(seen, {TP: (10, 50)}, now=89.0, after=90.0) == []
    assert stalled(seen, {TP: (10, 50)}, now=90.0, after=90.0) == [TP]


def test_progress_restarts_the_clock() -> None:
    seen: Progress = {}
    stalled(seen, {TP: (10, 50)}, now=0.0, after=90.0)
    assert stalled(seen, {TP: (11, 50)}, now=80.0, after=90.0) == []
    assert stalled(seen, {TP: (11, 60)}, now=160.0, after=90.0) == []
    assert stalled(seen, {TP: (11, 60)}, now=170.0, after=90.0) == [TP]


def test_a_partition_with_nothing_waiting_is_never_stalled() -> None:
    seen: Progress = {}
    for now in (0.0, 100.0, 1000.0):
        assert stalled(seen, {TP: (50, 50)}, now=now, after=90.0) == []
    assert seen == {}
    # Input arrives: the clock starts then, not at the last idle check.
    assert stalled(seen, {TP: (50, 51)}, now=1001.0, after=90.0) == []
    assert stalled(seen, {TP: (50, 51)}, now=1090.0, after=90.0) == []
    assert stalled(seen, {TP: (50, 51)}, now=1091.0, after=90.0) == [TP]
