"""``escalation history import`` on the real broker: streamed, signed batches, progress,
a decision that sees the history, and a rerun that folds nothing (issue 14, item 6).

Slow (``pytest -m slow``): three command-line runs and a worker. In CI the import
itself is covered by tests/integration/test_cli.py and the streaming, batching and
full-queue handling by tests/unit/test_snapshot_history_import.py.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from harness import DecisionReader, Feed, Worker, wait_processed

from streams import samples
from streams.models import Proposal
from streams.settings import Settings
from streams.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
PATTERN, ACTION = "import-test/queue-backlog", "rolling_restart"
L2 = next(s for s in samples.SCENARIOS if s.expected_level == 2)

pytestmark = pytest.mark.slow


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip


def _incidents(path: Path, count: int, *, start: int = 0) -> None:
    at = dt.datetime.now(tz=dt.UTC) - dt.timedelta(days=1)
    with path.open("wb") as out:
        for n in range(start, start + count):
            record = {
                "pattern": PATTERN,
                "action_type": ACTION,
                "outcome": "failure" if n % 6 == 0 else "success",
                "ai_system": "holmesgpt",
                "verdict": "false_positive" if n % 12 == 0 else "true_positive",
                "at": (at + dt.timedelta(seconds=n)).isoformat(),
            }
            out.write(orjson.dumps(record) + b"\n")


def _control_end(settings: Settings) -> list[tuple[str, int, int]]:
    """The last record of ``control`` (keyed ``control``: one partition, by murmur2)."""
    topic = settings.topic("control")
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "probe"})
    try:
        highs = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(settings.partitions)
        }
    finally:
        consumer.close()
    return [(topic, p, high - 1) for p, high in highs.items() if high > 0]


def _seen(settings: Settings, feed: Feed, number: int) -> dict[str, Any]:
    base = samples.proposal(L2, number, at=dt.datetime.now(tz=dt.UTC), tag="import-")
    data = base.model_dump(mode="json")
    data["pattern"], data["action"]["type"] = PATTERN, ACTION
    proposal = Proposal.model_validate(data)
    feed.proposals([proposal])
    with DecisionReader(settings) as reader:
        decision = reader.wait_for([proposal.proposal_id], timeout=90)[proposal.proposal_id]
    history: dict[str, Any] = decision["context"]["history"]
    return history


def _wait_seen(settings: Settings, feed: Feed, seen: int, first: int) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def reached() -> bool:
        found.append(_seen(settings, feed, first + len(found)))
        return found[-1]["seen"] >= seen

    assert wait_until(reached, timeout=120, interval=1.0), found[-1:]
    return found[-1]


def test_an_import_streams_signed_batches_and_a_rerun_folds_nothing(
    settings: Settings, worker: Worker, tmp_path: Path
) -> None:
    del worker
    feed = Feed(settings)
    path = tmp_path / "incidents.jsonl"
    _incidents(path, 1_200)
    first = _run(settings, "history", "import", str(path), "--as", "alice", "--progress")
    assert first.returncode == 0, first.stderr
    assert "imported 1,200 incident(s) in 3 signed batch(es)" in first.stdout
    assert "importing" in first.stderr  # the progress bar, on stderr
    assert "Traceback" not in first.stderr
    wait_processed(settings, _control_end(settings), timeout=120)
    history = _wait_seen(settings, feed, 1_200, first=1)
    assert history == {"seen": 1_200, "successes": 1_000, "failures": 200}

    again = _run(settings, "history", "import", str(path), "--as", "alice")
    assert again.returncode == 0, again.stderr
    assert "importing" not in again.stderr  # not a terminal, no --progress: no bar
    # One more incident after the rerun: the decision that sees it has seen the rerun
    # too (one control partition, one state partition per key, both in order).
    later = tmp_path / "later.jsonl"
    _incidents(later, 1, start=1_201)
    assert _run(settings, "history", "import", str(later), "--as", "alice").returncode == 0
    wait_processed(settings, _control_end(settings), timeout=120)
    history = _wait_seen(settings, feed, 1_201, first=100)
    assert history["seen"] == 1_201, "the rerun was folded again"


def test_a_bad_line_is_one_error_line_naming_file_and_line(
    settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    del topics
    path = tmp_path / "bad.jsonl"
    _incidents(path, 3)
    with path.open("ab") as out:
        out.write(b'{"pattern": "x", "action_type": "y", "outcome": "maybe"}\n')
    result = _run(settings, "history", "import", str(path), "--as", "alice")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"{path}:4" in result.stderr
