"""The console's HTTP surface without a broker: sign-in, CSRF, bad fields, every page.

Writes go to a recording publisher (the real one, on the real broker, is exercised by
tests/integration/test_console.py).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from streams.console.app import Console, create_app
from streams.console.auth import Accounts, Auth, add_user
from streams.console.sample import Chains
from streams.console.view import ConsoleView
from streams.files import read_policy
from streams.settings import Settings
from streams.state.records import judged_update

FAST = Path(__file__).resolve().parents[1] / "fixtures" / "fast-policy.yaml"
PASSWORD = "correct horse battery"
PAGES = ("/waiting", "/waiting/list", "/decisions", "/decisions/feed", "/fleet", "/trends")


class Recorder:
    """Stands in for the Kafka publisher: keeps what would have been sent."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def answer(self, answer: Any) -> Any:
        self.sent.append(answer)
        return answer

    def control(self, command: Any) -> None:
        self.sent.append(command)


@pytest.fixture
def console(tmp_path: Path) -> Console:
    add_user(tmp_path / "accounts", "alice", PASSWORD)
    policy = read_policy(FAST)
    view = ConsoleView()
    chains = Chains(policy)
    now = dt.datetime.now(tz=dt.UTC)
    for n, scenario in enumerate(("wide-blast", "deadlock-statefulset", "payments")):
        for record in chains.decide(scenario, n, now)[1]:
            view.apply_audit(record)
    console = Console(
        settings=Settings(data_dir=tmp_path),
        view=view,
        auth=Auth.of(Accounts.load(tmp_path / "accounts"), "testclient", "X-Forwarded-User"),
        policy=policy,
    )
    console.publisher = Recorder()  # type: ignore[assignment]
    return console


def _token(client: TestClient) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert found
    return found[1]


@pytest.fixture
def client(console: Console) -> TestClient:
    client = TestClient(create_app(console), follow_redirects=False)
    signed = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf": _token(client)}
    )
    assert signed.status_code == 303
    return client


def _csrf(client: TestClient) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/waiting").text)
    assert found
    return found[1]


def _refused(console: Console, reason: str) -> float:
    value = console.metrics.registry.get_sample_value(
        "escalation_console_requests_refused_total", {"reason": reason}
    )
    return value or 0.0


def _waiting_id(console: Console, level: int) -> str:
    return next(i.decision_id for i in console.view.waiting(console.clock()) if i.level == level)


def test_nothing_is_served_without_sign_in(console: Console) -> None:
    client = TestClient(create_app(console), follow_redirects=False)
    page = client.get("/waiting", headers={"accept": "text/html"})
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Fwaiting"
    for path in PAGES:
        assert client.get(path).status_code == 401, path
    assert client.post("/fleet/freeze", data={"command": "freeze"}).status_code == 401
    assert console.publisher.sent == []  # type: ignore[union-attr]
    assert _refused(console, "unauthenticated") == len(PAGES) + 2


def test_every_page_renders_for_a_signed_in_person(client: TestClient, console: Console) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    decision_id = _waiting_id(console, 2)
    page = client.get(f"/decisions/{decision_id}")
    assert page.status_code == 200
    assert "Audit chain verifies" in page.text
    conditions = client.get(f"/decisions/{decision_id}/conditions")
    assert conditions.status_code == 200
    assert "replica_fraction" in conditions.text
    assert client.get("/decisions/d-unknown").status_code == 404
    assert "<svg" in client.get("/trends").text


def test_a_wrong_password_and_missing_fields_are_refused(console: Console) -> None:
    client = TestClient(create_app(console), follow_redirects=False)
    token = _token(client)
    wrong = client.post("/login", data={"username": "alice", "password": "nope", "csrf": token})
    assert wrong.status_code == 401
    unknown = client.post("/login", data={"username": "mallory", "password": "x", "csrf": token})
    assert unknown.status_code == 401
    missing = client.post("/login", data={"username": "alice", "csrf": token})
    assert missing.status_code == 400
    assert missing.text.startswith("password: field required")
    no_token = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert no_token.status_code == 403
    assert client.get("/fleet").status_code == 401
    assert _refused(console, "bad_password") == 2


def test_posts_without_the_csrf_token_are_refused(client: TestClient, console: Console) -> None:
    decision_id = _waiting_id(console, 2)
    for data in ({"kind": "approve"}, {"kind": "approve", "csrf": "forged"}):
        refused = client.post(f"/decisions/{decision_id}/answer", data=data)
        assert refused.status_code == 403
        assert refused.text.startswith("csrf:")
    assert client.post("/fleet/freeze", data={"command": "freeze"}).status_code == 403
    assert client.post("/logout").status_code == 403
    assert console.publisher.sent == []  # type: ignore[union-attr]
    assert _refused(console, "csrf") == 4


