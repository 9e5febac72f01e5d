"""The job command line and the local launcher: real child processes, no mocks."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from llmops.launch.command import job_argv
from llmops.launch.local import JobFailed, job_command, run_local
from llmops.specs.schema import Distributed

if TYPE_CHECKING:
    from collections.abc import Iterator

INCLUDE = Path(__file__).resolve().parents[2] / "include"


def _job(tmp_path: Path, name: str, body: str) -> str:
    """Write a job module into tmp_path (run_local's cwd, which `python -m` puts on sys.path)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def _lines(caplog: pytest.LogCaptureFixture, module: str) -> list[str]:
    prefix = f"[{module}] "
    return [r.getMessage()[len(prefix) :] for r in caplog.records if r.getMessage().startswith(prefix)]


def test_job_argv_single_process() -> None:
    """Expect that a job without a distributed strategy is `python -m MODULE --config URI`."""
    assert job_argv("llmops.training", "s3://lake/runs/x/train_job.json") == [
        "python",
        "-m",
        "llmops.training",
        "--config",
        "s3://lake/runs/x/train_job.json",
    ]
    assert job_argv("llmops.evaluation", "/tmp/eval.json", Distributed(), python="/venv/bin/python") == [
        "/venv/bin/python",
        "-m",
        "llmops.evaluation",
        "--config",
        "/tmp/eval.json",
    ]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_job_argv_torchrun(strategy: str) -> None:
    """Expect that ddp and fsdp run under single-node torchrun with one process per GPU."""
    argv = job_argv(
        "llmops.training",
        "s3://lake/job.json",
        Distributed(strategy=strategy, processes_per_node=4),
        python="/ignored/python",
    )
    assert argv == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=4",
        "-m",
        "llmops.training",
        "--config",
        "s3://lake/job.json",
    ]


@pytest.mark.parametrize(
    ("module", "config"),
    [
        ("llmops training", "job.json"),
        ("llmops.training;rm", "job.json"),
        ("llmops.training", ""),
        ("llmops.training", "--help"),
        ("llmops.training", "job.json\n--other"),
    ],
)
def test_job_argv_refuses_unsafe_parts(module: str, config: str) -> None:
    """Expect that a module that is not a dotted name, or a config that is empty, option-like or
    multi-line, is refused before any process starts."""
    with pytest.raises(ValueError):
        job_argv(module, config)


def test_job_command_is_the_argv_after_the_interpreter() -> None:
    """Expect that the earlier helper still returns the arguments after the interpreter."""
    assert job_command("llmops.training", "c.json") == job_argv("llmops.training", "c.json")[1:]


def test_run_local_streams_lines_while_the_job_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Expect that each output line is logged as the job prints it, not when it exits: the job
    waits for a file that only a handler reacting to its first logged line creates."""
    go = tmp_path / "go"
    module = _job(
        tmp_path,
        "streaming_job",
        f"""
        import sys, time
        from pathlib import Path
        print("first")
        deadline = time.monotonic() + 20
        while not Path({str(go)!r}).exists():
            if time.monotonic() > deadline:
                sys.exit(3)
            time.sleep(0.05)
        print("second", sys.argv[1:])
        """,
    )

    class ReleaseOnFirst(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().endswith("] first"):
                go.touch()

    handler = ReleaseOnFirst()
    logging.getLogger("llmops.launch.local").addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="llmops.launch.local"):
            run_local(module, "s3://bucket/runs/job.json", cwd=tmp_path)
    finally:
        logging.getLogger("llmops.launch.local").removeHandler(handler)
    assert _lines(caplog, module) == ["first", "second ['--config', 's3://bucket/runs/job.json']"]


def test_run_local_logs_every_line_of_a_long_output(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Expect that a job printing many lines (and a byte that is not UTF-8) succeeds with every
    line logged in order."""
    module = _job(
        tmp_path,
        "chatty_job",
        """
        import sys
        for i in range(500):
            print(f"line {i}")
        sys.stdout.flush()
        sys.stdout.buffer.write(b"bad byte \\xff here\\n")
        """,
    )
    with caplog.at_level(logging.INFO, logger="llmops.launch.local"):
        run_local(module, tmp_path / "job.json", cwd=tmp_path)
    lines = _lines(caplog, module)
    assert lines[:500] == [f"line {i}" for i in range(500)]
    assert lines[500].startswith("bad byte ") and lines[500].endswith(" here")


