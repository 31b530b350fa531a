"""The console in a real headless Chromium against a real worker and broker.

One worker, one ``escalation console`` process and one browser for the module (the
fast test policy, with a 15 s abort window so that a click lands inside it). Each
page is photographed at 1280x800 into ``docs/screenshots/``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from harness import FAST_POLICY, DecisionReader, Feed, Identities, Reader, Worker

from streams import samples
from streams.console.auth import add_user
from streams.kafka.admin import create_topics
from streams.models import Proposal
from streams.policy.evaluate import decision_id_for
from streams.settings import Settings
from streams.testing import wait_until

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
BY_NAME = {s.name: s for s in samples.SCENARIOS}
PASSWORD = "correct horse battery"
ABORT_WINDOW = 15
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def _signed(identities: Identities) -> Iterator[Identities]:
    """The session's keys for this module's worker, console and feeds (the autouse
    fixture that sets them is per test; these fixtures live for the module)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in identities.env().items():
            patch.setenv(name, value)
        yield identities


@pytest.fixture(scope="module")
def settings(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, _signed: Identities
) -> Settings:
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        topic_prefix=f"t-console-{os.getpid()}-{time.monotonic_ns() % 10**6}.",
        data_dir=tmp_path_factory.mktemp("console"),
        store="memory://",
        metrics_port=0,
    )


