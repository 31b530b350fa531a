"""``escalation history import`` at real sizes: time and memory of the command.

``python bench/history_import.py [--sizes 100000,1000000] [--fold]``

On a local Apache Kafka (or ``KAFKA_BOOTSTRAP_SERVERS``) with a gate worker in
development mode (it makes alice's key and a keyring that lets her import): for each
size, generates a JSON-lines file of that many past incidents (200 patterns, 5 AI
systems, 90 days), runs ``python -m streams.cli history import FILE --as alice`` as a
child process and reports its wall time, its peak RSS (``wait4``) and its report
line. With ``--fold``, also waits until the worker has folded the imported history
(a decision's context shows every incident) and reports that time too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import _common as c
import orjson

from streams.kafka.admin import create_topics
from streams.settings import Settings

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PATTERNS, AI_SYSTEMS = 200, 5


def generate(path: Path, count: int) -> int:
    """``count`` incidents, one JSON object a line; the file's size in bytes."""
    rng = random.Random(count)
    start = dt.datetime.now(tz=dt.UTC) - dt.timedelta(days=90)
    with path.open("wb") as out:
        for n in range(count):
            record = {
                "pattern": f"bench/pattern-{rng.randrange(PATTERNS)}",
                "action_type": "rolling_restart",
                "outcome": "success" if rng.random() < 0.9 else "failure",
                "ai_system": f"ai-{rng.randrange(AI_SYSTEMS)}",
                "verdict": "true_positive" if rng.random() < 0.85 else "false_positive",
                "service": f"svc-{rng.randrange(500)}",
                "at": (start + dt.timedelta(seconds=n * 7.776)).isoformat(),
            }
            out.write(orjson.dumps(record) + b"\n")
    return path.stat().st_size


def run_cli(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run the command line; wall seconds, peak RSS MiB, exit code, last stdout line."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    out = process.stdout.read().decode() if process.stdout else ""
    err = process.stderr.read().decode() if process.stderr else ""
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "report": out.strip().splitlines()[-1] if out.strip() else "",
        "stderr_tail": err.strip().splitlines()[-1:] if err.strip() else [],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--fold", action="store_true", help="also time the worker's fold")
    parser.add_argument("--deadline", type=float, default=3_600.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    deadline = c.Deadline(args.deadline)
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-import-")))
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        if not bootstrap:
            from streams.kafka.launcher import LocalKafka  # noqa: PLC0415

            kafka = LocalKafka(work / "kafka", cache_dir=Settings().kafka_cache_dir)
            stack.enter_context(kafka)
            bootstrap = kafka.bootstrap_servers
        for size in [int(s) for s in args.sizes.split(",") if s.strip()]:
            prefix = f"bench-{uuid.uuid4().hex[:8]}-import."
            data_dir = work / prefix
            settings = Settings(topic_prefix=prefix, data_dir=data_dir, bootstrap_servers=bootstrap)
            create_topics(settings, bootstrap)
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "ESCALATION_TOPIC_PREFIX": prefix,
                "ESCALATION_DATA_DIR": str(data_dir),
                "ESCALATION_DEV": "1",
                "ESCALATION_METRICS_PORT": "0",
                "ESCALATION_METRICS_PORT_FILE": str(data_dir / "metrics.port"),
                "ESCALATION_STORE": "memory://",
            }
            log = data_dir / "worker.log"
            worker = c.spawn(
                [sys.executable, "-m", "streams.cli", "worker"], env=env, log=log, cwd=REPO
            )
            try:
                port_file = data_dir / "metrics.port"
                if not c.wait_until(port_file.exists, timeout=120, deadline=deadline):
                    raise RuntimeError(f"worker did not start:\n{c.tail(log)}")
                time.sleep(0.2)
                port = int(port_file.read_text())

                def ready(port: int = port) -> bool:
                    return c.metric(port, "escalation_worker_ready") >= 1

                if not c.wait_until(ready, timeout=120, deadline=deadline, interval=0.2):
                    raise RuntimeError(f"worker not ready:\n{c.tail(log)}")
                path = work / f"incidents-{size}.jsonl"
                file_bytes = generate(path, size)
                result: dict[str, Any] = {"incidents": size, "file_mib": round(file_bytes / 2**20)}
                result["import"] = run_cli(env, "history", "import", str(path), "--as", "alice")
                print(orjson.dumps(result).decode(), flush=True)
                if args.fold:
                    started = time.perf_counter()

                    def folded(port: int = port, size: int = size) -> bool:
                        # The gate folds one history update per incident (streams/handlers/
                        # control.py: history_updates of each record).
                        applied = c.metric(
                            port, "escalation_state_updates_applied_total", table="history"
                        )
                        return applied >= size

                    ok = c.wait_until(folded, timeout=1_800, deadline=deadline, interval=1.0)
                    result["fold_seconds_after_import"] = (
                        round(time.perf_counter() - started, 1) if ok else None
                    )
                results.append(result)
            finally:
                c.stop(worker)
    for r in results:
        i = r["import"]
        print(
            f"{r['incidents']:,} incidents ({r['file_mib']} MiB): {i['seconds']}s "
            f"({r['incidents'] / max(i['seconds'], 0.01):,.0f}/s), CLI peak RSS "
            f"{i['peak_rss_mib']} MiB, exit {i['exit']}; {i['report']}"
            + (f"; folded {r.get('fold_seconds_after_import')}s after" if args.fold else "")
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(
            f"x{b['incidents'] / a['incidents']:.0f} incidents: time "
            f"x{b['import']['seconds'] / a['import']['seconds']:.2f}, CLI peak RSS "
            f"x{b['import']['peak_rss_mib'] / a['import']['peak_rss_mib']:.2f}"
        )
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
