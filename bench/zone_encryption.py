"""What encrypting the curated and sft zones costs: ingest + training-data build, wall time.

Why: every zone holding record-level data is encrypted at rest; this times the data steps a run
goes through (extract, commit, validate, curate, then build the training dataset with its split
files) on one generated JSON Lines source, so a change to what is encrypted can be compared with
the code before it on the same machine. Each step is the median of ``--repeat`` runs, each run in
a fresh lake, ledger and key folder, after ``--warmup`` uncounted runs (imports, caches).

Run against the working tree, and against an older checkout for the baseline::

    .venv/bin/python bench/zone_encryption.py [--rows 20000] [--repeat 3] [--src PATH/include]

``--outputs-mb N`` also times a training job's output publication (``llmops.jobs.outputs``) on a
synthetic model folder with one N MB weights shard: a plain copy, the encrypted publication and the
decryption a reader does, with the peak resident memory (the shard is streamed, never held whole).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows(n: int) -> list[dict[str, str]]:
    words = "the printer on floor three keeps jamming when we send long reports please advise".split()
    out = []
    for i in range(n):
        body = " ".join(words[(i + j) % len(words)] for j in range(40))
        out.append({"ticket_id": f"T{i:07d}", "body": f"{body} contact user{i}@example.com ref {i}"})
    return out


def _spec(source_dir: Path) -> dict:
    return {
        "name": "zonebench",
        "description": "zone encryption bench",
        "owner": "bench",
        "purpose": "testing",
        "schedule": None,
        "sources": [
            {
                "kind": "files",
                "name": "tickets",
                "uri": str(source_dir),
                "pattern": "*.jsonl",
                "format": "jsonl",
                "columns": ["ticket_id", "body"],
                "governance": {
                    "data_owner": "qa@example.com",
                    "purposes": ["testing"],
                    "lawful_basis": "contract",
                },
            }
        ],
        "dataset": {"key": "ticket_id"},
        "validation": {"suite": "zonebench", "max_quarantine_fraction": 0.5},
        "privacy": {"free_text": {"columns": ["body"], "types": {"email": "mask"}}},
        "training": {
            "base_model": {"uri": "unused"},
            "prompt_template": "{body}",
            "completion_column": "body",
        },
        "gates": [{"metric": "token_f1", "min": 0.1}],
        "registry": {"model_name": "zonebench"},
    }


def _once(rows: list[dict[str, str]], run: int) -> dict[str, float]:
    import yaml

    with tempfile.TemporaryDirectory(prefix="zonebench-") as tmp:
        root = Path(tmp)
        source = root / "source"
        source.mkdir()
        (source / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / "pipelines").mkdir()
        (root / "gx" / "expectations").mkdir(parents=True)
        (root / "pipelines" / "zonebench.yaml").write_text(yaml.safe_dump(_spec(source)))
        (root / "gx" / "expectations" / "zonebench.json").write_text(
            json.dumps({"name": "zonebench", "expectations": []})
        )
        os.environ.update(
            {
                "LLMOPS_HOME": str(root / "home"),
                "LLMOPS_PIPELINES_DIR": str(root / "pipelines"),
                "LLMOPS_GX_DIR": str(root / "gx"),
                "LLMOPS_LAKE_ROOT": str(root / "lake"),
                "LLMOPS_LEDGER_URL": f"sqlite:///{root / 'ledger.db'}",
                "LLMOPS_KEK_FILE": str(root / "home" / "keys" / "kek.key"),
                "LLMOPS_DATA_ROOTS": str(root),
            }
        )
        from llmops.orchestration.finetune.data import prepare_training_data
        from llmops.orchestration.ingest import curate, extract, validate

        run_id = f"bench-{run}"
        t0 = time.perf_counter()
        parts = [extract.extract_partition("zonebench", i, run_id) for i in extract.plan("zonebench", run_id)]
        committed = extract.commit_raw("zonebench", parts, run_id)
        t1 = time.perf_counter()
        validated = validate.validate("zonebench", committed, run_id)
        t2 = time.perf_counter()
        curated = curate.curate("zonebench", validated, run_id)
        t3 = time.perf_counter()
        prepare_training_data("zonebench", curated["curated_snapshot_id"], run_id)
        t4 = time.perf_counter()
        times = {"extract": t1 - t0, "validate": t2 - t1, "curate": t3 - t2, "build_dataset": t4 - t3}
        times["total"] = t4 - t0
        return times


def _outputs_once(megabytes: int) -> dict[str, float]:
    import shutil

    from llmops.jobs.outputs import opened_model_dir, publish_encrypted_tree

    kek = os.urandom(32)
    os.environ["LLMOPS_KEK"] = __import__("base64").b64encode(kek).decode()
    with tempfile.TemporaryDirectory(prefix="outputsbench-") as tmp:
        root = Path(tmp)
        model = root / "model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        with (model / "model.safetensors").open("wb") as fh:
            for _ in range(megabytes):
                fh.write(os.urandom(1 << 20))
        t0 = time.perf_counter()
        shutil.copytree(model, root / "plain")
        t1 = time.perf_counter()
        publish_encrypted_tree(model, str(root / "published"), kek)
        t2 = time.perf_counter()
        with opened_model_dir(str(root / "published")) as opened:
            assert (opened / "model.safetensors").stat().st_size == megabytes << 20
            t3 = time.perf_counter()
        return {"plain_copy": t1 - t0, "publish_encrypted": t2 - t1, "open_decrypted": t3 - t2}


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="runs first, not counted (imports, caches)")
    parser.add_argument("--src", default=str(ROOT / "include"), help="the llmops package's parent folder")
    parser.add_argument("--outputs-mb", type=int, default=0, help="also time job output publication")
    parser.add_argument("--outputs-only", action="store_true", help="skip the data steps")
    args = parser.parse_args()
    sys.path.insert(0, args.src)
    if args.outputs_mb:
        outputs = [_outputs_once(args.outputs_mb) for _ in range(args.repeat)]
        print(
            json.dumps(
                {
                    "outputs_mb": args.outputs_mb,
                    "median_s": {k: round(statistics.median(r[k] for r in outputs), 3) for k in outputs[0]},
                    "peak_rss_mb": _peak_rss_mb(),
                },
                indent=2,
            )
        )
        if args.outputs_only:
            return 0
    rows = _rows(args.rows)
    for i in range(args.warmup):
        _once(rows, -1 - i)
    runs = [_once(rows, i) for i in range(args.repeat)]
    result = {
        "src": args.src,
        "rows": args.rows,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "median_s": {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]},
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
