"""Job outputs published encrypted file by file, and opened decrypted in a scratch folder."""

from __future__ import annotations

import base64
import json
import os
from typing import TYPE_CHECKING

import pytest

from llmops.jobs.artifacts import weights_sha256
from llmops.jobs.outputs import (
    OutputLocation,
    is_encrypted_dir,
    job_work_dir,
    opened_model_dir,
    publish_encrypted_tree,
    remove_work_dir,
)
from llmops.jobs.runtime import JobInputError

if TYPE_CHECKING:
    from pathlib import Path

KEK = bytes(range(32))


@pytest.fixture(autouse=True)
def job_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_KEK", base64.b64encode(KEK).decode())


def _adapter(folder: Path, weights: bytes = b"weights-1") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "sub").mkdir()
    (folder / "sub" / "tokenizer.json").write_text("{}")
    (folder / ".in-progress.tmp").write_text("hidden: not published")
    return folder


def test_publish_writes_only_ciphertext_and_opening_restores_the_plaintext(tmp_path: Path) -> None:
    source = _adapter(tmp_path / "work" / "adapter")
    dest = tmp_path / "job" / "adapter"
    assert publish_encrypted_tree(source, str(dest), KEK) == 3
    names = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert names == [
        "adapter_config.json.enc",
        "adapter_config.json.enc.key.json",
        "adapter_model.safetensors.enc",
        "adapter_model.safetensors.enc.key.json",
        "sub/tokenizer.json.enc",
        "sub/tokenizer.json.enc.key.json",
    ]
    assert b"weights-1" not in (dest / "adapter_model.safetensors.enc").read_bytes()
    assert is_encrypted_dir(dest) and not is_encrypted_dir(source)

    expected = weights_sha256(source)
    with opened_model_dir(str(dest), "adapter_path", expected_sha256=expected) as opened:
        assert opened != dest
        assert (opened / "adapter_model.safetensors").read_bytes() == b"weights-1"
        assert (opened / "sub" / "tokenizer.json").read_text() == "{}"
        assert (opened.stat().st_mode & 0o777) == 0o700
    assert not opened.exists()


def test_a_republication_removes_what_the_earlier_one_left(tmp_path: Path) -> None:
    source = _adapter(tmp_path / "work")
    dest = tmp_path / "job"
    publish_encrypted_tree(source, str(dest), KEK)
    (source / "sub" / "tokenizer.json").unlink()
    (source / "marker.json").write_text("{}")
    publish_encrypted_tree(source, str(dest), KEK, plain=("marker.json",))
    assert not (dest / "sub" / "tokenizer.json.enc").exists()
    assert (dest / "marker.json").read_text() == "{}"


def test_a_plaintext_folder_from_before_is_used_where_it_is(tmp_path: Path) -> None:
    source = _adapter(tmp_path / "old-adapter")
    with opened_model_dir(str(source), "adapter_path") as opened:
        assert opened == source
    assert source.exists()


def test_a_flipped_bit_is_refused_naming_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "job"
    publish_encrypted_tree(_adapter(tmp_path / "work"), str(dest), KEK)
    sealed = dest / "adapter_model.safetensors.enc"
    data = bytearray(sealed.read_bytes())
    data[-1] ^= 1
    sealed.write_bytes(bytes(data))
    with pytest.raises(
        JobInputError, match=rf"adapter_path: cannot decrypt {dest}/adapter_model\.safetensors\.enc"
    ):
        with opened_model_dir(str(dest), "adapter_path"):
            pass


def test_a_missing_key_file_and_a_swapped_folder_are_refused(tmp_path: Path) -> None:
    dest = tmp_path / "job"
    source = _adapter(tmp_path / "work")
    publish_encrypted_tree(source, str(dest), KEK)
    expected = weights_sha256(source)
    other = _adapter(tmp_path / "other", b"weights-2")
    publish_encrypted_tree(other, str(tmp_path / "swapped"), KEK)
    with pytest.raises(JobInputError, match="are not the ones recorded for it"):
        with opened_model_dir(str(tmp_path / "swapped"), "adapter_path", expected_sha256=expected):
            pass
    (dest / "sub" / "tokenizer.json.enc.key.json").unlink()
    with pytest.raises(
        JobInputError, match=r"sub/tokenizer\.json\.enc is encrypted but its key file is missing"
    ):
        with opened_model_dir(str(dest), "adapter_path"):
            pass


def test_an_encrypted_output_location_publishes_and_fetches_back(tmp_path: Path) -> None:
    output_dir = tmp_path / "run"
    location = OutputLocation.for_uri(str(output_dir), KEK)
    try:
        assert location.remote and location.encrypted and location.local_dir != output_dir
        assert (location.local_dir.stat().st_mode & 0o777) == 0o700
        assert location.local_dir.stat().st_uid == os.getuid()
        assert job_work_dir(str(output_dir)) == location.local_dir  # every rank finds the same folder
        checkpoint = location.local_dir / "checkpoints" / "checkpoint-2"
        checkpoint.mkdir(parents=True)
        (checkpoint / "optimizer.pt").write_bytes(b"optimizer state")
        (checkpoint / "llmops_checkpoint.json").write_text('{"step": 2}')
        location.upload_tree("checkpoints/checkpoint-2", last="llmops_checkpoint.json")
        published = output_dir / "checkpoints" / "checkpoint-2"
        assert (published / "optimizer.pt.enc").is_file() and not (published / "optimizer.pt").exists()
        assert (published / "llmops_checkpoint.json").read_text() == '{"step": 2}'
        back = tmp_path / "back" / "optimizer.pt"
        location.fetch_file("checkpoints/checkpoint-2/optimizer.pt", back)
        assert back.read_bytes() == b"optimizer state"
    finally:
        remove_work_dir(location.local_dir)
    assert not location.local_dir.exists()
