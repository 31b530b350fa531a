"""The console's feed on the real broker: what the gate keeps in ``state.folded`` (past
the ``state`` topic's retention) is on the console's pages too, and folded once."""

from __future__ import annotations

import threading

from confluent_kafka import Producer

from streams.console.feed import Feed
from streams.console.view import ConsoleView
from streams.kafka.admin import producer_config
from streams.settings import Settings
from streams.state.records import outcome_update
from streams.testing import wait_until
from streams.topology.snapshot import marker_record, value_record


def test_the_console_reads_state_folded_first_and_folds_each_update_once(
    settings: Settings, topics: list[str]
) -> None:
    producer = Producer(producer_config(settings.bootstrap_servers or ""))
    # Two outcomes of one pattern on `state`; the folded value covers the first.
    first = outcome_update("p", "a", success=True, update_id="u-1")
    second = outcome_update("p", "a", success=False, update_id="u-2")
    delivered: list[tuple[int, int]] = []
    for update in (first, second):
        producer.produce(
            settings.topic("state"), update.value(), key=update.kafka_key(),
            on_delivery=lambda _e, m: delivered.append((m.partition(), m.offset())),
        )  # fmt: skip
    assert producer.flush(30) == 0
    (partition, offset_first), (_, _offset_second) = delivered
    # A freeze older than `state` keeps (its update is gone: only its folded value is
    # left), and the history fold.
    frozen = {"frozen": True, "by": "alice", "at": 1.0}
    for table, key, value in (
        ("freeze", "*", frozen),
        ("history", "p|a", {"seen": 1, "successes": 1, "failures": 0}),
    ):
        k, v = value_record(table, key, value, offset_first + 1)
        producer.produce(settings.topic("state.folded"), v, key=k, partition=partition)
    k, v = marker_record(offset_first + 1, at=1.0, keys=2)
    producer.produce(settings.topic("state.folded"), v, key=k, partition=partition)
    assert producer.flush(30) == 0

    view = ConsoleView()
    feed = Feed(settings, settings.bootstrap_servers or "", view, threading.Lock()).start()
    try:
        assert wait_until(feed.ready.is_set, timeout=60), feed.error
        assert view.frozen("*")
        # The first outcome is in the folded value; only the second is folded on top.
        assert view.tables["history"]["p|a"]["seen"] == 2
        assert view.tables["history"]["p|a"]["failures"] == 1
    finally:
        feed.stop()
