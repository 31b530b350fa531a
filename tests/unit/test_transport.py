"""The gate's Faust transport hands aiokafka a snapshot of the active partitions
(streams/topology/transport.py): the set Faust changes on its event loop while
aiokafka waits for records must not be the set aiokafka reads."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.topology.transport import App, Consumer

STREAM = TP("escalation.error-budgets", 2)


class _AiokafkaThread:
    """Stands in for Faust's consumer thread: while it "waits for records", the event
    loop pauses every partition (as recovery does), then it reads the set it got."""

    def __init__(self, live: set[TP]) -> None:
        self.live = live
        self.read: set[TP] | None = None

    async def getmany(self, active_partitions: Any, timeout: float) -> dict[TP, list[Any]]:  # noqa: ASYNC109
        del timeout
        self.live.clear()  # Recovery pauses the changelog partitions meanwhile
        await asyncio.sleep(0)
        self.read = set(active_partitions)
        # aiokafka: an empty set means every assigned partition
        return {} if not active_partitions else {tp: [] for tp in active_partitions}


def test_aiokafka_reads_the_partitions_active_when_the_fetch_began() -> None:
    live = {STREAM}
    thread = _AiokafkaThread(live)
    consumer = Consumer.__new__(Consumer)  # no broker: only _getmany is exercised
    consumer._thread = thread  # type: ignore[assignment]

    records = asyncio.run(consumer._getmany(live, 1.0))

    assert thread.read == {STREAM}, "aiokafka read the live set, emptied meanwhile"
    assert records == {STREAM: []}


def test_client_only_fetches_pass_through() -> None:
    seen: list[Any] = []

    async def getmany(active_partitions: Any, timeout: float) -> dict[TP, list[Any]]:  # noqa: ASYNC109
        seen.append(active_partitions)
        return {}

    consumer = Consumer.__new__(Consumer)
    consumer._thread = SimpleNamespace(getmany=getmany)  # type: ignore[assignment]
    asyncio.run(consumer._getmany(None, 1.0))
    assert seen == [None]


class _SeekThread:
    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.committed = committed
        self.to_beginning: list[Any] = []

    async def seek_to_committed(self) -> dict[Any, int | None]:
        return self.committed

    async def seek_to_beginning(self, *partitions: Any) -> None:
        self.to_beginning.extend(partitions)


def _seeking(committed: dict[Any, int | None], reset: str) -> tuple[Consumer, _SeekThread]:
    thread = _SeekThread(committed)
    consumer = Consumer.__new__(Consumer)
    consumer._thread = thread  # type: ignore[assignment]
    consumer.app = SimpleNamespace(conf=SimpleNamespace(consumer_auto_offset_reset=reset))  # type: ignore[assignment]
    return consumer, thread


def test_partitions_without_a_committed_offset_are_sent_to_their_beginning() -> None:
    never, zero, done = TP("p", 0), TP("p", 1), TP("p", 2)
    consumer, thread = _seeking({never: None, zero: 0, done: 5}, "earliest")
    assert asyncio.run(consumer.seek_to_committed()) == {never: None, zero: 0, done: 5}
    # aiokafka itself seeks only offsets above 0 (done); the other two were left behind
    assert thread.to_beginning == [never, zero]


def test_with_latest_the_library_behaviour_is_kept() -> None:
    consumer, thread = _seeking({TP("p", 0): None}, "latest")
    asyncio.run(consumer.seek_to_committed())
    assert thread.to_beginning == []


def test_flow_control_holds_from_rebalance_complete_until_faust_resumes_it() -> None:
    app = App("hold-flow-test", broker="kafka://127.0.0.1:1", autodiscover=False)

    async def rebalance_complete() -> None:
        app.flow_control.resume()  # as changelog recovery leaves it
        await app.on_rebalance_complete.send()

    asyncio.run(rebalance_complete())
    assert not app.flow_control.is_active()
