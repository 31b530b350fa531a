"""The executors' side: a reference executor and its Python API.

``Executor(settings, handler=...)`` consumes the gate's signed decisions and runs
``handler`` at most once per action; ``escalation executor --run CMD`` is the same
with shell commands. See docs/executors.md.
"""

from streams.executor.guard import Action, judge
from streams.executor.ledger import Ledger
from streams.executor.metrics import ExecutorMetrics
from streams.executor.runner import Handler, Result, ShellCommand, Task
from streams.executor.service import Executor, Handled

__all__ = [
    "Action",
    "Executor",
    "ExecutorMetrics",
    "Handled",
    "Handler",
    "Ledger",
    "Result",
    "ShellCommand",
    "Task",
    "judge",
]
