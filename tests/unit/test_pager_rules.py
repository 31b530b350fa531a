"""The pager's pure rules (streams/oncall/pages.py): what each oncall record posts."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams import keys
from streams.cli import main
from streams.errors import InputError
from streams.models import OncallEscalation, OncallResolution, encode
from streams.oncall import pages
from streams.oncall.pages import Book, PagerConfig, PagerDutyEvent, PostAlerts

T0 = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
CONFIG = PagerConfig(
    console_url="https://gate.example.com/",
    repost=dt.timedelta(seconds=60),
    max_open=dt.timedelta(days=7),
    event_hold=dt.timedelta(hours=1),
)


def escalation(number: int = 1, **overrides: Any) -> OncallEscalation:
    fields: dict[str, Any] = {
        "escalation_id": f"d-1:timeout:{number}",
        "decision_id": "d-1",
        "proposal_id": "p-1",
        "reason": "approval_timeout",
        "escalation_number": number,
        "target": ("sre-oncall-primary", "sre-oncall-secondary", "sre-manager")[number - 1],
        "level": 2,
        "asked": ("alice", "bob"),
        "service": "checkout-api",
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
        "summary": "no answer to approval of rolling_restart on checkout-api",
        "at": T0 + dt.timedelta(minutes=10 * number),
        **overrides,
    }
    return OncallEscalation(**fields)


def resolution(escalations: int = 2, **overrides: Any) -> OncallResolution:
    fields: dict[str, Any] = {
        "resolution_id": "d-1:resolved",
        "decision_id": "d-1",
        "proposal_id": "p-1",
        "service": "checkout-api",
        "escalations": escalations,
        "answer": "approve",
        "by": "alice",
        "at": T0 + dt.timedelta(minutes=25),
        **overrides,
    }
    return OncallResolution(**fields)


def posted(effects: tuple[pages.Effect, ...]) -> list[dict[str, Any]]:
    return [a for e in effects if isinstance(e, PostAlerts) for a in e.alerts]


def pd(effects: tuple[pages.Effect, ...]) -> list[PagerDutyEvent]:
    return [e for e in effects if isinstance(e, PagerDutyEvent)]


def opened(*escalations: OncallEscalation) -> Book:
    book = Book()
    for esc in escalations:
        book = pages.on_escalation(book, esc, esc.at, CONFIG).book
    return book


# ------------------------------------------------------------------ an escalation


def test_an_escalation_posts_one_alert_and_triggers_one_incident() -> None:
    esc = escalation(1)

    out = pages.on_escalation(Book(), esc, esc.at, CONFIG)

    (alert,) = posted(out.effects)
    (event,) = pd(out.effects)
    assert alert["labels"] == {
        "alertname": "EscalationApprovalTimeout",
        "service": "checkout-api",
        "reason": "approval_timeout",
        "level": "2",
        "escalation": "sre-oncall-primary",
        "escalation_number": "1",
        "decision_id": "d-1",
    }
    assert alert["startsAt"] == "2026-11-28T10:10:00Z"
    assert alert["endsAt"] == "2026-11-28T10:14:00Z"  # four reposts ahead
    assert "escalation approve d-1 --as USER" in alert["annotations"]["description"]
    assert alert["annotations"]["console"] == "https://gate.example.com/decisions/d-1"
    assert alert["generatorURL"] == "https://gate.example.com/decisions/d-1"
    assert (event.action, event.dedup_key, event.target) == (
        "trigger",
        "d-1:timeout:1",
        "sre-oncall-primary",
    )
    assert event.summary.startswith("[sre-oncall-primary] no answer")
    assert event.severity == "error"
    assert event.source == "checkout-api"
    assert event.custom_details["escalation_number"] == 1
    assert event.links == (
        {"href": "https://gate.example.com/decisions/d-1", "text": "Escalation Gate console"},
    )
    assert [p.dedup_key for p in out.book.pages()] == ["d-1:timeout:1"]


@pytest.mark.parametrize(
    ("overrides", "label", "expected"),
    [
        ({"target": None}, "escalation", "oncall"),
        ({"level": None}, "level", "2"),
        (
            {"reason": "verification_failed", "level": None, "escalation_id": "d-1:verification"},
            "level",
            "unknown",
        ),
        ({"reason": "verification_failed", "level": 4}, "level", "4"),
        ({"reason": "verification_failed"}, "alertname", "EscalationVerificationFailed"),
        ({"escalation_number": 3, "target": "sre-manager"}, "escalation", "sre-manager"),
    ],
)
def test_labels_of_the_alert(overrides: dict[str, Any], label: str, expected: str) -> None:
    esc = escalation(1, **overrides)

    (alert,) = posted(pages.on_escalation(Book(), esc, esc.at, CONFIG).effects)

    assert alert["labels"][label] == expected


def test_a_failed_verification_is_critical_and_says_how_to_requalify() -> None:
    esc = escalation(1, reason="verification_failed", escalation_id="d-1:verification", level=4)

    out = pages.on_escalation(Book(), esc, esc.at, CONFIG)

    (event,) = pd(out.effects)
    assert event.severity == "critical"
    assert "escalation requalify" in posted(out.effects)[0]["annotations"]["description"]


def test_without_a_console_url_no_link_is_sent() -> None:
    esc = escalation(1)
    config = PagerConfig()

    out = pages.on_escalation(Book(), esc, esc.at, config)

    assert "generatorURL" not in posted(out.effects)[0]
    assert "console" not in posted(out.effects)[0]["annotations"]
    assert pd(out.effects)[0].links == ()


def test_a_redelivered_escalation_posts_again_but_is_held_once() -> None:
    esc = escalation(1)
    book = opened(esc)

    out = pages.on_escalation(book, esc, esc.at, CONFIG)

    assert len(posted(out.effects)) == 1
    assert len(pd(out.effects)) == 1
    assert len(out.book.pages()) == 1


def test_the_chain_walked_holds_one_page_per_escalation() -> None:
    book = opened(escalation(1), escalation(2), escalation(3))

    assert [p.target for p in book.pages()] == [
        "sre-oncall-primary",
        "sre-oncall-secondary",
        "sre-manager",
    ]


def test_a_long_summary_is_cut_to_what_pagerduty_accepts() -> None:
    esc = escalation(1, summary="x" * 4000)

    (event,) = pd(pages.on_escalation(Book(), esc, esc.at, CONFIG).effects)

    assert len(event.summary) == 1024


def test_an_unverified_escalation_is_paged_and_says_so() -> None:
    esc = escalation(1)

    out = pages.on_escalation(Book(), esc, esc.at, CONFIG, unverified="bad_signature")

    (alert,) = posted(out.effects)
    (event,) = pd(out.effects)
    assert alert["annotations"]["unverified"].endswith(": bad_signature")
    assert event.custom_details["unverified"] == "bad_signature"
    (again,) = posted(pages.keepalive(out.book, esc.at, CONFIG).effects)
    assert again["annotations"]["unverified"] == alert["annotations"]["unverified"]


# ------------------------------------------------------------------ a resolution


def test_a_resolution_ends_every_alert_and_resolves_every_incident_of_the_decision() -> None:
    book = opened(escalation(1), escalation(2))
    other = escalation(1, decision_id="d-2", escalation_id="d-2:timeout:1")
    book = pages.on_escalation(book, other, other.at, CONFIG).book
    now = T0 + dt.timedelta(minutes=26)

    out = pages.on_resolution(book, resolution(2), now, CONFIG)

    alerts = posted(out.effects)
    assert [a["labels"]["escalation"] for a in alerts] == [
        "sre-oncall-primary",
        "sre-oncall-secondary",
    ]
    assert {a["endsAt"] for a in alerts} == {"2026-11-28T10:26:00Z"}
    assert sorted((e.action, e.dedup_key) for e in pd(out.effects)) == [
        ("resolve", "d-1:timeout:1"),
        ("resolve", "d-1:timeout:2"),
    ]
    assert [p.escalation.decision_id for p in out.book.pages()] == ["d-2"]
    assert "d-1" in out.book.resolved


def test_a_resolution_of_pages_never_seen_still_resolves_their_incidents() -> None:
    out = pages.on_resolution(Book(), resolution(3), T0 + dt.timedelta(minutes=40), CONFIG)

    assert posted(out.effects) == []
    assert sorted(e.dedup_key for e in pd(out.effects)) == [
        "d-1:timeout:1",
        "d-1:timeout:2",
        "d-1:timeout:3",
    ]


def test_an_escalation_raised_before_the_answer_but_read_after_it_pages_nobody() -> None:
    book = pages.on_resolution(
        opened(escalation(1)), resolution(1), T0 + dt.timedelta(minutes=25), CONFIG
    ).book
    late = escalation(2, at=T0 + dt.timedelta(minutes=20))

    out = pages.on_escalation(book, late, T0 + dt.timedelta(minutes=30), CONFIG)

    assert out.effects == ()
    assert out.note
    assert out.book.pages() == ()


def test_a_new_escalation_after_a_resolution_pages_again() -> None:
    """A decision escalated again after its answer is a new page (e.g. a failed verification)."""
    book = pages.on_resolution(
        opened(escalation(1)), resolution(1), T0 + dt.timedelta(minutes=25), CONFIG
    ).book
    later = escalation(
        1,
        reason="verification_failed",
        escalation_id="d-1:verification",
        at=T0 + dt.timedelta(hours=1),
    )

    out = pages.on_escalation(book, later, later.at, CONFIG)

    assert len(pd(out.effects)) == 1


# ------------------------------------------------------------------ keep-alive


@pytest.mark.parametrize(
    ("reason", "age", "kept", "ends_in"),
    [
        ("approval_timeout", dt.timedelta(minutes=5), True, dt.timedelta(minutes=4)),
        (
            "approval_timeout",
            dt.timedelta(days=6, hours=23, minutes=58),
            True,
            dt.timedelta(minutes=2),
        ),
        ("approval_timeout", dt.timedelta(days=7), False, None),
        ("verification_failed", dt.timedelta(minutes=30), True, dt.timedelta(minutes=4)),
        ("verification_failed", dt.timedelta(minutes=59), True, dt.timedelta(minutes=1)),
        ("verification_failed", dt.timedelta(hours=1), False, None),
    ],
)
def test_keepalive_reposts_open_alerts_until_they_expire(
    reason: str, age: dt.timedelta, kept: bool, ends_in: dt.timedelta | None
) -> None:
    esc = escalation(1, reason=reason)
    now = esc.at + age

    out = pages.keepalive(opened(esc), now, CONFIG)

    alerts = posted(out.effects)
    assert bool(alerts) is kept
    assert bool(out.book.pages()) is kept
    if ends_in is not None:
        assert alerts[0]["endsAt"] == pages._iso(now + ends_in)
    assert pd(out.effects) == []  # incidents are triggered once, never re-triggered


def test_keepalive_of_an_empty_book_posts_nothing() -> None:
    assert pages.keepalive(Book(), T0, CONFIG).effects == ()


def test_keepalive_forgets_resolved_decisions_after_the_open_horizon() -> None:
    book = pages.on_resolution(Book(), resolution(1), T0, CONFIG).book

    assert "d-1" in pages.keepalive(book, T0 + dt.timedelta(days=6), CONFIG).book.resolved
    assert "d-1" not in pages.keepalive(book, T0 + dt.timedelta(days=8), CONFIG).book.resolved


def test_revoked_partitions_leave_the_book() -> None:
    esc = escalation(1)
    other = escalation(1, decision_id="d-2", escalation_id="d-2:timeout:1")
    book = pages.on_escalation(Book(), esc, esc.at, CONFIG, partition=0).book
    book = pages.on_escalation(book, other, other.at, CONFIG, partition=3).book

    assert [p.escalation.decision_id for p in pages.revoke(book, {3}).pages()] == ["d-1"]


# ------------------------------------------------------------------ records


def test_records_are_told_apart_by_type() -> None:
    assert isinstance(pages.read_record(encode(escalation(1))), OncallEscalation)
    assert isinstance(pages.read_record(encode(resolution(1))), OncallResolution)
    signed = {**orjson.loads(encode(resolution(1))), "signature": {"alg": "ed25519"}}
    assert isinstance(pages.read_record(orjson.dumps(signed)), OncallResolution)
    legacy = orjson.loads(encode(escalation(1)))
    del legacy["type"], legacy["target"], legacy["level"]  # a gate before the chain
    assert pages.read_record(orjson.dumps(legacy)).target is None


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"not json", ""),
        (b'{"type": "resolved", "decision_id": "d-1"}', "resolution_id"),
        (b'{"type": "escalation", "decision_id": "d-1"}', "escalation_id"),
        (orjson.dumps({**orjson.loads(encode(resolution(1))), "escalations": 0}), "escalations"),
    ],
)
def test_an_invalid_record_is_an_input_error_naming_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InputError) as caught:
        pages.read_record(raw)

    assert field in str(caught.value)


def test_the_rules_import_no_http_client_kafka_client_or_metrics() -> None:
    """pages.py is pure: imported alone, it loads none of the shell's libraries."""
    forbidden = ("httpx2", "pagerduty", "confluent_kafka", "prometheus_client", "faust")
    code = (
        "import json, sys\n"
        "import streams.oncall.pages\n"
        f"print(json.dumps([m for m in {forbidden!r} if m in sys.modules]))\n"
    )
    probe = "import json, sys\nimport pagerduty\nprint(json.dumps(['pagerduty' in sys.modules]))"
    for source, expected in ((code, []), (probe, [True])):
        result = subprocess.run(
            [sys.executable, "-c", source], capture_output=True, text=True, check=True, timeout=60
        )
        assert orjson.loads(result.stdout) == expected


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "ESCALATION_ALERTMANAGER_URL"),
        ({"ESCALATION_ALERTMANAGER_URL": "127.0.0.1:9093"}, "ESCALATION_ALERTMANAGER_URL"),
        (
            {"ESCALATION_PAGERDUTY_ROUTING_KEY": "k" * 32, "ESCALATION_PAGERDUTY_URL": "http://x"},
            "ESCALATION_PAGERDUTY_URL",
        ),
        (
            {"ESCALATION_PAGERDUTY_ROUTING_KEY": "k" * 32, "ESCALATION_PAGERDUTY_CA_FILE": "/nope"},
            "ESCALATION_PAGERDUTY_CA_FILE",
        ),
    ],
)
def test_the_pager_command_refuses_settings_that_cannot_page_in_one_line(
    env: dict[str, str], field: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for name in ("ESCALATION_ALERTMANAGER_URL", "ESCALATION_PAGERDUTY_ROUTING_KEY",
                 "ESCALATION_PAGERDUTY_ROUTING_KEYS", "ESCALATION_PAGERDUTY_URL",
                 "ESCALATION_PAGERDUTY_CA_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as exited:
        main(["pager", "--check"])

    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"escalation: error: {field}: ")


def test_the_pager_command_checks_and_prints_what_it_pages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ESCALATION_ALERTMANAGER_URL", "http://127.0.0.1:9093")
    monkeypatch.setenv("ESCALATION_PAGERDUTY_ROUTING_KEYS", '{"sre-manager": "secret-key"}')
    for name in ("ESCALATION_PAGERDUTY_ROUTING_KEY", "ESCALATION_GATE_PUBLIC_KEYS",
                 "ESCALATION_GATE_KEY_FILE", "ESCALATION_DEV"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)

    main(["pager", "--check"])

    out = capsys.readouterr().out
    assert "alertmanager: http://127.0.0.1:9093" in out
    assert "own routing keys: sre-manager; others: nothing" in out
    assert "secret-key" not in out
    assert "resolutions: NOT checked" in out


def test_with_the_gates_public_key_the_pager_checks_resolutions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key = tmp_path / "gate.key"
    keys.write_private(keys.generate("escalation-gate"), key)
    monkeypatch.setenv("ESCALATION_ALERTMANAGER_URL", "http://127.0.0.1:9093")
    monkeypatch.setenv("ESCALATION_GATE_PUBLIC_KEYS", orjson.dumps([str(key) + ".pub"]).decode())

    main(["pager", "--check"])

    assert "resolutions: checked against the gate's public keys" in capsys.readouterr().out