@pytest.fixture(scope="module")
def worker(settings: Settings, kafka_bootstrap: str) -> Iterator[Worker]:
    create_topics(settings, kafka_bootstrap)
    policy = settings.data_dir / "policy.yaml"
    text = FAST_POLICY.read_text()
    policy.write_text(re.sub(r"abort_window_seconds: \d+", f"abort_window_seconds: {ABORT_WINDOW}",
                             text))  # fmt: skip
    w = Worker(settings, "w1", policy_file=policy, env={"ESCALATION_DEV": "1"}).start()
    try:
        w.wait_ready()
        feed = Feed(settings)
        feed.seed_samples(w)
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def console_url(settings: Settings, worker: Worker) -> Iterator[str]:
    """``escalation console`` as a user runs it, on a free port."""
    accounts = settings.data_dir / "accounts"
    for name in ("alice", "bob"):
        add_user(accounts, name, PASSWORD)
    port_file = settings.data_dir / "console.port"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
        "ESCALATION_DATA_DIR": str(settings.data_dir / "console"),
        "ESCALATION_DEV": "1",
        "ESCALATION_POLICY_FILE": str(worker.policy_file),
        "ESCALATION_CONSOLE_ACCOUNTS_FILE": str(accounts),
        # A proxy that is not us: a user header from loopback must be ignored.
        "ESCALATION_CONSOLE_TRUSTED_PROXIES": "10.255.255.1",
        "ESCALATION_CONSOLE_METRICS_PORT": "0",
    }
    log = (settings.data_dir / "console.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "console", "--port", "0", "--port-file",
         str(port_file)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert wait_until(lambda: port_file.exists() and port_file.read_text(), timeout=60), (
            settings.data_dir / "console.log"
        ).read_text()
        url = f"http://127.0.0.1:{port_file.read_text()}"
        assert wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=5).json()["ready"], timeout=90
        ), "the console never caught up with the topics"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                              args=CHROMIUM_ARGS)  # fmt: skip
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, console_url: str) -> Iterator[Any]:
    """A page signed in as alice."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=console_url)
    tab = context.new_page()
    tab.set_default_timeout(90_000)
    tab.goto("/waiting")
    assert "/login" in tab.url
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.fill("#username", "alice")
    tab.fill("#password", PASSWORD)
    tab.screenshot(path=str(SHOTS / "login.png"))
    tab.click("#sign-in")
    tab.wait_for_url(re.compile(r".*/waiting$"))
    assert tab.inner_text("#user") == "alice"
    yield tab
    context.close()


def _proposal(name: str, number: int) -> Proposal:
    return samples.proposal(BY_NAME[name], number, at=dt.datetime.now(tz=dt.UTC), tag="ui-")


def _commands(settings: Settings, decision_id: str, kind: str) -> list[dict[str, Any]]:
    with Reader(settings.bootstrap_servers or "", [settings.topic("decisions.execute")]) as r:

        def found(reader: Reader) -> list[dict[str, Any]]:
            return [
                v for v in reader.values()
                if v.get("type") == kind and v.get("decision_id") == decision_id
            ]  # fmt: skip

        assert r.wait(lambda reader: bool(found(reader)), timeout=90), f"no {kind} command"
        return found(r)


def _audit(settings: Settings, decision_id: str, until_kind: str) -> list[dict[str, Any]]:
    """The audit bodies of one decision, by time, once one of kind ``until_kind`` is there."""
    with Reader(settings.bootstrap_servers or "", [settings.topic("audit")]) as r:

        def bodies(reader: Reader) -> list[dict[str, Any]]:
            mine = [v["event"] for v in reader.values() if v["event"]["decision_id"] == decision_id]
            return sorted(mine, key=lambda b: (b["at"], b["chain"], b["seq"]))

        assert r.wait(lambda reader: any(b["kind"] == until_kind for b in bodies(reader)),
                      timeout=90), f"no {until_kind} audit event for {decision_id}"  # fmt: skip
        return bodies(r)


def test_requests_without_sign_in_are_refused(console_url: str) -> None:
    """A page redirects to sign-in, a fragment or a form post gets 401, and a user header
    from an address that is not the trusted proxy changes nothing."""
    with httpx.Client(base_url=console_url, timeout=10) as client:
        page = client.get("/waiting", headers={"accept": "text/html"})
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login")
        for path in ("/waiting/list", "/decisions/feed", "/fleet", "/trends"):
            assert client.get(path).status_code == 401, path
        posted = client.post("/decisions/d-x/answer", data={"kind": "approve", "csrf": "x"})
        assert posted.status_code == 401
        forged = client.get("/fleet", headers={"X-Forwarded-User": "alice"})
        assert forged.status_code == 401
        wrong = client.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', wrong.text)
        assert token is not None
        refused = client.post(
            "/login", data={"username": "alice", "password": "wrong password", "csrf": token[1]}
        )
        assert refused.status_code == 401
        assert client.get("/fleet").status_code == 401


def test_a_level_2_decision_appears_live_and_is_approved(
    page: Any, settings: Settings, worker: Worker
) -> None:
    """The Waiting page shows a new approval without a reload; Approve sends a signed answer
    the gate accepts: an execute command by alice, and the decision's timeline shows it."""
    page.goto("/waiting")
    page.evaluate("window.__not_reloaded = true")
    proposal = _proposal("wide-blast", 1)
    decision_id = decision_id_for(proposal)
    Feed(settings).proposals([proposal])
    card = page.locator(f"#w-{decision_id}")
    card.wait_for()
    assert page.evaluate("window.__not_reloaded") is True
    assert "L2" in card.inner_text()
    assert "replica_fraction" in card.inner_text()  # the conditions table is there
    page.wait_for_function(  # the countdown is running
        f"document.querySelector('#w-{decision_id} .countdown').textContent.length > 0"
    )
    page.screenshot(path=str(SHOTS / "waiting.png"))
    card.locator("button[data-action=approve]").click()
    page.locator(f"#actions-{decision_id}[data-sent=approve]").wait_for()
    (command,) = _commands(settings, decision_id, "execute")
    assert command["by"] == "alice"
    page.goto(f"/decisions/{decision_id}")
    page.locator("#timeline .step[data-kind=execute_command]").wait_for()
    page.locator("#timeline .step[data-kind=approval_accepted]").wait_for()
    assert page.inner_text("#status") == "approved"
    assert page.inner_text("#chain") == "Audit chain verifies"
    page.screenshot(path=str(SHOTS / "decision.png"))
    bodies = _audit(settings, decision_id, "execute_command")
    accepted = next(b for b in bodies if b["kind"] == "approval_accepted")
    assert accepted["actor"] == "alice"
    assert accepted["data"]["channel"] == "console"


