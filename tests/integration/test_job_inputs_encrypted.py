"""A training job reads split files that are encrypted at rest: it decrypts them into a private
scratch folder (``/dev/shm`` when it has room), checks the plaintext against the recorded hash,
and removes the folder when it has read them, whether the job then succeeds or fails."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from test_training_cpu import check_done, job_config, run_module, tiny_workspace

from llmops.encrypted_files import write_encrypted
from llmops.jobs.artifacts import file_sha256

if TYPE_CHECKING:
    import subprocess

pytestmark = pytest.mark.slow

KEK = bytes(range(100, 132))
SCRATCH_LINE = re.compile(r"decrypting (\d+) input\(s\) into (\S+)")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_workspace(tmp_path_factory)


@pytest.fixture
def sealed(workspace: dict[str, Path], tmp_path: Path) -> dict[str, Any]:
    """The workspace's split files as the lake stores them: ``*.jsonl.enc`` beside their key files."""
    out: dict[str, Any] = {}
    for split in ("train", "eval"):
        uri = str(tmp_path / f"{split}.jsonl.enc")
        out[split] = uri
        out[f"{split}_sha256"] = write_encrypted(uri, Path(workspace[split]).read_bytes(), KEK)
        assert out[f"{split}_sha256"] == file_sha256(Path(workspace[split]))
    return out


def key_env() -> dict[str, str]:
    return {"LLMOPS_KEK": base64.b64encode(KEK).decode()}


def scratch_of(done: subprocess.CompletedProcess) -> Path:
    found = SCRATCH_LINE.search(done.stdout)
    assert found, done.stdout[-3000:]
    assert found.group(1) == "2"
    return Path(found.group(2))


def test_the_job_trains_on_decrypted_inputs_and_removes_them(
    workspace: dict[str, Path], sealed: dict[str, Any], tmp_path: Path
) -> None:
    """Expect a job on encrypted split files to succeed, to record the plaintext hashes, and to
    leave no scratch folder (nor plaintext beside the ciphertext) behind."""
    output_dir = tmp_path / "run"
    job = job_config(
        workspace,
        output_dir,
        train_file=sealed["train"],
        eval_file=sealed["eval"],
        train_sha256=sealed["train_sha256"],
        eval_sha256=sealed["eval_sha256"],
    )
    job["hyperparameters"]["epochs"] = 1
    done = run_module("llmops.training", job, tmp_path / "job.json", env=key_env())
    check_done(done)
    scratch = scratch_of(done)
    assert not scratch.exists()
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        assert scratch.parent == Path("/dev/shm")
    manifest = json.loads((output_dir / "manifest.json").read_text())
    recorded = {k: v["sha256"] for k, v in manifest["data_files"].items()}
    assert recorded == {"train_file": sealed["train_sha256"], "eval_file": sealed["eval_sha256"]}
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == []


def test_a_failed_check_removes_the_decrypted_inputs_too(
    workspace: dict[str, Path], sealed: dict[str, Any], tmp_path: Path
) -> None:
    """Expect a job whose decrypted train file is not the recorded one to fail with exit 2 and
    still leave no scratch folder behind."""
    output_dir = tmp_path / "run"
    job = job_config(
        workspace,
        output_dir,
        train_file=sealed["train"],
        eval_file=sealed["eval"],
        train_sha256="0" * 64,
    )
    done = run_module("llmops.training", job, tmp_path / "job.json", timeout=120, env=key_env())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not the file recorded for this dataset" in done.stdout
    assert not scratch_of(done).exists()


def test_a_job_without_the_key_fails_clearly(
    workspace: dict[str, Path], sealed: dict[str, Any], tmp_path: Path
) -> None:
    """Expect a job given another KEK to fail as bad input, naming the field, not the data."""
    output_dir = tmp_path / "run"
    job = job_config(workspace, output_dir, train_file=sealed["train"], eval_file=sealed["eval"])
    other = {"LLMOPS_KEK": base64.b64encode(bytes(32)).decode()}
    done = run_module("llmops.training", job, tmp_path / "job.json", timeout=120, env=other)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "train_file: cannot decrypt" in done.stdout
    assert json.loads((output_dir / "result.json").read_text())["status"] == "failed"
