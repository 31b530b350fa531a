"""What the similarity and calibration rules would have changed over a recorded stream."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from streams.cli import _mount_subsystem_commands, cli
from streams.models import Context, Proposal
from streams.policy import Policy, evaluate
from streams.review.trust import fold_trust

Builder = Callable[..., tuple[Proposal, Context]]

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "make_recorded", ROOT / "tests" / "fixtures" / "make_recorded.py"
)
assert _spec is not None
assert _spec.loader is not None
make_recorded = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_recorded)
START = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


def _stream(make_inputs: Builder, policy: Policy, right: int, total: int) -> list[bytes]:
    """``total`` judged Level 4 decisions at confidence 0.9, ``right`` of them successes,
    then one more proposal on another kind of target, and one more on the same."""
    chain = make_recorded._Chain()
    for index in range(total):
        now = START + dt.timedelta(minutes=index)
        proposal, context = make_inputs(
            {"proposal_id": f"p-{index}", "confidence": {"model": 0.9, "heuristic": None}},
            {"now": now.isoformat()},
        )
        decision = evaluate(proposal, context, policy)
        chain.decision(decision)
        chain.emit(
            "outcome",
            now + dt.timedelta(seconds=30),
            {"outcome": {"result": "success" if index < right else "failure"}},
            decision_id=decision.decision_id,
            event_id=f"{decision.decision_id}/outcome",
        )
    later = START + dt.timedelta(hours=2)
    for name, change in (
        ("p-statefulset", {"action": {"target": {"kind": "StatefulSet"}}}),
        ("p-same", {}),
    ):
        proposal, context = make_inputs(
            {"proposal_id": name, "confidence": {"model": 0.9, "heuristic": None}, **change},
            {"now": later.isoformat()},
        )
        chain.decision(evaluate(proposal, context, policy))
    return chain.lines


def test_a_system_right_60_percent_at_090_loses_level_4_by_calibration(
    make_inputs: Builder, default_policy: Policy
) -> None:
    report = fold_trust(_stream(make_inputs, default_policy, right=60, total=100), default_policy)

    changes = {c.proposal_id: c for c in report.changes}
    same = changes["p-same"]
    assert (same.old_level, same.new_level, same.rules) == (4, 2, ("calibration",))
    assert same.calibrated == 0.6
    assert report.judged == 100
    # Before the 20th judged proposal there is no calibrated value: nothing changed.
    assert not {f"p-{i}" for i in range(20)} & set(changes)


def test_a_near_miss_is_capped_at_level_2_and_names_what_differs(
    make_inputs: Builder, default_policy: Policy
) -> None:
    report = fold_trust(_stream(make_inputs, default_policy, right=5, total=5), default_policy)

    [change] = report.changes
    assert change.proposal_id == "p-statefulset"
    assert change.rules == ("similarity",)
    assert change.old_level >= 3
    assert change.new_level == 2
    assert change.novelty is not None
    assert change.novelty["kind"] == "similar"
    assert change.novelty["nearest"]["differs"] == ["target_kind"]
    assert change.novelty["nearest"]["distance"] == 0.3


def test_calibration_command_prints_the_reliability_table(
    make_inputs: Builder, default_policy: Policy, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = _stream(make_inputs, default_policy, right=60, total=100)
    path.write_bytes(b"\n".join(lines) + b"\n")
    _mount_subsystem_commands()

    shown = CliRunner().invoke(cli, ["calibration", "holmesgpt", "--file", str(path)])
    as_json = CliRunner().invoke(cli, ["calibration", "--file", str(path), "--json"])
    replayed = CliRunner().invoke(cli, ["replay-trust", str(path), "--json"])

    assert shown.exit_code == 0, shown.output
    assert "holmesgpt|llama3.1:70b: ECE 0.3" in shown.output
    assert "[0.90, 1.00)     100     60     0.600       0.600" in shown.output
    table: dict[str, Any] = orjson.loads(as_json.output)["holmesgpt|llama3.1:70b"]
    assert table["bins"][9]["calibrated"] == 0.6
    assert orjson.loads(replayed.output)["by_rule"]["calibration"] >= 1
