# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The gate's ``faust.Worker`` overrides two private steps of mode's shutdown: they
must still be the steps mode's shutdown takes, or the override silently does nothing."""

from __future__ import annotations

import asyncio
import inspect

import mode.worker

from streams.topology.worker import faust_worker


def test_mode_still_shuts_down_through_the_steps_the_gate_overrides() -> None:
    source = inspect.getsource(mode.worker.Worker._shutdown_loop)
    assert "self._gather_all()" in source
    assert "self._sentinel_task()" in source


def test_what_is_left_at_shutdown_is_cancelled_not_slept_on() -> None:
    import faust  # noqa: PLC0415

    app = faust.App("shutdown-test", broker="kafka://127.0.0.1:1", store="memory://")
    worker = faust_worker(app, "WARNING")
    loop = worker.loop
    cancelled: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    task = loop.create_task(forever())
    loop.run_until_complete(asyncio.sleep(0))  # the task is running, in its sleep
    started = loop.time()
    worker._gather_all()
    loop.run_until_complete(worker._sentinel_task())
    assert task.cancelled()
    assert cancelled == [True]
    assert loop.time() - started < 0.5  # mode's own: 1.0 s, then 1.0 s more
    loop.close()
