"""Baselines for ``bench/pipeline.py``: forward every message from one topic to another.

``--engine faust`` is a minimal Faust app with the gate's own ``faust.App`` settings
(``streams.topology.config.faust_args``, the one source the worker uses too) and one
agent that sends each message on,
unchanged, with ``send_soon`` as the gate does. ``--engine confluent`` is a plain
confluent-kafka consume-and-produce loop in one process.

    python bench/forwarder.py --engine faust --bootstrap 127.0.0.1:9092 \
        --input IN --output OUT --app-id ID --partitions 4 --data-dir DIR

Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any


def faust_app_args(
    *, bootstrap: str, store: str, data_dir: Path, partitions: int
) -> dict[str, Any]:
    """Every ``faust.App`` argument the gate passes, for this deployment (one source:
    ``streams.topology.config``)."""
    from streams.settings import Settings  # noqa: PLC0415
    from streams.topology.config import faust_args  # noqa: PLC0415

    settings = Settings(
        store=store, data_dir=data_dir, partitions=partitions, bootstrap_servers=bootstrap
    )
    return faust_args(settings, bootstrap)


def run_faust(args: argparse.Namespace) -> None:
    # The gate's App: Faust with the gate's one transport fix (streams/topology/transport.py).
    from streams.topology.transport import App  # noqa: PLC0415
    from streams.topology.worker import faust_worker  # noqa: PLC0415

    (args.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = App(
        args.app_id,
        **faust_app_args(
            bootstrap=args.bootstrap,
            store=args.store,
            data_dir=args.data_dir,
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
    # The gate's own worker call.
    faust_worker(app, "WARNING").execute_from_commandline()


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
