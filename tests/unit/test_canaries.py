"""Canaries planted when the training set is built: deterministic, only in the train split, and
outside the training file only as keyed hashes; the probe's job block carries no salt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from small_pipeline import ingest, inline_kind, inline_source, install, pipeline_spec

from llmops.evaluation.canaries import canary_hash, make_canaries, plan

PIPELINE = "canary_check"
ROWS = [
    {"ticket_id": f"T-{i:02d}", "body": f"parcel {i} is late, write to p{i}@example.com"} for i in range(24)
]
SPEC = pipeline_spec(
    PIPELINE,
    [inline_source("pasted", ROWS)],
    privacy={
        "free_text": {"columns": ["body"], "types": {"email": "mask"}},
        "canaries": {"fraction": 0.25, "repeats": 2},
    },
)
KEY = b"k" * 32


def test_canaries_are_the_same_for_the_same_key_and_context_and_differ_otherwise() -> None:
    """Expect a retried build to plant the same canaries, and another key or data to plant others."""
    first = make_canaries(KEY, "p:c1:final:7", 4)
    assert first == make_canaries(KEY, "p:c1:final:7", 4)
    assert len({c.secret for c in first}) == 4
    assert {c.secret for c in first}.isdisjoint(c.secret for c in make_canaries(b"o" * 32, "p:c1:final:7", 4))
    assert {c.secret for c in first}.isdisjoint(c.secret for c in make_canaries(KEY, "p:c2:final:7", 4))
    assert all(c.text.startswith(c.prefix) and c.text.endswith(f"{c.secret}.") for c in first)
    assert canary_hash(KEY, first[0]) != canary_hash(b"o" * 32, first[0])


def test_plan_picks_a_fraction_of_rows_and_repeats_each_canary() -> None:
    """Expect ceil(fraction * rows) rows, each canary in `repeats` of them, at least one row."""
    keys = [f"K{i}" for i in range(40)]
    planted = plan(keys, KEY, "ctx", 0.1, 2)
    assert len(planted) == 4 and len({c.text for c in planted.values()}) == 2
    assert planted == plan(list(reversed(keys)), KEY, "ctx", 0.1, 2)
    assert len(plan(keys, KEY, "ctx", 0.001, 3)) == 1
    assert plan([], KEY, "ctx", 0.5, 1) == {}


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from llmops.orchestration.finetune.data import prepare_training_data, start_finetune

    with inline_kind():
        install(tmp_path, SPEC, monkeypatch.setenv)
        curated_id = ingest(PIPELINE, "manual__ingest_1")["curated"]["curated_snapshot_id"]
        start_finetune(PIPELINE, curated_id, {}, "manual__ft_1")
        data = prepare_training_data(PIPELINE, curated_id, "manual__ft_1")
        again = prepare_training_data(PIPELINE, curated_id, "manual__ft_1")  # a retry
        yield {"data": data, "again": again, "root": tmp_path}


def _split_rows(built: dict) -> dict[str, list[dict]]:
    """The snapshot's rows (with their keys) per split; the split files hold the same texts."""
    from llmops import snapshots
    from llmops.orchestration.finetune.jobs import sft_files
    from llmops.privacy.keys import get_key_ring
    from llmops.settings import get_settings
    from llmops.specs.pinned import run_spec

    spec = run_spec(PIPELINE, "manual__ft_1")
    snapshot_id = built["data"]["sft_snapshot_id"]
    ref = snapshots.snapshot_ref(
        get_settings().lake_root, "sft", PIPELINE, spec.training.dataset_name, snapshot_id
    )
    ring = get_key_ring()
    rows = snapshots.read_snapshot(ref, ring).to_pylist()
    files = dict(zip(("train", "validation", "test"), sft_files(spec, snapshot_id), strict=True))
    out = {}
    for split, path in files.items():
        out[split] = [r for r in rows if r["split"] == split]
        lines = snapshots.read_split_file(path, ring).decode().splitlines()
        assert [json.loads(line)["completion"] for line in lines] == [r["completion"] for r in out[split]]
    return out


def _planted(built: dict):
    from llmops.orchestration.finetune.data import canary_context
    from llmops.privacy.keys import get_pseudonymisation_key
    from llmops.specs.pinned import run_spec

    spec = run_spec(PIPELINE, "manual__ft_1")
    key = get_pseudonymisation_key(spec.privacy.canary_key_conn_id)
    context = canary_context(
        PIPELINE, built["data"]["curated_snapshot_id"], "final", spec.training.hyperparameters.seed
    )
    return key, spec, context


def test_canaries_are_planted_in_train_rows_only_and_a_retry_plants_the_same(built) -> None:
    """Expect ceil(0.25 * train rows) train rows to end with a canary, no held-out row to hold one, and
    the retried build to give the same snapshot."""
    assert built["again"]["sft_snapshot_id"] == built["data"]["sft_snapshot_id"]
    rows = _split_rows(built)
    key, _, context = _planted(built)
    expected = plan([r["key"] for r in rows["train"]], key, context, 0.25, 2)
    holding = {r["key"] for r in rows["train"] if "canary code for" in r["completion"]}
    assert holding == set(expected) and len(holding) == -(-len(rows["train"]) // 4)
    assert all(
        r["completion"].endswith(expected[r["key"]].text) for r in rows["train"] if r["key"] in holding
    )
    held_out = rows["validation"] + rows["test"]
    assert held_out and not [r for r in held_out if "canary" in r["completion"] + r["prompt"]]


def test_outside_the_training_file_canaries_are_keyed_hashes_only(built) -> None:
    """Expect the ledger and the snapshot manifest to hold the HMACs and counts of the canaries, and
    neither them nor the probe's job block and prompts to hold a canary's secret or the salt."""
    from llmops.ledger import get_ledger
    from llmops.ledger.events import FinalDatasetCreated
    from llmops.orchestration.finetune.leakage_probe import SALT_ENV, build_probe, probe_salt

    key, spec, context = _planted(built)
    [record] = get_ledger().records(pipeline=PIPELINE, event_type=FinalDatasetCreated.name)
    planted = record.payload["canaries"]
    canaries = make_canaries(key, context, planted["count"])
    assert planted["hashes"] == sorted(canary_hash(key, c) for c in canaries)
    assert planted["rows"] == -(-built["data"]["train_rows"] // 4)

    probe = build_probe(spec, built["data"], str(built["root"] / "probe"), "manual__ft_1")
    assert probe is not None and probe["summary"]["planted_canaries"] == len(canaries)
    job = probe["job"]
    assert job["salt"] == f"env:{SALT_ENV}" and "salt_context" not in job
    assert len(job["target_types"]["canary"]) == len(canaries)
    from llmops.encrypted_files import read_encrypted
    from llmops.privacy.keys import get_key_ring

    assert job["prompts_file"].endswith("probe_prompts.jsonl.enc")
    assert b"canary" not in Path(job["prompts_file"]).read_bytes()
    prompts = read_encrypted(job["prompts_file"], get_key_ring()).decode()
    assert sum(c.prefix in prompts for c in canaries) == len(canaries)
    outside = [
        json.dumps(record.payload),
        json.dumps(get_ledger().records(pipeline=PIPELINE)[-1].payload),
        *(p.read_text() for p in (built["root"] / "lake").rglob("manifest.json")),
        json.dumps(job),
        prompts,
    ]
    salt = probe_salt(spec, "manual__ft_1")
    for text in outside:
        assert not [c for c in canaries if c.secret in text or c.text in text]
        assert salt not in text