def test_run_local_raises_job_failed_with_the_tail(tmp_path: Path) -> None:
    """Expect that a non-zero exit raises JobFailed naming the code and carrying the last lines
    of output (the error itself), not the whole log."""
    module = _job(
        tmp_path,
        "failing_job",
        """
        import sys
        for i in range(100):
            print(f"step {i}")
        print("RuntimeError: CUDA out of memory", file=sys.stderr)
        sys.exit(7)
        """,
    )
    with pytest.raises(JobFailed) as failure:
        run_local(module, "job.json", cwd=tmp_path)
    message = str(failure.value)
    assert "exited with code 7" in message
    assert "RuntimeError: CUDA out of memory" in message
    assert "step 99" in message
    assert "step 10\n" not in message


def test_run_local_passes_env_and_job_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Expect that the job sees the caller's env, the llmops package on its path, and the job
    defaults (offline Hub, unbuffered output)."""
    module = _job(
        tmp_path,
        "env_job",
        """
        import os, llmops.launch.command
        for key in ("LLMOPS_TEST_VALUE", "HF_HUB_OFFLINE", "PYTHONUNBUFFERED", "TOKENIZERS_PARALLELISM"):
            print(key, os.environ.get(key))
        """,
    )
    with caplog.at_level(logging.INFO, logger="llmops.launch.local"):
        run_local(module, "job.json", env={"LLMOPS_TEST_VALUE": "42"}, cwd=tmp_path)
    assert _lines(caplog, module) == [
        "LLMOPS_TEST_VALUE 42",
        "HF_HUB_OFFLINE 1",
        "PYTHONUNBUFFERED 1",
        "TOKENIZERS_PARALLELISM false",
    ]


def test_run_local_runs_torchrun_from_the_interpreters_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Expect that a distributed job starts the torchrun installed beside the interpreter (a venv's
    bin/ need not be on PATH) with exactly job_argv's arguments."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("python", "torchrun"):
        script = bin_dir / tool
        script.write_text('#!/bin/sh\nprintf \'%s\\n\' "$(basename "$0")" "$@"\n')
        script.chmod(0o755)
    ddp = Distributed(strategy="ddp", processes_per_node=2)
    with caplog.at_level(logging.INFO, logger="llmops.launch.local"):
        run_local("llmops.training", "s3://lake/job.json", distributed=ddp, python=str(bin_dir / "python"))
    expected = job_argv("llmops.training", "s3://lake/job.json", ddp)
    assert _lines(caplog, "llmops.training") == expected


_DRIVER = """
import logging, signal, sys
sys.path.insert(0, {include!r})
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")


class TaskStopped(BaseException):
    # A BaseException, as Airflow's AirflowTaskTimeout and AirflowTaskTerminated are: logging would
    # swallow an Exception raised inside a log call of the reading loop.
    pass


def stop(signum, frame):
    raise TaskStopped(signum)


# The scenario says how the task process hears that it must stop, rather than depend on the
# dispositions this process inherited: SIGINT as KeyboardInterrupt, or (like a task killed or
# timed out by Airflow) another signal raising an exception while SIGINT stays ignored.
if {sigint_ignored!r}:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)
else:
    signal.signal(signal.SIGINT, signal.default_int_handler)
from llmops.launch.local import run_local
try:
    run_local({module!r}, "job.json", cwd={cwd!r}, kill_grace_seconds={grace})
