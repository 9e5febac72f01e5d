"""Training data of a finetune run: resolve the curated snapshot, build every stage's dataset.

Every method turns curated records into the rows its job reads (``DATA_FORMATS``): prompt and
completion for ``sft``, one document of text for ``continued_pretraining``, prompt, chosen and
rejected for ``preference``. The same governance applies to all of them, in this order:

1. the method's data contract (row level: the fields it needs are present, non-blank, and a
   preference pair offers two different answers); rows that break it are skipped and counted;
2. the pipeline's privacy policy on every text the method trains on (the curated data is already
   redacted, but templates may pull in columns outside ``privacy.free_text``);
3. the method's Great Expectations suite (``great_expectations/expectations/llmops_*.json``),
   whose row-level failures are left out and whose blocking failures stop the run;
4. canaries (``privacy.canaries``) appended to a few train rows, never held-out rows, for the
   leakage probe (:mod:`llmops.evaluation.canaries`); recorded as counts and keyed hashes only;
5. a content-addressed snapshot (Parquet + the JSON Lines the jobs read) per stage.

Every row is in one of three splits, by a hash of its record key (:func:`split_of`): ``train``,
``validation`` (the training job's held-out set: early stopping, best checkpoint, search trials,
stage gates) and ``test`` (only the evaluation job: promotion gates and the champion comparison).
A record keeps its split as the data grows, so a test row never becomes a training row.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from llmops import snapshots, storage
from llmops.errors import PermanentError
from llmops.governance.integrity import check_snapshot
from llmops.governance.purpose import check_purpose
from llmops.lake import SPLITS
from llmops.ledger import record
from llmops.ledger.events import FinalDatasetCreated, FinetuneStarted, StageDatasetCreated
from llmops.settings import get_settings
from llmops.specs.checks import check_finetune
from llmops.specs.pinned import pin_spec, run_spec
from llmops.training.methods import get_method, text_of

if TYPE_CHECKING:
    import pandas as pd

    from llmops.specs import PipelineSpec
    from llmops.specs.schema import MethodData

log = logging.getLogger(__name__)


class TrainingDataError(PermanentError, ValueError):
    """The curated data cannot make a usable training dataset for a stage (the message says why)."""


def split_of(key: str, validation_fraction: float, test_fraction: float, seed: int) -> str:
    """Deterministic split by key hash: a record stays in the same split across runs, retries and
    snapshots. The test band comes first, so a record's test membership depends only on
    ``test_fraction`` and the seed (changing ``validation_fraction`` never moves a test row)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    if point < test_fraction:
        return "test"
    return "validation" if point < test_fraction + validation_fraction else "train"


def check_splits(
    stage: MethodData,
    stage_name: str,
    split_rows: dict[str, list[dict[str, str]]],
    records: int,
    skipped: dict[str, int],
) -> None:
    """Every split must hold a row: name the stage and the spec field to raise when one is empty."""
    empty = [s for s in SPLITS if not split_rows[s]]
    if not empty:
        return
    remedy = {
        "train": "lower validation_fraction + test_fraction",
        "validation": f"raise validation_fraction ({stage.validation_fraction})",
        "test": f"raise test_fraction ({stage.test_fraction})",
    }
    sizes = ", ".join(f"{len(split_rows[s])} {s}" for s in SPLITS)
    raise TrainingDataError(
        f"stage '{stage_name}' ({stage.method}): the split produced {sizes} rows from {records} records "
        f"(skipped: {skipped or 'none'}); every split needs a row: {' and '.join(empty)} empty; "
        f"{'; '.join(remedy[s] for s in empty)}, or supply more data"
    )


def split_sizes(built: dict[str, Any]) -> dict[str, int]:
    """Rows per split (train, validation, test) of a dataset write_dataset built."""
    return {split: int(built["stats"][split]["rows"]) for split in SPLITS}


def render_row(stage: MethodData, row: dict[str, Any]) -> tuple[dict[str, str] | None, str | None]:
    """One curated record as the method's training row, or None and the contract rule it breaks."""
    return get_method(stage.method).render(stage, {k: text_of(v) for k, v in row.items()})


