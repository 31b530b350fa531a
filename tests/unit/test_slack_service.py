"""The Slack service in one process, without a broker: the real slack_sdk WebClient and
Bolt app against the local Slack stand-in (tests/slack_api.py), requests signed as
Slack signs them, answers collected where the service would publish them."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from policy_inputs import ROOT, build_inputs, load_policy
from slack_sdk import WebClient

from streams import keys
from streams.models import ApprovalResponse
from streams.models.decision import decision_json
from streams.policy import evaluate
from streams.slack import blocks
from streams.slack.answers import KeyringRoles
from streams.slack.config import Channels, Users
from streams.slack.metrics import SlackMetrics
from streams.slack.service import Publisher, SlackService, http_server
from streams.slack.store import Store

sys.path.insert(0, str(ROOT / "tests"))
import slack_api

SLACK_KEY = keys.generate("slack")
POLICY = load_policy(ROOT / "policies" / "escalation-policy.yaml")
CHANNEL = "C07SREAPPRV"
PAYMENTS = "C07PAYMENTS"
ALICE, BOB, MALLORY, ONCALL = "U07ALICE01", "U07BOB0002", "U07MALLORY", "U07ONCALL1"
# As the development keyring grants them: approvers everything, on-call reject and abort;
# an AI system is never a person of the keyring.
ROLES = KeyringRoles(
    {
        "alice": frozenset({"approve", "reject", "abort"}),
        "bob": frozenset({"approve", "reject", "abort"}),
        "sre-oncall-primary": frozenset({"reject", "abort"}),
    }
)
USERS = Users(
    {
        ALICE: "alice",
        BOB: "bob",
        ONCALL: "sre-oncall-primary",
        "U07SHADOW1": "holmesgpt",
    }
)


def make_decision(proposal: dict[str, Any] | None = None, **context: Any) -> dict[str, Any]:
    now = dt.datetime.now(tz=dt.UTC).isoformat()
    p, c = build_inputs(proposal or {}, {"now": now, **context})
    return decision_json(evaluate(p, c, POLICY))


def l2(number: int, **proposal: Any) -> dict[str, Any]:
    base = {
        "proposal_id": f"p-slack-{number}",
        "blast_radius": {"replica_fraction": 0.4},
    }
    return make_decision({**base, **proposal})


def regulated(number: int) -> dict[str, Any]:
    return make_decision(
        {
            "proposal_id": f"p-slack-reg-{number}",
            "regulated": ["PCI-DSS"],
            "action": {"target": {"service": "payments-api"}},
        }
    )


def l3(number: int) -> dict[str, Any]:
    return make_decision(
        {
            "proposal_id": f"p-slack-l3-{number}",
            "action": {"target": {"kind": "StatefulSet"}},
        }
    )


@dataclass
class Published:
    answers: list[ApprovalResponse] = field(default_factory=list)

    def produce(self, topic: str, key: bytes, value: bytes) -> None:
        assert topic == "t.approvals"
        answer = ApprovalResponse.model_validate_json(value)
        assert key == answer.decision_id.encode()
        self.answers.append(answer)


@dataclass
class Rig:
    service: SlackService
    api: slack_api.SlackWebAPI
    slack: slack_api.Slack
    published: Published

    def post(self, decision: dict[str, Any]) -> tuple[str, str]:
        topic = "t.decisions.approve" if decision["level"] == 2 else "t.decisions.execute"
        self.service.handle(topic, orjson.dumps(decision))
        found = self.api.message_about(decision["decision_id"])
        assert found is not None, "no message posted"
        return found[0], found[1]

    def audit(self, kind: str, decision: dict[str, Any], **data: Any) -> None:
        body = {
            "kind": kind,
            "event_id": f"{decision['decision_id']}:{kind}",
            "decision_id": decision["decision_id"],
            "actor": data.get("user", "escalation-gate"),
            "at": dt.datetime.now(tz=dt.UTC).isoformat(),
            "data": data,
        }
        self.service.handle("t.audit", orjson.dumps({"event": body}))

    def outcome(self, outcome: dict[str, Any]) -> None:
        """An executor's outcome, as the gate audits it once accepted."""
        event = {
            "kind": "outcome",
            "decision_id": outcome["decision_id"],
            "actor": "executor",
            "data": {"outcome": outcome},
        }
        self.service.handle("t.audit", orjson.dumps({"event": event}))

    def current(self, decision: dict[str, Any]) -> dict[str, Any]:
        found = self.api.message_about(decision["decision_id"])
        assert found is not None
        return found[2]

    def wait_answers(self, count: int) -> list[ApprovalResponse]:
        ok = slack_api.wait_for(lambda: len(self.published.answers) >= count, timeout=10)
        assert ok, f"{len(self.published.answers)} answers published, wanted {count}"
        return self.published.answers

    def wait_ephemeral(self, user: str, text: str) -> str:
        found = slack_api.wait_for(
            lambda: next((t for t in self.api.ephemerals(user) if text in t), None),
            timeout=10,
        )
        assert found, f"no ephemeral with {text!r} for {user}: {self.api.ephemerals(user)}"
        return str(found)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    api = slack_api.SlackWebAPI(channels={CHANNEL, PAYMENTS}).start()
    published = Published()
    service = SlackService(
        client=WebClient(token=slack_api.TOKEN, base_url=api.url),
        signing_secret=slack_api.SIGNING_SECRET,
        signer=SLACK_KEY,
        users=USERS,
        channels=Channels(CHANNEL, {"payments-api": PAYMENTS}),
        roles=ROLES,
        store=Store(tmp_path / "slack.sqlite3"),
        publisher=Publisher(published.produce, "t.approvals"),
        topics={
            "t.decisions.approve": "decisions.approve",
            "t.decisions.execute": "decisions.execute",
            "t.audit": "audit",
        },
        metrics=SlackMetrics(),
    )
    server = http_server(service, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}/slack/events"
    try:
        yield Rig(service, api, slack_api.Slack(endpoint, api), published)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        service.store.close()
        api.stop()


