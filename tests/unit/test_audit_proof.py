# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""One decision's proof, and the commands around checkpoints: prove, verify-proof, checkpoint.

A proof verifies offline with the gate's public key only; each way of tampering
with it (an event changed, removed, a checkpoint re-signed by another key or with
changed heads) makes it fail.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from audit_trail import Gate, body, last_checkpoint, trail
from click.testing import CliRunner

from streams import keys
from streams.audit.chain import body_hash
from streams.audit.cli import audit
from streams.audit.proof import ProofError, build_proof, check_proof

if TYPE_CHECKING:
    from pathlib import Path

GATE = keys.generate("escalation-gate")
KEYS = keys.PublicKeys([GATE.public])


def _trail() -> tuple[Gate, list[bytes]]:
    """A decision with events on two chains (its proposal's and its answer's)."""
    gate = trail(GATE, events=12, every=6, final=False)
    gate.event("proposals:0", decision_id="d-target", kind="decision")
    gate.event("control:1", decision_id="d-target", kind="approval_accepted")
    gate.event("proposals:0")
    gate.checkpoint()
    gate.event("proposals:0")
    return gate, gate.records()


def _proof() -> dict[str, Any]:
    _, records = _trail()
    return build_proof(lambda: records, "d-target")


def test_a_proof_holds_the_decisions_events_and_the_links_to_a_signed_checkpoint() -> None:
    proof = _proof()
    assert [s["chain"] for s in proof["segments"]] == ["control:1", "proposals:0"]
    proposals = proof["segments"][1]
    assert [e["seq"] for e in proposals["events"]] == [3, 4]  # its event and the next one
    assert proposals["checkpoint"]["data"]["heads"]["proposals:0"]["seq"] == 4
    report = check_proof(proof, KEYS)
    assert report.ok, report.problems
    assert sorted(e.kind for e in report.events) == ["approval_accepted", "decision"]
    assert len(report.signed) == 2


def test_a_proof_survives_a_round_trip_through_json() -> None:
    proof = orjson.loads(orjson.dumps(_proof()))
    assert check_proof(proof, KEYS).ok


def _rehash(event: dict[str, Any]) -> None:
    event["hash"] = body_hash(event)


def test_a_proof_whose_decision_event_was_changed_fails() -> None:
    proof = _proof()
    proof["segments"][1]["events"][0]["data"]["level"] = 4
    report = check_proof(proof, KEYS)
    assert not report.ok
    assert "does not recompute" in report.problems[0]


def test_a_proof_whose_events_were_changed_and_rehashed_fails() -> None:
    proof = _proof()
    events = proof["segments"][1]["events"]
    events[0]["data"]["level"] = 4
    _rehash(events[0])
    events[1]["prev_hash"] = events[0]["hash"]
    _rehash(events[1])
    report = check_proof(proof, KEYS)
    assert not report.ok
    assert "does not sign chain proposals:0" in report.problems[0]


def test_a_proof_with_an_event_removed_fails() -> None:
    proof = _proof()
    segment = proof["segments"][1]
    segment["events"] = [segment["events"][0], *segment["events"][2:]]
    report = check_proof(proof, KEYS)
    assert not report.ok


def test_a_proof_whose_checkpoint_heads_were_changed_fails_its_signature() -> None:
    proof = _proof()
    checkpoint = proof["segments"][1]["checkpoint"]
    checkpoint["data"]["heads"]["proposals:0"]["hash"] = "0" * 63 + "1"
    _rehash(checkpoint)
    report = check_proof(proof, KEYS)
    assert not report.ok
    assert "bad_signature" in report.problems[0]


def test_a_proof_signed_by_another_key_fails_with_unknown_key() -> None:
    other = keys.generate()
    gate = Gate(other)
    gate.event("proposals:0", decision_id="d-x")
    gate.checkpoint()
    records = gate.records()
    proof = build_proof(lambda: records, "d-x")
    report = check_proof(proof, KEYS)
    assert not report.ok
    assert "unknown_key" in report.problems[0]
    assert check_proof(proof, keys.PublicKeys([other.public])).ok


def test_a_proof_for_another_decision_fails() -> None:
    proof = copy.deepcopy(_proof())
    proof["decision_id"] = "d-other"
    assert not check_proof(proof, KEYS).ok


def test_not_a_proof_is_named() -> None:
    assert check_proof({"kind": "x"}, KEYS).problems[0].startswith("kind")
    assert (
        check_proof({"kind": "audit_proof", "decision_id": "d"}, KEYS)
        .problems[0]
        .startswith("segments")
    )


def test_no_proof_before_a_checkpoint_covers_the_decision_or_for_an_unknown_decision() -> None:
    gate, records = _trail()
    gate.event("proposals:1", decision_id="d-late")
    records = gate.records()
    with pytest.raises(ProofError, match="no signed checkpoint"):
        build_proof(lambda: records, "d-late")
    with pytest.raises(ProofError, match="no audit event"):
        build_proof(lambda: records, "d-nowhere")


# -- the commands -------------------------------------------------------------------


def _files(tmp_path: Path) -> tuple[Path, Path]:
    _, records = _trail()
    trail_file = tmp_path / "audit.jsonl"
    trail_file.write_bytes(b"\n".join(records) + b"\n")
    pub = tmp_path / "gate.pub"
    pub.write_text(keys.public_pem(GATE.public))
    return trail_file, pub