def _redactor(spec: PipelineSpec) -> Any:
    """A function text -> (redacted text, counts per type) under the spec's free-text policy."""
    from llmops.privacy.pii import redact_text, scan_text

    policy = spec.privacy.free_text
    if policy is None:

        def refuse(text: str) -> tuple[str, dict[str, int]]:
            found = scan_text(text)
            if found:
                kinds = sorted({s.pii_type for s in found})
                raise TrainingDataError(
                    f"training text holds personal data ({', '.join(kinds)}) and the spec has no "
                    "privacy.free_text policy to handle it"
                )
            return text, {}

        return refuse
    actions = dict(policy.types)
    pseudonymiser = None
    if "pseudonymise" in actions.values():
        from llmops.privacy.keys import get_pseudonymisation_key
        from llmops.privacy.pii import Pseudonymiser

        pseudonymiser = Pseudonymiser(get_pseudonymisation_key(spec.privacy.pseudonymisation_conn_id))

    def redact(text: str) -> tuple[str, dict[str, int]]:
        return redact_text(text, actions, pseudonymiser)

    return redact


def build_rows(
    spec: PipelineSpec, stage: MethodData, df: pd.DataFrame, seed: int
) -> tuple[list[dict[str, str]], dict[str, int], dict[str, int]]:
    """Rows (with key and split) of one stage, the skipped-row reasons and PII replacements."""
    redact = _redactor(spec)
    key = spec.dataset.key
    rows: list[dict[str, str]] = []
    skipped: dict[str, int] = {}
    replaced: dict[str, int] = {}
    for curated in df.to_dict(orient="records"):
        row, problem = render_row(stage, curated)
        if row is None:
            skipped[problem or "?"] = skipped.get(problem or "?", 0) + 1
            continue
        for field, text in row.items():
            row[field], counts = redact(text)
            for kind, n in counts.items():
                replaced[kind] = replaced.get(kind, 0) + n
        record_key = str(curated[key])
        split = split_of(record_key, stage.validation_fraction, stage.test_fraction, seed)
        rows.append({"key": record_key, **row, "split": split})
    return rows, skipped, replaced


