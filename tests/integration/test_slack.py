"""Slack approvals end to end: the real broker, a gate worker, the ``escalation slack``
service (a child process, as deployed) and the local Slack stand-in
(tests/slack_api.py) that the service's slack_sdk WebClient talks to. Clicks are
``block_actions`` and ``view_submission`` requests signed as Slack signs them.

One worker, one Slack service and one seeding for the module (each test uses its
own proposals), to keep the suite's broker time small.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import DecisionReader, Feed, Identities, Reader, Worker
from prometheus_client.parser import text_string_to_metric_families

from streams import samples
from streams.kafka.admin import create_topics
from streams.models import Proposal
from streams.policy import decision_id_for
from streams.settings import Settings
from streams.slack import blocks
from streams.testing import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import slack_api

BY_NAME = {s.name: s for s in samples.SCENARIOS}
FAST_POLICY = Path(__file__).resolve().parents[1] / "fixtures" / "fast-policy.yaml"
APPROVALS = "C0TESTAPPR"
PAYMENTS = "C0TESTPAYM"
ALICE, BOB, CAROL, NOBODY = "U0TALICE1", "U0TBOB002", "U0TCAROL3", "U0TNOBODY"
USERS_YAML = f"""
users:
  {ALICE}: alice
  {BOB}: bob
  {CAROL}: carol
"""
CHANNELS_YAML = f"""
default: {APPROVALS}
services:
  payments-api: {PAYMENTS}
"""


QUORUM = """  quorums:
    - name: two-person-wide-blast
      approvers: 2
      replica_fraction_above: 0.5