def test_an_answer_names_the_signed_in_person_and_the_console_channel(
    client: TestClient, console: Console
) -> None:
    decision_id = _waiting_id(console, 2)
    token = _csrf(client)
    sent = client.post(
        f"/decisions/{decision_id}/answer",
        data={"kind": "reject_fp", "csrf": token, "reason": "not a leak"},
        headers={"HX-Request": "true"},
    )
    assert sent.status_code == 200
    assert 'data-sent="reject_fp"' in sent.text
    (answer,) = console.publisher.sent  # type: ignore[union-attr]
    assert (answer.kind, answer.user, answer.channel) == ("reject", "alice", "console")
    assert answer.false_positive
    assert answer.reason == "not a leak"
    assert answer.expires_at > answer.issued_at
    sent = console.metrics.registry.get_sample_value(
        "escalation_console_messages_sent_total", {"kind": "reject_fp"}
    )
    assert sent == 1


def test_bad_form_fields_get_a_4xx_naming_the_field(client: TestClient, console: Console) -> None:
    decision_id = _waiting_id(console, 2)
    token = _csrf(client)
    url = f"/decisions/{decision_id}/answer"
    cases = {
        "kind:": {"kind": "launch", "csrf": token},
        "reason:": {"kind": "reject", "reason": "x" * 5000, "csrf": token},
        "change_record:": {"kind": "approve", "change_record": "c" * 300, "csrf": token},
    }
    for field, data in cases.items():
        response = client.post(url, data=data)
        assert response.status_code == 400, field
        assert response.text.startswith(field), response.text
    freeze = client.post("/fleet/freeze", data={"command": "melt", "csrf": token})
    assert freeze.status_code == 400
    assert freeze.text.startswith("command:")
    assert client.get("/decisions?level=7").text.startswith("level:")
    assert client.get("/trends?hours=99").status_code == 400
    assert client.get("/waiting?limit=x").text.startswith("limit:")
    assert console.publisher.sent == []  # type: ignore[union-attr]


def test_freeze_sends_a_control_command_from_the_person(
    client: TestClient, console: Console
) -> None:
    response = client.post(
        "/fleet/freeze",
        data={
            "command": "freeze",
            "service": "search-api",
            "reason": "incident",
            "csrf": _csrf(client),
        },
    )
    assert response.status_code == 303
    (command,) = console.publisher.sent  # type: ignore[union-attr]
    assert (command.command, command.service, command.user) == ("freeze", "search-api", "alice")


def test_the_proxy_header_counts_only_from_the_trusted_proxy(console: Console) -> None:
    trusted = TestClient(create_app(console), follow_redirects=False)  # client host "testclient"
    page = trusted.get("/fleet", headers={"X-Forwarded-User": "bob"})
    assert page.status_code == 200
    assert ">bob<" in page.text
    assert trusted.get("/fleet", headers={"X-Forwarded-User": "bad name!"}).status_code == 401
    console.auth = Auth.of(console.auth.accounts, "10.0.0.1", "X-Forwarded-User")
    untrusted = TestClient(create_app(console), follow_redirects=False)
    assert untrusted.get("/fleet", headers={"X-Forwarded-User": "bob"}).status_code == 401


def test_sign_in_redirects_only_to_this_site(console: Console) -> None:
    client = TestClient(create_app(console), follow_redirects=False)
    token = _token(client)
    for target, expected in (("/fleet", "/fleet"), ("//evil.example/x", "/waiting"),
                             ("https://evil.example", "/waiting")):  # fmt: skip
        client.cookies.clear()
        token = _token(client)
        response = client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf": token, "next": target},
        )
        assert response.headers["location"] == expected


def test_without_kafka_a_change_is_refused_not_lost(client: TestClient, console: Console) -> None:
    console.publisher = None
    response = client.post(
        f"/decisions/{_waiting_id(console, 3)}/answer",
        data={"kind": "abort", "csrf": _csrf(client)},
    )
    assert response.status_code == 503


def test_the_fleet_page_draws_each_ai_systems_reliability_diagram(
    client: TestClient, console: Console
) -> None:
    """Judged proposals folded from ``state`` (outcomes, false-positive rejections) give
    one reliability diagram per AI system and model, with its calibration error."""
    assert "No judged proposals yet" in client.get("/fleet").text
    for n in range(30):  # 0.93 reported, right 18 times of 30
        update = judged_update(
            "holmesgpt", "llama3.1", confidence=0.93, right=n < 18, update_id=f"j-{n}"
        )
        console.view.apply_state(update.record())
    page = client.get("/fleet").text
    assert "holmesgpt|llama3.1</strong>: 30 judged" in page
    assert 'aria-label="reliability of holmesgpt|llama3.1"' in page
    assert "60% right of 30" in page  # the bin of 0.9-1.0
    assert "ECE 0.330" in page
