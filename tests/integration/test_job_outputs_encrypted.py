"""A training job on encrypted inputs writes its outputs encrypted: adapter, checkpoints and
merged model land in the job folder as ``<name>.enc`` beside ``<name>.enc.key.json``, each
decrypting with the project's key to the weights whose hash the result records. The job works in
a private scratch folder that is gone when it ends (also when it fails); the evaluation job reads
the encrypted adapter; a rerun resumes from an encrypted checkpoint; a tampered adapter is refused
with an error naming the file."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_training_cpu import check_done, job_config, job_env, run_module, tiny_workspace

from llmops.encrypted_files import write_encrypted
from llmops.jobs.artifacts import weights_sha256

pytestmark = pytest.mark.slow

KEK = bytes(range(7, 39))
WORK_LINE = re.compile(r"outputs are written in (\S+) and published encrypted")
HYPER = {"learning_rate": 0.01, "epochs": 1, "batch_size": 8, "max_length": 128, "seed": 7}
SAFETENSORS_HEADER = re.compile(rb'^.{8}\{"')  # u64 header length, then the JSON header
PLAIN_JSON = {"result.json", "manifest.json", "llmops_checkpoint.json"}


def key_env() -> dict[str, str]:
    return {"LLMOPS_KEK": base64.b64encode(KEK).decode()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def sealed(workspace: dict[str, Path]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for split in ("train", "eval"):
        uri = str(workspace["root"] / f"{split}.jsonl.enc")
        out[f"{split}_file"] = uri
        out[f"{split}_sha256"] = write_encrypted(uri, Path(workspace[split]).read_bytes(), KEK)
    return out


def work_dir_of(done: subprocess.CompletedProcess) -> Path:
    found = WORK_LINE.search(done.stdout)
    assert found, done.stdout[-3000:]
    return Path(found.group(1))


def run_job(job: dict[str, Any], path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return run_module("llmops.training", job, path, timeout=timeout, env=key_env())


@pytest.fixture(scope="module")
def trained(workspace: dict[str, Path], sealed: dict[str, Any]) -> dict[str, Any]:
    output_dir = workspace["root"] / "run"
    job = job_config(
        workspace, output_dir, hyperparameters=HYPER, max_steps=4, save_steps=2, merge_adapter=True, **sealed
    )
    done = run_job(job, workspace["root"] / "job.json")
    check_done(done)
    result = json.loads((output_dir / "result.json").read_text())
    return {"job": job, "output_dir": output_dir, "result": result, "done": done}


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_KEK", base64.b64encode(KEK).decode())


def test_every_output_is_ciphertext_of_the_recorded_weights(trained: dict[str, Any], with_key: None) -> None:
    """Expect no plaintext weights, checkpoint or tokenizer file in the job folder: every file but
    the result, the manifest and the checkpoint markers is ``*.enc`` or its key file; the adapter
    and merged model decrypt to the weights whose sha256 the result records; the scratch folder
    the job worked in is gone."""
    from llmops.jobs.outputs import opened_model_dir

    output_dir, result = trained["output_dir"], trained["result"]
    files = [p for p in output_dir.rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors.enc" for p in files)
    assert any(p.parent.name.startswith("checkpoint-") and p.name.endswith(".enc") for p in files)
    for path in files:
        if path.name in PLAIN_JSON:
            continue
        assert path.name.endswith((".enc", ".enc.key.json")), f"{path} is not encrypted"
        head = path.read_bytes()[:64]
        assert not SAFETENSORS_HEADER.match(head), f"{path} is a readable safetensors file"
        if path.name.endswith(".enc"):
            assert head.startswith(b"LLMENC"), path
    markers = list(output_dir.glob("checkpoints/*/llmops_checkpoint.json"))
    assert markers and all("fingerprint" in json.loads(m.read_text()) for m in markers)

    assert result["adapter_path"] == str(output_dir / "adapter")
    with opened_model_dir(result["adapter_path"], "adapter_path") as adapter:
        assert weights_sha256(adapter) == result["adapter_sha256"]
        scratch = adapter
    assert not scratch.exists()
    with opened_model_dir(result["merged_model_path"], expected_sha256=result["merged_model_sha256"]) as m:
        assert (m / "config.json").is_file()

    work = work_dir_of(trained["done"])
    assert not work.exists()
    if Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        assert work.parent == Path("/dev/shm")


def test_the_evaluation_job_reads_the_encrypted_adapter(
    workspace: dict[str, Path], sealed: dict[str, Any], trained: dict[str, Any]
) -> None:
    """Expect the evaluation job, given the encrypted adapter (as candidate and as champion) and
    its recorded hash, to score it and record the plaintext weights' hash."""
    root, result = workspace["root"], trained["result"]
    output_file = root / "eval" / "metrics.json"
    config = {
        "base_model_path": str(workspace["base"]),
        "adapter_path": result["adapter_path"],
        "adapter_sha256": result["adapter_sha256"],
        "champion_adapter_path": result["adapter_path"],
        "eval_file": sealed["eval_file"],
        "eval_sha256": sealed["eval_sha256"],
        "output_file": str(output_file),
        "max_samples": 2,
        "max_new_tokens": 4,
        "device": "cpu",
    }
    done = run_module("llmops.evaluation", config, root / "eval.json", timeout=240, env=key_env())
    check_done(done)
    metrics = json.loads(output_file.read_text())
    assert metrics["adapter_sha256"] == metrics["champion_adapter_sha256"] == result["adapter_sha256"]
    assert metrics["eval_loss"] < metrics["baseline"]["eval_loss"]  # the trained adapter is applied
    assert metrics["champion"]["eval_loss"] == pytest.approx(metrics["eval_loss"])
    scratch = re.findall(r"adapter_path: decrypting \S+ into (\S+)", done.stdout + done.stderr)
    assert scratch and not any(Path(s).exists() for s in scratch)


