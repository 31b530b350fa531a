"""At-least-once: an input is acknowledged only once everything it caused is on the broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from streams.errors import DeliveryError
from streams.kafka.sink import Sink
from streams.topology.assignment import Assignment, Fatal

log = logging.getLogger(__name__)


async def consume(
    stream: Any,
    *,
    name: str,
    handle: Callable[[Any], None],
    on_error: Callable[[Any, Exception], None],
    assignment: Assignment,
    sink: Sink,
    fatal: Fatal,
) -> None:
    """Handle every event of ``stream`` this worker owns; acknowledge it after delivery.

    Events are handled as they arrive; acknowledgements trail behind, one delivery
    barrier (``Sink.delivered``) at a time, in a task of their own: the agent never
    waits for the broker, and Faust commits only offsets whose outputs are written.
    An exception in ``handle`` goes to ``on_error`` (the dead-letter topic: a bug must
    not lose the input); a record that cannot be written stops the worker before
    anything more is acknowledged.
    """
    stream = stream.noack()
    handled: list[Any] = []
    wake = asyncio.Event()

    async def acknowledge() -> None:
        while True:
            await wake.wait()
            wake.clear()
            events = handled[:]
            handled.clear()
            await sink.delivered()
            for event in events:
                await stream.ack(event)

    acker = asyncio.create_task(acknowledge(), name=f"ack-{name}")
    try:
        async for event in stream.events():
            # Events of a partition revoked meanwhile are acknowledged unhandled: a
            # commit for a partition the worker lost is discarded by Faust.
            if not assignment.ready.is_set():
                await assignment.ready.wait()
            if assignment.owns(event.message.tp):
                try:
                    handle(event)
                except DeliveryError as exc:
                    fatal(exc)
                except Exception as exc:
                    log.exception("%s: message at offset %d failed", name, event.message.offset)
                    on_error(event, exc)
            handled.append(event)
            wake.set()
    finally:
        acker.cancel()
