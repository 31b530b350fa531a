# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""The worker's own cost of one proposal, without a broker.

``python bench/hotpath.py [--count N] [--repeats R] [--check]``

What the lanes' decider does per proposal record, in the worker's own objects:
decode and validate it, build its context from the folded state (a ``Mirror``
seeded as ``bench/pipeline.py`` seeds its fleet, never started), evaluate it, sign
the decision (Ed25519), seal its two audit events onto the chain, and hand every
record to librdkafka (a ``Sink`` whose broker is ``127.0.0.1:1``: the records are
queued, never sent, and purged after each pass). The proposals are the pipeline
bench's fleet workload (``bench/_common.Fleet``), so the level mix is the pipeline's
(40% Levels 3 and 4).

It prints proposals per second and per CPU second against
``Proposal.model_validate_json`` on the same records in the same run (one pass of
each per repeat, alternating), and their ratio, which is what to compare across
runs on a shared machine. ``valgrind --tool=callgrind`` on ``--count 2000
--repeats 1`` counts instructions instead, the same from run to run.

``--check`` also verifies what one pass wrote: every signature with the gate's
public key, and every audit chain with ``streams.audit.verify`` (exit code 1 when
either fails).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import Fleet  # noqa: E402
from streams import handlers  # noqa: E402
from streams.handlers.effects import Origin  # noqa: E402
from streams.keys import generate  # noqa: E402
from streams.metrics import Metrics  # noqa: E402
from streams.models import Proposal, decode  # noqa: E402
from streams.policy import parse_policy  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.state.records import budget_update, import_updates, requalification_update  # noqa: E402
from streams.testing import OfflineSink  # noqa: E402
from streams.topology.approvals import Approvals  # noqa: E402
from streams.topology.emitter import Emitter  # noqa: E402
from streams.topology.mirror import Mirror  # noqa: E402
from streams.topology.sealer import Sealer  # noqa: E402

POLICY = ROOT / "bench" / "policy-fleet.yaml"
PARTITIONS = 4
#: Decisions per ``Sink.held`` block, as a 5 ms slice holds them at ~0.4 ms each.
SLICE = 12


class HotPath:
    """The decider's per-proposal work, wired as ``Gate`` wires it."""

    def __init__(self, services: int, *, keep: bool = False) -> None:
        self.settings = Settings()
        self.policy = parse_policy(POLICY.read_text(), source=str(POLICY))
        self.policy.bind_keyring("0" * 64)
        self.signer = generate("escalation-gate")
        self.mirror = Mirror("127.0.0.1:1", self.settings.topic("state"))
        self.mirror.partitions = PARTITIONS
        self.fleet = Fleet(services=services, patterns=10)
        now = dt.datetime.now(tz=dt.UTC)
        for update in import_updates(self.fleet.history_records(now)):
            self.mirror.apply(update.record())
        for index in range(services):
            update = budget_update(Fleet.service(index), remaining=0.9, at=now.timestamp())
            self.mirror.apply(update.record())
        for pattern, action in self.fleet.requalified():
            update = requalification_update(
                pattern, action, op="requalify", user="alice", at=now.timestamp(), reason="bench"
            )
            self.mirror.apply(update.record())
        self.sink = OfflineSink(keep=keep)
        self.keep = keep
        self.metrics = Metrics()
        self.sealer = Sealer(self.settings, {})
        self.emitter = Emitter(
            self.settings,
            sink=self.sink,
            sealer=self.sealer,
            approvals=Approvals(),
            metrics=self.metrics,
            apply_state=self.mirror.apply,
            signer=self.signer,
        )
        self.topic = self.settings.topic("proposals")

    def records(self, count: int) -> list[tuple[int, bytes, bytes]]:
        """``count`` (partition, key, value) of the fleet workload."""
        from streams.topology.app import home_partition  # noqa: PLC0415

        items = self.fleet.proposals("hot-", count)
        return [(home_partition(key, PARTITIONS), key, value) for _, key, value in items]

    def fresh_sink(self) -> None:
        """A new sink for the next pass (the last one's records stay queued in the old)."""
        self.sink = self.emitter.sink = OfflineSink(keep=self.keep)

    def run(self, records: list[tuple[int, bytes, bytes]]) -> Counter[int]:
        """One pass: every record decided and emitted; the level mix."""
        levels: Counter[int] = Counter()
        max_bytes = self.settings.max_message_bytes
        for start in range(0, len(records), SLICE):
            with self.sink.held():
                for offset, (partition, key, value) in enumerate(
                    records[start : start + SLICE], start
                ):
                    proposal = decode(Proposal, value, max_bytes=max_bytes)
                    origin = Origin(self.topic, partition, offset, time.time(), key, value)
                    decided = handlers.decide(proposal, self.mirror, self.policy, origin)
                    self.emitter.emit(decided.effects, partition, source="proposals")
                    levels[decided.decision.level] += 1
        return levels


