"""The test suite's own isolation: a test that changes process state does not leak it onward."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

TESTS = Path(__file__).resolve().parents[1]


def test_signal_and_cwd_changes_are_restored_and_reported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expect that a test leaving its own SIGINT handler, SIGUSR1 blocked, the working directory
    moved, an environment variable set and a root log handler added hands none of them to the next
    test, and that the run names the leaking test."""
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    )
    pytester.makeconftest('pytest_plugins = ("process_state",)')
    pytester.makepyfile(
        test_leaks="""
        import logging, os, signal

        # Whatever this process inherited (pytest may itself run with SIGINT ignored).
        INITIAL_SIGINT = signal.getsignal(signal.SIGINT)

        class LeakedHandler(logging.NullHandler):
            pass

        def leaked_handler(signum, frame):
            pass

        def test_a_leaks():
            signal.signal(signal.SIGINT, leaked_handler)
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
            os.chdir("/")
            logging.getLogger().addHandler(LeakedHandler())
            os.environ["LLMOPS_LEAKED_SETTING"] = "x"

        def test_b_inherits_nothing():
            assert signal.getsignal(signal.SIGINT) is INITIAL_SIGINT
            assert "LLMOPS_LEAKED_SETTING" not in os.environ
            assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()
            assert os.getcwd() != "/"
            assert not any(isinstance(h, LeakedHandler) for h in logging.getLogger().handlers)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*process state changed by tests*",
            "test_leaks.py::test_a_leaks: SIGINT: * -> leaked_handler; blocked signals (kernel):"
            " +SIGUSR1 -none; working directory changed; environment: LLMOPS_LEAKED_SETTING;"
            " root logging configuration",
        ]
    )
