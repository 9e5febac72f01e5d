"""The process entrypoint of a job: ``sys.exit(run_job(main))`` in a job's ``__main__``.

A job is stopped with SIGINT first (:func:`llmops.launch.local.run_local`, torchrun), so it can end
its MLflow run and leave a result. Python turns SIGINT into KeyboardInterrupt only when the process
started with SIGINT not ignored, and an ignored SIGINT passes through fork and exec: a scheduler
started in the background by a non-interactive shell (``airflow scheduler &``), or any parent that
ignores it, would leave the job deaf to the interrupt until it is killed. So the job installs the
handler itself, whatever it inherited.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


def listen_for_interrupts() -> None:
    """Turn SIGINT into KeyboardInterrupt in this process, even when the parent ignored it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_job(main: Callable[[], int | None]) -> int | None:
    """Run a job's main with interrupts enabled; its return value is the process's exit status."""
    listen_for_interrupts()
    return main()
