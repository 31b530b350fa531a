"""The Slack service's own state: one SQLite file under the data directory.

- ``records``: what the service knows of each Level 2/3 decision, with the channel
  and ``ts`` of the message it posted, so a restarted service updates (and never
  re-posts) its messages;
- ``requests``: the signatures of the interactivity requests it accepted, until
  Slack's five-minute window has passed, so a replayed request is refused;
- ``answers``: the nonce of every answer it published, with the Slack user and
  channel, so a refusal by the gate can be told to the person who clicked.

One writer process; threads share one connection behind a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from streams.slack.track import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (decision_id TEXT PRIMARY KEY, record BLOB NOT NULL,
                                    updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS requests (signature TEXT PRIMARY KEY, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS answers (nonce TEXT PRIMARY KEY, slack_user TEXT NOT NULL,
                                    channel TEXT, decision_id TEXT NOT NULL, at REAL NOT NULL);
"""


class Store:
    """Records by decision id, seen request signatures, published answers."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, decision_id: str) -> Record | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record FROM records WHERE decision_id = ?", (decision_id,)
            ).fetchone()
        return None if row is None else dict(orjson.loads(row[0]))

    def put(self, record: Record, now: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO records (decision_id, record, updated_at) VALUES (?, ?, ?)",
                (record["decision_id"], orjson.dumps(record), now),
            )

    def delete(self, decision_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM records WHERE decision_id = ?", (decision_id,))

    def records(self) -> Iterator[Record]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM records").fetchall()
        for (raw,) in rows:
            yield dict(orjson.loads(raw))

    def remember_request(self, signature: str, *, now: float, keep_seconds: float) -> bool:
        """``True`` the first time a request signature is seen; ``False`` for a replay."""
        with self._lock:
            self._db.execute("DELETE FROM requests WHERE expires_at < ?", (now,))
            try:
                self._db.execute(
                    "INSERT INTO requests (signature, expires_at) VALUES (?, ?)",
                    (signature, now + keep_seconds),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    def remember_answer(
        self, nonce: str, *, slack_user: str, channel: str | None, decision_id: str, at: float
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers (nonce, slack_user, channel, decision_id, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (nonce, slack_user, channel, decision_id, at),
            )

    def answer(self, nonce: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT slack_user, channel, decision_id, at FROM answers WHERE nonce = ?",
                (nonce,),
            ).fetchone()
        if row is None:
            return None
        return {"slack_user": row[0], "channel": row[1], "decision_id": row[2], "at": row[3]}

    def forget_answers_before(self, at: float) -> None:
        with self._lock:
            self._db.execute("DELETE FROM answers WHERE at < ?", (at,))
