"""The pager on the secure broker (SASL/SCRAM, ACLs from streams/kafka/acls.py): it
reads ``oncall`` as the operators' principal, and nobody but the gate may write there,
so an AI system cannot forge the resolution that would end a page.

Slow (a second broker of its own), left out of CI:
``.venv/bin/pytest -m slow tests/integration/test_pager_secure.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alertmanager import LocalAlertmanager
from confluent_kafka import KafkaError
from pagerduty_standin import PagerDutyStandIn
from secure_kafka import SecureCluster, produce_as
from test_pager import REPOST, ROUTING_KEY, WAIT, active, escalation, resolution

from streams.kafka import acls
from streams.kafka.security import confluent_config
from streams.models import encode
from streams.oncall.metrics import PagerMetrics
from streams.oncall.pages import PagerConfig
from streams.oncall.service import Pager
from streams.oncall.targets import Alertmanager, PagerDuty
from streams.testing import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureCluster]:
    secure = SecureCluster.start(tmp_path_factory.mktemp("secure-pager"))
    try:
        yield secure
    finally:
        secure.stop()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAlertmanager]:
    am = LocalAlertmanager(tmp_path_factory.mktemp("alertmanager-secure")).start()
    try:
        yield am
    finally:
        am.stop()


def test_the_pager_reads_oncall_as_the_operator_and_an_ai_cannot_forge_a_resolution(
    cluster: SecureCluster, alertmanager: LocalAlertmanager, tmp_path: Path
) -> None:
    gate, ai = cluster.as_(acls.GATE), cluster.as_(acls.ai_principal("holmesgpt"))
    operator = cluster.as_(acls.OPERATOR)
    topic = gate.topic("oncall")
    decision = "d-secure-1"
    standin = PagerDutyStandIn(tmp_path)
    pager = Pager(
        bootstrap=operator.bootstrap_servers or "",
        topic=topic,
        group="escalation-pager",
        config=PagerConfig(repost=REPOST),
        alertmanager=Alertmanager(alertmanager.url),
        pagerduty=PagerDuty(ROUTING_KEY, url=standin.url, ca_file=standin.ca_file),
        metrics=PagerMetrics(),
        kafka_config=confluent_config(operator),
    )
    stop = threading.Event()
    thread = threading.Thread(target=pager.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert pager.ready.wait(WAIT)
        page = encode(escalation(decision, 1, "sre-oncall-primary"))
        assert produce_as(gate, topic, [page], key=b"checkout-api") == [None]
        assert wait_until(lambda: len(active(alertmanager, decision)) == 1, timeout=WAIT)

        forged = encode(resolution(decision, 1, by="holmesgpt"))
        (error,) = produce_as(ai, topic, [forged], key=b"checkout-api", timeout=20)
        assert error is not None
        assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
        (error,) = produce_as(operator, topic, [forged], key=b"checkout-api", timeout=20)
        assert error is not None
        assert error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

        # The gate's own resolution, after the refused ones, is the one that ends it.
        answered = encode(resolution(decision, 1))
        assert produce_as(gate, topic, [answered], key=b"checkout-api") == [None]
        assert wait_until(lambda: active(alertmanager, decision) == [], timeout=WAIT)
        assert (
            pager.metrics.registry.get_sample_value(
                "escalation_pager_records_total", {"type": "resolved"}
            )
            == 1
        )
    finally:
        stop.set()
        thread.join(30)
        standin.stop()
