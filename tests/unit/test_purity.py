# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The pure core imports no Kafka client, no Faust and no metrics library (STYLE.md)."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import pytest

FORBIDDEN = ("faust", "mode", "aiokafka", "confluent_kafka", "prometheus_client")
PURE_PACKAGES = ("streams.models", "streams.policy", "streams.state", "streams.handlers")


def _modules() -> list[str]:
    """Every pure package and each of its modules (a module imported alone counts too)."""
    names: list[str] = []
    for package in PURE_PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [m.name for m in pkgutil.iter_modules(path, prefix=f"{package}.")]
    return names


PURE = _modules()


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
    assert _loaded_after_import(module) == []


def test_every_pure_package_is_checked() -> None:
    """No package can drop out of the check by moving: each has modules to import."""
    for package in PURE_PACKAGES:
        assert any(m.startswith(f"{package}.") for m in PURE), package


def test_the_check_sees_a_forbidden_import() -> None:
    """The probe itself works: importing prometheus_client is reported."""
    assert _loaded_after_import("prometheus_client") == ["prometheus_client"]