def refused(rig: Rig, reason: str) -> float:
    return rig.service.metrics.refused.labels(reason)._value.get()


def test_a_level_2_decision_posts_a_message_with_the_three_buttons(rig: Rig) -> None:
    decision = l2(1)
    channel, _ts = rig.post(decision)
    assert channel == CHANNEL
    message = rig.current(decision)
    assert set(slack_api.buttons(message)) == {
        blocks.APPROVE,
        blocks.REJECT,
        blocks.REJECT_FP,
    }
    text = slack_api.message_text(message)
    assert "holmesgpt" in text
    assert "`replica_fraction` 0.4 &gt; 0.2" in text
    assert "Deadline" in text
    assert "blast_radius" in text
    # A redelivered decision posts nothing more.
    rig.post(decision)
    assert len(rig.api.calls_of("chat.postMessage")) == 1


def test_approve_is_acknowledged_at_once_and_published_signed_in_the_persons_name(
    rig: Rig,
) -> None:
    decision = l2(2)
    channel, ts = rig.post(decision)
    response, _ = rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    assert response.status == 200
    assert response.elapsed < 3.0
    (answer,) = rig.wait_answers(1)
    assert (answer.kind, answer.user, answer.channel) == ("approve", "alice", "slack")
    assert answer.decision_id == decision["decision_id"]
    assert keys.PublicKeys([SLACK_KEY.public]).verify(answer.model_dump(mode="json")) is None
    rig.wait_ephemeral(ALICE, "sent to the gate as *alice*")


def test_reject_as_false_positive_sets_the_flag(rig: Rig) -> None:
    decision = l2(3)
    channel, ts = rig.post(decision)
    rig.slack.click(BOB, channel, ts, blocks.REJECT_FP)
    (answer,) = rig.wait_answers(1)
    assert (answer.kind, answer.user, answer.false_positive) == ("reject", "bob", True)


def test_an_unmapped_slack_user_changes_nothing_and_is_told_why(rig: Rig) -> None:
    decision = l2(4)
    channel, ts = rig.post(decision)
    response, _ = rig.slack.click(MALLORY, channel, ts, blocks.APPROVE)
    assert response.status == 200
    rig.wait_ephemeral(MALLORY, "not in the reviewed list")
    assert rig.published.answers == []
    assert refused(rig, "unknown_slack_user") == 1


def test_a_person_without_the_role_changes_nothing(rig: Rig) -> None:
    decision = l2(5)
    channel, ts = rig.post(decision)
    rig.slack.click(ONCALL, channel, ts, blocks.APPROVE)  # on-call may reject, not approve
    rig.wait_ephemeral(ONCALL, "may not approve")
    rig.slack.click("U07SHADOW1", channel, ts, blocks.REJECT)  # an AI system never answers
    rig.wait_ephemeral("U07SHADOW1", "may not reject")
    assert rig.published.answers == []
    assert refused(rig, "no_role") == 2


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        ({"secret": "not-the-signing-secret"}, "bad_signature"),
        ({"timestamp": int(time.time()) - 600}, "stale_request"),
        ({"signature": "v0=" + "0" * 64}, "bad_signature"),
    ],
)
def test_forged_and_stale_requests_are_refused_with_401(
    rig: Rig, forgery: dict[str, Any], reason: str
) -> None:
    decision = l2(6)
    channel, ts = rig.post(decision)
    response, _ = rig.slack.click(ALICE, channel, ts, blocks.APPROVE, **forgery)
    assert response.status == 401
    assert response.json() == {"ok": False, "error": reason}
    assert refused(rig, reason) == 1
    assert rig.published.answers == []


