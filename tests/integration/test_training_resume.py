"""A training job killed with SIGKILL resumes from its last complete checkpoint when rerun.

The job runs as the launcher runs it (a subprocess of ``python -m llmops.training``). It is
killed as soon as its first checkpoint is marked complete, then the very same command is run
again: it must pick the checkpoint up (optimizer, scheduler and RNG state included), finish all
steps, and end where an uninterrupted run with the same config ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from test_training_cpu import check_done, job_config, job_env, run_module, tiny_workspace

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

HYPER = {"learning_rate": 0.01, "epochs": 8, "batch_size": 8, "max_length": 128, "seed": 7}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_workspace(tmp_path_factory)


def _start(config: dict[str, Any], path: Path) -> subprocess.Popen:
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [sys.executable, "-m", "llmops.training", "--config", str(path)],
        env=job_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killed_job_resumes_from_its_last_checkpoint(workspace: dict[str, Path], tmp_path: Path) -> None:
    killed_dir, reference_dir = tmp_path / "killed", tmp_path / "reference"
    job = job_config(workspace, killed_dir, hyperparameters=HYPER, save_steps=10)
    reference = _start(
        job_config(workspace, reference_dir, hyperparameters=HYPER, save_steps=10), tmp_path / "r.json"
    )
    victim = _start(job, tmp_path / "job.json")
    first = killed_dir / "checkpoints" / "checkpoint-10" / "llmops_checkpoint.json"
    deadline = time.monotonic() + 180
    while not first.is_file():
        assert victim.poll() is None, f"the job ended before its first checkpoint:\n{victim.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.02)
    assert victim.poll() is None, "the job finished before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)  # no chance to clean up, as after an OOM kill or a lost node
    victim.wait(timeout=30)
    victim.stdout.close()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "result.json").exists()
    assert not (killed_dir / "adapter").exists()

    done = run_module("llmops.training", job, tmp_path / "job.json")  # the very same command again
    check_done(done)
    result = json.loads((killed_dir / "result.json").read_text())
    assert result["status"] == "succeeded"
    assert 10 <= result["resumed_from_step"] < 160
    assert f"resuming from {killed_dir / 'checkpoints'}" in done.stdout
    assert result["global_step"] == result["planned_steps"] == 160
    assert (killed_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert result["adapter_weights_changed"] is True and result["base_weights_unchanged"] is True

    reference_out, _ = reference.communicate(timeout=240)
    assert reference.returncode == 0, reference_out[-4000:]
    expected = json.loads((reference_dir / "result.json").read_text())
    assert expected["resumed_from_step"] is None
    # Same data order, optimizer and RNG state: the resumed run ends where the uninterrupted one does.
    assert result["eval_loss"] == pytest.approx(expected["eval_loss"], abs=1e-4)
    assert result["train_tokens"] == expected["train_tokens"]


def test_resume_refuses_checkpoints_of_another_job(workspace: dict[str, Path], tmp_path: Path) -> None:
    """A checkpoint is only resumed by the job that wrote it; resume: false starts afresh."""
    output_dir = tmp_path / "run"
    first = job_config(workspace, output_dir, hyperparameters=HYPER, max_steps=4, save_steps=2)
    check_done(run_module("llmops.training", first, tmp_path / "a.json"))

    changed = {**first, "hyperparameters": {**HYPER, "learning_rate": 0.02}}
    done = run_module("llmops.training", changed, tmp_path / "b.json", timeout=120)
    assert done.returncode == 2, done.stdout[-3000:]
    assert "output_dir: checkpoints/checkpoint-4 was written by a different job" in done.stdout
    assert json.loads((output_dir / "result.json").read_text())["status"] == "failed"

    fresh = run_module("llmops.training", {**changed, "resume": False}, tmp_path / "c.json")
    check_done(fresh)
    result = json.loads((output_dir / "result.json").read_text())
    assert result["resumed_from_step"] is None and result["global_step"] == 4
