"""The executor's durable record: what ran, what was aborted, what waits (SQLite).

At-most-once execution per id rests on one rule: an action is *claimed* (a row
committed with ``synchronous=FULL``) before its command starts. A redelivered
record, or the same record after a restart, finds the row and is not run again.
An action claimed but never finished (the executor died while it ran) is not run
again either: ``interrupted()`` lists it, and the service reports it as a failure.

One process per ledger: ``open`` takes an exclusive lock on a file beside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import orjson

from streams.errors import EscalationError
from streams.executor.guard import Action

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    action_id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    action TEXT NOT NULL,
    started_at TEXT NOT NULL,
    outcome BLOB,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS actions_by_decision ON actions (decision_id, kind);
CREATE TABLE IF NOT EXISTS approvable (
    decision_id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS waiting (
    decision_id TEXT PRIMARY KEY,
    command TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aborted (
    decision_id TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    at TEXT NOT NULL
);
"""


class LedgerError(EscalationError, RuntimeError):
    """The executor's ledger cannot be opened (another executor holds it, or it is unreadable)."""


@dataclass(frozen=True, slots=True)
class Unreported:
    """A finished action whose outcome is not yet confirmed on the broker."""

    action_id: str
    outcome: dict[str, Any]


class Ledger:
    """``with Ledger.open(path) as ledger: ledger.claim(...)``."""

    def __init__(self, connection: sqlite3.Connection, lock: Any) -> None:
        self._db = connection
        self._lock = lock

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (creating) the ledger at ``path``; refused if another process holds it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = (path.parent / f"{path.name}.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            msg = f"{path}: another executor holds this ledger (one process per ledger)"
            raise LedgerError(msg) from None
        try:
            # One process, one executor loop; it may run on a thread other than the
            # one that opened the ledger (the Python API), never on two at once.
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            lock.close()
            msg = f"{path}: cannot open the executor's ledger ({exc})"
            raise LedgerError(msg) from None
        return cls(db, lock)

    def close(self) -> None:
        """Close the database and release the lock."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ actions

    def claim(self, action_id: str, kind: str, action: Action, now: dt.datetime) -> bool:
        """Record that ``action_id`` is about to run; False if it was claimed before."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO actions (action_id, decision_id, kind, state, action, "
            "started_at) VALUES (?, ?, ?, 'started', ?, ?)",
            (action_id, action.decision_id, kind, _dumps(action.to_json()), now.isoformat()),
        )
        return cursor.rowcount == 1

    def finish(self, action_id: str, outcome: dict[str, Any] | None) -> None:
        """The action ran; its outcome (None: nothing to report, e.g. a rollback)."""
        self._db.execute(
            "UPDATE actions SET state = 'finished', outcome = ?, reported = ? WHERE action_id = ?",
            (None if outcome is None else _dumps(outcome), int(outcome is None), action_id),
        )

    def reported(self, action_id: str) -> None:
        """The action's outcome is on the broker."""
        self._db.execute("UPDATE actions SET reported = 1 WHERE action_id = ?", (action_id,))

    def unreported(self) -> list[Unreported]:
        """Finished actions whose outcome may not have reached the broker."""
        rows = self._db.execute(
            "SELECT action_id, outcome FROM actions WHERE state = 'finished' AND reported = 0 "
            "AND outcome IS NOT NULL ORDER BY started_at"
        ).fetchall()
        return [Unreported(row[0], orjson.loads(row[1])) for row in rows]

    def interrupted(self) -> list[tuple[str, str, Action]]:
        """``(action_id, kind, action)`` of actions claimed but never finished."""
        rows = self._db.execute(
            "SELECT action_id, kind, action FROM actions WHERE state = 'started' "
            "ORDER BY started_at"
        ).fetchall()
        return [(row[0], row[1], Action.from_json(orjson.loads(row[2]))) for row in rows]

    def executed(self, decision_id: str) -> Action | None:
        """The action run for ``decision_id`` (Level 3 and 4 decisions, approved Level 2)."""
        row = self._db.execute(
            "SELECT action FROM actions WHERE decision_id = ? AND kind = 'execute' LIMIT 1",
            (decision_id,),
        ).fetchone()
        return None if row is None else Action.from_json(orjson.loads(row[0]))

    def runs(self, action_id: str) -> int:
        """How many times ``action_id`` was claimed (0 or 1)."""
        row = self._db.execute(
            "SELECT COUNT(*) FROM actions WHERE action_id = ?", (action_id,)
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------ level 2 and aborts

    def remember(self, action: Action, now: dt.datetime) -> None:
        """A Level 2 decision whose execute command may come."""
        self._db.execute(
            "INSERT OR IGNORE INTO approvable (decision_id, action, seen_at) VALUES (?, ?, ?)",
            (action.decision_id, _dumps(action.to_json()), now.isoformat()),
        )

    def approvable(self, decision_id: str) -> Action | None:
        """The remembered Level 2 decision, if seen."""
        row = self._db.execute(
            "SELECT action FROM approvable WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        return None if row is None else Action.from_json(orjson.loads(row[0]))

    def wait(self, decision_id: str, command: bytes) -> None:
        """An execute command that arrived before its decision."""
        self._db.execute(
            "INSERT OR IGNORE INTO waiting (decision_id, command) VALUES (?, ?)",
            (decision_id, command),
        )

    def take_waiting(self, decision_id: str) -> bytes | None:
        """The command that waited for ``decision_id``, removed; None if none waited."""
        row = self._db.execute(
            "SELECT command FROM waiting WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        if row is None:
            return None
        self._db.execute("DELETE FROM waiting WHERE decision_id = ?", (decision_id,))
        return bytes(row[0]) if not isinstance(row[0], str) else row[0].encode()

    def abort(self, decision_id: str, command_id: str, now: dt.datetime) -> None:
        """``decision_id`` was aborted: it must never run from now on."""
        self._db.execute(
            "INSERT OR IGNORE INTO aborted (decision_id, command_id, at) VALUES (?, ?, ?)",
            (decision_id, command_id, now.isoformat()),
        )

    def aborted(self, decision_id: str) -> bool:
        """Whether ``decision_id`` was aborted."""
        row = self._db.execute(
            "SELECT 1 FROM aborted WHERE decision_id = ?", (decision_id,)
        ).fetchone()
        return row is not None

    def forget_before(self, cutoff: dt.datetime) -> int:
        """Drop remembered Level 2 decisions older than ``cutoff`` (a week by default)."""
        cursor = self._db.execute("DELETE FROM approvable WHERE seen_at < ?", (cutoff.isoformat(),))
        return cursor.rowcount


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
