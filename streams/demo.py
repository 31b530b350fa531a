"""``escalation demo``: a local Apache Kafka, a worker, the console, and a story.

The sample stream follows :mod:`streams.story`, so that every level keeps happening
(autonomous fixes, a storm the velocity guard holds and then lets go, approvals that
wait in the console, one that times out and pages, an abort). The terminal says what
is waiting and where to answer; client-library logs go to ``DATA_DIR/demo/demo.log``,
the worker's and console's to their own files. Everything it starts, it stops on
Ctrl-C (the broker is started with a parent-death signal, the worker and console are
our child processes).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack, suppress
from functools import partial
from pathlib import Path
from typing import Any

from streams import samples, story
from streams.errors import EscalationError
from streams.files import read_policy
from streams.identities import DevIdentities
from streams.models import encode
from streams.settings import Settings
from streams.signing import history_commands, sign, sign_command

LEVEL_STYLE = {0: "red", 1: "yellow", 2: "cyan", 3: "green", 4: "bold green"}


def _producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer  # noqa: PLC0415

    from streams.kafka.admin import producer_config  # noqa: PLC0415

    return Producer(producer_config(bootstrap))


def seed(settings: Settings, bootstrap: str, now: dt.datetime, ids: DevIdentities) -> None:
    """History, budgets and re-qualifications that make the sample stream reach every level,
    signed as the keyring requires (alice imports and re-qualifies, the SLO source reports)."""
    producer = _producer(bootstrap)
    alice = ids.person("alice")
    for command in history_commands(samples.history_records(now), user="alice"):
        producer.produce(settings.topic("control"), key=b"control",
                         value=encode(sign_command(command, alice)))  # fmt: skip
    slo = ids.slo()
    for budget in samples.budgets(now):
        update = budget.model_copy(update={"source": slo.name})
        producer.produce(
            settings.topic("error-budgets"),
            key=budget.service.encode(),
            value=encode(sign(update, slo)),
        )
    for command in samples.requalifications(now):
        signed = sign_command(command, ids.person(command.user))
        producer.produce(settings.topic("control"), key=b"control", value=encode(signed))
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
    from streams.state.records import import_updates  # noqa: PLC0415

    # History arrives in signed import batches, each folded as one update per pattern
    # (streams/state/records.py), not one per incident.
    batches = history_commands(samples.history_records(now), user="alice")
    want = {
        "history": sum(
            update.table == "history" for b in batches for update in import_updates(b.records)
        ),
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
    """Start what is missing (broker, worker, console), seed, play the story, show it.

    ``rate`` sets the story's speed: 5 is real time, 10 twice as fast. With ``count``,
    stop once that many decisions have been read.
    """
    from rich.console import Console  # noqa: PLC0415
    from rich.live import Live  # noqa: PLC0415

    from streams.console.feed import Feed  # noqa: PLC0415
    from streams.console.publish import Publisher  # noqa: PLC0415
    from streams.console.view import ConsoleView  # noqa: PLC0415
    from streams.kafka.admin import create_topics  # noqa: PLC0415

    console = Console()
    logs = _quiet(settings.data_dir / "demo")
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="escalation-demo-")))
        # Run last (after the children stopped): their logs outlive the temporary directory.
        stack.callback(_keep, work / "worker" / "worker.log", logs)
        stack.callback(_keep, work / "console" / "console.log", logs)
        dev = settings.model_copy(update={"dev": True, "data_dir": work})
        bootstrap = settings.bootstrap_servers
        if not bootstrap:
            from streams.kafka.launcher import LocalKafka  # noqa: PLC0415

            console.print("starting a local Apache Kafka (KRaft) ...")
            kafka = LocalKafka(work / "kafka", cache_dir=settings.kafka_cache_dir)
            stack.enter_context(kafka)
            bootstrap = kafka.bootstrap_servers
        console.print(f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        create_topics(settings, bootstrap)
        policy = work / "demo-policy.yaml"
        policy.write_text(story.demo_policy(settings.policy_file.read_text(encoding="utf-8")))
        # Development keys and keyring, shared by the worker, the console and the seeding.
        ids = DevIdentities.make(work / "identities", read_policy(policy))
        os.environ.update(ids.env())
        worker = start_worker(
            settings, bootstrap, work / "worker", ESCALATION_DEV="1",
            ESCALATION_POLICY_FILE=str(policy),
        )  # fmt: skip
        stack.callback(_stop, worker)
        password = secrets.token_urlsafe(9)
        ui, url = start_console(settings, bootstrap, work / "console", policy, password)
        stack.callback(_stop, ui)
        console.print(f"worker pid {worker.pid}, console pid {ui.pid}; logs in {logs}")
        console.print(f"console: [bold]{url}/[/]  sign in as [bold]alice[/] / [bold]{password}[/]")
        now = dt.datetime.now(tz=dt.UTC)
        seed(settings, bootstrap, now, ids)
        console.print("waiting for the worker to fold the seeded history ...")
        wait_for_state(work / "worker" / "metrics.port", worker, now)
        view = ConsoleView()
        lock = threading.Lock()
        feed = Feed(settings, bootstrap, view, lock).start()
        stack.callback(feed.stop)
        publisher = Publisher(dev, bootstrap, ids.channel("console"))
        producer = _producer(bootstrap)
        beats = story.cycle()
        speed = rate / 5.0
        started = time.monotonic()
        played = 0.0
        sent = 0
        aborted: set[str] = set()
        next_abort = story.ABORT[0]
        signin = f"sign in as [bold]alice[/] / [bold]{password}[/]"

        with Live(console=console, refresh_per_second=2, screen=False) as live:
            while True:
                clock = (time.monotonic() - started) * speed
                for number, beat in story.due(beats, played, clock):
                    proposal = samples.proposal(
                        BY_NAME[beat.scenario], sent, at=dt.datetime.now(tz=dt.UTC),
                        tag=f"demo{number}-",
                    )  # fmt: skip
                    producer.produce(
                        settings.topic("proposals"),
                        key=proposal.action.target.service.encode(),
                        value=encode(proposal),
                    )
                    sent += 1
                if clock >= next_abort:
                    next_abort += story.CYCLE
                    _scripted_abort(view, lock, publisher, aborted)
                played = clock
                producer.poll(0)
                with lock:
                    live.update(_screen(view, url, signin, sent, time.time()))
                    decided = sum(1 for i in view.items.values() if i.level is not None)
                if worker.poll() is not None or ui.poll() is not None:
                    which, log = (
                        ("worker", work / "worker" / "worker.log")
                        if worker.poll() is not None
                        else ("console", work / "console" / "console.log")
                    )
                    console.print(f"[red]the {which} stopped; its log: {log}[/]")
                    _keep(log, logs)
                    return
                if count is not None and decided >= count:
                    return
                threading.Event().wait(0.25)


BY_NAME = {s.name: s for s in samples.SCENARIOS}
SHORT = {0: "manual", 1: "assist", 2: "approve", 3: "abortable", 4: "autonomous"}
SHORT_STATE = {"waiting for approval": "waiting", "abort window open": "abortable"}


def _quiet(logs: Path) -> Path:
    """Client-library warnings (librdkafka, Faust, Python) to a file, not the screen."""
    import logging  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    return logs


def _keep(log: Path, logs: Path) -> None:
    with suppress(OSError):
        (logs / log.name).write_bytes(log.read_bytes())


def start_console(
    settings: Settings, bootstrap: str, data_dir: Path, policy: Path, password: str
) -> tuple[subprocess.Popen[bytes], str]:
    """``escalation console`` as a child process, with a demo account ``alice``."""
    from streams.console.auth import add_user  # noqa: PLC0415
    from streams.testing import wait_until  # noqa: PLC0415

    data_dir.mkdir(parents=True, exist_ok=True)
    accounts = data_dir / "accounts"
    add_user(accounts, "alice", password, replace=True)
    add_user(accounts, "bob", password, replace=True)
    for port in (settings.console_port, 0):
        port_file = data_dir / "console.port"
        port_file.unlink(missing_ok=True)
        environment = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
            "ESCALATION_DATA_DIR": str(data_dir),
            "ESCALATION_DEV": "1",
            "ESCALATION_POLICY_FILE": str(policy),
            "ESCALATION_CONSOLE_ACCOUNTS_FILE": str(accounts),
            "ESCALATION_CONSOLE_METRICS_PORT": "0",
        }
        with (data_dir / "console.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "console", "--addr", settings.console_addr,
                 "--port", str(port), "--port-file", str(port_file)],
                env=environment, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started = partial(_listening, port_file, process)
        wait_until(started, timeout=60)
        if port_file.exists():
            return process, f"http://{settings.console_addr}:{port_file.read_text().strip()}"
        _stop(process)  # the port is taken: take any free one
    raise EscalationError(f"the console did not start; see {data_dir / 'console.log'}")


def _listening(port_file: Path, process: subprocess.Popen[bytes]) -> bool:
    return port_file.exists() or process.poll() is not None


def _scripted_abort(view: Any, lock: threading.Lock, publisher: Any, aborted: set[str]) -> None:
    """bob aborts the newest execution of the story's abort scenario still in its window."""
    from streams.console.publish import build_answer  # noqa: PLC0415

    scenario = BY_NAME[story.ABORT[1]]
    now = time.time()
    with lock:
        candidates = [
            i for i in view.waiting(now)
            if i.level == 3 and i.service == scenario.service and i.decision_id not in aborted
        ]  # fmt: skip
    if not candidates:
        return
    target = max(candidates, key=lambda i: i.decided_at)
    aborted.add(target.decision_id)
    answer = build_answer(
        "abort", target.decision_id, "bob", now=dt.datetime.now(tz=dt.UTC),
        reason="demo: bob saw the scale-up was not needed",
    )  # fmt: skip
    publisher.answer(answer)


