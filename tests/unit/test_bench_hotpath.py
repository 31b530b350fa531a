"""``bench/hotpath.py`` runs, verifies what it wrote, and measures the pipeline's mix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_hotpath_checks_its_records_and_reports_the_mix() -> None:
    done = subprocess.run(
        [sys.executable, "bench/hotpath.py", "--count", "100", "--repeats", "1", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "(Level 3+4 40%)" in done.stdout
    assert "ratio" in done.stdout


def test_hotpath_refuses_a_bad_count() -> None:
    done = subprocess.run(
        [sys.executable, "bench/hotpath.py", "--count", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--count" in done.stderr
