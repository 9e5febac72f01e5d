"""This package's errors keep their message through `safe_error_text`, so a raise site that
embeds a third-party exception's text would carry it (a quoted row, an address, a credential) to
the ledger, lineage and logs. Each case builds the error from a third-party exception quoting an
e-mail address: the address must be gone, the file, field or id still named."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from llmops import storage
from llmops.privacy import crypto, rotation

if TYPE_CHECKING:
    from pathlib import Path

EMAIL = "jane.doe@example.com"


def _raise(exc: BaseException) -> Any:
    def raiser(*_args: object, **_kwargs: object) -> Any:
        raise exc

    return raiser


def test_staging_listing_error_names_field_and_uri_not_the_client_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llmops.jobs import staging
    from llmops.jobs.runtime import JobInputError

    broken = SimpleNamespace(isfile=_raise(PermissionError(13, f"denied for {EMAIL}")))
    monkeypatch.setattr(storage, "filesystem", lambda uri: (broken, "bucket/job/train.jsonl"))
    with pytest.raises(JobInputError) as info:
        staging.remote_listing("s3://bucket/job/train.jsonl", "train_file")
    message = str(info.value)
    assert message.startswith("train_file: cannot list s3://bucket/job/train.jsonl: PermissionError")
    assert "(code 13)" in message and EMAIL not in message


def test_staging_download_error_names_field_and_uri_not_the_client_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from llmops.jobs import staging
    from llmops.jobs.runtime import JobInputError

    listing = [{"path": "train.jsonl", "size": 3, "etag": "e"}]
    monkeypatch.setenv(staging.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(staging, "remote_listing", lambda uri, field: listing)
    monkeypatch.setattr(staging, "_download", _raise(FileNotFoundError(f"no key {EMAIL}")))
    with pytest.raises(JobInputError) as info:
        staging._fetch("s3://bucket/job/train.jsonl", "data", "train_file", single_file=True)
    message = str(info.value)
    assert message.startswith("train_file: s3://bucket/job/train.jsonl: FileNotFoundError")
    assert EMAIL not in message


def test_config_read_error_names_the_file_not_the_client_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmops.jobs.config import ConfigError, read_json_config

    monkeypatch.setattr(storage, "read_bytes", _raise(OSError(f"signature mismatch for {EMAIL}")))
    with pytest.raises(ConfigError) as info:
        read_json_config("s3://bucket/job/job.json")
    message = str(info.value)
    assert "s3://bucket/job/job.json" in message and "cannot read file: OSError" in message
    assert EMAIL not in message


def test_rotation_errors_name_the_key_file_not_the_library_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed key file, a failed storage call while rotating a part, and a failed record write:
    each reported by file and type."""
    uri = "s3://lake/raw/p/s/part-0.parquet.key.json"
    monkeypatch.setattr(storage, "read_json", lambda _uri: {"kek_id": EMAIL})
    monkeypatch.setattr(crypto.WrappedKey, "from_dict", _raise(ValueError(f"bad kek_id {EMAIL!r}")))
    with pytest.raises(rotation.RotationError) as info:
        rotation.rotate_key_file(uri, b"o" * 32, b"n" * 32)
    assert str(info.value).startswith(f"{uri}: key file is malformed (ValueError")
    assert EMAIL not in str(info.value)

    monkeypatch.setattr(rotation, "rotate_key_file", _raise(OSError(f"S3 said {EMAIL}")))
    folder = rotation._Folder(uri="s3://lake/raw/p/s", key_files=[uri])
    summary: dict[str, Any] = {"parts": 0}
    errors: list[dict[str, str]] = []
    rotation._rotate_part(folder, uri, b"o" * 32, b"n" * 32, False, summary, errors)
    assert errors == [{"path": uri, "error": errors[0]["error"]}]
    assert errors[0]["error"].startswith(f"{uri}: OSError") and EMAIL not in errors[0]["error"]

    monkeypatch.setattr(storage, "exists", lambda _uri: False)
    monkeypatch.setattr(storage, "write_json", _raise(OSError(f"S3 said {EMAIL}")))
    folder.rewrapped.append(uri)
    errors.clear()
    assert not rotation._write_record(folder, "old", "new", errors)
    assert errors[0]["path"].endswith(rotation.ROTATION_RECORD)
    assert "could not write the rotation record: OSError" in errors[0]["error"]
    assert EMAIL not in errors[0]["error"]


def test_manifest_error_names_the_field_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes.client import ApiClient

    from llmops.deployment.manifests import ManifestError, round_trip

    bad = ValueError(f"Invalid value for `image` ({EMAIL}), must match a pattern")
    monkeypatch.setattr(ApiClient, "deserialize", _raise(bad))
    with pytest.raises(ManifestError) as info:
        round_trip({"containers": []}, "V1PodSpec", "Deployment.spec.template.spec")
    message = str(info.value)
    assert message.startswith(
        "Deployment.spec.template.spec: not a valid V1PodSpec (field image): ValueError"
    )
    assert EMAIL not in message


def test_training_failure_result_keeps_own_text_and_withholds_library_text(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """result.json's error is read back into the study, the ledger and reports."""
    from llmops.jobs.runtime import JobInputError
    from llmops.training import runner

    config = SimpleNamespace(
        method="sft", run_name="r", output_dir=str(tmp_path), resolved_dict=lambda: {"method": "sft"}
    )
    runner.write_failure(config, RuntimeError(f"tokenizer failed on row {EMAIL}"), 0.0)  # type: ignore[arg-type]
    result = json.loads((tmp_path / runner.RESULT_FILE).read_text())
    assert result["error"].startswith("RuntimeError: message withheld") and EMAIL not in result["error"]

    runner.write_failure(config, JobInputError("train_file: 3 rows have no completion"), 0.0)  # type: ignore[arg-type]
    result = json.loads((tmp_path / runner.RESULT_FILE).read_text())
    assert result["error"] == "train_file: 3 rows have no completion"
