"""The compiled-spec cache: a spec that validated loads again without YAML, and a cache entry that is
stale, corrupt or tampered with is never trusted (the spec is parsed from its YAML instead)."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest
import yaml

from llmops.specs import SpecError, load_spec, loader, parse_spec, spec_hash
from llmops.specs import cache as spec_cache

PIPELINES = Path(__file__).resolve().parents[2] / "include" / "pipelines"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(spec_cache.CACHE_ENV, raising=False)
    return tmp_path / "home"


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "specs" / "support_bot.yaml"
    path.parent.mkdir()
    path.write_bytes((PIPELINES / "support_bot.yaml").read_bytes())
    return path


def _entries(home: Path) -> list[Path]:
    folder = home / "cache" / "specs"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _no_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the YAML was parsed")

    monkeypatch.setattr(loader, "_parse_yaml", refuse)


def _reference(path: Path):
    return parse_spec(yaml.safe_load(path.read_text()), path)


def test_second_load_reads_no_yaml_and_gives_the_same_spec(home, spec_file, monkeypatch):
    """Expect the first load to cache the spec (0600 file in a 0700 folder) and the second to come
    from the cache: equal to the spec parsed from YAML, same content hash."""
    first = load_spec(spec_file)
    (entry,) = _entries(home)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert stat.S_IMODE(entry.parent.stat().st_mode) == 0o700
    _no_yaml(monkeypatch)
    second = load_spec(spec_file)
    assert second == first == _reference(spec_file)
    assert spec_hash(second) == spec_hash(_reference(spec_file))


@pytest.mark.parametrize("name", sorted(p.stem for p in PIPELINES.glob("*.yaml")))
def test_every_shipped_spec_round_trips_through_the_cache(home, name, monkeypatch):
    path = PIPELINES / f"{name}.yaml"
    load_spec(path)
    _no_yaml(monkeypatch)
    cached = load_spec(path)
    monkeypatch.undo()
    assert cached == _reference(path)
    assert spec_hash(cached) == spec_hash(_reference(path))


def test_edited_spec_is_used_not_the_cached_one(home, spec_file):
    load_spec(spec_file)
    text = spec_file.read_text()
    assert "  model_name: support_bot\n" in text
    spec_file.write_text(text.replace("  model_name: support_bot\n", "  model_name: support_bot_v2\n"))
    assert load_spec(spec_file).registry.model_name == "support_bot_v2"
    assert len(_entries(home)) == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: b"garbage",
        lambda blob: blob[: len(blob) // 2],  # truncated
        lambda blob: blob.replace(b'"support_bot"', b'"support_bot_x"', 1),  # checksum no longer matches
        lambda blob: blob.split(b"\n", 1)[0] + b"\n{}",
        lambda blob: b"",
    ],
    ids=["garbage", "truncated", "edited", "empty-json", "empty"],
)
def test_corrupt_entry_is_ignored_and_rebuilt(home, spec_file, damage):
    load_spec(spec_file)
    (entry,) = _entries(home)
    good = entry.read_bytes()
    damaged = damage(good)
    assert damaged != good
    entry.write_bytes(damaged)
    spec = load_spec(spec_file)
    assert spec == _reference(spec_file)
    assert spec.registry.model_name == "support_bot"
    assert entry.read_bytes() == good  # written again from the YAML


def test_entry_with_valid_checksum_is_still_validated(home, spec_file, monkeypatch):
    """An entry whose checksum matches but whose JSON no longer validates (a schema change the code
    fingerprint missed) is not used."""
    import hashlib

    load_spec(spec_file)
    (entry,) = _entries(home)
    header, _, body = entry.read_bytes().partition(b"\n")
    body = body.replace(b'"support_bot"', b'"Not A Name"', 1)
    fields = header.split(b" ")
    fields[1] = hashlib.sha256(body).hexdigest().encode()
    entry.write_bytes(b" ".join(fields) + b"\n" + body)
    assert load_spec(spec_file) == _reference(spec_file)


def test_invalid_spec_is_never_cached_and_names_the_field(home, spec_file):
    raw = yaml.safe_load(spec_file.read_text())
    raw["training"]["lora"]["r"] = -4
    spec_file.write_text(yaml.safe_dump(raw))
    for _ in range(2):
        with pytest.raises(SpecError) as caught:
            load_spec(spec_file)
        assert "training.lora.r: Input should be greater than 0 (got -4)" in str(caught.value)
    assert _entries(home) == []


def test_cached_spec_under_another_file_name_is_refused(home, spec_file):
    """The cache is keyed by content; the name must still match the file it was read from."""
    load_spec(spec_file)
    other = spec_file.with_name("other_bot.yaml")
    other.write_bytes(spec_file.read_bytes())
    with pytest.raises(SpecError, match="name: must match the file name 'other_bot'"):
        load_spec(other)


def test_code_change_starts_a_new_cache(home, spec_file, monkeypatch):
    load_spec(spec_file)
    monkeypatch.setattr(spec_cache, "_fingerprint", b"another version of the code")
    load_spec(spec_file)
    assert len(_entries(home)) == 2


def test_cache_can_be_turned_off(home, spec_file, monkeypatch):
    monkeypatch.setenv(spec_cache.CACHE_ENV, "off")
    assert load_spec(spec_file) == _reference(spec_file)
    assert _entries(home) == []


def test_unwritable_cache_only_costs_the_saving(home, spec_file):
    home.mkdir(parents=True)
    (home / "cache").write_text("not a folder")
    assert load_spec(spec_file) == _reference(spec_file)


def _store_many(path: str, home: str, rounds: int) -> None:
    os.environ["LLMOPS_HOME"] = home
    data = Path(path).read_bytes()
    spec = loader.parse_spec(yaml.safe_load(data), path)
    for _ in range(rounds):
        spec_cache.store_cached(data, spec)


def test_racing_writers_leave_a_whole_entry(home, spec_file, monkeypatch):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_store_many, args=(str(spec_file), str(home), 30)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    (entry,) = _entries(home)
    assert not list(entry.parent.glob(".tmp-*"))
    _no_yaml(monkeypatch)
    assert load_spec(spec_file) == _reference(spec_file)


def test_a_kind_that_is_no_longer_registered_is_not_served_from_the_cache(home, tmp_path, monkeypatch):
    """Expect a cached spec whose source kind came from a package to load while the kind is
    registered, and to fail as from its YAML (naming the known kinds) once it is not."""
    from small_pipeline import inline_kind, inline_source, pipeline_spec

    path = tmp_path / "inline_cached.yaml"
    path.write_text(yaml.safe_dump(pipeline_spec("inline_cached", [inline_source("pasted", [{"a": "1"}])])))
    with inline_kind():
        first = load_spec(path)
        assert len(_entries(home)) == 1
        assert load_spec(path) == first
    monkeypatch.setattr("llmops.specs.sources.ensure_plugins", lambda: None)  # no package adds it back
    with pytest.raises(SpecError, match="'inline' .*does not match any of the expected tags"):
        load_spec(path)


def test_a_spec_that_does_not_round_trip_is_not_cached(home, spec_file, monkeypatch):
    from llmops.specs.schema import PipelineSpec

    def different(cls, body):
        raise ValueError("reads back differently")

    monkeypatch.setattr(PipelineSpec, "model_validate_json", classmethod(different))
    assert load_spec(spec_file) == _reference(spec_file)
    assert _entries(home) == []
