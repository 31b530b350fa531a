# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The pure core imports no Kafka client, no Faust and no metrics library (STYLE.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

FORBIDDEN = ("faust", "mode", "aiokafka", "confluent_kafka", "prometheus_client")
PURE = ["streams.models", "streams.policy", "streams.state"]


def _loaded_after_import(module: str) -> list[str]:
    """Import ``module`` in a fresh interpreter; the forbidden modules it loaded."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert isinstance(loaded, list)
    return loaded


@pytest.mark.parametrize("module", PURE)
def test_pure_package_imports_no_kafka_faust_or_metrics(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} does not exist yet")

    assert _loaded_after_import(module) == []


def test_the_check_sees_a_forbidden_import() -> None:
    """The probe itself works: importing prometheus_client is reported."""
    assert _loaded_after_import("prometheus_client") == ["prometheus_client"]
