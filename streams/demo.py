"""``escalation demo``: a local Apache Kafka, a worker, sample history, live decisions.

Everything it starts, it stops on Ctrl-C (the broker is started with a parent-death
signal, the worker is our child process).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson

from streams import samples
from streams.models import encode
from streams.settings import Settings
from streams.state.records import history_updates

LEVEL_STYLE = {0: "red", 1: "yellow", 2: "cyan", 3: "green", 4: "bold green"}


def _producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.kafka.admin import producer_config  # noqa: PLC0415

    return Producer(producer_config(bootstrap))


def seed(settings: Settings, bootstrap: str, now: dt.datetime) -> None:
    """History, budgets and re-qualifications that make the sample stream reach every level."""
    producer = _producer(bootstrap)
    for record in samples.history_records(now):
        for update in history_updates(record):
            producer.produce(settings.topic("state"), key=update.kafka_key(), value=update.value())
    for budget in samples.budgets(now):
        producer.produce(
            settings.topic("error-budgets"), key=budget.service.encode(), value=encode(budget)
        )
    for command in samples.requalifications(now):
        producer.produce(settings.topic("control"), key=b"control", value=encode(command))
    producer.flush(30)


def _applied(port: int) -> dict[str, float]:
    import urllib.request  # noqa: PLC0415

    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    url = f"http://127.0.0.1:{port}/metrics"
    body = urllib.request.urlopen(url, timeout=2).read().decode()
    return {
        sample.labels.get("table", ""): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "escalation_state_updates_applied_total"
    }


def wait_for_state(
    port_file: Path, worker: subprocess.Popen[bytes], now: dt.datetime, timeout: float = 120.0
) -> None:
    """Until the worker has folded the seeded state (else the first decisions are novel)."""
    want = {
        "history": len(samples.history_records(now)),
        "budgets": len(samples.budgets(now)),
        "requalification": len(samples.requalifications(now)),
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and worker.poll() is None:
        try:
            applied = _applied(int(port_file.read_text()))
        except (OSError, ValueError):
            applied = {}
        if all(applied.get(table, 0) >= count for table, count in want.items()):
            return
        threading.Event().wait(0.2)


def start_worker(
    settings: Settings, bootstrap: str, data_dir: Path, **env: str
) -> subprocess.Popen[bytes]:
    """``escalation worker`` as a child process with its own state directory."""
    environment = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
        "ESCALATION_DATA_DIR": str(data_dir),
        "ESCALATION_METRICS_PORT": str(settings.metrics_port),
        "ESCALATION_METRICS_PORT_FILE": str(data_dir / "metrics.port"),
        "ESCALATION_POLICY_FILE": str(settings.policy_file),
        **env,
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    log = (data_dir / "worker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "worker"],
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=False,
    )


def run_demo(settings: Settings, *, rate: float, count: int | None) -> None:
    """Start what is missing, seed, publish at ``rate``/s, show decisions until Ctrl-C."""
    from confluent_kafka import Consumer  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="escalation-demo-")))
        bootstrap = settings.bootstrap_servers
        if not bootstrap:
            from streams.kafka.launcher import LocalKafka  # noqa: PLC0415

            console.print("starting a local Apache Kafka (KRaft) ...")
            kafka = LocalKafka(work / "kafka", cache_dir=settings.kafka_cache_dir)
            stack.enter_context(kafka)
            bootstrap = kafka.bootstrap_servers
        console.print(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        from streams.kafka.admin import create_topics  # noqa: PLC0415

        create_topics(settings, bootstrap)
        worker = start_worker(settings, bootstrap, work / "worker")
        stack.callback(_stop, worker)
        console.print(f"worker pid {worker.pid}; metrics on :{settings.metrics_port}/metrics")
        now = dt.datetime.now(tz=dt.UTC)
        seed(settings, bootstrap, now)
        console.print("waiting for the worker to fold the seeded history ...")
        wait_for_state(work / "worker" / "metrics.port", worker, now)
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"demo-{os.getpid()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        stack.callback(consumer.close)
        consumer.subscribe(
            [settings.topic(f"decisions.{r}") for r in ("execute", "approve", "assist", "manual")]
        )
        producer = _producer(bootstrap)
        by_level: Counter[int] = Counter()
        recent: list[dict[str, Any]] = []
        sent = 0
        started = time.monotonic()
        total = count if count is not None else 10**12

        def render() -> Table:
            table = Table(
                title=f"Escalation Gate demo: {sent} sent, "
                f"{sum(by_level.values())} decided  (Ctrl-C stops)"
            )
            for col in ("level", "route", "service", "pattern", "rule", "triggers"):
                table.add_column(col)
            for d in recent[-15:]:
                lvl = d["level"]
                table.add_row(
                    f"[{LEVEL_STYLE[lvl]}]{lvl} {d['level_name']}[/]",
                    d["route"],
                    d["proposal"]["action"]["target"]["service"],
                    d["proposal"]["pattern"],
                    d["deciding_rule"],
                    ",".join(d["triggers"]) or "-",
                )
            table.caption = "  ".join(f"L{k}: {by_level[k]}" for k in range(5))
            return table

        stream = iter(samples.stream(min(10**6, total), start=now))
        with Live(render(), console=console, refresh_per_second=4) as live:
            while True:
                due = int((time.monotonic() - started) * rate) - sent
                for _ in range(max(0, due)):
                    item = next(stream, None)
                    if item is None:
                        break
                    _scenario, proposal = item
                    producer.produce(
                        settings.topic("proposals"),
                        key=proposal.action.target.service.encode(),
                        value=encode(proposal),
                    )
                    sent += 1
                producer.poll(0)
                message = consumer.poll(0.1)
                if message is not None and not message.error():
                    decision = orjson.loads(message.value() or b"{}")
                    by_level[decision["level"]] += 1
                    recent.append(decision)
                    del recent[:-50]
                    live.update(render())
                if worker.poll() is not None:
                    console.print(
                        f"[red]worker exited with {worker.returncode}; see "
                        f"{work / 'worker' / 'worker.log'}[/]"
                    )
                    return
                if count is not None and sum(by_level.values()) >= count:
                    live.update(render())
                    return


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
