"""The quiet console of ``llmops demo``: what Airflow, OpenLineage, the task runner and the training
jobs print goes to a log file; the terminal shows one progress line per DAG run and the summary.

The redirection is at the file-descriptor level (``dup2`` of 1 and 2), so it also catches what
child processes (training and evaluation jobs) and loggers bound to the old streams write. Progress
comes from Airflow's own task-instance listener hooks, which ``dag.test()`` calls in this process.
On a terminal the line of the running DAG is redrawn in place; elsewhere (a pipe, CI, a test) each
DAG run prints one line when it ends.
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def _make_listener(console: DemoConsole) -> Any:
    """Airflow task-instance hooks (pluggy) reporting to ``console`` (Airflow imported late)."""
    from airflow.sdk._shared.listeners import hookimpl

    def name(task_instance: Any) -> str:
        index = getattr(task_instance, "map_index", -1)
        return task_instance.task_id + (f"[{index}]" if isinstance(index, int) and index >= 0 else "")

    class TaskListener:
        @hookimpl
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            console.task_event("running", name(task_instance))

        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            console.task_event("success", name(task_instance))

        @hookimpl
        def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
            console.task_event("skipped", name(task_instance))

        @hookimpl
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            console.task_event("failed", name(task_instance))

    return TaskListener()


class DemoConsole:
    """``with DemoConsole(log_file, verbose) as console:`` around the demo's DAG runs."""

    def __init__(self, log_file: Path, *, verbose: bool = False) -> None:
        self.log_file = log_file
        self.verbose = verbose
        self._term: IO[str] = sys.stdout
        self._saved: tuple[int, int] | None = None
        self._listener: Any = None
        self._dag: str | None = None
        self._started = 0.0
        self._counts: dict[str, int] = {}
        self._current = ""
        self._tty = False

    def __enter__(self) -> DemoConsole:
        if self.verbose:
            return self
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = (os.dup(1), os.dup(2))
        self._term = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        self._tty = self._term.isatty()
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        from airflow.sdk.listener import get_listener_manager

        self._listener = _make_listener(self)
        get_listener_manager().add_listener(self._listener)
        return self

    def __exit__(self, *_: object) -> None:
        if self.verbose or self._saved is None:
            return
        from airflow.sdk.listener import get_listener_manager

        get_listener_manager().pm.unregister(self._listener)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._saved = None
        self._term.close()
        self._term = sys.stdout

    def say(self, text: str = "") -> None:
        """A line for the user, on the terminal whatever the redirection."""
        self._term.write(text + "\n")
        self._term.flush()

    def dag_started(self, dag_id: str) -> None:
        self._dag, self._started, self._counts, self._current = dag_id, time.monotonic(), {}, ""
        self._redraw()

    def dag_finished(self, dag_id: str, state: str) -> None:
        done = self._counts.get("success", 0)
        extra = ", ".join(
            f"{n} {k}" for k, n in sorted(self._counts.items()) if k not in ("success", "running")
        )
        line = f"  {dag_id:<28} {state:<8} {done} tasks{f' ({extra})' if extra else ''}"
        line += f"  {time.monotonic() - self._started:5.0f} s"
        if self._tty:
            self._term.write("\r\033[K")
        self.say(line)
        self._dag = None

    def task_event(self, event: str, task: str) -> None:
        if event != "running":
            self._counts[event] = self._counts.get(event, 0) + 1
        self._current = task if event == "running" else self._current
        self._redraw()

    def _redraw(self) -> None:
        if not self._tty or self._dag is None:
            return
        done = self._counts.get("success", 0)
        elapsed = time.monotonic() - self._started
        self._term.write(f"\r\033[K  {self._dag:<28} {done:>3} done  {elapsed:5.0f} s  {self._current}")
        self._term.flush()
