"""Start one gate worker: topics, policy, metrics endpoint, the Faust worker."""

from __future__ import annotations

import datetime as dt
import logging
import socket
from typing import Any

from streams.metrics import Metrics
from streams.models import ControlCommand, encode
from streams.settings import DEFAULT_APPROVAL_SECRET, Settings

log = logging.getLogger(__name__)


def build_gate(settings: Settings, bootstrap: str, metrics: Metrics | None = None) -> Any:
    """The Gate for these settings, with the policy file loaded (it must validate)."""
    from streams.files import read_policy  # noqa: PLC0415
    from streams.topology.app import Gate  # noqa: PLC0415

    policy = read_policy(settings.policy_file)
    return Gate(settings, policy, metrics or Metrics(), bootstrap=bootstrap)


def run_worker(settings: Settings, bootstrap: str, *, loglevel: str = "WARNING") -> None:
    """Run until SIGTERM/SIGINT. Creates topics first (idempotent)."""
    from streams.kafka.admin import create_topics, wait_for_broker  # noqa: PLC0415

    if settings.approval_secret.get_secret_value() == DEFAULT_APPROVAL_SECRET:
        log.warning(
            "ESCALATION_APPROVAL_SECRET is the built-in default: anyone who reads the source "
            "can sign approvals. Set a secret of your own before production."
        )
    wait_for_broker(bootstrap, timeout=60.0)
    create_topics(settings, bootstrap)
    metrics = Metrics()
    gate = build_gate(settings, bootstrap, metrics)
    port = metrics.serve(settings.metrics_port, addr=settings.metrics_addr)
    log.warning("metrics on http://%s:%d/metrics", settings.metrics_addr, port)
    if settings.metrics_port_file is not None:
        settings.metrics_port_file.write_text(str(port))

    @gate.app.task  # type: ignore[untyped-decorator] # faust is untyped
    async def announce_policy() -> None:  # the policy in force is itself audited
        await gate.mirror.ready.wait()
        metrics.ready.set(1)
        stored = gate.mirror.get("policy", "current")
        if stored:
            gate.adopt_policy(stored)
            return
        command = ControlCommand(
            schema_version=1,
            command="reload_policy",
            user=f"worker@{socket.gethostname()}",
            policy_yaml=settings.policy_file.read_text(encoding="utf-8"),
            reason=f"initial policy from {settings.policy_file}",
            at=dt.datetime.now(tz=dt.UTC),
        )
        await gate.t_control.send(key=b"control", value=encode(command))

    faust_worker(gate.app, loglevel).execute_from_commandline()


def faust_worker(app: Any, loglevel: str) -> Any:
    """The ``faust.Worker`` of a gate (and of the bench's Faust forwarder)."""
    import faust  # noqa: PLC0415

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # Faust's terminal spinner sets the root logger to DEBUG, so every debug call in
    # Faust and aiokafka builds a record nobody prints: ~5% of the worker's CPU.
    worker.spinner = None
    return worker
