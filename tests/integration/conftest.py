"""Integration fixtures: one real Apache Kafka broker per session, a topic prefix per test.

``KAFKA_BOOTSTRAP_SERVERS`` set: the tests use that cluster and start nothing.
Otherwise the project's own launcher starts a local broker (jars cached in
``Settings().kafka_cache_dir``) for the whole session. If it cannot start, the tests
fail: a broker that does not start is a defect, not a reason to skip.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from harness import Identities, Worker

from streams.kafka.admin import create_topics, wait_for_broker
from streams.kafka.launcher import LocalKafka
from streams.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test under tests/integration needs the broker: mark it so `-m "not
    # integration"` selects the fast suite.
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def _local_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka | None]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield None
        return
    kafka = LocalKafka(
        tmp_path_factory.mktemp("kafka"),
        cache_dir=Settings().kafka_cache_dir,
    )
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(_local_kafka: LocalKafka | None) -> str:
    """``host:port`` of the session's cluster: KAFKA_BOOTSTRAP_SERVERS or the local broker."""
    if _local_kafka is None:
        bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        wait_for_broker(bootstrap, timeout=30.0)
        return bootstrap
    return _local_kafka.bootstrap_servers


@pytest.fixture
def kafka_broker(_local_kafka: LocalKafka | None) -> Iterator[LocalKafka]:
    """The session's LocalKafka, for tests that stop or restart it; running again after."""
    if _local_kafka is None:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS names an external cluster; this test needs our own")
    yield _local_kafka
    if not _local_kafka.running:
        _local_kafka.start()


@pytest.fixture(scope="session")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second, secure local broker (`kafka up --secure`: SASL/SCRAM, ACLs) for the
    session, with its principals provisioned (tests/integration/secure_kafka.py)."""
    from secure_kafka import SecureCluster  # noqa: PLC0415

    cluster = SecureCluster.start(tmp_path_factory.mktemp("secure"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Identities:
    """Keys for the policy's people, the channels, an executor, an SLO source and the
    gate, and the keyring listing them: made once for the session."""
    return Identities.make(tmp_path_factory.mktemp("identities"))


@pytest.fixture(autouse=True)
def _identity_env(identities: Identities, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every Settings() a test builds, and every worker or CLI it starts, signs and
    # checks with the session's keys.
    for name, value in identities.env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, e.g. ``t-1a2b3c4d.``."""
    return f"t-{uuid.uuid4().hex[:8]}."


@pytest.fixture
def settings(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Settings:
    """Settings for one test: the session's cluster, its own prefix and data dir."""
    # The alias: Settings ignores `bootstrap_servers=` passed by field name.
    return Settings(
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        topic_prefix=topic_prefix,
        data_dir=tmp_path,
        store="memory://",
        metrics_port=0,
    )


@pytest.fixture
def topics(settings: Settings, kafka_bootstrap: str) -> list[str]:
    """Every topic of the gate, created under this test's prefix; their full names."""
    return create_topics(settings, kafka_bootstrap)


@pytest.fixture
def start_worker(settings: Settings, topics: list[str]) -> Iterator[Callable[..., Worker]]:
    """Start gate workers on this test's topics (``Worker`` arguments; ``ready=False``
    returns at once; ``on`` other settings); every worker started is stopped after."""
    started: list[Worker] = []

    def start(
        name: str = "w1", *, ready: bool = True, on: Settings | None = None, **kwargs: Any
    ) -> Worker:
        w = Worker(on or settings, name, **kwargs).start()
        started.append(w)
        if ready:
            w.wait_ready()
        return w

    try:
        yield start
    finally:
        for w in started:
            w.stop()


@pytest.fixture
def worker(start_worker: Callable[..., Worker]) -> Worker:
    """One running gate worker (``memory://``) on this test's topics; stopped after."""
    return start_worker()