def check_suite(method: str, rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Run the method's GX suite; rows failing a row-level expectation are left out (counted)."""
    import pandas as pd

    from llmops.quality.expectations import BlockingExpectationFailed, load_suite, validate_dataframe

    fields = ["key", *get_method(method).row_fields, "split"]
    frame = pd.DataFrame(rows, columns=fields)
    suite = load_suite(get_settings().project_dir / "great_expectations", get_method(method).suite)
    outcome = validate_dataframe(frame, suite, mask=lambda _: "***")
    summary = outcome.to_dict()
    summary.pop("results", None)
    if not outcome.success:
        raise BlockingExpectationFailed(
            f"suite {suite['name']} on the {method} dataset: " + "; ".join(outcome.blocking_failures)
        )
    kept = [r for i, r in enumerate(rows) if i not in outcome.row_failures]
    return kept, summary


#: The field of a training row a canary is appended to, per method row shape: trained-on text.
CANARY_FIELDS = ("completion", "text", "chosen")


def canary_context(pipeline: str, curated_snapshot_id: str, stage_name: str, seed: int) -> str:
    """What, with the key, makes a training set's canaries: the same on a retry, new for new data."""
    return f"{pipeline}:{curated_snapshot_id}:{stage_name}:{seed}"


def plant_canaries(
    spec: PipelineSpec,
    method: str,
    context: str,
    rows: list[dict[str, str]],
) -> dict[str, Any] | None:
    """Append canaries to a few train rows (in place); return what may be recorded of them: counts
    and keyed hashes, never the text. None when the spec plants none."""
    settings = spec.privacy.canaries
    if not (settings.enabled and spec.evaluation.pii_probe.enabled):
        return None
    from llmops.evaluation.canaries import canary_hash, plan
    from llmops.privacy.keys import get_pseudonymisation_key

    key = get_pseudonymisation_key(spec.privacy.canary_key_conn_id)
    field = next(f for f in CANARY_FIELDS if f in get_method(method).row_fields)
    train_keys = [r["key"] for r in rows if r["split"] == "train"]
    planted = plan(train_keys, key, context, settings.fraction, settings.repeats)
    for row in rows:
        canary = planted.get(row["key"]) if row["split"] == "train" else None
        if canary is not None:
            row[field] = f"{row[field]} {canary.text}"
    distinct = {c.text: c for c in planted.values()}.values()
    return {
        "count": len(distinct),
        "rows": len(planted),
        "fraction": settings.fraction,
        "repeats": settings.repeats,
        "field": field,
        "context": context,
        "hashes": sorted(canary_hash(key, c) for c in distinct),
    }


def write_dataset(
    spec: PipelineSpec,
    stage: MethodData,
    stage_name: str,
    curated_snapshot_id: str,
    curated_manifest: dict[str, Any],
    df: pd.DataFrame,
    seed: int,
    run_id: str,
) -> dict[str, Any]:
    """Build, check and snapshot one stage's training dataset; returns what the ledger records."""
    import pyarrow as pa

    from llmops.privacy.keys import get_key_ring

    rows, skipped, replaced = build_rows(spec, stage, df, seed)
    rows, suite = check_suite(stage.method, rows)
    canaries = plant_canaries(
        spec, stage.method, canary_context(spec.name, curated_snapshot_id, stage_name, seed), rows
    )
    split_rows = {s: [r for r in rows if r["split"] == s] for s in SPLITS}
    check_splits(stage, stage_name, split_rows, len(df), skipped)
    fields = get_method(stage.method).row_fields
    kek = get_key_ring()
    table = pa.Table.from_pylist(
        rows, schema=pa.schema([(name, pa.string()) for name in ("key", *fields, "split")])
    )
    ref, manifest = snapshots.write_snapshot(
        lake_root=get_settings().lake_root,
        zone=snapshots.TRAINING_ZONE,
        pipeline=spec.name,
        dataset=stage.dataset_name,
        table=table,
        kek=kek,
        metadata={
            "inputs": {"curated_snapshot_id": curated_snapshot_id},
            "stage": stage_name,
            "method": stage.method,
            "columns": stage.input_columns,
            "template": stage.prompt_template,
            "completion_column": stage.completion_column,
            "governance": curated_manifest.get("governance"),
            "purpose": spec.purpose,
            "validation_fraction": stage.validation_fraction,
            "test_fraction": stage.test_fraction,
            "split_seed": seed,
            **{f"{s}_rows": len(items) for s, items in split_rows.items()},
            "skipped_rows": sum(skipped.values()),
            "canaries": canaries,
        },
        run_id=run_id,
        identity={
            "curated": curated_snapshot_id,
            "validation_fraction": stage.validation_fraction,
            "test_fraction": stage.test_fraction,
            "seed": seed,
            "stage": stage_name,
            "method": stage.method,
            **({"canaries": {k: canaries[k] for k in ("fraction", "repeats", "hashes")}} if canaries else {}),
        },
    )
    split_sha256 = snapshots.write_split_files(ref.uri, rows, fields, kek)
    return {
        "split_sha256": split_sha256,
        "stage": stage_name,
        "method": stage.method,
        "dataset": stage.dataset_name,
        "snapshot_id": ref.snapshot_id,
        "sha256": manifest["content_sha256"],
        "train_rows": len(split_rows["train"]),
        # The ledger event's older name for the training job's held-out rows: the validation split.
        "eval_rows": len(split_rows["validation"]),
        "validation_rows": len(split_rows["validation"]),
        "test_rows": len(split_rows["test"]),
        "skipped_rows": sum(skipped.values()),
        "skipped_by_rule": skipped,
        "pii_replacements": replaced,
        **({"canaries": canaries} if canaries else {}),
        "suite": suite,
        "stats": {
            split: {
                "rows": len(items),
                **{
                    f"{field}_chars_mean": round(sum(len(r[field]) for r in items) / len(items), 1)
                    for field in fields
                },
            }
            for split, items in split_rows.items()
        },
    }


EXAMPLE_PROMPT_CHARS = 200


def example_prompt(spec: PipelineSpec, snapshot_id: str) -> str:
    """The first validation prompt of a training snapshot (for raw text: its first characters).

    Already redacted: it serves as the registered model's input example and the smoke request.
    """
    from llmops.privacy.keys import get_key_ring

    _, validation_uri, _ = snapshots.split_file_uris(
        get_settings().lake_root, spec.name, spec.training.dataset_name, snapshot_id
    )
    first = json.loads(snapshots.read_split_file(validation_uri, get_key_ring()).splitlines()[0])
    if "prompt" in first:
        return str(first["prompt"])
    return str(first["text"])[:EXAMPLE_PROMPT_CHARS]


class SnapshotNotFound(PermanentError, LookupError):
    """The run names a curated snapshot that is not in the lake: retrying will not create it."""


def _check_snapshot_exists(spec: PipelineSpec, snapshot_id: str) -> None:
    import re

    if not re.fullmatch(r"[0-9a-f]{20}", snapshot_id):
        raise SnapshotNotFound(
            f"curated_snapshot_id '{snapshot_id[:40]}' is not a snapshot id (20 hex digits, or 'latest')"
        )
    ref = snapshots.snapshot_ref(
        get_settings().lake_root, "curated", spec.name, snapshots.CURATED_DATASET, snapshot_id
    )
    if not storage.exists(storage.join(ref.uri, snapshots.MANIFEST)):
        raise SnapshotNotFound(
            f"curated snapshot '{snapshot_id}' of pipeline '{spec.name}' does not exist "
            f"(no committed snapshot with that id)"
        )


def start_finetune(pipeline: str, curated_snapshot_id: str, params: dict[str, Any], run_id: str) -> str:
    """Record the run's parameters and resolve 'latest' to a concrete snapshot id.

    Airflow validates the declared run parameters at trigger time but lets unknown keys through;
    a misspelt override (``learning_rat``) would silently train with the spec's value, so it
    stops the run here instead.
    """
    from llmops.orchestration.params import FINETUNE_PARAMS

    unknown = sorted(set(params) - set(FINETUNE_PARAMS))
    if unknown:
        raise PermanentError(
            f"unknown run parameter(s) {', '.join(map(repr, unknown))}: "
            f"this DAG takes {', '.join(sorted(FINETUNE_PARAMS))}"
        )
    spec = pin_spec(pipeline, run_id)
    check_finetune(spec)
    if not curated_snapshot_id or curated_snapshot_id == "latest":
        curated_snapshot_id = snapshots.get_latest(
            get_settings().lake_root, "curated", spec.name, snapshots.CURATED_DATASET
        ).snapshot_id
    else:
        _check_snapshot_exists(spec, curated_snapshot_id)
    record(
        spec,
        FinetuneStarted(curated_snapshot_id=curated_snapshot_id, params=params),
        f"curated/{curated_snapshot_id}",
        run_id,
    )
    return curated_snapshot_id


def prepare_training_data(pipeline: str, curated_snapshot_id: str | None, run_id: str) -> dict[str, Any]:
    """Build every stage's training dataset from the curated snapshot (one snapshot per stage).

    The final stage's snapshot is ``sft_snapshot_id`` (whatever its method); the preceding
    stages' are listed under ``stages`` in chain order. The rules are this module's docstring.
    """
    from llmops.orchestration.finetune.data import write_dataset

    spec = run_spec(pipeline, run_id)
    settings = get_settings()
    if not curated_snapshot_id or curated_snapshot_id == "latest":
        c_ref = snapshots.get_latest(settings.lake_root, "curated", spec.name, snapshots.CURATED_DATASET)
    else:
        c_ref = snapshots.snapshot_ref(
            settings.lake_root, "curated", spec.name, snapshots.CURATED_DATASET, curated_snapshot_id
        )
    c_manifest = check_snapshot(spec, c_ref)  # the ledger's record of it, not only its manifest
    check_purpose(spec, c_ref.snapshot_id, c_manifest)
    from llmops.privacy.keys import get_key_ring

    df = snapshots.read_snapshot(c_ref, get_key_ring()).to_pandas()
    training = spec.training
    stages = []
    for stage in training.preceding_stages:
        built = write_dataset(
            spec, stage, stage.name, c_ref.snapshot_id, c_manifest, df, stage.hyperparameters.seed, run_id
        )
        record(
            spec,
            StageDatasetCreated(curated_snapshot_id=c_ref.snapshot_id, **built, columns=stage.input_columns),
            f"sft/{built['snapshot_id']}",
            run_id,
        )
        stages.append(
            {
                **{
                    k: built[k]
                    for k in ("stage", "method", "dataset", "snapshot_id", "train_rows", "eval_rows")
                },
                "split_rows": split_sizes(built),
            }
        )
    final = write_dataset(
        spec, training, "final", c_ref.snapshot_id, c_manifest, df, training.hyperparameters.seed, run_id
    )
    record(
        spec,
        FinalDatasetCreated(
            curated_snapshot_id=c_ref.snapshot_id,
            sft_snapshot_id=final["snapshot_id"],
            **{k: v for k, v in final.items() if k != "snapshot_id"},
            template=training.prompt_template,
            columns=training.input_columns,
        ),
        f"sft/{final['snapshot_id']}",
        run_id,
    )
    result = {
        "curated_snapshot_id": c_ref.snapshot_id,
        "sft_snapshot_id": final["snapshot_id"],
        "method": training.method,
        "dataset": final["dataset"],
        "train_rows": final["train_rows"],
        "eval_rows": final["eval_rows"],  # the validation split
        "split_rows": split_sizes(final),
        "stages": stages,
    }
    from llmops import lineage

    lineage.emit_prepare_training_data(spec, result)  # OpenLineage: curated -> SFT; never raises
    return result
