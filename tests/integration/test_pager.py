"""The pager on the real broker, a real Alertmanager and the PagerDuty stand-in.

Escalations and resolutions are produced on ``oncall`` as the gate writes them; the
pager runs in this process (its own consumer group) and pages Alertmanager's v2 API
(``GET /api/v2/alerts`` shows what it holds; webhook receivers routed by the chain
target show whom it notified) and PagerDuty's Events API v2 through PagerDuty's own
client. Re-posts run every second here (alerts end four seconds ahead).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from alertmanager import LocalAlertmanager, free_port
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from harness import DecisionReader, Feed, Worker, gate_key
from pagerduty_standin import PagerDutyStandIn

from streams import keys, samples
from streams.kafka.admin import producer_config
from streams.models import OncallEscalation, OncallResolution, encode
from streams.oncall.metrics import PagerMetrics
from streams.oncall.pages import PagerConfig
from streams.oncall.service import Pager
from streams.oncall.targets import Alertmanager, Alertmanagers, PagerDuty
from streams.settings import Settings
from streams.testing import wait_until

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"  # 32 characters, as PagerDuty requires
MANAGER_KEY = "MANAGERKEY0123456789abcdef012345"
REPOST = dt.timedelta(seconds=1)
WAIT = 60.0


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAlertmanager]:
    am = LocalAlertmanager(tmp_path_factory.mktemp("alertmanager")).start()
    try:
        yield am
    finally:
        am.stop()


@pytest.fixture(scope="module")
def pagerduty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PagerDutyStandIn]:
    standin = PagerDutyStandIn(tmp_path_factory.mktemp("pagerduty"))
    try:
        yield standin
    finally:
        standin.stop()


class Running:
    """A pager running in a thread of this process, and its metrics."""

    def __init__(self, pager: Pager, thread: threading.Thread, stop: threading.Event) -> None:
        self.pager, self.thread, self.stop = pager, thread, stop

    def metric(self, name: str, **labels: str) -> float:
        value = self.pager.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


@contextmanager
def running_pager(
    settings: Settings,
    alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
    *,
    group: str | None = None,
    routing_keys: dict[str, str] | None = None,
    gate_keys: keys.PublicKeys | None = None,
    alertmanagers: Alertmanagers | None = None,
) -> Iterator[Running]:
    pager = Pager(
        bootstrap=settings.bootstrap_servers or "",
        topic=settings.topic("oncall"),
        group=group or f"pager-{uuid.uuid4().hex[:8]}",
        config=PagerConfig(console_url="https://gate.example.com", repost=REPOST),
        alertmanager=alertmanagers or Alertmanager(alertmanager.url),
        pagerduty=PagerDuty(
            ROUTING_KEY, routing_keys, url=pagerduty.url, ca_file=pagerduty.ca_file
        ),
        metrics=PagerMetrics(),
        keys=gate_keys,
    )
    stop = threading.Event()
    thread = threading.Thread(target=pager.run, args=(stop,), daemon=True, name="pager")
    thread.start()
    try:
        assert pager.ready.wait(WAIT), "the pager was never assigned its partitions"
        yield Running(pager, thread, stop)
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


class Oncall:
    """Produce on ``oncall`` as the gate does (keyed by service)."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("oncall")
        self.producer = Producer(producer_config(settings.bootstrap_servers or ""))

    def send(self, *records: OncallEscalation | OncallResolution | bytes, service: str) -> None:
        for record in records:
            value = record if isinstance(record, bytes) else encode(record)
            self.producer.produce(self.topic, value=value, key=service.encode())
        assert self.producer.flush(30) == 0


def _decision() -> str:
    return f"d-{uuid.uuid4().hex[:12]}"


def escalation(decision_id: str, number: int, target: str, **overrides: Any) -> OncallEscalation:
    fields: dict[str, Any] = {
        "escalation_id": f"{decision_id}:timeout:{number}",
        "decision_id": decision_id,
        "proposal_id": f"p-{decision_id}",
        "reason": "approval_timeout",
        "escalation_number": number,
        "target": target,
        "level": 2,
        "asked": ("alice", "bob"),
        "service": "checkout-api",
        "pattern": "oom-kill/stateless-deployment",
        "action_type": "rolling_restart",
        "summary": f"no answer to approval of rolling_restart on checkout-api ({decision_id})",
        "at": dt.datetime.now(tz=dt.UTC),
        **overrides,
    }
    return OncallEscalation(**fields)


