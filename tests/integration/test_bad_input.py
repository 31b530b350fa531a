from __future__ import annotations

import datetime as dt

import orjson
from harness import DecisionReader, Feed, Reader, Worker

from streams import samples
from streams.settings import Settings


def test_probe(settings: Settings, topics: list[str]) -> None:
    w = Worker(settings, "w1").start()
    try:
        w.wait_ready()
        feed = Feed(settings)
        now = dt.datetime.now(tz=dt.UTC)
        good = samples.proposal(samples.SCENARIOS[7], 1, at=now, tag="probe-")
        deep = orjson.dumps({**good.model_dump(mode="json"), "summary": "@@"}).replace(
            b'"@@"', b"[" * 1000 + b"]" * 1000
        )
        feed.raw("proposals", [deep], key=b"svc")
        good2 = samples.proposal(samples.SCENARIOS[7], 2, at=now, tag="probe-")
        feed.proposals([good2])
        with DecisionReader(settings) as reader:
            ok = reader.wait(lambda r: good2.proposal_id in r.by_proposal(), timeout=30)
            print("decided after deep:", ok)
        with Reader(settings.bootstrap_servers or "", [settings.topic("dlq")]) as dlq:
            dlq.wait(lambda r: len(r.messages) >= 1, timeout=10)
            print("dlq:", [(v["reason"], v["error"][:80]) for v in dlq.values()])
        print("alive", w.alive)
        print(w.log_tail(60))
    finally:
        w.stop()