def _tampered_copy(source: Path, target: Path, tamper: str) -> Path:
    shutil.copytree(source, target)
    sealed = target / "adapter_model.safetensors.enc"
    if tamper == "flip":
        data = bytearray(sealed.read_bytes())
        data[len(data) // 2] ^= 0x01
        sealed.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("tamper", ["flip", "swap"])
def test_a_tampered_or_swapped_adapter_is_refused(
    workspace: dict[str, Path], trained: dict[str, Any], tmp_path: Path, tamper: str
) -> None:
    """Expect a flipped ciphertext bit to fail authentication and a folder whose adapter was
    swapped for another (that decrypts cleanly) to fail the recorded hash, both as bad input
    (exit 2) naming the file or the folder."""
    result = trained["result"]
    adapter = Path(result["adapter_path"])
    if tamper == "flip":
        target = _tampered_copy(adapter, tmp_path / "adapter", tamper)
    else:  # another adapter, encrypted under the same key: only its hash tells them apart
        target = tmp_path / "adapter"
        latest = sorted((trained["output_dir"] / "checkpoints").glob("checkpoint-*"))[0]
        shutil.copytree(adapter, target)
        for suffix in (".enc", ".enc.key.json"):
            shutil.copyfile(
                latest / f"adapter_model.safetensors{suffix}", target / f"adapter_model.safetensors{suffix}"
            )
    config = {
        "base_model_path": str(workspace["base"]),
        "adapter_path": str(target),
        "adapter_sha256": result["adapter_sha256"],
        "eval_file": str(workspace["eval"]),
        "output_file": str(tmp_path / "metrics.json"),
        "max_samples": 1,
        "max_new_tokens": 2,
        "device": "cpu",
    }
    done = run_module("llmops.evaluation", config, tmp_path / "eval.json", timeout=120, env=key_env())
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    text = done.stdout + done.stderr
    if tamper == "flip":
        assert f"adapter_path: cannot decrypt {target}/adapter_model.safetensors.enc" in text
        assert "failed authentication" in text
    else:
        assert f"adapter_path: the weights in {target} are not the ones recorded for it" in text
    assert not (tmp_path / "metrics.json").exists()


def test_a_rerun_resumes_from_an_encrypted_checkpoint(
    workspace: dict[str, Path], sealed: dict[str, Any], trained: dict[str, Any], tmp_path: Path
) -> None:
    """Expect a job whose last checkpoint is gone (stopped after step 2) to decrypt checkpoint-2,
    train to step 4 and end where the uninterrupted run ended, its scratch folder removed."""
    output_dir = tmp_path / "run"
    shutil.copytree(trained["output_dir"], output_dir)
    for rel in ("checkpoints/checkpoint-4", "adapter", "merged", "result.json", "manifest.json"):
        target = output_dir / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    job = {**trained["job"], "output_dir": str(output_dir)}
    done = run_job(job, tmp_path / "job.json")
    check_done(done)
    result = json.loads((output_dir / "result.json").read_text())
    assert result["resumed_from_step"] == 2
    assert result["global_step"] == 4
    assert result["eval_loss"] == pytest.approx(trained["result"]["eval_loss"], abs=1e-4)
    assert (output_dir / "adapter" / "adapter_model.safetensors.enc").is_file()
    assert not (output_dir / "adapter" / "adapter_model.safetensors").exists()
    assert not work_dir_of(done).exists()


def test_a_failed_job_removes_its_scratch_folder(
    workspace: dict[str, Path], trained: dict[str, Any], tmp_path: Path
) -> None:
    """Expect a job refused after it set up its scratch folder (the checkpoints in its output_dir
    are another job's) to fail with exit 2 and leave no scratch folder behind."""
    output_dir = tmp_path / "run"
    shutil.copytree(trained["output_dir"] / "checkpoints", output_dir / "checkpoints")
    job = {**trained["job"], "output_dir": str(output_dir)}
    job["hyperparameters"] = {**HYPER, "learning_rate": 0.02}
    done = run_job(job, tmp_path / "job.json", timeout=120)
    assert done.returncode == 2, done.stdout[-3000:]
    assert "was written by a different job" in done.stdout
    assert not work_dir_of(done).exists()


def test_a_terminated_job_removes_its_scratch_folders(
    workspace: dict[str, Path], trained: dict[str, Any], tmp_path: Path
) -> None:
    """Expect a job stopped with SIGTERM (a pod deleted, the supervisor's second signal) after its
    first published checkpoint to exit 143 and leave neither its working folder nor decrypted
    inputs behind."""
    output_dir = tmp_path / "run"
    job = {**trained["job"], "output_dir": str(output_dir), "max_steps": 40, "save_steps": 2}
    (tmp_path / "job.json").write_text(json.dumps(job))
    log = tmp_path / "job.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmops.training", "--config", str(tmp_path / "job.json")],
            env=job_env(key_env()),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        first = output_dir / "checkpoints" / "checkpoint-2" / "llmops_checkpoint.json"
        deadline = time.monotonic() + 180
        while not first.is_file():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143, log.read_text()[-3000:]
    text = log.read_text()
    work = WORK_LINE.search(text)
    assert work, text[-3000:]
    assert not Path(work.group(1)).exists()
    inputs = re.findall(r"decrypting \d+ input\(s\) into (\S+)", text)
    assert inputs and not any(Path(p).exists() for p in inputs)
    assert not (output_dir / "result.json").exists()
