"""Baselines for ``bench/pipeline.py``: forward every message from one topic to another.

``--engine faust`` is a minimal Faust app with the gate's own ``faust.App`` settings
(``faust_app_args`` mirrors ``Gate.__init__`` in ``streams/topology/app.py``;
``settings_drift`` compares the two) and one agent that sends each message on,
unchanged, with ``send_soon`` as the gate does. ``--engine confluent`` is a plain
confluent-kafka consume-and-produce loop in one process.

    python bench/forwarder.py --engine faust --bootstrap 127.0.0.1:9092 \
        --input IN --output OUT --app-id ID --partitions 4 --data-dir DIR

Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

# The faust.App keyword arguments of Gate.__init__ that do not depend on the deployment.
GATE_FAUST_ARGS: dict[str, Any] = {
    "web_enabled": False,
    "autodiscover": False,
    "consumer_auto_offset_reset": "earliest",
    "broker_commit_interval": 1.0,
    "broker_session_timeout": 10.0,
    "broker_heartbeat_interval": 1.0,
    "broker_rebalance_timeout": 15.0,
    "producer_linger": 0.005,
    "producer_acks": -1,
    "stream_wait_empty": True,
    "table_standby_replicas": 0,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
# App.conf attributes compared with a real Gate's by ``settings_drift``.
COMPARED = (
    "broker_commit_interval",
    "broker_session_timeout",
    "broker_heartbeat_interval",
    "broker_rebalance_timeout",
    "producer_acks",
    "producer_linger",
    "producer_max_batch_size",
    "stream_wait_empty",
    "stream_buffer_maxsize",
    "table_standby_replicas",
    "consumer_auto_offset_reset",
    "key_serializer",
    "value_serializer",
    "web_enabled",
    "topic_partitions",
    "topic_replication_factor",
    "store",
)


def faust_app_args(
    *, bootstrap: str, store: str, data_dir: Path, partitions: int
) -> dict[str, Any]:
    """Every ``faust.App`` argument the gate passes, for this deployment."""
    return {
        "broker": f"kafka://{bootstrap}",
        "store": store,
        "datadir": str(data_dir),
        "topic_partitions": partitions,
        "topic_replication_factor": 1,
        **GATE_FAUST_ARGS,
    }


def settings_drift(data_dir: Path, *, store: str, partitions: int) -> list[str]:
    """Settings in which this forwarder's Faust app differs from a real Gate's (none: [])."""
    import faust  # noqa: PLC0415

    from streams.settings import Settings  # noqa: PLC0415
    from streams.topology.worker import build_gate  # noqa: PLC0415

    settings = Settings(
        data_dir=data_dir / "gate", store=store, partitions=partitions, bootstrap_servers="x:1"
    )
    gate = build_gate(settings, "127.0.0.1:1")
    app = faust.App(
        "bench-drift-check",
        **faust_app_args(
            bootstrap="127.0.0.1:1", store=store, data_dir=data_dir / "fwd", partitions=partitions
        ),
    )
    return [
        f"{name}: gate {getattr(gate.app.conf, name)!r}, forwarder {getattr(app.conf, name)!r}"
        for name in COMPARED
        if getattr(gate.app.conf, name) != getattr(app.conf, name)
    ]


def run_faust(args: argparse.Namespace) -> None:
    import faust  # noqa: PLC0415

    # The gate's App: Faust with the gate's one transport fix (streams/topology/transport.py).
    from streams.topology.transport import App  # noqa: PLC0415

    (args.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = App(
        args.app_id,
        **faust_app_args(
            bootstrap=args.bootstrap,
            store=args.store,
            data_dir=args.data_dir / "faust",
            partitions=args.partitions,
        ),
    )
    source = app.topic(args.input, key_type=bytes, value_type=bytes)
    target = app.topic(args.output, key_type=bytes, value_type=bytes)

    async def forward(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            target.send_soon(key=message.key, value=message.value)

    app.agent(source, name="forward")(forward)
    # As streams/topology/worker.py builds the gate's worker.
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    if os.environ.get("BENCH_FAUST_NO_SPINNER"):
        # Experiment: at WARNING, Faust's terminal spinner sets the root logger to DEBUG,
        # so every log.debug() in faust and aiokafka builds a record nobody prints.
        worker.spinner = None
    worker.execute_from_commandline()


def run_confluent(args: argparse.Namespace) -> None:
    from confluent_kafka import Consumer, Producer  # noqa: PLC0415

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": args.app_id,
            "auto.offset.reset": "earliest",
            # As the Faust settings: commit every second, leave the group within 10 s.
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 1000,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1000,
        }
    )
    producer = Producer({"bootstrap.servers": args.bootstrap, "acks": "all"})
    consumer.subscribe([args.input])
    try:
        while not stopping:
            for message in consumer.consume(num_messages=500, timeout=0.1):
                if message.error() is not None:
                    continue
                while True:
                    try:
                        producer.produce(args.output, value=message.value(), key=message.key())
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
    finally:
        producer.flush(10)
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("faust", "confluent"), default="faust")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--app-id", required=True, help="Faust app id / consumer group")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=Path("var/bench-forwarder"))
    parser.add_argument("--store", default="memory://")
    args = parser.parse_args(argv)
    if args.engine == "faust":
        sys.argv = sys.argv[:1]  # the Faust worker must not read our options
        run_faust(args)
    else:
        run_confluent(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
