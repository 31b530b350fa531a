"""``escalation pager``: read ``oncall`` in a consumer group of its own and page humans.

The imperative shell around ``streams/oncall/pages.py``: decode a record, let the
pure rules say what to post, post it to Alertmanager and PagerDuty, and commit the
record's offset only after every call it needed went through (at-least-once: both
targets de-duplicate, an alert by its labels and an incident by its dedup key).
A call that fails for a reason that may pass (network, 5xx, 429) is tried again
with backoff, open alerts are kept alive meanwhile; one the target refuses as
invalid (another 4xx) is logged, counted and dropped, since trying again would stop
every later page behind it.

The book of open pages is rebuilt on every partition assignment from the partition's
records up to the group's committed offset (no page is sent again for them, but
their alerts are re-posted at once), so a restarted or new pager keeps alive, and
later resolves, the alerts its predecessor opened.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from streams.errors import InputError
from streams.keys import PublicKeys
from streams.models import OncallEscalation, OncallResolution
from streams.models.codec import parse_json
from streams.oncall import pages
from streams.oncall.metrics import PagerMetrics
from streams.oncall.pages import Book, Effect, PagerConfig, PostAlerts
from streams.oncall.targets import Alertmanager, Alertmanagers, DeliveryError, PagerDuty

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
#: How long one record's delivery may hold the consumer before the group considers
#: the pager gone (librdkafka's max.poll.interval.ms): an hour of a target being down.
MAX_POLL_INTERVAL_MS = 3_600_000
REBUILD_TIMEOUT_SECONDS = 120.0


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


class Pager:
    """One pager process: a consumer, a book of open pages, and its two targets."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        group: str,
        config: PagerConfig,
        alertmanager: Alertmanager | Alertmanagers | None,
        pagerduty: PagerDuty | None,
        metrics: PagerMetrics | None = None,
        clock: Callable[[], float] = time.time,
        kafka_config: dict[str, Any] | None = None,
        keys: PublicKeys | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.config = config
        self.alertmanager = alertmanager
        self.pagerduty = pagerduty
        self.metrics = metrics or PagerMetrics()
        self.clock = clock
        self.kafka_config = dict(kafka_config or {})
        #: The gate's public keys: resolutions must carry its signature; ``None``
        #: (no keys configured) checks nothing.
        self.keys = keys
        self.book = Book()
        self.ready = threading.Event()
        self._keepalive_at = 0.0
        self._consumer: Consumer | None = None

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Consume and page until ``stop`` is set."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
                **self.kafka_config,
            }
        )
        self._consumer = consumer
        consumer.subscribe(
            [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )  # fmt: skip
        try:
            while not stop.is_set():
                message = consumer.poll(0.25)
                if message is not None:
                    error = message.error()
                    if error is None:
                        if not self._deliver(self.handle(message), stop):
                            break  # stopped before it was delivered whole: done again later
                        consumer.commit(message=message, asynchronous=False)
                    elif error.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's name
                        log.warning("oncall consumer: %s", error)
                self._maybe_keepalive()
        finally:
            self.ready.clear()
            self.metrics.ready.set(0)
            consumer.close()

    def _read(self, message: Message) -> tuple[OncallEscalation | OncallResolution, str] | None:
        """The record and why its signature did not verify ("": it did, or unchecked);
        ``None`` for an invalid record or a resolution that is not the gate's."""
        where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
        try:
            data = parse_json(message.value() or b"")
            record = pages.read_record(data)
        except InputError as exc:
            self.metrics.invalid.inc()
            # The error names the field; a traceback would say nothing more.
            log.error("skipped an invalid oncall record at %s: %s", where, exc)  # noqa: TRY400
            return None
        refusal = self.keys.verify(data) if self.keys is not None else None
        if refusal is not None and isinstance(record, OncallResolution):
            # Fail toward humans: a resolution ends pages, so only the gate's may.
            self.metrics.refused.labels(refusal).inc()
            log.error("refused a resolution of %s at %s: %s", record.decision_id, where, refusal)
            return None
        if refusal is not None:
            self.metrics.unverified.labels(refusal).inc()
            log.warning("paging an escalation at %s whose signature is %s", where, refusal)
        return record, refusal or ""

    def handle(self, message: Message) -> tuple[Effect, ...]:
        """Fold one ``oncall`` record into the book; the calls it needs."""
        now = _utc(self.clock())
        read = self._read(message)
        if read is None:
            return ()
        record, unverified = read
        self.metrics.records.labels(record.type).inc()
        if isinstance(record, OncallResolution):
            outcome = pages.on_resolution(self.book, record, now, self.config)
            log.info(
                "resolving %s: answered (%s) by %s", record.decision_id, record.answer, record.by
            )
        else:
            outcome = pages.on_escalation(
                self.book, record, now, self.config, partition=partition_of(message),
                unverified=unverified,
            )  # fmt: skip
            log.info(
                "paging %s for %s (%s, escalation %d)%s",
                record.target or self.config.default_target, record.decision_id, record.reason,
                record.escalation_number, f": {outcome.note}" if outcome.note else "",
            )  # fmt: skip
        self.book = outcome.book
        self.metrics.open_pages.set(len(self.book.pages()))
        return outcome.effects

    # ------------------------------------------------------------------ delivery

    def _deliver(self, effects: tuple[Effect, ...], stop: threading.Event) -> bool:
        """Perform every call, trying transient failures again until they pass; False
        when ``stop`` came first."""
        pending = list(effects)
        backoff = 0.5
        while True:
            pending = [effect for effect in pending if not self._perform(effect)]
            if not pending:
                return True
            if stop.is_set():
                return False
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline and not stop.is_set():
                stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                self._maybe_keepalive()
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _perform(self, effect: Effect) -> bool:
        """One call; True when done (or dropped as refused), False to try again."""
        system = "alertmanager" if isinstance(effect, PostAlerts) else "pagerduty"
        action = effect.why if isinstance(effect, PostAlerts) else effect.action
        try:
            if isinstance(effect, PostAlerts):
                if self.alertmanager is None or not effect.alerts:
                    return True
                self.alertmanager.post(list(effect.alerts))
            elif self.pagerduty is None or self.pagerduty.send(effect) is None:
                return True
        except DeliveryError as exc:
            if exc.transient:
                self.metrics.deliveries.labels(system, action, "failed").inc()
                log.warning("%s (will try again)", exc)
                return False
            self.metrics.deliveries.labels(system, action, "rejected").inc()
            log.error("%s (refused: dropped)", exc)  # noqa: TRY400 - the target said why
            return True
        self.metrics.deliveries.labels(system, action, "ok").inc()
        return True

    def _maybe_keepalive(self) -> None:
        """Re-post the open alerts once a repost interval has passed (best effort)."""
        now = self.clock()
        if now < self._keepalive_at:
            return
        self._keepalive_at = now + self.config.repost.total_seconds()
        outcome = pages.keepalive(self.book, _utc(now), self.config)
        self.book = outcome.book
        self.metrics.open_pages.set(len(self.book.pages()))
        for effect in outcome.effects:
            self._perform(effect)  # a failure is retried by the next keep-alive

    # ------------------------------------------------------------------ assignment

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Rebuild the book from the new partitions' records the group already paged."""
        started = time.monotonic()
        committed = consumer.committed(partitions, timeout=30)
        folded = 0
        for tp in committed:
            if tp.offset is not None and tp.offset > 0:
                folded += self._rebuild(tp.partition, tp.offset)
        self._keepalive_at = 0.0  # their alerts are re-posted at once
        self.metrics.open_pages.set(len(self.book.pages()))
        self.ready.set()
        self.metrics.ready.set(1)
        log.info(
            "assigned %s: %d earlier records folded, %d open pages, in %.2fs",
            sorted(tp.partition for tp in partitions), folded, len(self.book.pages()),
            time.monotonic() - started,
        )  # fmt: skip

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.book = pages.revoke(self.book, {tp.partition for tp in partitions})
        self.metrics.open_pages.set(len(self.book.pages()))

    def _rebuild(self, partition: int, until: int) -> int:
        """Fold ``partition``'s records before offset ``until`` without paging anyone."""
        reader = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"{self.group}-rebuild-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                **self.kafka_config,
            }
        )
        folded = 0
        deadline = time.monotonic() + REBUILD_TIMEOUT_SECONDS
        try:
            reader.assign([TopicPartition(self.topic, partition, OFFSET_BEGINNING)])
            while time.monotonic() < deadline:
                message = reader.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                        break
                    continue
                offset = message.offset() or 0
                if offset >= until:
                    break
                self._fold(message)
                folded += 1
                if offset >= until - 1:
                    break
            else:
                log.error(
                    "rebuild of %s[%d] timed out at %d records", self.topic, partition, folded
                )
        finally:
            reader.close()
        return folded

    def _fold(self, message: Message) -> None:
        """Apply one earlier record to the book at its own time; its calls were made."""
        read = self._read(message)
        if read is None:
            return
        record, unverified = read
        _, stamp = message.timestamp()
        at = _utc(stamp / 1000) if stamp > 0 else _utc(self.clock())
        if isinstance(record, OncallResolution):
            self.book = pages.on_resolution(self.book, record, at, self.config).book
        else:
            self.book = pages.on_escalation(
                self.book, record, at, self.config, partition=partition_of(message),
                unverified=unverified,
            ).book  # fmt: skip


def partition_of(message: Message) -> int:
    """A message's partition (confluent-kafka types it as optional)."""
    return message.partition() or 0