def _timed(run: Any, count: int) -> tuple[float, float]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.thread_time()
    run()
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    return count / wall, count / cpu if cpu > 0 else float("inf")


def check(hot: HotPath) -> list[str]:
    """Problems with what the last pass wrote: signatures and audit chains."""
    from streams.audit.verify import verify  # noqa: PLC0415
    from streams.keys import PublicKeys  # noqa: PLC0415

    keys = PublicKeys([hot.signer.public])
    audit = [value for topic, value in hot.sink.records if topic == hot.settings.topic("audit")]
    signed = [
        value
        for topic, value in hot.sink.records
        if topic.startswith(hot.settings.topic("decisions."))
    ]
    problems = [f"signature: {r}" for r in {keys.verify(orjson.loads(v)) for v in signed} if r]
    report = verify(audit)
    problems += [f"audit: {finding.line()}" for finding in report.errors[:5]]
    if not signed or report.events != len(audit):
        problems.append(f"written: {len(signed)} decisions, {report.events} of {len(audit)} "
                        "audit events read back")  # fmt: skip
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="proposals per pass")
    parser.add_argument("--repeats", type=int, default=9, help="alternating passes of each")
    parser.add_argument("--services", type=int, default=2000, help="services of the fleet")
    parser.add_argument("--check", action="store_true", help="verify signatures and chains")
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeats < 1:
        parser.error("--count and --repeats must be at least 1")
    hot = HotPath(args.services, keep=args.check)
    records = hot.records(args.count)
    raws = [value for _, _, value in records]
    validate = Proposal.model_validate_json
    levels: Counter[int] = Counter()

    def path() -> None:
        levels.clear()
        levels.update(hot.run(records))

    def validations() -> None:
        for raw in raws:
            validate(raw)

    path()  # warm up (the policy's plan, the caches)
    if args.check:
        problems = check(hot)
        for problem in problems:
            print(f"check: {problem}", file=sys.stderr)
        if problems:
            return 1
        hot.keep = False
    hot.fresh_sink()
    validations()
    paths, valids = [], []
    for _ in range(args.repeats):
        paths.append(_timed(path, len(records)))
        hot.fresh_sink()
        valids.append(_timed(validations, len(raws)))
    ratios = [p[0] / v[0] for p, v in zip(paths, valids, strict=True)]
    share = sum(n for level, n in levels.items() if level >= 3) / max(1, sum(levels.values()))
    path_wall = statistics.median(p[0] for p in paths)
    path_cpu = statistics.median(p[1] for p in paths)
    print(
        f"hot path: {args.count} proposals x {args.repeats}, "
        f"levels {dict(sorted(levels.items()))} (Level 3+4 {share:.0%})"
    )
    print(
        f"  decide+emit      {path_wall:>9,.0f}/s median (best {max(p[0] for p in paths):,.0f}; "
        f"per CPU second {path_cpu:,.0f}: {1e6 / path_cpu:.0f} us of CPU each)"
    )
    print(
        f"  model_validate   {statistics.median(v[0] for v in valids):>9,.0f}/s median "
        f"(per CPU second {statistics.median(v[1] for v in valids):,.0f})"
    )
    print(f"  ratio            {statistics.median(ratios):.4f} median "
          f"({min(ratios):.4f}-{max(ratios):.4f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
