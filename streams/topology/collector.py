"""The garbage collector, kept out of the decisions' way.

A worker holds its whole folded state (every service's history, budgets and velocity
windows) for as long as it runs. CPython's full collections walk every tracked
object, so they grew with that state: 35-58 ms each, every 8-17 s, at 500
proposals/s over a 20,000-service fleet (measured with ``gc.callbacks`` in the
pipeline bench), and each one stalled every decision waiting on the event loop.

What the worker does about it, once its state is loaded (``settle``):

- the state loaded so far is frozen (``gc.freeze``): moved to the permanent
  generation, which collections skip;
- after every full collection, its survivors are frozen too: an object that
  survived one is long-lived (state folded since, pending approvals, the client
  libraries' own structures), and the next full collection walks only what was
  promoted since, not the whole heap again;
- full collections run a tenth as often (``gc.set_threshold``'s third value 100, not
  10); young collections are unchanged.

Reference counting still frees every frozen object that is not in a cycle. What a
frozen object cannot be is collected as cyclic garbage; so that such garbage is
bounded, ``reclaim`` (a timer, ``ESCALATION_GC_RECLAIM_SECONDS``, hourly) unfreezes
everything and runs one full collection, then freezes again: one longer pause per
hour instead of one every few seconds.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

# gc.set_threshold's third value: young-generation collections between full ones
# considered (CPython's default is 10).
FULL_EVERY = 100


def settle() -> float:
    """Collect once, freeze what is alive, and keep full collections short from now
    on. Returns the seconds the first collection took."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_EVERY)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
    return time.perf_counter() - started


def reclaim() -> tuple[int, float]:
    """One full collection of everything frozen so far (cyclic garbage included), then
    freeze again. Returns the objects collected and the seconds it took."""
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - started
    log.info("gc: reclaimed %d objects in %.0f ms", collected, seconds * 1000)
    return collected, seconds


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info.get("generation") == 2:
        gc.freeze()
