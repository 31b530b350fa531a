"""The command line against the real broker, as an operator types it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import orjson
from harness import DecisionReader, Feed, Worker

from streams import samples
from streams.models import encode
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _run(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
        "ESCALATION_METRICS_PORT": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT,
    )  # fmt: skip


def test_history_import_and_publish_make_a_pattern_autonomous_on_day_one(
    settings: Settings, worker: Worker, tmp_path: Path
) -> None:
    now = dt.datetime.now(tz=dt.UTC)
    history = tmp_path / "incidents.jsonl"
    history.write_bytes(b"\n".join(encode(r) for r in samples.history_records(now)))
    result = _run(settings, "history", "import", str(history), "--as", "alice")
    assert result.returncode == 0, result.stderr
    assert "signed batch" in result.stdout
    budgets = samples.budgets(now)
    feed = Feed(settings)
    for budget in budgets:  # signed by the SLO source of the keyring
        feed.budget(budget.service, budget.remaining)
    for command in samples.requalifications(now):
        result = _run(settings, "requalify", command.pattern or "", command.action_type or "",
                      "--as", "alice")  # fmt: skip
        assert result.returncode == 0, result.stderr
    worker.wait_metric("escalation_state_updates_applied_total", 3, table="requalification")
    worker.wait_metric("escalation_state_updates_applied_total", len(budgets), table="budgets")
    stream = [p for _, p in samples.stream(len(samples.SCENARIOS), start=now, tag="cli-")]
    proposals = tmp_path / "proposals.jsonl"
    proposals.write_bytes(b"\n".join(encode(p) for p in stream))
    result = _run(settings, "publish", str(proposals))
    assert result.returncode == 0, result.stderr
    with DecisionReader(settings) as reader:
        found = reader.wait_for([p.proposal_id for p in stream])
    levels = {
        p.proposal_id: s.expected_level for s, p in zip(samples.SCENARIOS, stream, strict=True)
    }
    assert {pid: d["level"] for pid, d in found.items()} == levels

    # Replay the recorded audit topic under a looser candidate policy: it writes nothing.
    looser = ROOT / "policies" / "examples" / "looser-v1.4.yaml"
    result = _run(settings, "replay", "--topic", "--policy", str(looser), "--json")
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["replayed"] == len(stream)
    assert sum(map(sum, report["matrix"])) == len(stream)
    directions = [c["direction"] for c in report["changes"]]
    assert directions == sorted(directions, key=lambda d: d != "more_autonomy")

    result = _run(settings, "approve", "d-unknown", "--as", "alice")
    assert result.returncode == 0, result.stderr
    worker.wait_metric("escalation_answers_refused_total", 1, reason="unknown_decision")


def test_bad_arguments_are_one_line_with_exit_code_2(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema_version": 1, "proposal_id": ""}\n')
    for args in (
        ("publish", str(bad)),
        ("publish", str(tmp_path / "missing.json")),
        ("approve", "d-1"),
        ("demo", "--rate", "fast"),
        ("explain", str(bad)),
    ):
        result = _run(settings, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_demo_reaches_every_level_and_stops_what_it_started(
    settings: Settings, topics: list[str]
) -> None:
    result = _run(settings, "demo", "--count", "30", "--rate", "30", timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for level in range(5):
        assert f"L{level}: " in result.stdout
    assert "L0: 0" not in result.stdout
    assert "L4: 0" not in result.stdout