def test_a_regulated_approval_carries_its_change_record(page: Any, settings: Settings) -> None:
    """A PCI-DSS action asks for a change record; the browser will not submit without one,
    and the execute command names the record typed in."""
    proposal = _proposal("payments", 6)
    decision_id = decision_id_for(proposal)
    Feed(settings).proposals([proposal])
    page.goto("/waiting")
    card = page.locator(f"#w-{decision_id}")
    card.wait_for()
    assert "change record required" in card.inner_text()
    card.locator("button[data-action=approve]").click()  # the field is required: not sent
    assert card.locator("input[name=change_record]").evaluate("e => !e.validity.valid")
    card.locator("input[name=change_record]").fill("CHG-20261201-7")
    card.locator("button[data-action=approve]").click()
    page.locator(f"#actions-{decision_id}[data-sent=approve]").wait_for()
    (command,) = _commands(settings, decision_id, "execute")
    assert (command["by"], command["change_record"]) == ("alice", "CHG-20261201-7")


def test_abort_inside_the_window_and_after_it(page: Any, settings: Settings) -> None:
    """An abort clicked inside the window produces an abort command; one sent after the
    window closed is refused by the gate (audited), and the timeline says so."""
    inside, late = _proposal("deadlock-statefulset", 2), _proposal("deadlock-statefulset", 3)
    Feed(settings).proposals([inside, late])
    inside_id, late_id = decision_id_for(inside), decision_id_for(late)
    page.goto("/waiting")
    card = page.locator(f"#w-{inside_id}")
    card.wait_for()
    assert "abort window" in card.inner_text()
    card.locator("button[data-action=abort]").click()
    page.locator(f"#actions-{inside_id}[data-sent=abort]").wait_for()
    (command,) = _commands(settings, inside_id, "abort")
    assert command["by"] == "alice"

    with DecisionReader(settings) as reader:
        decision = reader.wait_for([late.proposal_id])[late.proposal_id]
    ends = dt.datetime.fromisoformat(decision["abort_window_ends_at"]).timestamp()
    assert wait_until(lambda: time.time() > ends + 1, timeout=ABORT_WINDOW + 30)
    page.goto(f"/decisions/{late_id}")
    assert page.locator("button[data-action=abort]").count() == 0  # the window is shut here
    token = page.get_attribute('meta[name="csrf-token"]', "content")
    sent = page.request.post(
        f"/decisions/{late_id}/answer", form={"kind": "abort", "csrf": token}, max_redirects=0
    )
    assert sent.status == 303
    bodies = _audit(settings, late_id, "answer_refused")
    refused = next(b for b in bodies if b["kind"] == "answer_refused")
    assert refused["data"]["reason"] == "abort_window_closed"
    assert not [b for b in bodies if b["kind"] in {"abort", "execute_command"}]
    page.locator("#timeline .step[data-kind=answer_refused]").wait_for()
    assert "abort_window_closed" in page.inner_text("#timeline")