def test_an_unsigned_request_is_refused(rig: Rig) -> None:
    response = rig.slack.send(
        "payload=%7B%7D", {"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 401
    assert response.json()["error"] == "unsigned"


def test_a_replayed_request_changes_nothing(rig: Rig) -> None:
    decision = l2(7)
    channel, ts = rig.post(decision)
    _response, payload = rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    rig.wait_answers(1)
    stamp = int(time.time())
    body = "payload=" + __import__("urllib.parse").parse.quote(orjson.dumps(payload).decode())
    first = rig.slack.post(payload, body=body, timestamp=stamp)
    again = rig.slack.post(payload, body=body, timestamp=stamp)
    assert (first.status, again.status) == (200, 200)
    rig.wait_ephemeral(ALICE, "replayed request")
    assert refused(rig, "replayed") == 1
    assert len(rig.wait_answers(2)) == 2  # the first of the two was new; the replay was not
    time.sleep(0)  # no wait: the replay's refusal was counted before its response


def test_the_message_follows_the_decision_and_a_stale_click_says_who_answered(
    rig: Rig,
) -> None:
    decision = l2(8)
    channel, ts = rig.post(decision)
    rig.audit("timeout_escalation", decision, escalation={"escalation_number": 1})
    assert "on-call paged (escalation 1)" in slack_api.message_text(rig.current(decision))
    assert slack_api.buttons(rig.current(decision)), "still open after a timeout: buttons stay"
    rig.audit("approval_accepted", decision, user="carol", channel="cli")
    message = rig.current(decision)
    assert slack_api.buttons(message) == {}
    assert "*Approved* by carol" in slack_api.message_text(message)
    rig.service.handle(
        "t.decisions.execute",
        orjson.dumps(
            {
                "type": "execute",
                "decision_id": decision["decision_id"],
                "by": "carol",
                "issued_at": dt.datetime.now(tz=dt.UTC).isoformat(),
            }
        ),
    )
    assert "Execution ordered (by carol)" in slack_api.message_text(rig.current(decision))
    outcome = {
        "decision_id": decision["decision_id"],
        "result": "success",
        "verification": "passed",
        "at": dt.datetime.now(tz=dt.UTC).isoformat(),
        "level": 2,
    }
    rig.outcome(outcome)
    assert "Outcome: *success*" in slack_api.message_text(rig.current(decision))
    # The old message's button, clicked by someone whose client did not refresh:
    rig.api.messages[(channel, ts)]["blocks"].append(
        blocks.message(
            {**rig.service.store.get(decision["decision_id"]), "status": "open", "answer": None}
        )[1][-1]
    )
    rig.slack.click(BOB, channel, ts, blocks.APPROVE)
    said = rig.wait_ephemeral(BOB, "Already approved by carol at")
    assert "UTC" in said
    assert rig.published.answers == []
    assert refused(rig, "stale_button") == 1


def test_a_regulated_approval_opens_a_modal_and_sends_the_change_record(
    rig: Rig,
) -> None:
    decision = regulated(1)
    assert decision["change_record_required"]
    channel, ts = rig.post(decision)
    assert channel == PAYMENTS
    assert "approving asks for the change record" in slack_api.message_text(rig.current(decision))
    rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    opened = slack_api.wait_for(lambda: rig.api.calls_of("views.open"), timeout=10)
    assert opened, "no modal opened"
    assert rig.published.answers == [], "no answer before the change record"
    view = {"id": "V1", **opened[0].args["view"]}
    empty = rig.slack.submit(ALICE, view, {"change_record": {"value": "  "}})
    assert empty.status == 200
    assert empty.json()["response_action"] == "errors"
    assert rig.published.answers == []
    done = rig.slack.submit(ALICE, view, {"change_record": {"value": "CHG-4711"}})
    assert done.status == 200
    (answer,) = rig.wait_answers(1)
    assert (answer.kind, answer.user, answer.change_record) == (
        "approve",
        "alice",
        "CHG-4711",
    )


def test_a_level_3_notice_has_an_abort_button_until_the_window_ends(rig: Rig) -> None:
    decision = l3(1)
    assert decision["level"] == 3
    channel, ts = rig.post(decision)
    assert set(slack_api.buttons(rig.current(decision))) == {blocks.ABORT}
    rig.slack.click(ONCALL, channel, ts, blocks.ABORT)
    (answer,) = rig.wait_answers(1)
    assert (answer.kind, answer.user) == ("abort", "sre-oncall-primary")
    ends = dt.datetime.fromisoformat(decision["abort_window_ends_at"]).timestamp()
    rig.service.tick(ends - 1)
    assert slack_api.buttons(rig.current(decision))
    rig.service.tick(ends + 0.1)
    assert slack_api.buttons(rig.current(decision)) == {}
    assert "Abort window closed" in slack_api.message_text(rig.current(decision))


def test_level_4_is_silent_unless_its_verification_fails(rig: Rig) -> None:
    decision = make_decision({"proposal_id": "p-slack-l4"})
    assert decision["level"] == 4
    rig.service.handle("t.decisions.execute", orjson.dumps(decision))
    assert rig.api.calls_of("chat.postMessage") == []
    outcome = {
        "decision_id": decision["decision_id"],
        "level": 4,
        "result": "success",
        "verification": "failed",
        "service": "checkout-api",
        "action_type": "rolling_restart",
    }
    rig.outcome(outcome)
    rig.outcome(outcome)
    (call,) = rig.api.calls_of("chat.postMessage")
    assert "verification failed" in call.args["text"]


def test_a_gate_refusal_of_a_slack_answer_is_told_to_the_person_who_clicked(
    rig: Rig,
) -> None:
    decision = l2(9)
    channel, ts = rig.post(decision)
    rig.slack.click(ALICE, channel, ts, blocks.APPROVE)
    (answer,) = rig.wait_answers(1)
    rig.service.handle(
        "t.audit",
        orjson.dumps(
            {
                "event": {
                    "kind": "answer_refused",
                    "decision_id": decision["decision_id"],
                    "actor": "alice",
                    "data": {
                        "kind": "approve",
                        "user": "alice",
                        "channel": "slack",
                        "nonce": answer.nonce,
                        "reason": "not_an_approver",
                    },
                }
            }
        ),
    )
    rig.wait_ephemeral(ALICE, "The gate refused your approval")


def test_a_restarted_service_updates_the_message_it_posted_before(rig: Rig, tmp_path: Path) -> None:
    decision = l2(10)
    rig.post(decision)
    again = SlackService(
        client=rig.service.client,
        signing_secret=slack_api.SIGNING_SECRET,
        signer=SLACK_KEY,
        users=USERS,
        channels=rig.service.channels,
        roles=rig.service.roles,
        store=Store(tmp_path / "slack.sqlite3"),
        publisher=rig.service.publisher,
        topics=rig.service.topics,
        metrics=SlackMetrics(),
    )
    again.handle("t.decisions.approve", orjson.dumps(decision))
    body = {
        "kind": "rejection",
        "decision_id": decision["decision_id"],
        "actor": "bob",
        "at": dt.datetime.now(tz=dt.UTC).isoformat(),
        "data": {"user": "bob"},
    }
    again.handle("t.audit", orjson.dumps({"event": body}))
    assert len(rig.api.calls_of("chat.postMessage")) == 1
    assert len(rig.api.calls_of("chat.update")) == 1
    assert "*Rejected* by bob" in slack_api.message_text(rig.current(decision))
    again.store.close()


def test_a_message_slack_did_not_take_is_posted_again_later(rig: Rig) -> None:
    decision = l2(11)
    rig.api.channels.discard(CHANNEL)  # the app is not in the channel yet
    rig.service.handle("t.decisions.approve", orjson.dumps(decision))
    assert rig.api.message_about(decision["decision_id"]) is None
    assert rig.service.metrics.api_calls.labels("chat.postMessage", "error")._value.get() == 1
    rig.api.channels.add(CHANNEL)  # invited
    rig.service.retry()
    rig.service.retry()
    assert rig.api.message_about(decision["decision_id"]) is not None
    assert len(rig.api.calls_of("chat.postMessage")) == 2  # one refused, one taken


def test_a_decision_older_than_a_day_is_not_posted_on_a_first_start(rig: Rig) -> None:
    old = dt.datetime.now(tz=dt.UTC) - dt.timedelta(days=2)
    decision = {**l2(12), "decided_at": old.isoformat()}
    rig.service.handle("t.decisions.approve", orjson.dumps(decision))
    assert rig.api.calls_of("chat.postMessage") == []
    fresh = l2(13)
    rig.service.handle("t.decisions.approve", orjson.dumps(fresh))
    assert len(rig.api.calls_of("chat.postMessage")) == 1


def test_a_body_too_large_is_refused_before_it_is_read(rig: Rig) -> None:
    response = rig.slack.send(
        "x" * (300 * 1024), {"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 413
    assert response.json() == {"ok": False, "error": "body_too_large", "field": "Content-Length"}
    assert refused(rig, "body_too_large") == 1