def test_prove_and_verify_proof_on_the_command_line(tmp_path: Path) -> None:
    trail_file, pub = _files(tmp_path)
    runner = CliRunner()
    out = tmp_path / "proof.json"
    result = runner.invoke(audit, ["prove", "d-target", str(trail_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(audit, ["verify-proof", str(out), "--public-key", str(pub)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: decision d-target: 2 events")
    forged = orjson.loads(out.read_bytes())
    forged["segments"][0]["events"][0]["actor"] = "mallory"
    bad = tmp_path / "forged.json"
    bad.write_bytes(orjson.dumps(forged))
    result = runner.invoke(audit, ["verify-proof", str(bad), "--public-key", str(pub)])
    assert result.exit_code == 1
    assert "does not recompute" in result.output


def test_prove_refuses_to_overwrite_and_reports_an_unknown_decision(tmp_path: Path) -> None:
    trail_file, _ = _files(tmp_path)
    runner = CliRunner()
    result = runner.invoke(audit, ["prove", "d-nowhere", str(trail_file)])
    assert result.exit_code == 1
    assert "no audit event" in result.output
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    result = runner.invoke(audit, ["prove", "d-target", str(trail_file), "--out", str(taken)])
    assert result.exit_code == 2
    assert "--out" in result.output
    assert taken.read_text() == "{}"


def test_verify_proof_without_a_public_key_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ESCALATION_GATE_PUBLIC_KEYS", "ESCALATION_GATE_KEY_FILE", "ESCALATION_DEV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ESCALATION_DATA_DIR", str(tmp_path))
    proof = tmp_path / "proof.json"
    proof.write_bytes(orjson.dumps(_proof()))
    result = CliRunner().invoke(audit, ["verify-proof", str(proof)])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "--public-key" in result.output


def test_checkpoint_out_then_verify_checkpoint_catches_the_trail_rolled_back(
    tmp_path: Path,
) -> None:
    gate = trail(GATE, events=40, every=10, final=False)
    early = gate.records()
    for chain in sorted(gate.heads):
        gate.event(chain)
    gate.checkpoint()
    full_file, pub = tmp_path / "full.jsonl", tmp_path / "gate.pub"
    full_file.write_bytes(b"\n".join(gate.records()))
    pub.write_text(keys.public_pem(GATE.public))
    rolled = tmp_path / "rolled.jsonl"
    rolled.write_bytes(b"\n".join(early))
    kept = tmp_path / "kept.json"
    runner = CliRunner()
    result = runner.invoke(
        audit, ["checkpoint", str(full_file), "--out", str(kept), "--public-key", str(pub)]
    )
    assert result.exit_code == 0, result.output
    saved = orjson.loads(kept.read_bytes())
    assert saved["kind"] == "audit_checkpoints"
    assert {c["chain"].rsplit(":", 1)[1] for c in saved["checkpoints"]} == {"0", "1"}
    assert last_checkpoint(gate.records()) in saved["checkpoints"]
    args = ["--checkpoint", str(kept), "--public-key", str(pub)]
    result = runner.invoke(audit, ["verify", str(full_file), *args])
    assert result.exit_code == 0, result.output
    assert "signed checkpoints matched" in result.output
    result = runner.invoke(audit, ["verify", str(rolled), *args])
    assert result.exit_code == 1
    assert "truncation" in result.output
    assert "kept outside" in result.output


def test_verify_reports_checkpoints_not_checked_without_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ESCALATION_GATE_PUBLIC_KEYS", "ESCALATION_GATE_KEY_FILE", "ESCALATION_DEV"):
        monkeypatch.delenv(name, raising=False)
    trail_file, pub = _files(tmp_path)
    result = CliRunner().invoke(audit, ["verify", str(trail_file)])
    assert result.exit_code == 0, result.output
    assert "NOT checked" in result.output
    result = CliRunner().invoke(audit, ["verify", str(trail_file), "--public-key", str(pub)])
    assert "NOT checked" not in result.output


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["verify", "-", "--public-key", "/nonexistent.pub"], "--public-key"),
        (["verify", "-", "--checkpoint", "/nonexistent.json"], "--checkpoint"),
        (["verify", "-", "--max-gap", "0"], "--max-gap"),
        (["verify", "-", "--max-gap", "x"], "--max-gap"),
        (["checkpoint", "-"], "--out"),
    ],
)
def test_bad_arguments_are_one_line_naming_the_option_and_exit_2(
    args: list[str], field: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from streams.cli import main  # noqa: PLC0415 - the console script's error handling

    with pytest.raises(SystemExit) as exited:
        main(["audit", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert field in err
    assert "Traceback" not in err


def test_a_checkpoint_file_that_is_not_one_is_refused(tmp_path: Path) -> None:
    trail_file, _ = _files(tmp_path)
    wrong = tmp_path / "wrong.json"
    wrong.write_bytes(orjson.dumps({"checkpoints": [body(_trail()[1][0])]}))
    result = CliRunner().invoke(audit, ["verify", str(trail_file), "--checkpoint", str(wrong)])
    assert result.exit_code == 2
    assert "expected checkpoint" in result.output
