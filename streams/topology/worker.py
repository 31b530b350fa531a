"""Start one gate worker: topics, policy, metrics endpoint, the Faust worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from typing import Any

from streams.errors import EscalationError
from streams.metrics import Metrics
from streams.models import ControlCommand, encode
from streams.settings import Settings
from streams.signing import sign_command
from streams.topology import collector

log = logging.getLogger(__name__)


def build_gate(settings: Settings, bootstrap: str, metrics: Metrics | None = None) -> Any:
    """The Gate for these settings, with the policy file and the keyring loaded (both must
    validate, and the policy must accept the keyring)."""
    from streams.files import read_policy  # noqa: PLC0415
    from streams.identities import keyring_for  # noqa: PLC0415
    from streams.topology.app import Gate  # noqa: PLC0415

    policy = read_policy(settings.policy_file)
    keyring = keyring_for(settings, policy)
    return Gate(settings, policy, metrics or Metrics(), bootstrap=bootstrap, keyring=keyring)


def run_worker(settings: Settings, bootstrap: str, *, loglevel: str = "WARNING") -> None:
    """Run until SIGTERM/SIGINT. Creates topics first (idempotent)."""
    from streams.kafka.admin import (  # noqa: PLC0415
        check_gate_clock,
        create_topics,
        partition_counts,
        wait_for_broker,
    )
    from streams.kafka.security import confluent_config  # noqa: PLC0415
    from streams.keys import gate_signer  # noqa: PLC0415

    # Refused before anything runs: no key of its own, no keyring (unless ESCALATION_DEV).
    signer = gate_signer(settings)
    if settings.dev:
        log.warning("development mode (ESCALATION_DEV): keys and keyring under %s; "
                    "never in production", settings.data_dir)  # fmt: skip
    wait_for_broker(bootstrap, timeout=60.0, **confluent_config(settings))
    create_topics(settings, bootstrap)
    # The instant a record is judged at is the broker's, never the producer's.
    check_gate_clock(settings, bootstrap)
    metrics = Metrics()
    gate = build_gate(settings, bootstrap, metrics)
    proposals = settings.topic("proposals")
    inputs = [settings.topic(t) for t in ("outcomes", "proposals", "lifecycle", "approvals")]
    counts = partition_counts(bootstrap, inputs, settings=settings)
    gate.proposal_partitions = counts.get(proposals, settings.partitions)
    if gate.reader is not None and len({counts.get(t) for t in inputs}) > 1:
        # The lanes read the partitions numbered as this worker's outcomes partitions
        # (Faust's assignment): a topic with more partitions would go partly unread.
        raise EscalationError(
            "the input topics need the same partition count (the lanes read each "
            "worker's partition numbers of every one): "
            + ", ".join(f"{t} has {counts.get(t)}" for t in inputs)
        )
    port = metrics.serve(settings.metrics_port, addr=settings.metrics_addr)
    log.warning("metrics on http://%s:%d/metrics", settings.metrics_addr, port)
    if settings.metrics_port_file is not None:
        settings.metrics_port_file.write_text(str(port))

    @gate.app.task  # type: ignore[untyped-decorator] # faust is untyped
    async def announce_policy() -> None:  # the policy in force is itself audited
        await gate.mirror.ready.wait()
        # The state just loaded lives as long as the worker: out of the collector's way,
        # so that full collections (tens to hundreds of ms over a large state) do not
        # stall the decisions (streams/topology/collector.py).
        log.info("gc: state frozen after a %.0f ms collection", collector.settle() * 1000)
        metrics.ready.set(1)
        stored = gate.mirror.get("policy", "current")
        if stored:
            gate.adopt_policy(stored)
            return
        # A fresh cluster: the deployment's own policy file, signed with the gate's key
        # (accepted only while no policy is stored: it cannot replace a human's load).
        command = ControlCommand(
            schema_version=1,
            command="reload_policy",
            user=f"worker@{socket.gethostname()}",
            policy_yaml=settings.policy_file.read_text(encoding="utf-8"),
            reason=f"initial policy from {settings.policy_file}",
            at=dt.datetime.now(tz=dt.UTC),
        )
        await gate.t_control.send(key=b"control", value=encode(sign_command(command, signer)))

    @gate.app.timer(settings.gc_reclaim_seconds)  # type: ignore[untyped-decorator]
    async def reclaim_garbage() -> None:  # cyclic garbage among frozen objects, bounded
        if gate.mirror.ready.is_set():
            collector.reclaim()

    faust_worker(gate.app, loglevel).execute_from_commandline()


def faust_worker(app: Any, loglevel: str) -> Any:
    """The ``faust.Worker`` of a gate (and of the bench's Faust forwarder)."""
    import faust  # noqa: PLC0415

    class Worker(faust.Worker):
        """``faust.Worker`` with ``asyncio.run``'s shutdown instead of mode's sleeps.

        Once every service has stopped, mode (``mode.Worker._shutdown_loop``, 0.7.1)
        sleeps in 0.1 s steps for up to a second while any task is left (one always
        is), then a second more in ``_sentinel_task``: every stop took 2.0 s longer than
        its work. Here what is left is cancelled and waited for (at most a second), and
        the async generators are closed, as ``asyncio.run`` does.
        """

        def _gather_all(self) -> None:
            loop = self.loop
            left = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.wait(left, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())

        async def _sentinel_task(self) -> None:
            await asyncio.sleep(0)

    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG, so every debug call in
    # Faust and aiokafka builds a record nobody prints: ~5% of the worker's CPU.
    worker.spinner = None
    return worker