def _screen(view: Any, url: str, signin: str, sent: int, now: float) -> Any:
    """The terminal view: where to answer, what is waiting, what the gate did."""
    from rich.console import Group  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    waiting = view.waiting(now)
    approvals = [i for i in waiting if i.level == 2]
    windows = [i for i in waiting if i.level == 3]
    paged = sum(1 for i in approvals if i.escalations)
    levels = Counter(i.level for i in view.items.values() if i.level is not None)
    trips = sum(view.trends.velocity_trips.values())
    header = Text.from_markup(
        f"[bold]Escalation Gate demo[/]  console: [bold underline]{url}/waiting[/]  {signin}\n"
        f"Waiting for you: [bold cyan]{len(approvals)} approval(s)[/]"
        f" ({paged} already paged on-call), [bold green]{len(windows)} abort window(s)[/]"
    )
    if waiting:
        first = waiting[0]
        left = (first.deadline() or now) - now
        when = f"in {left:.0f}s" if left >= 0 else f"overdue by {-left:.0f}s"
        header.append_text(Text.from_markup(
            f"\nsoonest: [bold]{first.service}[/] {first.action_type} (Level {first.level}) "
            f"{when}: answer at {url}/decisions/{first.decision_id}"
        ))  # fmt: skip
    answered = Counter(i.status for i in view.items.values())
    header.append_text(Text.from_markup(
        f"\nanswered: {answered['approved']} approved, {answered['rejected']} rejected, "
        f"{answered['aborted']} aborted"
        f"\n{sent} proposals sent; velocity guard held {trips} at Level 2; "
        f"on-call pages {sum(view.trends.timeouts.values())}; Ctrl-C stops everything"
    ))  # fmt: skip
    table = Table(show_edge=False, pad_edge=False)
    for column in ("level", "service", "action", "rule", "status"):
        table.add_column(column)
    for item in view.feed(limit=12):
        lvl = item.level or 0
        table.add_row(
            f"[{LEVEL_STYLE[lvl]}]L{lvl} {SHORT[lvl]}[/]",
            item.service,
            item.action_type,
            item.rule,
            SHORT_STATE.get(item.state(), item.state())
            + (f" (paged {item.escalations})" if item.escalations else ""),
        )
    table.caption = "  ".join(f"L{k}: {levels[k]}" for k in range(5))
    return Group(header, table)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
