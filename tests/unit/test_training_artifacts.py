"""Atomic publishing and fingerprints of training artifacts."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import pytest

from llmops.jobs.artifacts import (
    atomic_directory,
    canonical_json_sha256,
    files_sha256,
    weights_sha256,
    write_json_atomic,
)
from llmops.jobs.runtime import JobInputError, encode_prompt_completion, read_prompt_completion_jsonl

if TYPE_CHECKING:
    from pathlib import Path


def test_atomic_directory_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    with atomic_directory(target) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"v1")
    assert (target / "weights.safetensors").read_bytes() == b"v1"

    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"half-written")
        raise RuntimeError("killed mid-save")
    assert (target / "weights.safetensors").read_bytes() == b"v1"

    with atomic_directory(target) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"v2")
    assert (target / "weights.safetensors").read_bytes() == b"v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temp or old dirs left behind


def test_write_json_atomic_is_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "out" / "result.json"
    write_json_atomic(path, {"loss": 1.5, "perplexity": math.inf, "nested": [math.nan]})
    assert json.loads(path.read_text()) == {"loss": 1.5, "perplexity": None, "nested": [None]}
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]


def test_weight_fingerprints_cover_names_and_content(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "config.json").write_text("{}")
    first = weights_sha256(tmp_path)
    assert first == files_sha256([tmp_path / "model.safetensors"])  # config files are not weights
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert weights_sha256(tmp_path) != first
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        weights_sha256(empty)


def test_canonical_json_hash_ignores_key_order() -> None:
    assert canonical_json_sha256({"a": 1, "b": [1, 2]}) == canonical_json_sha256({"b": [1, 2], "a": 1})
    assert canonical_json_sha256({"a": 1}) != canonical_json_sha256({"a": 2})


def test_jsonl_reader_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "p", "completion": "c", "id": 1}\n\n{"prompt": "p2"}\n')
    with pytest.raises(JobInputError, match=r"train_file: .*train.jsonl:3: 'completion' must be a string"):
        read_prompt_completion_jsonl(path, "train_file")
    path.write_text('{"prompt": "p", "completion": "c", "id": 1}\n')
    assert read_prompt_completion_jsonl(path, "train_file") == [{"prompt": "p", "completion": "c"}]
    with pytest.raises(JobInputError, match="eval_file: file not found"):
        read_prompt_completion_jsonl(tmp_path / "missing.jsonl", "eval_file")


class _CharTokenizer:
    """One id per character, BOS=1 prepended, like a Llama tokenizer without merges."""

    eos_token = "$"

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": [1] + [ord(c) for c in text]}


def test_prompt_tokens_are_masked_and_eos_is_appended() -> None:
    ids, labels = encode_prompt_completion(_CharTokenizer(), "ab", "cd")
    assert ids == [1, ord("a"), ord("b"), ord("c"), ord("d"), ord("$")]
    assert labels == [-100, -100, -100, ord("c"), ord("d"), ord("$")]
    ids, labels = encode_prompt_completion(_CharTokenizer(), "ab", "cd$", max_length=4)
    assert ids == [1, ord("a"), ord("b"), ord("c")]
    assert labels == [-100, -100, -100, ord("c")]
