# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The Splunk app in deploy/splunk: its .conf files parse, and every search reads what the
gate writes (its index, its sourcetype, audit kinds and data fields that exist)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import get_args

import pytest

from streams.audit.chain import DEFAULT_SOURCETYPE
from streams.audit.checkpoint import CheckpointData
from streams.models.audit import AuditKind
from streams.models.decision import Decision, OncallEscalation
from streams.settings import Settings

APP = Path(__file__).resolve().parents[2] / "deploy" / "splunk"

#: The searches an auditor runs (issue 17): each must exist.
REQUIRED = {
    "Escalation - autonomous actions by day",
    "Escalation - approvals by time to answer",
    "Escalation - approval timeouts",
    "Escalation - refused answers",
    "Escalation - policy loads",
    "Escalation - checkpoint gaps",
}
#: savedsearches.conf keys used here, as savedsearches.conf.spec names them.
KNOWN_KEYS = {
    "search", "description", "dispatch.earliest_time", "dispatch.latest_time", "enableSched",
    "cron_schedule", "is_visible", "alert_type", "alert_comparator", "alert_threshold",
}  # fmt: skip
#: Where the searches' ``spath`` paths must lead: fields the gate writes.
DATA_PATHS = {
    "data.decision.": set(Decision.model_fields),
    "data.escalation.": set(OncallEscalation.model_fields),
    "data.": set(CheckpointData.model_fields)
    | {"reason", "user", "kind", "version", "digest", "problems"},
}


def _conf(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign] # Splunk keys are case-sensitive
    path = APP / "default" / name
    with path.open() as handle:
        parser.read_file(handle, source=str(path))
    return parser


def test_app_conf_names_the_app_and_its_version() -> None:
    app = _conf("app.conf")
    assert app["package"]["id"] == "escalation_gate"
    assert re.fullmatch(r"\d+\.\d+\.\d+", app["launcher"]["version"])
    assert app["install"]["state"] == "enabled"


def test_props_keep_the_whole_body_and_extract_its_json() -> None:
    props = _conf("props.conf")
    stanza = props[DEFAULT_SOURCETYPE]
    assert stanza["TRUNCATE"] == "0"  # a cut _raw no longer verifies
    assert stanza["KV_MODE"] == "json"
    assert stanza["SHOULD_LINEMERGE"] == "false"


def test_the_metadata_lets_everyone_read_and_only_admins_write() -> None:
    # ``[]`` (the whole app) is not a section header configparser accepts: read the lines.
    lines = [
        line.strip()
        for line in (APP / "metadata" / "default.meta").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "[]"
    assert "access = read : [ * ], write : [ admin ]" in lines


SEARCHES = _conf("savedsearches.conf")


def test_every_search_an_auditor_needs_is_shipped() -> None:
    assert set(SEARCHES.sections()) >= REQUIRED


@pytest.mark.parametrize("name", SEARCHES.sections())
def test_each_search_reads_the_gates_index_and_sourcetype(name: str) -> None:
    stanza = SEARCHES[name]
    assert set(stanza) <= KNOWN_KEYS, set(stanza) - KNOWN_KEYS
    search = stanza["search"]
    settings = Settings()
    assert search.startswith(f'index={settings.audit_index} sourcetype="{DEFAULT_SOURCETYPE}"'), (
        search
    )
    assert "| dedup event_id" in search  # a redelivery is counted once
    assert stanza["description"]


@pytest.mark.parametrize("name", SEARCHES.sections())
def test_each_search_names_only_audit_kinds_and_fields_that_exist(name: str) -> None:
    search = SEARCHES[name]["search"]
    kinds = set(re.findall(r"kind::(\w+)", search)) | set(re.findall(r'kind="(\w+)"', search))
    assert kinds, "a search selects by kind"
    assert kinds <= set(get_args(AuditKind)), kinds - set(get_args(AuditKind))
    for path in re.findall(r"\b(data\.[\w.]+)", search):
        prefix = max((p for p in DATA_PATHS if path.startswith(p)), key=len)
        field = path[len(prefix) :].split(".")[0]
        if prefix == "data." and field in {"decision", "escalation", "approval"}:
            continue
        assert field in DATA_PATHS[prefix], f"{path}: {field} is not a field the gate writes"


@pytest.mark.parametrize("name", SEARCHES.sections())
def test_scheduled_searches_have_a_five_field_cron(name: str) -> None:
    stanza = SEARCHES[name]
    if stanza.get("enableSched") == "1":
        assert len(stanza["cron_schedule"].split()) == 5


def test_the_compose_stack_installs_the_app_into_its_splunk() -> None:
    import yaml  # noqa: PLC0415 - only this test reads the compose file

    compose = yaml.safe_load((APP.parents[1] / "docker-compose.yml").read_text())
    volumes = compose["services"]["splunk"]["volumes"]
    assert "./deploy/splunk:/opt/splunk/etc/apps/escalation_gate:ro" in volumes