except (KeyboardInterrupt, TaskStopped):
    print("DRIVER INTERRUPTED", flush=True)
    sys.exit(130)
"""


@pytest.fixture(params=["sigint-default", "sigint-ignored"])
def inherited_sigint(request: pytest.FixtureRequest) -> Iterator[str]:
    """The SIGINT disposition the test's processes inherit from pytest: as usual, or ignored (as
    under `make test &` in a non-interactive shell, or after a test that leaked SIG_IGN)."""
    previous = signal.getsignal(signal.SIGINT)
    if request.param == "sigint-ignored":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield request.param
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_a_running_job(
    tmp_path: Path, *, job_ignores_signals: bool, stop_with: signal.Signals, task_ignores_sigint: bool
) -> tuple[str, int, int]:
    """Run a sleeping job under run_local in a driver process, send `stop_with` to the driver only
    (not to its process group) once the job runs; return the driver's log, exit code, the job's pid."""
    module = _job(
        tmp_path,
        "sleeping_job",
        f"""
        import os, signal, sys, time
        sys.path.insert(0, {str(INCLUDE)!r})
        from llmops.jobs.entry import run_job

        def main():
            if {job_ignores_signals!r}:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            try:
                # Inside the try: the interrupt can arrive as soon as this line is written.
                print("JOB PID", os.getpid(), flush=True)
                time.sleep(120)
            except KeyboardInterrupt:
                open({str(tmp_path / "cleaned-up")!r}, "w").close()
                raise

        sys.exit(run_job(main))
        """,
    )
    driver = tmp_path / "driver.py"
    driver.write_text(
        _DRIVER.format(
            include=str(INCLUDE),
            module=module,
            cwd=str(tmp_path),
            grace=1.0,
            sigint_ignored=task_ignores_sigint,
        )
    )
    proc = subprocess.Popen(
        [sys.executable, str(driver)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # nothing the test does can signal the job through a group
    )
    job_pid = None
    output: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if "JOB PID" in line:
                job_pid = int(line.rsplit(" ", 1)[1])
                break
        assert job_pid is not None, "".join(output)
        started = time.monotonic()
        os.kill(proc.pid, stop_with)
        rest, _ = proc.communicate(timeout=30)
        output.append(rest)
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(output), proc.returncode, job_pid


@pytest.mark.parametrize("job_ignores_signals", [False, True], ids=["interruptible-job", "stubborn-job"])
def test_interrupting_run_local_stops_the_job(
    tmp_path: Path, job_ignores_signals: bool, inherited_sigint: str
) -> None:
    """Expect that an interrupt delivered to the process running run_local (only to it, not to
    its process group) stops the job process too: an interruptible job gets SIGINT and can clean
    up; one that ignores SIGINT and SIGTERM is killed after the grace period. No job survives,
    and neither outcome depends on the SIGINT disposition the processes inherited."""
    log, returncode, job_pid = _stop_a_running_job(
        tmp_path, job_ignores_signals=job_ignores_signals, stop_with=signal.SIGINT, task_ignores_sigint=False
    )
    assert returncode == 130, log
    assert "DRIVER INTERRUPTED" in log
    assert (tmp_path / "cleaned-up").exists() is not job_ignores_signals, log
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)


def test_a_job_hears_the_interrupt_when_its_task_process_ignores_sigint(tmp_path: Path) -> None:
    """Expect that a job started from a task process that ignores SIGINT (which the job inherits
    through fork and exec) still turns run_local's SIGINT into KeyboardInterrupt and cleans up,
    when the task is stopped some other way (here SIGTERM raising in the task)."""
    log, returncode, job_pid = _stop_a_running_job(
        tmp_path, job_ignores_signals=False, stop_with=signal.SIGTERM, task_ignores_sigint=True
    )
    assert returncode == 130, log
    assert (tmp_path / "cleaned-up").exists(), log
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)
