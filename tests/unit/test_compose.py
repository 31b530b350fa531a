# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""docker-compose.yml and the Splunk sink config: the container stack is wired as documented.

No Docker engine runs in the tests: the files are parsed and checked for what the
stack depends on (pinned images, the worker's settings, Prometheus's mounts, the
connector reading the audit topic with no secret in the file).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SINK = ROOT / "deploy" / "splunk-connect" / "splunk-sink.json"
SECRET_ENV = {
    "SPLUNK_PASSWORD": "test-password",
    "SPLUNK_HEC_TOKEN": "00000000-0000-0000-0000-000000000000",
    "ESCALATION_APPROVAL_SECRET": "test-secret",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    value = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(value, dict)
    return value


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def sink() -> dict[str, str]:
    value = orjson.loads(SINK.read_bytes())
    assert value["name"]
    config = value["config"]
    assert all(isinstance(v, str) for v in config.values()), "Connect configs are strings"
    return config


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a fresh deployment gets: no ESCALATION_* from the test's environment."""
    for name in list(os.environ):
        if name.startswith("ESCALATION_"):
            monkeypatch.delenv(name)
    return Settings()


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in raw.items()}


def test_the_stack_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) >= {
        "kafka",
        "topics",
        "worker",
        "prometheus",
        "kafka-connect",
        "connector-init",
        "splunk",
    }


def test_every_image_is_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image name"
        _repo, sep, tag = image.rpartition(":")
        assert sep, f"{name}: {image} has no tag"
        assert tag not in {"latest", "", "stable"}, f"{name}: {image} is not pinned"
        assert "/" not in tag, f"{name}: {image} has no tag"


def test_pinned_base_images_of_the_dockerfiles() -> None:
    for path in (ROOT / "Dockerfile", ROOT / "deploy" / "splunk-connect" / "Dockerfile"):
        for line in path.read_text().splitlines():
            if line.startswith("FROM "):
                image = line.split()[1]
                assert ":" in image, f"{path.name}: {image}"
                assert not image.endswith(":latest"), f"{path.name}: {image}"


def test_kafka_is_single_node_kraft_with_internal_and_host_listeners(
    services: dict[str, Any],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    settings = env(kafka)
    assert settings["KAFKA_PROCESS_ROLES"] == "broker,controller"
    advertised = settings["KAFKA_ADVERTISED_LISTENERS"]
    assert "//kafka:9092" in advertised
    assert "//localhost:29092" in advertised
    assert settings["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "29092:29092" in kafka["ports"]


def test_topics_and_worker_run_the_gate_image_against_the_internal_listener(
    services: dict[str, Any],
) -> None:
    topics, worker = services["topics"], services["worker"]
    assert topics["command"][:2] == ["topics", "create"]
    assert worker["command"] == ["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile"
    assert topics["image"] == worker["image"]
    for service in (topics, worker):
        assert env(service)["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env(worker)["ESCALATION_METRICS_PORT"] == "9464"
    # Prometheus scrapes it from another container.
    assert env(worker)["ESCALATION_METRICS_ADDR"] == "0.0.0.0"  # noqa: S104
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_the_worker_env_names_real_settings(services: dict[str, Any]) -> None:
    """Every ESCALATION_* variable the stack sets is one Settings reads."""
    known = {f"ESCALATION_{name.upper()}" for name in Settings.model_fields}
    for name in ("topics", "worker"):
        for variable in env(services[name]):
            if variable.startswith("ESCALATION_"):
                assert variable in known, f"{name}: {variable} is not a setting"


def test_prometheus_mounts_its_config_and_the_rules(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in prometheus["volumes"] if ":" in m}
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/rules.yml"] == "/etc/prometheus/rules.yml"
    for source in mounts:
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert "worker:9464" in targets
    assert config["rule_files"] == ["rules.yml"]


def test_splunk_has_hec_enabled_with_secrets_from_the_environment(
    services: dict[str, Any], defaults: Settings
) -> None:
    splunk = env(services["splunk"])
    assert splunk["SPLUNK_START_ARGS"] == "--accept-license"
    assert splunk["SPLUNK_HEC_TOKEN"].startswith("${SPLUNK_HEC_TOKEN")
    assert splunk["SPLUNK_PASSWORD"].startswith("${SPLUNK_PASSWORD")
    assert splunk["SPLUNK_ADD"] == f"index {defaults.audit_index}"


def test_connect_resolves_env_placeholders_and_gets_the_token_from_the_environment(
    services: dict[str, Any],
) -> None:
    connect = env(services["kafka-connect"])
    assert connect["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert connect["CONNECT_CONFIG_PROVIDERS_ENV_CLASS"] == (
        "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    )
    assert connect["SPLUNK_HEC_TOKEN"].startswith("${SPLUNK_HEC_TOKEN")
    assert connect["CONNECT_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_connector_init_posts_the_sink_config(services: dict[str, Any]) -> None:
    init = services["connector-init"]
    mounted = [m.split(":")[0] for m in init["volumes"]]
    assert "./deploy/splunk-connect/splunk-sink.json" in mounted
    assert "./deploy/splunk-connect/register.sh" in mounted
    assert init["depends_on"]["kafka-connect"]["condition"] == "service_healthy"
    assert init["depends_on"]["splunk"]["condition"] == "service_healthy"
    script = (ROOT / "deploy" / "splunk-connect" / "register.sh").read_text()
    assert "/connectors" in script
    assert "--data @" in script


def test_the_sink_reads_the_audit_topic_as_preformatted_hec_events(
    sink: dict[str, str], defaults: Settings
) -> None:
    assert sink["connector.class"] == "com.splunk.kafka.connect.SplunkSinkConnector"
    assert sink["topics"] == defaults.topic("audit") == "escalation.audit"
    assert sink["splunk.hec.json.event.formatted"] == "true"
    assert sink["splunk.hec.raw"] == "false"
    # The pre-formatted path parses record.value().toString(): the value must stay a string.
    assert sink["value.converter"] == "org.apache.kafka.connect.storage.StringConverter"
    assert sink["splunk.indexes"] == defaults.audit_index
    assert sink["splunk.hec.ack.enabled"] in {"true", "false"}
    assert sink["splunk.hec.ssl.validate.certs"] == "true"


def test_the_sink_config_holds_no_secret(sink: dict[str, str]) -> None:
    assert sink["splunk.hec.token"] == "${env:SPLUNK_HEC_TOKEN}"
    assert sink["splunk.hec.uri"] == "${env:SPLUNK_HEC_URI}"
    text = SINK.read_text()
    assert not re.search(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-", text), "a token UUID"


def test_no_secret_has_a_default_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    for name in SECRET_ENV:
        for match in re.finditer(r"\$\{" + name + r"([^}]*)\}", text):
            assert match.group(1).startswith(":?"), f"{name} must be required, not defaulted"


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode
    != 0,
    reason="the docker compose plugin is not installed",
)
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **SECRET_ENV},
    )
    assert result.returncode == 0, result.stderr