"""


def quorum_policy(directory: Path) -> Path:
    """The fast test policy with a two-person rule for more than half of the replicas."""
    text = FAST_POLICY.read_text()
    anchor = "  answer_max_age_seconds:"
    assert text.count(anchor) == 1
    path = directory / "slack-policy.yaml"
    path.write_text(text.replace(anchor, QUORUM + anchor))
    return path


class SlackService:
    """``escalation slack`` as a child process, pointed at the stand-in."""

    def __init__(
        self,
        settings: Settings,
        api: slack_api.SlackWebAPI,
        data_dir: Path,
        policy: Path,
        identity: dict[str, str],
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "users.yaml").write_text(USERS_YAML)
        (data_dir / "channels.yaml").write_text(CHANNELS_YAML)
        self.port_file = data_dir / "slack.port"
        env = {
            **os.environ,
            # The session's keyring and the Slack bridge's key (a channel of the keyring).
            **identity,
            "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
            "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
            "ESCALATION_DATA_DIR": str(data_dir),
            "ESCALATION_POLICY_FILE": str(policy),
            "ESCALATION_TICK_SECONDS": "0.2",
            "ESCALATION_SLACK_BOT_TOKEN": slack_api.TOKEN,
            "ESCALATION_SLACK_SIGNING_SECRET": slack_api.SIGNING_SECRET,
            "ESCALATION_SLACK_API_URL": api.url,
            "ESCALATION_SLACK_PORT": "0",
            "ESCALATION_SLACK_PORT_FILE": str(self.port_file),
            "ESCALATION_SLACK_USERS_FILE": str(data_dir / "users.yaml"),
            "ESCALATION_SLACK_CHANNELS_FILE": str(data_dir / "channels.yaml"),
        }
        log = (data_dir / "slack.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "slack"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def log_tail(self) -> str:
        path = self.data_dir / "slack.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-40:])

    @property
    def base(self) -> str:
        ok = wait_until(lambda: self.port_file.exists() and self.port_file.read_text(), timeout=60)
        assert ok, self.log_tail()
        return f"http://127.0.0.1:{int(self.port_file.read_text())}"

    def metric(self, name: str, **labels: str) -> float:
        body = urllib.request.urlopen(f"{self.base}/metrics", timeout=5).read().decode()  # noqa: S310
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


@dataclass
class Rig:
    settings: Settings
    feed: Feed
    worker: Worker
    service: SlackService
    api: slack_api.SlackWebAPI
    slack: slack_api.Slack

    def decide(
        self, name: str, number: int, replica_fraction: float | None = None
    ) -> dict[str, Any]:
        proposal = samples.proposal(
            BY_NAME[name], number, at=dt.datetime.now(tz=dt.UTC), tag="slack-"
        )
        if replica_fraction is not None:
            blast = proposal.blast_radius.model_copy(update={"replica_fraction": replica_fraction})
            proposal = proposal.model_copy(update={"blast_radius": blast})
        self.feed.proposals([proposal])
        with DecisionReader(self.settings) as reader:
            return reader.wait_for([proposal.proposal_id], timeout=90)[proposal.proposal_id]

    def posted(self, decision: dict[str, Any]) -> tuple[str, str]:
        found = slack_api.wait_for(lambda: self.api.message_about(decision["decision_id"]), 90)
        assert found, f"no Slack message for {decision['decision_id']}\n{self.service.log_tail()}"
        return found[0], found[1]

    def message(self, decision: dict[str, Any]) -> dict[str, Any]:
        found = self.api.message_about(decision["decision_id"])
        assert found is not None
        return found[2]

    def wait_message(self, decision: dict[str, Any], text: str, timeout: float = 90) -> str:
        def shown() -> str | None:
            body = slack_api.message_text(self.message(decision))
            return body if text in body else None

        found = slack_api.wait_for(shown, timeout)
        assert found, f"{text!r} not in {slack_api.message_text(self.message(decision))}"
        return str(found)

    def wait_ephemeral(self, user: str, text: str) -> str:
        found = slack_api.wait_for(
            lambda: next((t for t in self.api.ephemerals(user) if text in t), None), 60
        )
        assert found, f"no ephemeral with {text!r} for {user}: {self.api.ephemerals(user)}"
        return str(found)

    def commands(self, decision_id: str, count: int = 1) -> list[dict[str, Any]]:
        with Reader(self.feed.bootstrap, [self.settings.topic("decisions.execute")]) as reader:

            def found(r: Reader) -> list[dict[str, Any]]:
                return [
                    v
                    for v in r.values()
                    if v.get("type") in {"execute", "abort"} and v["decision_id"] == decision_id
                ]

            assert reader.wait(lambda r: len(found(r)) >= count, timeout=90), "no command"
            return found(reader)

    def audit(self, decision_id: str, kind: str) -> dict[str, Any]:
        with Reader(self.feed.bootstrap, [self.settings.topic("audit")]) as reader:

            def found(r: Reader) -> dict[str, Any] | None:
                return next(
                    (
                        v["event"]
                        for v in r.values()
                        if v["event"]["decision_id"] == decision_id and v["event"]["kind"] == kind
                    ),
                    None,
                )

            assert reader.wait(lambda r: found(r) is not None, timeout=90), f"no {kind} audit"
            event = found(reader)
            assert event is not None
            return event

    def answers_now(self, decision_id: str) -> list[dict[str, Any]]:
        """Every answer to ``decision_id`` on ``approvals``, read up to its end offsets now.

        Absence is sound here: the service publishes (and waits for the broker) before it
        replies to the clicker, and a refused request reaches no handler at all.
        """
        with Reader(self.feed.bootstrap, [self.settings.topic("approvals")]) as reader:
            reader.read_to_end()
            return [v for v in reader.values() if v["decision_id"] == decision_id]


@pytest.fixture(scope="module")
def rig(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, identities: Identities
) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("slack")
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        topic_prefix=f"t-slack-{os.getpid()}.",
        data_dir=tmp,
        store="memory://",
        metrics_port=0,
    )
    create_topics(settings, kafka_bootstrap)
    environment = pytest.MonkeyPatch()  # module-wide: the harness reads the keyring from it
    for name, value in identities.env().items():
        environment.setenv(name, value)
    api = slack_api.SlackWebAPI(channels={APPROVALS, PAYMENTS}).start()
    policy = quorum_policy(tmp)
    worker = Worker(settings, "w1", policy_file=policy, env=identities.env()).start()
    service = SlackService(settings, api, tmp / "slack", policy, identities.env())
    try:
        worker.wait_ready()
        feed = Feed(settings)
        for service_name in ("catalog-api", "payments-api", "orders-worker"):
            feed.budget(service_name, 0.9)
        feed.seed_samples(worker)
        worker.wait_metric("escalation_state_updates_applied_total", 3, table="budgets")
        assert wait_until(lambda: service.metric("escalation_slack_ready") == 1, timeout=90), (
            service.log_tail()
        )
        endpoint = f"{service.base}/slack/events"
        yield Rig(settings, feed, worker, service, api, slack_api.Slack(endpoint, api))
    finally:
        service.stop()
        worker.stop()
        api.stop()
        environment.undo()


def test_approve_in_slack_executes_and_the_message_loses_its_buttons(rig: Rig) -> None:
    decision = rig.decide("wide-blast", 1)
    assert decision["level"] == 2
    channel, ts = rig.posted(decision)
    assert channel == APPROVALS
    original = rig.message(decision)
    assert set(slack_api.buttons(original)) == {blocks.APPROVE, blocks.REJECT, blocks.REJECT_FP}
    assert "`replica_fraction` 0.4 &gt; 0.2" in slack_api.message_text(original)
    response, _ = rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    assert response.status == 200
    assert response.elapsed < 3.0
    (command,) = rig.commands(decision["decision_id"])
    assert (command["type"], command["by"]) == ("execute", "alice")
    accepted = rig.audit(decision["decision_id"], "approval_accepted")
    assert accepted["data"]["channel"] == "slack"
    rig.wait_message(decision, "Execution ordered (by alice)")
    assert "*Approved* by alice" in slack_api.message_text(rig.message(decision))
    assert slack_api.buttons(rig.message(decision)) == {}
    rig.feed.outcome(decision)  # the executor reports; the gate audits it
    rig.wait_message(decision, "Outcome: *success*, verification passed")

    # A stale click: Bob's client still shows the original message and its buttons.
    rig.api.messages[(channel, ts)] = {**rig.message(decision), "blocks": original["blocks"]}
    response, _ = rig.slack.click(BOB, channel, ts, blocks.APPROVE)
    assert response.status == 200
    said = rig.wait_ephemeral(BOB, "Already approved by alice at")
    assert "UTC" in said
    answers = rig.answers_now(decision["decision_id"])
    assert [a["user"] for a in answers] == ["alice"], "the stale click published nothing"
    assert rig.service.metric("escalation_slack_refused_total", reason="stale_button") >= 1


def test_reject_as_false_positive_in_slack(rig: Rig) -> None:
    decision = rig.decide("wide-blast", 2)
    channel, ts = rig.posted(decision)
    rig.slack.click(BOB, channel, ts, blocks.REJECT_FP)
    rejection = rig.audit(decision["decision_id"], "rejection")
    assert rejection["actor"] == "bob"
    assert rejection["data"]["false_positive"] is True
    rig.wait_message(decision, "*Rejected* as a *false positive* by bob")
    assert slack_api.buttons(rig.message(decision)) == {}


def test_a_regulated_approval_takes_the_change_record_from_the_modal(rig: Rig) -> None:
    decision = rig.decide("payments", 1)
    assert decision["change_record_required"]
    channel, ts = rig.posted(decision)
    assert channel == PAYMENTS
    before = len(rig.api.calls_of("views.open"))
    rig.slack.click(CAROL, channel, ts, blocks.APPROVE)
    opened = slack_api.wait_for(lambda: rig.api.calls_of("views.open")[before:], 30)
    assert opened, rig.service.log_tail()
    view = {"id": "V-modal", **opened[0].args["view"]}
    response = rig.slack.submit(CAROL, view, {"change_record": {"value": "CHG-2026-0042"}})
    assert response.status == 200
    (command,) = rig.commands(decision["decision_id"])
    assert (command["by"], command["change_record"]) == ("carol", "CHG-2026-0042")
    rig.wait_message(decision, "with change record `CHG-2026-0042`")


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"secret": "an-attackers-guess"}, "bad_signature"),
        ({"timestamp": int(dt.datetime.now(tz=dt.UTC).timestamp()) - 900}, "stale_request"),
    ],
)
def test_forged_and_stale_requests_change_nothing(
    rig: Rig, forgery: dict[str, Any], reason: str
) -> None:
    number = {"bad_signature": 3, "stale_request": 4}[reason]
    decision = rig.decide("wide-blast", number)
    channel, ts = rig.posted(decision)
    before = rig.service.metric("escalation_slack_refused_total", reason=reason)
    response, _ = rig.slack.click(ALICE, channel, ts, blocks.APPROVE, **forgery)
    assert response.status == 401
    assert response.json()["error"] == reason
    assert rig.answers_now(decision["decision_id"]) == []
    assert rig.service.metric("escalation_slack_refused_total", reason=reason) == before + 1
    assert slack_api.buttons(rig.message(decision)), "still waiting for an answer"
    # Slack's own click afterwards still works: the refused request used up nothing.
    response, _ = rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    assert response.status == 200
    (command,) = rig.commands(decision["decision_id"])
    assert command["by"] == "alice"


def test_an_unknown_slack_user_changes_nothing(rig: Rig) -> None:
    decision = rig.decide("wide-blast", 5)
    channel, ts = rig.posted(decision)
    response, _ = rig.slack.click(NOBODY, channel, ts, blocks.APPROVE)
    assert response.status == 200
    rig.wait_ephemeral(NOBODY, "is not in the reviewed list")
    assert rig.answers_now(decision["decision_id"]) == []
    assert rig.service.metric("escalation_slack_refused_total", reason="unknown_slack_user") >= 1
    # Nobody answered within the fast policy's 3 s: the gate pages on-call, the message
    # says so and keeps its buttons (the approval stays open for whoever is paged).
    rig.wait_message(decision, "No answer by the deadline: on-call paged (escalation 1)")
    assert set(slack_api.buttons(rig.message(decision))) == {
        blocks.APPROVE,
        blocks.REJECT,
        blocks.REJECT_FP,
    }


def test_a_level_3_notice_offers_abort_until_the_window_closes(rig: Rig) -> None:
    decision = rig.decide("deadlock-statefulset", 1)
    assert decision["level"] == 3
    rig.posted(decision)
    assert set(slack_api.buttons(rig.message(decision))) == {blocks.ABORT}
    rig.wait_message(decision, "Abort window closed")  # the fast policy's window is 4 s
    assert slack_api.buttons(rig.message(decision)) == {}


def test_a_level_4_decision_posts_nothing(rig: Rig) -> None:
    proposal: Proposal = samples.proposal(
        BY_NAME["oom-restart"], 1, at=dt.datetime.now(tz=dt.UTC), tag="slack-"
    )
    read = rig.service.metric("escalation_slack_records_total", topic="decisions.execute")
    rig.feed.proposals([proposal])
    with DecisionReader(rig.settings) as reader:
        decision = reader.wait_for([proposal.proposal_id], timeout=90)[proposal.proposal_id]
    assert decision["level"] == 4
    # The service has read it (and anything before it on its partition) ...
    assert wait_until(
        lambda: (
            rig.service.metric("escalation_slack_records_total", topic="decisions.execute") > read
        ),
        timeout=60,
    )
    # ... and posted nothing about it.
    posted = [orjson.dumps(c.args.get("blocks")) for c in rig.api.calls_of("chat.postMessage")]
    assert not any(decision_id_for(proposal).encode() in b for b in posted)
    # Unless its verification fails: the executor's signed outcome, accepted by the gate.
    rig.feed.outcome(decision, verification="failed")
    notice = slack_api.wait_for(
        lambda: [
            c
            for c in rig.api.calls_of("chat.postMessage")
            if decision["decision_id"] in orjson.dumps(c.args.get("blocks")).decode()
        ],
        60,
    )
    assert notice, rig.service.log_tail()
    assert "Level 4 verification failed" in notice[0].args["text"]
    assert notice[0].args["channel"] == APPROVALS


def test_two_different_people_must_approve_when_the_policy_says_so(rig: Rig) -> None:
    decision = rig.decide("wide-blast", 7, replica_fraction=0.6)
    assert decision["approvals_required"] == 2
    channel, ts = rig.posted(decision)
    rig.wait_message(decision, "Needs *2 different approvers*: 0 of 2 so far")
    rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    recorded = rig.audit(decision["decision_id"], "approval_recorded")
    assert (recorded["actor"], recorded["data"]["approvers"]) == ("alice", ["alice"])
    rig.wait_message(decision, "1 of 2 so far (alice at")
    assert set(slack_api.buttons(rig.message(decision))) == {
        blocks.APPROVE,
        blocks.REJECT,
        blocks.REJECT_FP,
    }, "still pending after one approval"
    rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    rig.wait_ephemeral(ALICE, "a different person must give the next approval")
    rig.slack.click(BOB, channel, ts, blocks.APPROVE)
    (command,) = rig.commands(decision["decision_id"])
    assert (command["type"], command["by"]) == ("execute", "bob"), "no execute after one approval"
    accepted = rig.audit(decision["decision_id"], "approval_accepted")
    assert accepted["data"]["approvers"] == ["alice", "bob"]
    rig.wait_message(decision, "*Approved* by bob")
    assert "2 of 2 so far" in slack_api.message_text(rig.message(decision))
    assert slack_api.buttons(rig.message(decision)) == {}


def test_a_gate_refusal_reaches_the_clicker_and_two_approvers_share_one_change_record(
    rig: Rig,
) -> None:
    """A regulated action over half the replicas: two people, one change record."""
    decision = rig.decide("payments", 2, replica_fraction=0.6)
    assert (decision["approvals_required"], decision["change_record_required"]) == (2, True)
    channel, ts = rig.posted(decision)

    def approve_with(user: str, change_record: str) -> None:
        before = len(rig.api.calls_of("views.open"))
        rig.slack.click(user, channel, ts, blocks.APPROVE)
        opened = slack_api.wait_for(lambda: rig.api.calls_of("views.open")[before:], 30)
        assert opened, rig.service.log_tail()
        view = {"id": f"V-{user}", **opened[0].args["view"]}
        response = rig.slack.submit(user, view, {"change_record": {"value": change_record}})
        assert response.status == 200

    approve_with(ALICE, "CHG-7001")
    rig.audit(decision["decision_id"], "approval_recorded")
    refused = rig.worker.metric("escalation_answers_refused_total", reason="change_record_mismatch")
    approve_with(BOB, "CHG-7002")  # not the change record alice approved
    rig.wait_ephemeral(BOB, "The gate refused your approval")
    assert "change_record_mismatch" in rig.wait_ephemeral(BOB, "The gate refused")
    refusal = rig.audit(decision["decision_id"], "answer_refused")
    assert (refusal["actor"], refusal["data"]["channel"]) == ("bob", "slack")
    rig.worker.wait_metric(
        "escalation_answers_refused_total", refused + 1, reason="change_record_mismatch"
    )
    assert slack_api.buttons(rig.message(decision)), "still pending"
    approve_with(BOB, "CHG-7001")
    (command,) = rig.commands(decision["decision_id"])
    assert (command["by"], command["change_record"]) == ("bob", "CHG-7001")
    rig.wait_message(decision, "*Approved* by bob")


def test_an_answer_given_elsewhere_updates_the_message_and_a_click_then_is_stale(
    rig: Rig,
) -> None:
    """Approved from the command line (carol's own key): the Slack message follows."""
    decision = rig.decide("wide-blast", 8)
    channel, ts = rig.posted(decision)
    original = rig.message(decision)
    rig.feed.answer("approve", decision["decision_id"], "carol")
    rig.wait_message(decision, "*Approved* by carol")
    assert slack_api.buttons(rig.message(decision)) == {}
    rig.api.messages[(channel, ts)] = {**rig.message(decision), "blocks": original["blocks"]}
    rig.slack.click(ALICE, channel, ts, blocks.REJECT)
    rig.wait_ephemeral(ALICE, "Already approved by carol at")
    assert [a["user"] for a in rig.answers_now(decision["decision_id"])] == ["carol"]