def test_a_form_post_without_the_csrf_token_is_refused(page: Any, settings: Settings) -> None:
    """Signed in, a post without the token (or with a wrong one) gets 403 and sends nothing:
    the approvals topic holds only the later, valid answer for that decision."""
    proposal = _proposal("wide-blast", 4)
    decision_id = decision_id_for(proposal)
    Feed(settings).proposals([proposal])
    page.goto("/waiting")
    page.locator(f"#w-{decision_id}").wait_for()
    url = f"/decisions/{decision_id}/answer"
    for form in ({"kind": "approve"}, {"kind": "approve", "csrf": "not-the-token"}):
        refused = page.request.post(url, form=form, max_redirects=0)
        assert refused.status == 403
        assert "csrf" in refused.text()
    assert page.request.post("/fleet/freeze", form={"command": "freeze"}).status == 403
    token = page.get_attribute('meta[name="csrf-token"]', "content")
    bad = page.request.post(url, form={"kind": "bogus", "csrf": token}, max_redirects=0)
    assert bad.status == 400
    assert bad.text().startswith("kind:")
    long_reason = page.request.post(
        url, form={"kind": "reject", "reason": "x" * 5000, "csrf": token}, max_redirects=0
    )
    assert long_reason.status == 400
    assert long_reason.text().startswith("reason:")
    # The marker: a valid rejection, after which nothing else may be on the topic for it.
    page.locator(f"#w-{decision_id} button[data-action=reject_fp]").click()
    page.locator(f"#actions-{decision_id}[data-sent=reject_fp]").wait_for()
    with Reader(settings.bootstrap_servers or "", [settings.topic("approvals")]) as r:
        assert r.wait(lambda reader: any(v["decision_id"] == decision_id for v in reader.values()))
        r.drain(1.0)
        answers = [v for v in r.values() if v["decision_id"] == decision_id]
    assert [(a["kind"], a["false_positive"], a["user"]) for a in answers] == [
        ("reject", True, "alice")
    ]


def test_fleet_freeze_and_unfreeze_through_control(page: Any, settings: Settings) -> None:
    """Freeze on the Fleet page is a command on ``control``; the state the worker folds
    from it comes back as 'frozen', and Unfreeze lifts it."""
    page.goto("/fleet")
    row = page.locator("tr.service-row[data-service=search-api]")
    row.wait_for()
    # The form posts and redirects back to /fleet: wait for that navigation to finish,
    # or a reload below races it ("Not attached to an active page").
    with page.expect_navigation(url=re.compile(r".*/fleet$")):
        row.locator("button[data-freeze=search-api]").click()

    def frozen() -> bool:
        page.reload()
        return (
            "frozen by alice"
            in page.locator("tr.service-row[data-service=search-api]").inner_text()
        )

    assert wait_until(frozen, timeout=90)
    assert "v1.3" in page.inner_text("#policy")
    page.screenshot(path=str(SHOTS / "fleet.png"))
    with page.expect_navigation(url=re.compile(r".*/fleet$")):
        page.locator(
            "tr.service-row[data-service=search-api] button[data-freeze=search-api]"
        ).click()
    assert wait_until(lambda: not frozen(), timeout=90)
    with Reader(settings.bootstrap_servers or "", [settings.topic("control")]) as r:
        r.wait(lambda reader: sum(v.get("service") == "search-api" for v in reader.values()) >= 2)
        commands = [
            (v["command"], v["user"]) for v in r.values() if v.get("service") == "search-api"
        ]
    assert commands == [("freeze", "alice"), ("unfreeze", "alice")]


def test_decisions_feed_filters_and_trends(page: Any, settings: Settings) -> None:
    """The feed filters by level and finds a decision by its proposal id; Trends draws SVG."""
    proposal = _proposal("novel", 5)
    Feed(settings).proposals([proposal])
    decision_id = decision_id_for(proposal)
    page.goto("/decisions?level=1")
    page.locator(f"tr.feed-row[data-decision={decision_id}]").wait_for()
    levels = page.eval_on_selector_all("tr.feed-row", "rows => rows.map(r => r.dataset.level)")
    assert set(levels) == {"1"}
    page.goto("/decisions")
    page.locator("tr.feed-row").first.wait_for()
    page.screenshot(path=str(SHOTS / "decisions.png"))
    page.fill("#search", proposal.proposal_id)
    page.press("#search", "Enter")
    page.wait_for_url(re.compile(f".*/decisions/{decision_id}$"))
    page.goto("/trends?hours=1")
    assert page.locator("#chart-levels svg rect").count() >= 1
    page.screenshot(path=str(SHOTS / "trends.png"))
    body = orjson.loads(page.request.get("/healthz").body())
    assert body == {"ready": True}
