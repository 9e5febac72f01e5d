"""Keep each test from inheriting process state that an earlier test changed.

What a test leaves behind in the pytest process reaches every later test and every subprocess they
start: a signal ignored here is ignored in a child too (dispositions pass through fork and exec), a
changed working directory moves relative paths, a root logger level silences or floods logs. This
plugin snapshots that state before each test, puts it back afterwards, and lists at the end of the
run every test that changed it, so a new leak is seen instead of breaking an unrelated test later.

Environment variables are reported by name only (values may be secrets) and put back too. Fixtures
of a wider scope are set up before this one snapshots, so what they set lasts as they mean it to.
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


def _kernel_signal_state() -> dict[str, set[int]]:
    """The signals this thread blocks and ignores, as the kernel sees them (what a child inherits).

    A C library can ignore or block a signal behind Python's back: signal.getsignal() would still
    show the Python handler. /proc says what fork and exec will pass on.
    """
    state: dict[str, set[int]] = {}
    try:
        with open("/proc/thread-self/status", encoding="ascii") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("SigBlk", "SigIgn"):
                    mask = int(value.strip(), 16)
                    state[key] = {n for n in range(1, 65) if mask >> (n - 1) & 1}
    except OSError:  # not Linux: Python's view is all there is
        pass
    return state


def _signal_names(numbers: set[int]) -> str:
    names = []
    for n in sorted(numbers):
        try:
            names.append(signal.Signals(n).name)
        except ValueError:
            names.append(str(n))
    return ",".join(names) or "none"


def _logging_state() -> tuple[int, tuple[logging.Handler, ...], int]:
    root = logging.getLogger()
    return root.level, tuple(root.handlers), logging.root.manager.disable


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_CHANGES] = []


def _restore_signals(handlers: dict[Any, Any], kernel: dict[str, set[int]], main_thread: bool) -> list[str]:
    """Put back Python's handlers and the kernel's blocked/ignored sets; say what had changed."""
    changes: list[str] = []
    kernel_after = _kernel_signal_state()
    python_changed = set()
    for sig, before in handlers.items():
        after = signal.getsignal(sig)
        if after != before:
            python_changed.add(int(sig))
            changes.append(f"{signal.Signals(sig).name}: {_name(before)} -> {_name(after)}")
            if main_thread and before is not None:
                signal.signal(sig, before)
    for key, what in (("SigBlk", "blocked"), ("SigIgn", "ignored")):
        if key not in kernel:
            continue
        # Only what Python's own view did not already show (a C library, a sigmask).
        added = kernel_after.get(key, set()) - kernel[key] - python_changed
        removed = kernel[key] - kernel_after.get(key, set()) - python_changed
        if added or removed:
            changes.append(f"{what} signals (kernel): +{_signal_names(added)} -{_signal_names(removed)}")
    if not main_thread:
        return changes
    if "SigBlk" in kernel and kernel_after.get("SigBlk") != kernel["SigBlk"]:
        signal.pthread_sigmask(signal.SIG_SETMASK, kernel["SigBlk"])
    # Reinstalling Python's own handler also resets what a C library set behind its back.
    for sig in (kernel_after.get("SigIgn", set()) - kernel.get("SigIgn", set())) & set(handlers):
        if handlers[sig] is not None:
            signal.signal(sig, handlers[sig])
    return changes


def _restore_logging(state: tuple[int, tuple[logging.Handler, ...], int]) -> list[str]:
    if _logging_state() == state:
        return []
    level, root_handlers, disabled = state
    root = logging.getLogger()
    root.setLevel(level)
    for handler in [h for h in root.handlers if h not in root_handlers]:
        root.removeHandler(handler)
    for handler in root_handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    logging.disable(disabled)
    return ["root logging configuration"]


def _restore_environment(before: dict[str, str]) -> list[str]:
    """Put back the environment (names reported, never values: they may be secrets)."""
    changed = sorted(
        key
        for key in set(before) | set(os.environ)
        if before.get(key) != os.environ.get(key) and key != "PYTEST_CURRENT_TEST"
    )
    for key in changed:
        if key in before:
            os.environ[key] = before[key]
        else:
            del os.environ[key]
    return ["environment: " + ", ".join(changed)] if changed else []


@pytest.fixture(autouse=True)
def isolated_process_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Snapshot signals, working directory, environment and root logging; restore and report changes."""
    main_thread = threading.current_thread() is threading.main_thread()
    handlers = {sig: signal.getsignal(sig) for sig in WATCHED_SIGNALS}
    kernel = _kernel_signal_state()
    cwd = os.getcwd()
    environ = dict(os.environ)
    logging_state = _logging_state()
    yield
    changes = _restore_signals(handlers, kernel, main_thread)
    if os.getcwd() != cwd:
        changes.append("working directory changed")
        os.chdir(cwd)
    changes += _restore_environment(environ)
    changes += _restore_logging(logging_state)
    if changes:
        request.config.stash[_CHANGES].append((request.node.nodeid, changes))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    changes = config.stash.get(_CHANGES, [])
    if not changes:
        return
    terminalreporter.section("process state changed by tests (restored after each)")
    for nodeid, what in changes:
        terminalreporter.write_line(f"{nodeid}: {'; '.join(what)}")
