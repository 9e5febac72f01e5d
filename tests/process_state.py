"""Keep each test from inheriting process state that an earlier test changed.

What a test leaves behind in the pytest process reaches every later test and every subprocess they
start: a signal ignored here is ignored in a child too (dispositions pass through fork and exec), a
changed working directory moves relative paths, a root logger level silences or floods logs. This
plugin snapshots that state before each test, puts it back afterwards, and lists at the end of the
run every test that changed it, so a new leak is seen instead of breaking an unrelated test later.

Environment variables are reported by name only (values may be secrets) and left as they are: a
session-scoped fixture first set up during a test may set them for the rest of the session.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

WATCHED_SIGNALS = tuple(
    getattr(signal, name)
    for name in (
        "SIGINT",
        "SIGTERM",
        "SIGHUP",
        "SIGQUIT",
        "SIGUSR1",
        "SIGUSR2",
        "SIGCHLD",
        "SIGPIPE",
        "SIGWINCH",
    )
    if hasattr(signal, name)
)
_CHANGES = pytest.StashKey[list[tuple[str, list[str]]]]()


def _name(handler: Any) -> str:
    if handler is signal.SIG_IGN:
        return "SIG_IGN"
    if handler is signal.SIG_DFL:
        return "SIG_DFL"
    if handler is None:
        return "None"
    return getattr(handler, "__qualname__", repr(handler))


def _logging_state() -> tuple[int, tuple[logging.Handler, ...], int]:
    root = logging.getLogger()
    return root.level, tuple(root.handlers), logging.root.manager.disable


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_CHANGES] = []


@pytest.fixture(autouse=True)
def isolated_process_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Snapshot signals, working directory, environment and root logging; restore and report changes."""
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in WATCHED_SIGNALS}
    cwd = os.getcwd()
    environ = dict(os.environ)
    level, root_handlers, disabled = _logging_state()
    yield
    changes: list[str] = []
    for sig, before in handlers.items():
        after = signal.getsignal(sig)
        if after != before:
            changes.append(f"{signal.Signals(sig).name}: {_name(before)} -> {_name(after)}")
            if main_thread and before is not None:
                signal.signal(sig, before)
    if os.getcwd() != cwd:
        changes.append("working directory changed")
        os.chdir(cwd)
    changed_env = sorted(
        key
        for key in set(environ) | set(os.environ)
        if environ.get(key) != os.environ.get(key) and key != "PYTEST_CURRENT_TEST"
    )
    if changed_env:
        changes.append("environment: " + ", ".join(changed_env))
    if _logging_state() != (level, root_handlers, disabled):
        changes.append("root logging configuration")
        root = logging.getLogger()
        root.setLevel(level)
        for handler in [h for h in root.handlers if h not in root_handlers]:
            root.removeHandler(handler)
        for handler in root_handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        logging.disable(disabled)
    if changes:
        request.config.stash[_CHANGES].append((request.node.nodeid, changes))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    changes = config.stash.get(_CHANGES, [])
    if not changes:
        return
    terminalreporter.section("process state changed by tests (restored after each)")
    for nodeid, what in changes:
        terminalreporter.write_line(f"{nodeid}: {'; '.join(what)}")