def resolution(decision_id: str, escalations: int, **overrides: Any) -> OncallResolution:
    fields: dict[str, Any] = {
        "resolution_id": f"{decision_id}:resolved",
        "decision_id": decision_id,
        "proposal_id": f"p-{decision_id}",
        "service": "checkout-api",
        "escalations": escalations,
        "answer": "approve",
        "by": "alice",
        "at": dt.datetime.now(tz=dt.UTC),
        **overrides,
    }
    return OncallResolution(**fields)


def active(am: LocalAlertmanager, decision_id: str) -> list[dict[str, Any]]:
    return [a for a in am.alerts(decision_id) if a["status"]["state"] == "active"]


def targets(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(a["labels"]["escalation"] for a in alerts)


@pytest.fixture
def oncall(settings: Settings) -> Oncall:
    """This test's ``oncall`` topic alone (the pager reads nothing else), and a producer."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers or ""})
    topic = settings.topic("oncall")
    futures = admin.create_topics([NewTopic(topic, settings.partitions, 1)])
    futures[topic].result(timeout=60)
    assert wait_until(
        lambda: (
            topic in admin.list_topics(timeout=10).topics
            and not admin.list_topics(timeout=10).topics[topic].error
        ),
        timeout=WAIT,
    )
    return Oncall(settings)


def test_an_escalation_is_an_alert_in_alertmanager_and_an_incident_in_pagerduty(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    decision = _decision()
    with running_pager(settings, alertmanager, pagerduty) as pager:
        oncall.send(escalation(decision, 1, "sre-oncall-primary"), service="checkout-api")

        assert wait_until(lambda: len(active(alertmanager, decision)) == 1, timeout=WAIT)
        (alert,) = active(alertmanager, decision)
        assert {k: alert["labels"][k] for k in ("alertname", "service", "reason", "level")} == {
            "alertname": "EscalationApprovalTimeout",
            "service": "checkout-api",
            "reason": "approval_timeout",
            "level": "2",
        }
        assert alert["labels"]["escalation"] == "sre-oncall-primary"
        assert f"escalation approve {decision} --as USER" in alert["annotations"]["description"]
        assert alert["annotations"]["console"] == f"https://gate.example.com/decisions/{decision}"
        assert alert["generatorURL"] == f"https://gate.example.com/decisions/{decision}"
        assert wait_until(
            lambda: alertmanager.webhooks.notified("sre-oncall-primary", decision, "firing"),
            timeout=WAIT,
        )
        assert wait_until(lambda: pagerduty.status(f"{decision}:timeout:1") == "triggered")
        (event,) = pagerduty.events_for(decision)
        assert event["routing_key"] == ROUTING_KEY
        assert event["payload"]["source"] == "checkout-api"
        assert event["payload"]["severity"] == "error"
        assert event["payload"]["group"] == "sre-oncall-primary"
        assert event["payload"]["custom_details"]["decision_id"] == decision
        assert event["links"] == [
            {
                "href": f"https://gate.example.com/decisions/{decision}",
                "text": "Escalation Gate console",
            }
        ]
        assert pager.metric("escalation_pager_deliveries_total", system="pagerduty",
                            action="trigger", result="ok") == 1  # fmt: skip


def test_an_open_alert_is_reposted_past_its_first_ends_at_and_ends_when_the_pager_stops(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    """Alertmanager resolves an alert whose endsAt passes: the pager keeps moving it on."""
    decision = _decision()
    with running_pager(settings, alertmanager, pagerduty):
        oncall.send(escalation(decision, 1, "sre-oncall-primary"), service="checkout-api")
        assert wait_until(lambda: len(active(alertmanager, decision)) == 1, timeout=WAIT)
        first_end = dt.datetime.fromisoformat(active(alertmanager, decision)[0]["endsAt"])
        assert wait_until(lambda: dt.datetime.now(tz=dt.UTC) > first_end + REPOST, timeout=WAIT)
        (alert,) = active(alertmanager, decision)
        assert dt.datetime.fromisoformat(alert["endsAt"]) > first_end
    # Without its pager, the alert's last endsAt passes and Alertmanager resolves it.
    assert wait_until(lambda: active(alertmanager, decision) == [], timeout=WAIT)
    assert len(pagerduty.events_for(decision)) == 1  # triggered once, never re-triggered


def test_a_resolution_resolves_every_alert_and_incident_of_the_decision(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    decision, other = _decision(), _decision()
    with running_pager(settings, alertmanager, pagerduty):
        oncall.send(
            escalation(decision, 1, "sre-oncall-primary"),
            escalation(decision, 2, "sre-oncall-secondary"),
            escalation(other, 1, "sre-oncall-primary"),
            service="checkout-api",
        )
        assert wait_until(lambda: len(active(alertmanager, decision)) == 2, timeout=WAIT)
        assert targets(active(alertmanager, decision)) == [
            "sre-oncall-primary",
            "sre-oncall-secondary",
        ]
        for target in ("sre-oncall-primary", "sre-oncall-secondary"):
            # Alertmanager tells a receiver of a resolution only if it told it of the firing.
            assert wait_until(
                lambda t=target: alertmanager.webhooks.notified(t, decision, "firing"),
                timeout=WAIT,
            )
        oncall.send(resolution(decision, 2), service="checkout-api")

        assert wait_until(lambda: active(alertmanager, decision) == [], timeout=WAIT)
        for number, target in ((1, "sre-oncall-primary"), (2, "sre-oncall-secondary")):
            assert wait_until(
                lambda n=number: pagerduty.status(f"{decision}:timeout:{n}") == "resolved"
            )
            assert wait_until(
                lambda t=target: alertmanager.webhooks.notified(t, decision, "resolved"),
                timeout=WAIT,
            )
        # The other decision's page is untouched (and still kept alive).
        assert len(active(alertmanager, other)) == 1
        assert pagerduty.status(f"{other}:timeout:1") == "triggered"


def test_a_restarted_pager_keeps_alive_and_resolves_what_its_predecessor_opened(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    decision = _decision()
    group = f"pager-{uuid.uuid4().hex[:8]}"
    with running_pager(settings, alertmanager, pagerduty, group=group) as first:
        oncall.send(escalation(decision, 1, "sre-oncall-primary"), service="checkout-api")
        assert wait_until(lambda: pagerduty.status(f"{decision}:timeout:1") == "triggered")
        assert wait_until(
            lambda: first.metric("escalation_pager_records_total", type="escalation") == 1
        )
    with running_pager(settings, alertmanager, pagerduty, group=group) as second:
        assert len(second.pager.book.pages()) == 1  # rebuilt up to the committed offset
        ends = dt.datetime.now(tz=dt.UTC) + 4 * REPOST + REPOST
        assert wait_until(lambda: dt.datetime.now(tz=dt.UTC) > ends, timeout=WAIT)
        assert len(active(alertmanager, decision)) == 1  # kept alive by the new pager
        oncall.send(resolution(decision, 1), service="checkout-api")
        assert wait_until(lambda: active(alertmanager, decision) == [], timeout=WAIT)
        assert wait_until(lambda: pagerduty.status(f"{decision}:timeout:1") == "resolved")
    actions = [e["event_action"] for e in pagerduty.events_for(decision)]
    assert actions == ["trigger", "resolve"]  # the restart triggered nothing again


def test_a_target_with_its_own_routing_key_is_paged_through_it(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    decision = _decision()
    keys = {"sre-manager": MANAGER_KEY}
    with running_pager(settings, alertmanager, pagerduty, routing_keys=keys):
        oncall.send(
            escalation(decision, 1, "sre-oncall-primary"),
            escalation(decision, 3, "sre-manager"),
            service="checkout-api",
        )
        assert wait_until(lambda: len(pagerduty.events_for(decision)) == 2)
        by_key = {e["dedup_key"]: e["routing_key"] for e in pagerduty.events_for(decision)}
        assert by_key == {
            f"{decision}:timeout:1": ROUTING_KEY,
            f"{decision}:timeout:3": MANAGER_KEY,
        }
        assert wait_until(
            lambda: alertmanager.webhooks.notified("sre-manager", decision, "firing"), timeout=WAIT
        )


def test_pagerduty_down_for_a_while_gets_the_page_once_it_answers(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    decision = _decision()
    with running_pager(settings, alertmanager, pagerduty) as pager:
        pagerduty.fail_next(503, 3)  # three answers in a row: PagerDuty under load
        oncall.send(escalation(decision, 1, "sre-oncall-primary"), service="checkout-api")
        assert wait_until(lambda: len(active(alertmanager, decision)) == 1, timeout=WAIT)
        assert wait_until(
            lambda: pagerduty.status(f"{decision}:timeout:1") == "triggered", timeout=WAIT
        )
        assert pager.metric("escalation_pager_deliveries_total", system="pagerduty",
                            action="trigger", result="failed") == 3  # fmt: skip
        assert len(pagerduty.events_for(decision)) == 1


def test_one_alertmanager_of_a_cluster_down_does_not_stop_the_page(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    """Each member of an HA pair is sent every alert; one that does not answer is
    tried again by the keep-alive, the page goes out through the other."""
    decision = _decision()
    down = f"http://127.0.0.1:{free_port()}"
    cluster = Alertmanagers.from_urls(f"{down}, {alertmanager.url}")
    with running_pager(settings, alertmanager, pagerduty, alertmanagers=cluster) as pager:
        oncall.send(escalation(decision, 1, "sre-oncall-primary"), service="checkout-api")
        assert wait_until(lambda: len(active(alertmanager, decision)) == 1, timeout=WAIT)
        assert pager.metric("escalation_pager_deliveries_total", system="alertmanager",
                            action="open", result="ok") == 1  # fmt: skip
        assert pager.metric("escalation_pager_deliveries_total", system="alertmanager",
                            action="open", result="failed") == 0  # fmt: skip


def test_a_refused_event_and_an_invalid_record_do_not_stop_later_pages(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    """PagerDuty's 400 is counted and dropped; garbage on oncall is counted and skipped;
    the marker escalation behind both is paged."""
    refused, marker = _decision(), _decision()
    with running_pager(
        settings, alertmanager, pagerduty, routing_keys={"broken-target": "too-short"}
    ) as pager:
        oncall.send(
            escalation(refused, 1, "broken-target"),
            b"{not json",
            b'{"type": "resolved", "decision_id": "x"}',
            escalation(marker, 1, "sre-oncall-primary"),
            service="checkout-api",
        )
        assert wait_until(lambda: pagerduty.status(f"{marker}:timeout:1") == "triggered")
        assert pager.metric("escalation_pager_deliveries_total", system="pagerduty",
                            action="trigger", result="rejected") == 1  # fmt: skip
        assert pager.metric("escalation_pager_invalid_records_total") == 2
        assert pagerduty.status(f"{refused}:timeout:1") is None
        assert any(
            "Length of 'routing_key' is incorrect" in err
            for r in pagerduty.refused
            for err in r["errors"]
        )
        # Alertmanager took the refused one's alert all the same.
        assert len(active(alertmanager, refused)) == 1


def test_a_failed_verification_is_a_critical_page_at_its_level_for_the_verification_target(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    decision = _decision()
    failed = escalation(
        decision, 1, "sre-oncall-primary", reason="verification_failed", level=4,
        escalation_id=f"{decision}:verification", asked=(),
        summary="verification failed after rolling_restart on checkout-api",
    )  # fmt: skip
    with running_pager(settings, alertmanager, pagerduty):
        oncall.send(failed, service="checkout-api")
        assert wait_until(lambda: len(active(alertmanager, decision)) == 1, timeout=WAIT)
        (alert,) = active(alertmanager, decision)
        assert alert["labels"]["alertname"] == "EscalationVerificationFailed"
        assert alert["labels"]["level"] == "4"
        assert "escalation requalify" in alert["annotations"]["description"]
        assert wait_until(lambda: pagerduty.status(f"{decision}:verification") == "triggered")
        (event,) = pagerduty.events_for(decision)
        assert event["payload"]["severity"] == "critical"
        assert event["payload"]["class"] == "verification_failed"


def test_only_the_gates_signature_resolves_pages_and_an_unverified_page_still_pages(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    """Attack: unsigned, forged and tampered resolutions are refused and counted, the
    pages stay open; the gate's own resolution after them ends them. An unsigned
    escalation is paged all the same, marked unverified (fail toward humans)."""
    gate, mallory = keys.generate("escalation-gate"), keys.generate("mallory")
    decision, unsigned_page = _decision(), _decision()

    def signed(record: OncallEscalation | OncallResolution, by: keys.Signer) -> bytes:
        return orjson.dumps(by.sign(orjson.loads(encode(record))))

    tampered = orjson.loads(signed(resolution(decision, 1), gate))
    tampered["decision_id"] = unsigned_page  # a signature made for another record
    tampered["resolution_id"] = f"{unsigned_page}:resolved"
    with running_pager(
        settings, alertmanager, pagerduty, gate_keys=keys.PublicKeys([gate.public])
    ) as pager:
        oncall.send(
            signed(escalation(decision, 1, "sre-oncall-primary"), gate),
            escalation(unsigned_page, 1, "sre-oncall-primary"),
            service="checkout-api",
        )
        assert wait_until(lambda: len(active(alertmanager, decision)) == 1, timeout=WAIT)
        assert wait_until(lambda: len(active(alertmanager, unsigned_page)) == 1, timeout=WAIT)
        assert "unverified" not in active(alertmanager, decision)[0]["annotations"]
        (marked,) = active(alertmanager, unsigned_page)
        assert marked["annotations"]["unverified"].endswith(": unsigned")
        assert pager.metric("escalation_pager_unverified_escalations_total", reason="unsigned") == 1

        oncall.send(
            encode(resolution(decision, 1)),
            signed(resolution(decision, 1), mallory),
            orjson.dumps(tampered),
            encode(resolution(unsigned_page, 1)),
            service="checkout-api",
        )
        for reason, count in (("unsigned", 2), ("unknown_key", 1), ("bad_signature", 1)):
            assert wait_until(
                lambda r=reason, c=count: pager.metric(
                    "escalation_pager_refused_resolutions_total", reason=r
                ) == c,
                timeout=WAIT,
            )  # fmt: skip
        assert len(active(alertmanager, decision)) == 1
        assert len(active(alertmanager, unsigned_page)) == 1
        assert pagerduty.status(f"{decision}:timeout:1") == "triggered"

        oncall.send(signed(resolution(decision, 1), gate), service="checkout-api")
        assert wait_until(lambda: active(alertmanager, decision) == [], timeout=WAIT)
        assert wait_until(lambda: pagerduty.status(f"{decision}:timeout:1") == "resolved")
        assert len(active(alertmanager, unsigned_page)) == 1


def test_the_pager_command_pages_serves_its_metrics_and_stops_on_sigterm(
    settings: Settings, oncall: Oncall, alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn, tmp_path: Path,
) -> None:  # fmt: skip
    """``escalation pager`` as an operator runs it: settings from the environment."""
    decision = _decision()
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "ESCALATION_TOPIC_PREFIX": settings.topic_prefix,
        "ESCALATION_ALERTMANAGER_URL": alertmanager.url,
        "ESCALATION_PAGERDUTY_ROUTING_KEYS": json.dumps({"sre-manager": MANAGER_KEY}),
        "ESCALATION_PAGERDUTY_URL": pagerduty.url,
        "ESCALATION_PAGERDUTY_CA_FILE": str(pagerduty.ca_file),
        "ESCALATION_PAGER_GROUP": f"pager-{uuid.uuid4().hex[:8]}",
        "ESCALATION_PAGER_METRICS_PORT": str(port),
        "ESCALATION_CONSOLE_URL": "https://gate.example.com",
    }
    env.pop("ESCALATION_PAGERDUTY_ROUTING_KEY", None)
    log = (tmp_path / "pager.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "pager"], env=env, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def ready() -> bool:
            try:
                body = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx2.HTTPError:
                return False
            return "escalation_pager_ready 1.0" in body

        assert wait_until(ready, timeout=WAIT), (tmp_path / "pager.log").read_text()
        oncall.send(
            escalation(decision, 1, "sre-oncall-primary"),  # no routing key: Alertmanager only
            escalation(decision, 3, "sre-manager"),
            service="checkout-api",
        )
        assert wait_until(lambda: len(active(alertmanager, decision)) == 2, timeout=WAIT)
        assert wait_until(lambda: pagerduty.status(f"{decision}:timeout:3") == "triggered")
        assert pagerduty.status(f"{decision}:timeout:1") is None
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


# ------------------------------------------------------------------ with the gate


@pytest.fixture
def gate(start_worker: Callable[..., Worker], settings: Settings) -> tuple[Worker, Feed]:
    """A gate worker with the fast test policy (approval timeout 3 s, the default chain)."""
    worker = start_worker()
    feed = Feed(settings)
    feed.seed_samples(worker)
    return worker, feed


def test_a_timed_out_approval_walks_the_chain_in_alertmanager_and_resolves_after_the_answer(
    settings: Settings, gate: tuple[Worker, Feed], alertmanager: LocalAlertmanager,
    pagerduty: PagerDutyStandIn,
) -> None:  # fmt: skip
    """Level 2, no answer: escalation 1 pages the primary, 2 the secondary (each an
    alert routed to its own receiver); an approval then resolves every alert and
    incident."""
    worker, feed = gate
    scenario = next(s for s in samples.SCENARIOS if s.name == "cert-second")
    proposal = samples.proposal(scenario, 1, at=dt.datetime.now(tz=dt.UTC), tag="pg-")
    # The gate signs what it writes on oncall: the pager checks it with the gate's key.
    verifier = keys.PublicKeys.from_pem_files([Path(f"{gate_key(settings)}.pub")])
    with running_pager(settings, alertmanager, pagerduty, gate_keys=verifier) as pager:
        feed.proposals([proposal])
        with DecisionReader(settings) as reader:
            decision = reader.wait_for([proposal.proposal_id])[proposal.proposal_id]
        assert decision["level"] == 2
        decision_id = decision["decision_id"]

        def by_number() -> dict[str, str]:
            return {
                a["labels"]["escalation_number"]: a["labels"]["escalation"]
                for a in active(alertmanager, decision_id)
            }

        assert wait_until(lambda: len(by_number()) >= 2, timeout=WAIT), worker.log_tail()
        assert {k: v for k, v in by_number().items() if k in {"1", "2"}} == {
            "1": "sre-oncall-primary",
            "2": "sre-oncall-secondary",
        }
        assert all(a["labels"]["level"] == "2" for a in active(alertmanager, decision_id))
        assert all("unverified" not in a["annotations"] for a in active(alertmanager, decision_id))
        for target in ("sre-oncall-primary", "sre-oncall-secondary"):
            assert wait_until(
                lambda t=target: alertmanager.webhooks.notified(t, decision_id, "firing"),
                timeout=WAIT,
            )
        feed.answer("approve", decision_id, "alice")

        assert wait_until(lambda: active(alertmanager, decision_id) == [], timeout=WAIT)
        paged = [e["dedup_key"] for e in pagerduty.events_for(decision_id)
                 if e["event_action"] == "trigger"]  # fmt: skip
        assert len(paged) >= 2
        for key in paged:
            assert wait_until(lambda k=key: pagerduty.status(k) == "resolved", timeout=WAIT)
        for target in ("sre-oncall-primary", "sre-oncall-secondary"):
            assert wait_until(
                lambda t=target: alertmanager.webhooks.notified(t, decision_id, "resolved"),
                timeout=WAIT,
            )
        assert pager.metric("escalation_pager_records_total", type="resolved") == 1
        assert pager.metric("escalation_pager_unverified_escalations_total", reason="unsigned") == 0
