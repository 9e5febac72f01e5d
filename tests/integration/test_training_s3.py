"""Training and evaluation jobs reading and writing object storage (moto's S3 server).

As in a pod: the config, base model and data live in a bucket, the output directory is an
``s3://`` prefix, and the job gets the endpoint and credentials through the standard AWS
environment variables only. It stages inputs into a local cache, trains in local scratch and
publishes adapter/, merged/, checkpoints/, manifest.json and (last) result.json to the bucket.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import pytest
from test_training_cpu import check_done, job_config, job_env, tiny_workspace

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# The test credentials of conftest.py's endpoint (conftest modules are not importable by name).
S3_TEST_KEY_ID = "llmops-test-key-id"
S3_TEST_SECRET = "llmops-test-secret"
S3_REGION = "us-east-1"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_workspace(tmp_path_factory)


def _aws_env(endpoint: str, cache: Path) -> dict[str, str]:
    """What a trainer pod gets: the standard AWS variables, no Airflow connection."""
    return {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": S3_TEST_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": S3_TEST_SECRET,
        "AWS_DEFAULT_REGION": S3_REGION,
        "LLMOPS_CACHE_DIR": str(cache),
    }


def _run(module: str, config_uri: str, env: dict[str, str]) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", module, "--config", config_uri],
        env=job_env(env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def _keys(s3_client: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", []))


def test_train_and_evaluate_on_object_storage(
    workspace: dict[str, Path], tmp_path: Path, s3_server: str, s3_bucket: tuple[str, str], s3_client: Any
) -> None:
    from llmops.jobs.artifacts import file_sha256, weights_sha256

    bucket, _ = s3_bucket
    for path in workspace["base"].iterdir():
        s3_client.upload_file(str(path), bucket, f"models/tiny/{path.name}")
    s3_client.upload_file(str(workspace["train"]), bucket, "sft/snap-1/train.jsonl")
    s3_client.upload_file(str(workspace["eval"]), bucket, "sft/snap-1/eval.jsonl")
    job = job_config(
        workspace,
        f"s3://{bucket}/runs/r1",
        base_model_path=f"s3://{bucket}/models/tiny",
        train_file="../sft/snap-1/train.jsonl",  # relative to the config's own prefix
        eval_file=f"s3://{bucket}/sft/snap-1/eval.jsonl",
        hyperparameters={"learning_rate": 0.01, "epochs": 2, "batch_size": 8, "max_length": 128, "seed": 7},
        packing=True,
        merge_adapter=True,
        save_steps=2,
    )
    s3_client.put_object(Bucket=bucket, Key="jobs/train.json", Body=json.dumps(job).encode())
    env = _aws_env(s3_server, tmp_path / "cache")
    assert "AWS_ACCESS_KEY_ID" not in os.environ, "only the job's own environment carries credentials"

    done = _run("llmops.training", f"s3://{bucket}/jobs/train.json", env)
    check_done(done)
    assert json.loads(done.stdout.strip().splitlines()[-1])["result"] == f"s3://{bucket}/runs/r1/result.json"
    keys = _keys(s3_client, bucket, "runs/r1/")
    assert {"result.json", "manifest.json", "adapter/adapter_model.safetensors", "merged/config.json"} <= set(
        keys
    )
    checkpoints = {k.split("/")[1] for k in keys if k.startswith("checkpoints/")}
    assert len(checkpoints) == 2, "the last two checkpoints are kept remotely too"
    assert all(f"checkpoints/{c}/llmops_checkpoint.json" in keys for c in checkpoints)

    result = json.loads(s3_client.get_object(Bucket=bucket, Key="runs/r1/result.json")["Body"].read())
    assert result["status"] == "succeeded"
    assert result["adapter_path"] == f"s3://{bucket}/runs/r1/adapter"
    assert result["base_model_uri"] == f"s3://{bucket}/models/tiny"
    assert result["base_model_sha256"] == weights_sha256(workspace["base"])
    assert result["data_files"]["train_file"] == {
        "uri": f"s3://{bucket}/sft/snap-1/train.jsonl",
        "sha256": file_sha256(workspace["train"]),
        "bytes": workspace["train"].stat().st_size,
        "rows": 160,
    }
    assert result["packing"]["checked"] is True and result["packing"]["max_abs_logprob_diff"] < 1e-3
    assert result["merged_model_path"] == f"s3://{bucket}/runs/r1/merged" and result["merged_model_sha256"]
    assert result["eval_loss"] < result["base_eval_loss"]
    assert not (tmp_path / "cache" / "jobs").exists() or not any((tmp_path / "cache" / "jobs").iterdir())

    # The evaluation job reads the published adapter and writes its metrics to the bucket.
    evaluation = {
        "base_model_path": f"s3://{bucket}/models/tiny",
        "adapter_path": result["adapter_path"],
        "eval_file": f"s3://{bucket}/sft/snap-1/eval.jsonl",
        "output_file": "metrics.json",  # relative to the config: s3://<bucket>/runs/r1/eval/
        "max_samples": 4,
        "max_new_tokens": 8,
        "device": "cpu",
    }
    s3_client.put_object(Bucket=bucket, Key="runs/r1/eval/eval.json", Body=json.dumps(evaluation).encode())
    done = _run("llmops.evaluation", f"s3://{bucket}/runs/r1/eval/eval.json", env)
    check_done(done)
    assert "base_model_path: using cached copy" in done.stdout, "the base model is fetched once per machine"
    metrics = json.loads(s3_client.get_object(Bucket=bucket, Key="runs/r1/eval/metrics.json")["Body"].read())
    assert metrics["adapter_sha256"] == result["adapter_sha256"]
    assert metrics["eval_loss"] < metrics["baseline"]["eval_loss"]


def test_remote_resume_and_missing_inputs(
    workspace: dict[str, Path], tmp_path: Path, s3_server: str, s3_bucket: tuple[str, str], s3_client: Any
) -> None:
    """A rerun resumes from the checkpoint in the bucket; an incomplete one is ignored and deleted."""
    bucket, _ = s3_bucket
    env = _aws_env(s3_server, tmp_path / "cache")
    job = job_config(
        workspace,
        f"s3://{bucket}/runs/r2",
        hyperparameters={"learning_rate": 0.01, "epochs": 1, "batch_size": 8, "max_length": 128, "seed": 7},
        max_steps=6,
        save_steps=3,
    )
    s3_client.put_object(Bucket=bucket, Key="jobs/r2.json", Body=json.dumps(job).encode())
    check_done(_run("llmops.training", f"s3://{bucket}/jobs/r2.json", env))
    # A later, half-uploaded checkpoint (no marker), as left by a pod killed mid-upload.
    s3_client.put_object(Bucket=bucket, Key="runs/r2/checkpoints/checkpoint-9/optimizer.pt", Body=b"partial")

    done = _run("llmops.training", f"s3://{bucket}/jobs/r2.json", env)
    check_done(done)
    result = json.loads(s3_client.get_object(Bucket=bucket, Key="runs/r2/result.json")["Body"].read())
    assert result["resumed_from_step"] == 6 and result["global_step"] == 6
    assert result["train_loss"] > 0, "a resumed run that had no step left reports the logged losses"
    assert not [k for k in _keys(s3_client, bucket, "runs/r2/") if "checkpoint-9" in k]

    missing = {**job, "train_file": f"s3://{bucket}/nowhere/train.jsonl"}
    s3_client.put_object(Bucket=bucket, Key="jobs/missing.json", Body=json.dumps(missing).encode())
    done = _run("llmops.training", f"s3://{bucket}/jobs/missing.json", env)
    assert done.returncode == 2, done.stdout[-3000:]
    assert "train_file: file not found: s3://" in done.stdout
    failed = json.loads(s3_client.get_object(Bucket=bucket, Key="runs/r2/result.json")["Body"].read())
    assert failed["status"] == "failed" and "train_file" in failed["error"]


def test_encrypted_outputs_on_object_storage(
    workspace: dict[str, Path], tmp_path: Path, s3_server: str, s3_bucket: tuple[str, str], s3_client: Any
) -> None:
    """A job on encrypted split files publishes its adapter and checkpoints to the bucket as
    ciphertext with key files, resumes from an encrypted checkpoint there, and the evaluation job
    reads the encrypted adapter from the bucket."""
    import base64
    from pathlib import Path

    from llmops.encrypted_files import write_encrypted

    bucket, _ = s3_bucket
    kek = bytes(range(3, 35))
    env = {**_aws_env(s3_server, tmp_path / "cache"), "LLMOPS_KEK": base64.b64encode(kek).decode()}
    hashes = {}
    for split in ("train", "eval"):
        local = tmp_path / f"{split}.jsonl.enc"
        hashes[split] = write_encrypted(str(local), Path(workspace[split]).read_bytes(), kek)
        for name in (local.name, local.name + ".key.json"):
            s3_client.upload_file(str(tmp_path / name), bucket, f"sft/enc/{name}")
    job = job_config(
        workspace,
        f"s3://{bucket}/runs/enc",
        train_file=f"s3://{bucket}/sft/enc/train.jsonl.enc",
        eval_file=f"s3://{bucket}/sft/enc/eval.jsonl.enc",
        train_sha256=hashes["train"],
        eval_sha256=hashes["eval"],
        hyperparameters={"learning_rate": 0.01, "epochs": 1, "batch_size": 8, "max_length": 128, "seed": 7},
        max_steps=4,
        save_steps=2,
    )
    s3_client.put_object(Bucket=bucket, Key="jobs/enc.json", Body=json.dumps(job).encode())
    check_done(_run("llmops.training", f"s3://{bucket}/jobs/enc.json", env))
    keys = _keys(s3_client, bucket, "runs/enc/")
    assert "adapter/adapter_model.safetensors.enc" in keys
    assert "adapter/adapter_model.safetensors.enc.key.json" in keys
    plain = {"result.json", "manifest.json", "llmops_checkpoint.json"}
    leaked = [
        k for k in keys if k.rsplit("/", 1)[-1] not in plain and not k.endswith((".enc", ".enc.key.json"))
    ]
    assert leaked == []
    first = json.loads(s3_client.get_object(Bucket=bucket, Key="runs/enc/result.json")["Body"].read())

    # Stopped after step 2: the rerun decrypts checkpoint-2 from the bucket and ends where it did.
    for key in [
        k for k in keys if k.startswith(("checkpoints/checkpoint-4/", "adapter/")) or k == "result.json"
    ]:
        s3_client.delete_object(Bucket=bucket, Key=f"runs/enc/{key}")
    check_done(_run("llmops.training", f"s3://{bucket}/jobs/enc.json", env))
    result = json.loads(s3_client.get_object(Bucket=bucket, Key="runs/enc/result.json")["Body"].read())
    assert result["resumed_from_step"] == 2 and result["global_step"] == 4
    assert result["adapter_sha256"] == first["adapter_sha256"]
    assert result["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-4)

    evaluation = {
        "base_model_path": str(workspace["base"]),
        "adapter_path": result["adapter_path"],
        "adapter_sha256": result["adapter_sha256"],
        "eval_file": f"s3://{bucket}/sft/enc/eval.jsonl.enc",
        "output_file": "metrics.json",
        "max_samples": 2,
        "max_new_tokens": 4,
        "device": "cpu",
    }
    s3_client.put_object(Bucket=bucket, Key="runs/enc/eval/eval.json", Body=json.dumps(evaluation).encode())
    check_done(_run("llmops.evaluation", f"s3://{bucket}/runs/enc/eval/eval.json", env))
    metrics = json.loads(s3_client.get_object(Bucket=bucket, Key="runs/enc/eval/metrics.json")["Body"].read())
    assert metrics["adapter_sha256"] == result["adapter_sha256"]
