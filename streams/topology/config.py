"""The gate's Faust app settings: one source, for the worker and the bench's forwarder."""

from __future__ import annotations

from typing import Any

from streams.settings import Settings

#: ``faust.App`` keyword arguments that do not depend on the deployment, with why.
FAUST_ARGS: dict[str, Any] = {
    "web_enabled": False,
    "autodiscover": False,
    "consumer_auto_offset_reset": "earliest",
    "broker_commit_interval": 1.0,
    # A worker killed with SIGKILL leaves the group after this, not after 60 s.
    "broker_session_timeout": 10.0,
    "broker_heartbeat_interval": 1.0,
    # A rebalance waits this long for every member to rejoin; a member killed with
    # SIGKILL never does, and its partitions wait with it (default 60 s).
    "broker_rebalance_timeout": 15.0,
    # Batch produce requests for up to 5 ms: fewer, larger requests; measured 5-17%
    # less CPU per message (throughput varied run to run), for ~5 ms of latency per
    # hop (bench/README.md).
    "producer_linger": 0.005,
    "producer_acks": -1,
    # Do not make a rebalance wait for in-flight events: an agent may be waiting for
    # the audit re-sync of the *next* assignment (deadlock until timeout). Events of
    # partitions this worker lost are skipped instead (streams/topology/acks.py).
    "stream_wait_empty": False,
    "table_standby_replicas": 0,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def faust_args(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """Every ``faust.App`` keyword argument of a gate worker with these settings."""
    from streams.kafka.security import faust_credentials  # noqa: PLC0415

    credentials = faust_credentials(settings)
    return {
        **({"broker_credentials": credentials} if credentials is not None else {}),
        "broker": f"kafka://{bootstrap}",
        "store": settings.store,
        "datadir": str(settings.data_dir / "faust"),
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        # Static membership: the same name rejoins without a rebalance (a SIGKILLed
        # worker restarted decides again within seconds, not after the session timeout).
        **({"consumer_group_instance_id": settings.instance_id} if settings.instance_id else {}),
        **FAUST_ARGS,
    }


def app_id(settings: Settings) -> str:
    """The Faust app id and consumer group: the prefix keeps two deployments (or two
    tests) on one cluster apart."""
    return f"{settings.topic_prefix}{settings.app_id}"


def offsets_group(group: str) -> str:
    """The consumer group that holds the proposals reader's offsets (lanes.py)."""
    return f"{group}.proposals"
