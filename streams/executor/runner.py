"""Running an action: the handler protocol, and shell commands under a timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from streams.executor.guard import Action

Step = Literal["execute", "verify", "rollback"]


@dataclass(frozen=True, slots=True)
class Task:
    """One step of one action: run it, verify it, or roll it back."""

    action: Action
    action_id: str
    step: Step

    def environment(self) -> dict[str, str]:
        """The variables a command sees (``ESCALATION_DECISION_ID`` and the rest)."""
        return {
            **self.action.environment_variables(command_id=self.action_id),
            "ESCALATION_STEP": self.step,
        }


@dataclass(frozen=True, slots=True)
class Result:
    """What a step came to: ``ok``, and a short line saying why not."""

    ok: bool
    detail: str = ""


class Handler(Protocol):
    """Performs one step; returns its result (an exception counts as a failure)."""

    def __call__(self, task: Task) -> Result: ...


class ShellCommand:
    """A shell command run with the action in its environment, under a timeout.

    Its stdout and stderr go to the executor's stderr (the executor's stdout carries
    one line per action). On timeout the whole process group is killed.
    """

    def __init__(self, command: str, *, timeout: float = 300.0) -> None:
        self.command = command
        self.timeout = timeout

    def __call__(self, task: Task) -> Result:
        started = time.monotonic()
        process = subprocess.Popen(  # noqa: S602 - the operator's own command line, by design
            self.command,
            shell=True,
            env={**os.environ, **task.environment()},
            stdin=subprocess.DEVNULL,
            stdout=sys.stderr.fileno(),
            stderr=sys.stderr.fileno(),
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return Result(False, f"{task.step}: timed out after {self.timeout:g}s")
        if code != 0:
            seconds = time.monotonic() - started
            return Result(False, f"{task.step}: exit code {code} after {seconds:.1f}s")
        return Result(True)
