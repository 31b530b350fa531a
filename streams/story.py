"""The demo's script: what to send when, so that every level keeps happening. PURE.

One cycle (``CYCLE`` seconds, then again) under the demo policy (:func:`demo_policy`:
approvals time out after 2 minutes, abort windows last 2 minutes, the velocity
window is 2 minutes):

* a **storm** at the start: six OOM restarts of ``checkout-api`` in six seconds.
  The first three run autonomously (Level 4); then the velocity guard holds the rest
  at Level 2 until the window has passed, and the next restarts (at 150 s and 210 s)
  are autonomous again: the guard trips and clears;
* **autonomous fixes** every 30 s, taking turns over three services so that none
  trips the guard (log gateway restarts at Level 4, two Level 3 actions with an
  abort window);
* an **approval** every 40 s (a certificate rotation, a regulated payments restart
  that needs a change record, a wide restart); left alone each times out after
  2 minutes and pages on-call, and stays open in the console;
* **assist-only and manual** proposals every 20 s (a novel pattern, low confidence,
  an untrusted AI system);
* an **abort**: at 85 s bob aborts the scale-up of ``search-api`` started at 75 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CYCLE = 240

STORM = tuple((1.0 + s, "oom-restart") for s in range(6))
AUTONOMOUS = ("log-gateway", "deadlock-statefulset", "scale-big")
APPROVALS = ("cert-second", "payments", "wide-blast")
HUMANS_ONLY = ("novel", "low-confidence", "untrusted")
#: Seconds into the cycle of bob's abort, and the scenario whose latest decision he aborts.
ABORT = (85.0, "scale-big")


@dataclass(frozen=True, slots=True)
class Beat:
    """One proposal to send at ``at`` seconds into the cycle."""

    at: float
    scenario: str
    why: str


def cycle() -> tuple[Beat, ...]:
    """Every proposal of one cycle, in time order."""
    beats = [Beat(at, name, "storm") for at, name in STORM]
    beats += [Beat(150.0, "oom-restart", "after the storm"), Beat(210.0, "oom-restart",
              "after the storm")]  # fmt: skip
    beats += [Beat(15.0 + 30 * i, AUTONOMOUS[i % 3], "autonomous") for i in range(CYCLE // 30)]
    beats += [Beat(8.0 + 40 * i, APPROVALS[i % 3], "approval") for i in range(CYCLE // 40)]
    beats += [Beat(4.0 + 20 * i, HUMANS_ONLY[i % 3], "assist") for i in range(CYCLE // 20)]
    return tuple(sorted(beats, key=lambda b: (b.at, b.scenario)))


def due(beats: tuple[Beat, ...], before: float, now: float) -> list[tuple[int, Beat]]:
    """The beats whose instant falls in ``(before, now]`` of the story's clock (seconds
    since it started, over any number of cycles), with the number of their cycle."""
    out = []
    first, last = int(max(before, 0) // CYCLE), int(now // CYCLE)
    for number in range(first, last + 1):
        base = number * CYCLE
        out += [(number, b) for b in beats if before < base + b.at <= now]
    return out


def demo_policy(text: str) -> str:
    """The shipped policy with the demo's short clocks (2 minutes instead of 10 and 5)."""
    replacements = (
        (r"(?m)^(  timeout_seconds:) \d+", r"\1 120"),
        (r"(?m)^(abort_window_seconds:) \d+", r"\1 120"),
        (r"(?m)^(  window_seconds:) \d+", r"\1 120"),
    )
    for pattern, replacement in replacements:
        text, count = re.subn(pattern, replacement, text)
        if count != 1:
            msg = f"demo policy: expected one {pattern!r} in the policy"
            raise ValueError(msg)
    return text
