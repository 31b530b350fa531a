# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""``replay`` and ``escalation replay`` over the recorded audit stream (tests/fixtures)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from click.testing import CliRunner

from streams.errors import InputError
from streams.models import AuditEvent, Context, Decision, Proposal, encode
from streams.policy import Policy, evaluate, parse_policy
from streams.review import Record, replay
from streams.review.cli import replay as replay_command

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "fixtures" / "audit-recorded.jsonl"
DEFAULT_POLICY = ROOT / "policies" / "escalation-policy.yaml"
LOOSER_POLICY = ROOT / "policies" / "examples" / "looser-v1.4.yaml"
UNIQUE_DECISIONS = 32
REDELIVERED = 3


def _load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_recorded", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_recorded = _load_module(ROOT / "tests" / "fixtures" / "make_recorded.py")


def _policy(path: Path) -> Policy:
    return parse_policy(path.read_bytes(), source=str(path))


@pytest.fixture(scope="module")
def default_policy() -> Policy:
    return _policy(DEFAULT_POLICY)


@pytest.fixture(scope="module")
def looser_policy() -> Policy:
    return _policy(LOOSER_POLICY)


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return [line for line in RECORDED.read_bytes().splitlines() if line.strip()]


def _decisions(lines: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        event = orjson.loads(line)["event"]
        if event["kind"] == "decision":
            out.append(event["data"]["decision"])
    return out


def _event(decision: Decision, seq: int = 0) -> dict[str, Any]:
    """A decision wrapped as the worker records it (placeholder hashes)."""
    return {
        "time": decision.decided_at.timestamp(),
        "host": "escalation-gate",
        "source": "escalation-gate",
        "sourcetype": "escalation:audit",
        "index": "escalation",
        "event": {
            "kind": "decision",
            "event_id": f"{decision.decision_id}/decision",
            "chain": "test",
            "seq": seq,
            "prev_hash": "0" * 64,
            "hash": "a" * 64,
            "at": decision.decided_at.isoformat(),
            "decision_id": decision.decision_id,
            "proposal_id": decision.proposal_id,
            "actor": "escalation-gate",
            "data": {"decision": orjson.loads(encode(decision))},
        },
    }


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# ----------------------------------------------------------------------- the fixture


def test_recorded_fixture_is_what_make_recorded_writes_under_the_default_policy(
    default_policy: Policy,
) -> None:
    """When the default policy changes, rerun tests/fixtures/make_recorded.py."""
    assert make_recorded.render(default_policy) == RECORDED.read_bytes(), (
        "the recorded stream is stale: run python tests/fixtures/make_recorded.py"
    )


def test_every_record_of_the_fixture_decodes_as_an_audit_event(lines: list[bytes]) -> None:
    for line in lines:
        event = AuditEvent.model_validate_json(line)
        if event.event.kind == "decision":
            Decision.model_validate(event.event.data["decision"])


# ---------------------------------------------------------------------- the function


def test_matrix_counts_add_up_to_the_unique_decisions(
    lines: list[bytes], looser_policy: Policy
) -> None:
    report = replay(lines, looser_policy)
    unique = {d["decision_id"] for d in _decisions(lines)}
    assert len(unique) == UNIQUE_DECISIONS
    assert report.replayed == UNIQUE_DECISIONS
    assert sum(map(sum, report.matrix)) == UNIQUE_DECISIONS
    assert report.unchanged + len(report.changes) == UNIQUE_DECISIONS
    assert report.duplicates == REDELIVERED
    assert report.records == len(lines)
    assert report.other_kinds == len(lines) - len(_decisions(lines))
    assert report.malformed == 0


def test_the_same_policy_replays_with_zero_changes(
    lines: list[bytes], default_policy: Policy
) -> None:
    report = replay(lines, default_policy)
    assert report.changes == []
    assert report.rule_changes == 0
    assert report.unchanged == UNIQUE_DECISIONS
    recorded = [d["level"] for d in _decisions(lines)]
    for level in range(5):
        assert report.matrix[level][level] > 0, f"the fixture has no Level {level} decision"
    assert sum(report.matrix[level][level] for level in range(5)) == UNIQUE_DECISIONS
    assert set(recorded) == {0, 1, 2, 3, 4}


def test_a_looser_policy_lists_the_decisions_that_gain_autonomy_first(
    lines: list[bytes], looser_policy: Policy
) -> None:
    report = replay(lines, looser_policy)
    directions = [c.gains_autonomy for c in report.changes]
    assert directions == sorted(directions, reverse=True)
    assert {c.proposal_id for c in report.gains} == {
        "p-0006",  # scale up by 3: the new limit is 3
        "p-0007",  # second consistent occurrence: Level 3 from seen >= 2
        "p-0008",  # confidence 0.82: Level 4 from 0.80
        "p-0010",  # k8sgpt is trusted
        "p-0019",  # replica fraction 0.22: the new limit is 0.25
        "p-0026",  # velocity guard: 4 per service
    }
    assert {c.proposal_id for c in report.losses} == {"p-0027", "p-0028"}
    first = report.changes[0]
    assert (first.proposal_id, first.old_level, first.new_level) == ("p-0010", 0, 4)
    assert (first.old_rule, first.new_rule) == ("level0_untrusted", "level4_autonomous")
    assert report.matrix[0][4] == 1
    assert report.matrix[4][2] == 1


def test_a_gain_names_each_condition_whose_verdict_changed_with_both_thresholds(
    lines: list[bytes], looser_policy: Policy
) -> None:
    report = replay(lines, looser_policy)
    change = next(c for c in report.changes if c.proposal_id == "p-0008")
    assert (change.pattern, change.action_type, change.service) == (
        "oom-kill/stateless-deployment",
        "rolling_restart",
        "orders-api",
    )
    assert (change.old_level, change.new_level) == (2, 4)
    by_key = {(c.rule, c.name): c for c in change.conditions}
    assert set(by_key) == {
        ("level2_supervised", "composite_confidence"),
        ("level4_autonomous", "composite_confidence"),
    }
    supervised = by_key["level2_supervised", "composite_confidence"]
    assert supervised.observed == pytest.approx(0.82)
    assert (supervised.old_threshold, supervised.new_threshold) == (0.85, 0.8)
    assert (supervised.old_holds, supervised.new_holds) == (True, False)


def test_a_loss_names_the_condition_that_now_holds(
    lines: list[bytes], looser_policy: Policy
) -> None:
    report = replay(lines, looser_policy)
    change = next(c for c in report.changes if c.proposal_id == "p-0028")
    assert (change.service, change.old_level, change.new_level) == ("vault", 3, 2)
    [condition] = change.conditions
    assert (condition.rule, condition.name) == ("level2_supervised", "shared_infrastructure")
    assert (condition.old_holds, condition.new_holds) == (False, True)
    assert "vault" in condition.new_threshold
    assert "vault" not in condition.old_threshold


def test_a_condition_evaluated_under_only_one_policy_is_listed_with_no_old_verdict(
    default_policy: Policy, looser_policy: Policy
) -> None:
    """v1.4 authorises cache_flush for Level 4, so its target_kind check is new."""
    proposal, context = make_recorded._inputs(0, make_recorded.START)
    proposal = Proposal.model_validate(
        proposal.model_dump() | {"action": proposal.action.model_dump() | {"type": "cache_flush"}}
    )
    assert isinstance(context, Context)
    old = evaluate(proposal, context, default_policy)
    report = replay([_event(old)], looser_policy)
    [change] = report.changes
    assert (change.old_level, change.new_level) == (3, 4)
    conditions = {(c.rule, c.name): c for c in change.conditions}
    only_new = conditions["level4_autonomous", "target_kind"]
    assert (only_new.old_holds, only_new.new_holds) == (None, True)
    assert only_new.old_threshold is None
    assert conditions["level4_autonomous", "action_authorised"].new_holds is True


def test_since_and_until_keep_only_decisions_decided_inside_the_window(
    lines: list[bytes], looser_policy: Policy
) -> None:
    since, until = _utc("2026-11-25T00:00:00Z"), _utc("2026-11-27T22:00:00Z")
    report = replay(lines, looser_policy, since=since, until=until)
    inside = {
        d["decision_id"] for d in _decisions(lines) if since <= _utc(d["decided_at"]) <= until
    }
    assert report.replayed == len(inside) == 11  # p-0017 .. p-0027, both ends inclusive
    assert report.replayed + report.outside_window == UNIQUE_DECISIONS
    assert {c.proposal_id for c in report.changes} == {"p-0019", "p-0026", "p-0027"}


def test_only_since_or_only_until_leaves_the_other_end_open(
    lines: list[bytes], default_policy: Policy
) -> None:
    later = replay(lines, default_policy, since=_utc("2026-11-29T00:00:00Z"))
    earlier = replay(lines, default_policy, until=_utc("2026-11-20T08:00:00Z"))
    assert later.replayed == 2
    assert earlier.replayed == 1


def test_a_naive_window_is_refused(lines: list[bytes], default_policy: Policy) -> None:
    with pytest.raises(InputError, match="since"):
        replay(lines, default_policy, since=dt.datetime(2026, 11, 25))  # noqa: DTZ001


def test_a_redelivered_decision_is_replayed_once_and_the_first_copy_is_kept(
    lines: list[bytes], default_policy: Policy
) -> None:
    """p-0008 was decided at 09:00 and again at 09:45; a window ending 09:00 keeps it."""
    report = replay(lines, default_policy, until=_utc("2026-11-22T09:00:00Z"))
    assert report.duplicates == REDELIVERED  # counted over the whole stream
    assert report.replayed == 8  # p-0001 .. p-0008
    assert report.matrix[2][2] == 2  # p-0007, and p-0008 from its first copy
    first = next(line for line in lines if b'"kind":"decision"' in line)
    doubled = replay([first, first, first], default_policy)
    assert (doubled.replayed, doubled.duplicates) == (1, 2)


def test_malformed_records_are_counted_with_their_positions_and_do_not_stop_replay(
    lines: list[bytes], default_policy: Policy
) -> None:
    decided: dict[str, bytes] = {}
    for line in lines:
        event = orjson.loads(line)["event"]
        if event["kind"] == "decision":
            decided.setdefault(event["decision_id"], line)
    good = list(decided.values())[:2]
    no_decision = orjson.loads(good[0])
    no_decision["event"]["data"] = {}
    no_decision["event"]["event_id"] = "other"
    records = [
        Record("export:1", b"{not json"),
        Record("export:2", good[0]),
        Record("export:3", b'{"time": 1}'),
        Record("export:4", no_decision),
        Record("export:5", good[1]),
        Record("export:6", b"[1, 2]"),
    ]
    report = replay(records, default_policy)
    assert report.replayed == 2
    assert report.malformed == 4
    assert [where for where, _ in report.malformed_examples] == [
        "export:1",
        "export:3",
        "export:4",
        "export:6",
    ]
    assert "not JSON" in report.malformed_examples[0][1]
    assert "event.data.decision" in report.malformed_examples[2][1]


def test_only_the_first_five_malformed_positions_are_kept(default_policy: Policy) -> None:
    report = replay([b"x"] * 9, default_policy)
    assert report.malformed == 9
    assert [where for where, _ in report.malformed_examples] == [f"#{n}" for n in range(1, 6)]


def test_records_may_be_decoded_objects_or_audit_events(
    lines: list[bytes], default_policy: Policy
) -> None:
    decision_line = next(line for line in lines if b'"kind":"decision"' in line)
    as_dict = orjson.loads(decision_line)
    as_event = AuditEvent.model_validate(as_dict)
    report = replay([decision_line.decode(), as_dict, as_event], default_policy)
    assert (report.replayed, report.duplicates, report.malformed) == (1, 2, 0)


def test_to_json_is_one_object_with_the_matrix_and_every_change(
    lines: list[bytes], looser_policy: Policy
) -> None:
    report = replay(lines, looser_policy)
    data = orjson.loads(report.to_json())
    assert data["replayed"] == UNIQUE_DECISIONS
    assert data["matrix"] == report.matrix
    assert len(data["matrix"]) == 5
    assert all(len(row) == 5 for row in data["matrix"])
    assert data["more_autonomy"] == 6
    assert data["less_autonomy"] == 2
    assert data["decided_under"] == {"1.3": UNIQUE_DECISIONS}
    first = data["changes"][0]
    assert first["direction"] == "more_autonomy"
    assert {"pattern", "action_type", "service", "proposal_id", "conditions"} <= set(first)
    assert first["conditions"][0]["new_threshold"] == ["holmesgpt", "k8sgpt"]


# ----------------------------------------------------------------------- the command


def _run(*args: str, **kwargs: Any) -> Any:
    # Wide enough that rich does not fold the lines the assertions look for.
    return CliRunner(env={"COLUMNS": "240"}).invoke(replay_command, list(args), **kwargs)


def test_the_command_prints_the_matrix_and_the_gains_before_the_losses() -> None:
    result = _run("--policy", str(LOOSER_POLICY), str(RECORDED))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Replayed 32 decisions" in out
    assert "6 would gain autonomy, 2 would lose it, 24 unchanged" in out
    assert "L2 supervised" in out
    assert out.index("Gain autonomy") < out.index("Lose autonomy")
    assert out.index("p-0010") < out.index("p-0027")
    assert "k8sgpt not in [holmesgpt] -> [holmesgpt, k8sgpt]" in out
    assert "3 duplicate decision events" in out


def test_the_command_prints_one_json_object_with_json() -> None:
    result = _run("--policy", str(LOOSER_POLICY), "--json", str(RECORDED))
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["replayed"] == UNIQUE_DECISIONS
    assert data["changes"][0]["proposal_id"] == "p-0010"


def test_the_command_filters_by_since_and_until() -> None:
    result = _run(
        "--policy",
        str(LOOSER_POLICY),
        "--since",
        "2026-11-25T00:00:00Z",
        "--until",
        "2026-11-27",
        "--json",
        str(RECORDED),
    )
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert data["replayed"] == 7  # p-0017 .. p-0023; a bare date is UTC midnight
    assert data["since"] == "2026-11-25T00:00:00Z"


def test_the_command_reports_malformed_lines_and_still_replays(tmp_path: Path) -> None:
    export = tmp_path / "export.jsonl"
    content = RECORDED.read_bytes().splitlines()
    export.write_bytes(b"\n".join([content[0], b"garbage", b"", *content[1:]]) + b"\n")
    result = _run("--policy", str(DEFAULT_POLICY), str(export))
    assert result.exit_code == 0, result.output
    assert "1 malformed records" in result.stdout
    assert f"{export}:2: not JSON" in result.stdout
    assert "Replayed 32 decisions" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: expected an ISO 8601 time"),
        (["--until", "2026-11-28T10:00:00"], "--until: '2026-11-28T10:00:00' has no timezone"),
        (["--since", "2026-11-28", "--until", "2026-11-01"], "is after --until"),
        ([], "give an audit export FILE or --topic"),
        (["--topic"], "give an audit export FILE or --topic"),
    ],
)
def test_bad_arguments_are_one_line_on_stderr_and_exit_2(args: list[str], message: str) -> None:
    file_args = [] if not args else [str(RECORDED)]  # --topic with a FILE is one too many
    result = _run("--policy", str(DEFAULT_POLICY), *args, *file_args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_an_unreadable_export_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = _run("--policy", str(DEFAULT_POLICY), str(tmp_path / "missing.jsonl"))
    assert result.exit_code == 2
    assert "missing.jsonl: cannot read audit export" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_an_invalid_policy_prints_each_problem_and_exits_2(tmp_path: Path) -> None:
    text = DEFAULT_POLICY.read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        text.replace(
            "min_confidence: 0.85\n    min_seen: 10", "min_confidence: 0.50\n    min_seen: 1"
        )
    )
    result = _run("--policy", str(bad), str(RECORDED))
    assert result.exit_code == 2
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 2
    assert all(line.startswith(f"{bad}:") for line in problems)
    assert "Traceback" not in result.output


def test_replaying_a_file_loads_no_kafka_client_and_needs_no_broker() -> None:
    """Replay has no producer: from a file it never even imports confluent_kafka."""
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from streams.review.cli import replay\n"
        f"r = CliRunner().invoke(replay, ['--policy', {str(LOOSER_POLICY)!r}, {str(RECORDED)!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'confluent_kafka' not in sys.modules\n"
        "assert 'faust' not in sys.modules\n"
    )
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
