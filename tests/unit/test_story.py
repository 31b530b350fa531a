"""The demo's story: every level keeps happening, the storm trips the guard and it clears."""

from __future__ import annotations

from collections import Counter

from streams import samples, story
from streams.files import read_policy
from streams.settings import DEFAULT_POLICY

BY_NAME = {s.name: s for s in samples.SCENARIOS}


def test_one_cycle_reaches_every_level_and_has_a_storm() -> None:
    beats = story.cycle()
    levels = {BY_NAME[b.scenario].expected_level for b in beats}
    assert levels == {0, 1, 2, 3, 4}
    storm = [b for b in beats if b.why == "storm"]
    assert len(storm) == 6
    assert {BY_NAME[b.scenario].service for b in storm} == {"checkout-api"}
    assert max(b.at for b in storm) - min(b.at for b in storm) < 10


def test_no_service_but_the_storms_goes_over_the_velocity_limit() -> None:
    """Outside the storm, autonomous proposals stay under 3 per service per 2 minutes, so
    the guard trips only for the storm and clears after it."""
    window, limit = 120.0, 3
    beats = [b for b in story.cycle() if BY_NAME[b.scenario].expected_level >= 3]
    timeline = [(n * story.CYCLE + b.at, b) for n in range(3) for b in beats]
    for at, beat in timeline:
        if beat.why == "storm":
            continue
        service = BY_NAME[beat.scenario].service
        recent = Counter(BY_NAME[b.scenario].service for t, b in timeline if at - window < t <= at)
        assert recent[service] <= limit, (at, beat)
    after = [at for at, b in timeline if b.why == "after the storm" and at < story.CYCLE]
    assert min(after) > window  # the guard has cleared by then


def test_due_returns_each_beat_once_over_cycles() -> None:
    beats = story.cycle()
    seen: list[tuple[int, float, str]] = []
    clock = 0.0
    while clock < 2 * story.CYCLE:
        later = clock + 0.7
        seen += [(n, b.at, b.scenario) for n, b in story.due(beats, clock, later)]
        clock = later
    assert len(seen) == 2 * len(beats)
    assert len(set(seen)) == len(seen)


def test_the_demo_policy_is_the_shipped_one_with_two_minute_clocks() -> None:
    text = story.demo_policy(DEFAULT_POLICY.read_text(encoding="utf-8"))
    path_policy = read_policy(DEFAULT_POLICY)
    from streams.policy.loader import parse_policy  # noqa: PLC0415

    demo = parse_policy(text, source="demo")
    assert demo.approval.timeout_seconds == 120
    assert demo.abort_window_seconds == 120
    assert demo.velocity.window_seconds == 120
    assert demo.version == path_policy.version
    assert demo.approval.approvers == path_policy.approval.approvers
