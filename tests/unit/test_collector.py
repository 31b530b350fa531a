"""The worker's garbage-collector settings (streams/topology/collector.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.topology import collector


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    if collector._freeze_survivors in gc.callbacks:
        gc.callbacks.remove(collector._freeze_survivors)
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.mark.usefixtures("restored_gc")
def test_settle_freezes_the_state_and_the_survivors_of_each_full_collection() -> None:
    state = [Cycle() for _ in range(100)]
    collector.settle()
    frozen = gc.get_freeze_count()
    assert frozen >= len(state)
    assert gc.get_threshold()[2] == collector.FULL_EVERY
    later = [Cycle() for _ in range(100)]  # alive, not frozen yet
    gc.collect(1)
    assert gc.get_freeze_count() == frozen  # a young collection freezes nothing
    gc.collect(2)
    assert gc.get_freeze_count() >= frozen + len(later)  # survivors of a full one are
    assert len(later) == len(state)  # both alive to here


@pytest.mark.usefixtures("restored_gc")
def test_reclaim_collects_cyclic_garbage_that_was_frozen() -> None:
    garbage = [Cycle() for _ in range(50)]
    watch = [weakref.ref(o) for o in garbage]
    collector.settle()
    del garbage  # cycles, frozen: reference counting cannot free them, nor a collection
    gc.collect()
    assert all(ref() is not None for ref in watch)
    collected, seconds = collector.reclaim()
    assert all(ref() is None for ref in watch)
    assert collected >= len(watch)
    assert seconds >= 0
    assert gc.get_freeze_count() > 0  # what is alive is frozen again
