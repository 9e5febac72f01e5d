"""A corpus of hostile and clumsy inputs run against the real steps: bad specs, bad rows, bad run
parameters and tamper. Each case must end in its named error (or, for damage the platform repairs,
in a verified repair); nothing may succeed silently, lose a row, or leak a planted value into the
ledger, the lineage or the logs.

    python tests/hostile_probe.py          # prints the counts; exit 1 on any silent failure

tests/integration/test_hostile_probe.py runs it in the suite.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from small_pipeline import GOVERNANCE, install, pipeline_spec
from small_pipeline import ingest as run_ingest

if TYPE_CHECKING:
    from collections.abc import Callable

PROJECT = Path(__file__).resolve().parents[1]
PIPELINE = "probe_bot"
#: Values planted in the rows; none may appear in the ledger, the lineage or the logs.
PLANTED = ["mallory.secret@example.com", "+44 7700 900461", "Oluwaseun Abernathy"]


@dataclass
class Case:
    name: str
    category: str
    run: Callable[[Path], Any]
    expect: str  # text the error must contain ("repaired": the run must return a verified repair)


@dataclass
class Tally:
    tried: int = 0
    clear: int = 0
    silent: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)
    rows_lost: int = 0
    leaks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bad inputs tried": self.tried,
            "clear errors": self.clear,
            "silent failures": len(self.silent),
            "unclear errors": len(self.unclear),
            "rows lost": self.rows_lost,
            "leaks": len(self.leaks),
        }


# ---------------------------------------------------------------------------------------- the project


def _spec(drops: Path) -> dict[str, Any]:
    source = {
        "kind": "files",
        "name": "drops",
        "uri": str(drops),
        "pattern": "*.csv",
        "format": "csv",
        "columns": ["ticket_id", "body"],
        "governance": GOVERNANCE,
    }
    privacy = {"free_text": {"columns": ["body"], "types": {"email": "mask", "phone": "mask"}}}
    return pipeline_spec(PIPELINE, [source], description="hostile input probe", privacy=privacy)


#: 12 good rows, then the bad ones: 2 NULL keys, a blank key, an exact duplicate, a key conflict.
ROWS = [(f"T-{i:02d}", f"parcel {i} is late") for i in range(12)] + [
    ("", f"no key, write to {PLANTED[0]}"),
    ("", f"no key either, call {PLANTED[1]}"),
    ("   ", f"blank key, {PLANTED[2]} says hi"),
    ("T-00", "parcel 0 is late"),
    ("T-01", f"conflicting copy from {PLANTED[0]}"),
]


LEGACY_CSV = (
    b'ticket_id,body\nT-20,"parcel 20 is late"\nT-21,"caf\xe9 order, reply to ' + PLANTED[0].encode() + b'"\n'
)
#: Rows in the source files: 17 in tickets.csv, 2 in the legacy file.
SOURCE_ROWS = len(ROWS) + 2
#: What validation must make of them.
EXPECTED = {"quarantined": 4, "deduplicated": 2}


def setup(root: Path) -> dict[str, Any]:
    """A pipelines folder, GX suite, lake and ledger under `root`, selected through the environment."""
    drops = root / "drops"
    drops.mkdir(parents=True, exist_ok=True)
    lines = ["ticket_id,body"] + [f'{k},"{b}"' for k, b in ROWS]
    (drops / "tickets.csv").write_text("\n".join(lines) + "\n")
    # A second drop from a Latin-1 system: one row is not UTF-8 (quarantined, the other goes on).
    (drops / "tickets_legacy.csv").write_bytes(LEGACY_CSV)
    spec = _spec(drops)
    install(root, spec, os.environ.__setitem__)
    os.environ["LLMOPS_DATA_ROOTS"] = str(root)
    return spec


def ingest(run_id: str) -> dict[str, Any]:
    return run_ingest(PIPELINE, run_id)


# ------------------------------------------------------------------------------------------- specs


def _spec_case(name: str, mutate: Callable[[dict[str, Any]], None], expect: str) -> Case:
    def run(root: Path) -> None:
        from llmops.specs import load_spec

        raw = copy.deepcopy(_spec(root / "drops"))
        mutate(raw)
        path = root / "bad_specs" / f"{PIPELINE}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(raw))
        load_spec(path)

    return Case(f"spec: {name}", "spec", run, expect)


def _yaml_case(name: str, text: bytes, expect: str) -> Case:
    def run(root: Path) -> None:
        from llmops.specs import load_spec

        path = root / "bad_specs" / f"{PIPELINE}.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(text)
        load_spec(path)

    return Case(f"spec file: {name}", "spec", run, expect)


def _gate(**gate: Any) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw["gates"].append(gate)


def _source(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda raw: raw["sources"][0].update(fields)


def _bomb() -> bytes:
    layers = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        layers.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return ("\n".join(layers) + "\n").encode()


SPEC_CASES = [
    _spec_case("gate max NaN", _gate(metric="token_f1", max=math.nan), "finite number"),
    _spec_case("gate min -inf", _gate(metric="token_f1", min=-math.inf), "finite number"),
    _spec_case("gate min above max", _gate(metric="token_f1", min=0.9, max=0.2), "is above max"),
    _spec_case("negative perplexity max", _gate(metric="eval_perplexity", max=-1), "never below 1.0"),
    _spec_case("gate that cannot fail", _gate(metric="pii_leakage_rate", max=1), "could never fail"),
    _spec_case("margin inf", _gate(metric="token_f1", beat_champion_by=math.inf), "finite number"),
    _spec_case("unknown metric", _gate(metric="vibes", min=0.5), "unknown metric 'vibes'"),
    _spec_case(
        "max_length 1e12",
        lambda r: r["training"].setdefault("hyperparameters", {}).update(max_length=10**12),
        "max_length: Input should be less than or equal to",
    ),
    _spec_case(
        "learning rate NaN",
        lambda r: r["training"].setdefault("hyperparameters", {}).update(learning_rate=math.nan),
        "finite number",
    ),
    _spec_case("empty conn_id", _source(conn_id=""), "sources[0].conn_id: String should match pattern"),
    _spec_case("model name ..", lambda r: r["registry"].update(model_name=".."), "registry.model_name"),
    _spec_case(
        "golden set ../",
        lambda r: r.setdefault("evaluation", {}).update(
            golden_sets=[{"name": "g", "uri": "../../etc/passwd"}]
        ),
        "a '..' segment is not allowed",
    ),
    _spec_case("files pattern ../", _source(pattern="../*"), "sources[0].pattern"),
    _spec_case("files pattern absolute", _source(pattern="/etc/*"), "a pattern is relative"),
    _spec_case("unknown field", lambda r: r.update(trainig={}), "trainig: unknown field"),
    _spec_case("unknown source kind", _source(kind="ftp"), "Input tag 'ftp'"),
    _spec_case("description 50 kB", lambda r: r.update(description="x" * 50_000), "at most 10000 characters"),
    _spec_case("wrong name", lambda r: r.update(name="other_bot"), "must match the file name"),
    _yaml_case("alias bomb", _bomb(), "the aliases expand to"),
    _yaml_case("duplicate key", b"name: probe_bot\nname: shadow\n", "duplicate key 'name'"),
    _yaml_case(
        "not UTF-8", b"name: probe_bot\ndescription: caf\xe9\n", "not UTF-8 text: byte 0xe9 at line 2"
    ),
    _yaml_case("6 MB", b"description: " + b"x" * 6_000_000 + b"\n", "a spec may be at most"),
    _yaml_case("deep nesting", b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "YAML"),
    _yaml_case("not a mapping", b"- just\n- a list\n", "expected a mapping"),
]


def _files_source_outside_roots(root: Path) -> None:
    from llmops.specs import parse_spec
    from llmops.specs.checks import check_ingest

    raw = _spec(Path("/etc"))
    check_ingest(parse_spec(raw))


def _undefined_connection(root: Path) -> None:
    from llmops.specs import parse_spec
    from llmops.specs.checks import check_ingest

    raw = _spec(root / "drops")
    raw["sources"][0].update(uri="s3://bucket/drops/", conn_id="nobody_defined_this")
    check_ingest(parse_spec(raw))


SPEC_CASES += [
    Case("spec: files source on /etc", "spec", _files_source_outside_roots, "is outside the data roots"),
    Case("spec: undefined connection", "spec", _undefined_connection, "'nobody_defined_this' is not defined"),
]


# ------------------------------------------------------------------------------------------ params


def _unknown_param(root: Path) -> None:
    from llmops.orchestration.finetune.data import start_finetune

    start_finetune(PIPELINE, "latest", {"learning_rate": 1, "x" * 64: "y" * 10_000}, "manual__probe_params_1")


def _missing_snapshot(root: Path) -> None:
    from llmops.orchestration.finetune.data import start_finetune

    start_finetune(PIPELINE, "0" * 20, {}, "manual__probe_params_2")


PARAM_CASES = [
    Case("param: unknown run parameter", "param", _unknown_param, "unknown run parameter"),
    Case("param: snapshot id that does not exist", "param", _missing_snapshot, "0" * 20),
]


# ------------------------------------------------------------------------------------------ tamper


def _curated_folder(root: Path, ingested: dict[str, Any]) -> Path:
    from llmops import snapshots

    snapshot_id = ingested["curated"]["curated_snapshot_id"]
    return root / "lake" / "curated" / PIPELINE / snapshots.CURATED_DATASET / snapshot_id


def _tamper_curated(root: Path, ingested: dict[str, Any]) -> None:
    import hashlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmops import snapshots
    from llmops.orchestration.finetune.data import prepare_training_data, start_finetune
    from llmops.privacy.crypto import WrappedKey, decrypt_bytes, encrypt_bytes
    from llmops.privacy.keys import get_key_ring

    # An insider with the key: decrypts each part, edits it, re-encrypts it and recomputes every
    # hash in the manifest. Only the ledger's record of the snapshot can tell.
    ring = get_key_ring()
    folder = _curated_folder(root, ingested)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["files"]:
        part, key_file = folder / entry["name"], folder / (entry.get("key_file") or "none")
        blob = part.read_bytes()
        if entry.get("key_file"):
            blob = decrypt_bytes(blob, WrappedKey.from_dict(json.loads(key_file.read_text())), ring)
        table = pq.read_table(io.BytesIO(blob))
        poisoned = table.set_column(
            table.schema.get_field_index("body"), "body", pa.array(["ignore all rules"] * table.num_rows)
        )
        buffer = io.BytesIO()
        pq.write_table(poisoned, buffer)
        stored = buffer.getvalue()
        if entry.get("key_file"):
            stored, wrapped = encrypt_bytes(stored, ring)
            key_file.write_text(json.dumps(wrapped.to_dict()))
        part.write_bytes(stored)
        entry["sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
        entry["stored_sha256"] = hashlib.sha256(stored).hexdigest()
    manifest["content_sha256"] = snapshots.content_sha256(manifest["files"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    run_id = "manual__probe_tamper_1"
    start_finetune(PIPELINE, folder.name, {}, run_id)
    prepare_training_data(PIPELINE, folder.name, run_id)


def _plant_raw(root: Path, ingested: dict[str, Any]) -> None:
    import pyarrow as pa

    from llmops import snapshots
    from llmops.orchestration.ingest import extract, validate
    from llmops.privacy.keys import get_key_ring

    planted, _ = snapshots.write_snapshot(
        lake_root=str(root / "lake"),
        zone="raw",
        pipeline=PIPELINE,
        dataset="drops",
        table=pa.table({"ticket_id": ["T-99"], "body": ["planted"]}),
        metadata={"source": {}},
        kek=get_key_ring(),
    )
    run_id = "manual__probe_tamper_2"
    extract.plan(PIPELINE, run_id)
    validate.validate(
        PIPELINE, [{"source": "drops", "snapshot_id": planted.snapshot_id, "row_count": 1}], run_id
    )


def _damaged_raw_reused(root: Path, ingested: dict[str, Any]) -> str:
    """Flip a byte in the committed raw part, ingest the same file again: it must be rewritten."""
    from llmops import snapshots
    from llmops.privacy.keys import get_key_ring

    raw = ingested["committed"][0]
    folder = root / "lake" / "raw" / PIPELINE / "drops" / raw["snapshot_id"]
    part = next(folder.glob("part-*.enc"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 1
    part.write_bytes(bytes(data))
    again = ingest("manual__probe_tamper_3")
    ref = snapshots.snapshot_ref(
        str(root / "lake"), "raw", PIPELINE, "drops", again["committed"][0]["snapshot_id"]
    )
    snapshots.read_snapshot(ref, get_key_ring())  # raises if the damaged copy was reused
    return "repaired"


def _ledger_rewritten(root: Path, ingested: dict[str, Any]) -> None:
    from llmops.ledger import get_ledger
    from llmops.orchestration.ingest import extract

    ledger = get_ledger()
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE llmops_ledger_events SET actor = 'mallory' WHERE seq = 1")
    ledger.verify()  # the weekly report's full verification finds it
    extract.plan(PIPELINE, "manual__probe_tamper_4")


def _ledger_blocked_restored(root: Path, ingested: dict[str, Any]) -> str:
    from llmops.ledger import get_ledger

    ledger = get_ledger()
    with ledger.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE llmops_ledger_events SET actor = 'llmops' WHERE seq = 1")
    if not ledger.unblock().ok:
        raise AssertionError("the restored ledger does not verify")
    return "repaired"


TAMPER_CASES = [
    ("tamper: curated Parquet edited, manifest recomputed", _tamper_curated, "was altered after it was made"),
    ("tamper: raw snapshot planted without a record", _plant_raw, "has no creation record"),
    ("tamper: raw part flipped byte, same content re-ingested", _damaged_raw_reused, "repaired"),
    (
        "tamper: ledger row rewritten, then a run starts",
        _ledger_rewritten,
        "the governance ledger is blocked",
    ),
    ("tamper: ledger restored and unblocked", _ledger_blocked_restored, "repaired"),
]


# ------------------------------------------------------------------------------------------- runner


def _judge(tally: Tally, case: Case, call: Callable[[], Any]) -> None:
    tally.tried += 1
    try:
        outcome = call()
    except Exception as exc:  # the point: which error, with which words
        if case.expect != "repaired" and case.expect in str(exc):
            tally.clear += 1
        else:
            tally.unclear.append(f"{case.name}: {type(exc).__name__}: {str(exc)[:300]}")
        return
    if case.expect == "repaired" and outcome == "repaired":
        tally.clear += 1
    else:
        tally.silent.append(case.name)


def _judge_rows(tally: Tally) -> None:
    """The 6 bad rows: the 3 without a usable key and the one that is not UTF-8 quarantined with
    their reasons, the 2 copies deduplicated, and every row of the source files (counted from the
    files, not from the frame) accounted for."""
    from llmops.ledger import get_ledger
    from llmops.ledger.events import DatasetValidated

    validated = get_ledger().records(pipeline=PIPELINE, event_type=DatasetValidated.name)[0].payload
    deduplicated = validated["normalisation"]["rows_deduplicated"]
    tally.rows_lost = SOURCE_ROWS - (
        validated["rows_accepted"] + validated["rows_quarantined"] + deduplicated
    )
    bad = sum(EXPECTED.values())
    tally.tried += bad
    reasons = json.dumps(validated["quarantine_reasons"])
    outcome = {"quarantined": validated["rows_quarantined"], "deduplicated": deduplicated}
    if outcome == EXPECTED and tally.rows_lost == 0 and "undecodable" in reasons and "key(" in reasons:
        tally.clear += bad
    else:
        tally.unclear.append(f"rows: {outcome}, reasons {reasons[:300]}")


def _plaintext_lake(root: Path) -> str:
    """Every file of the lake that is stored in the clear (encrypted parts are left out: that the
    quarantine holds the bad rows is the point), Parquet read back as rows."""
    import pyarrow.parquet as pq

    texts = []
    for path in sorted((root / "lake").rglob("*")):
        if not path.is_file() or path.name.endswith((".enc", ".key.json")):
            continue
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        else:
            texts.append(path.read_text(errors="replace"))
    return "\n".join(texts)


def _leaks(root: Path, log_text: str) -> list[str]:
    """Planted values found in the ledger, the plaintext lake or the logs. (OpenLineage events are
    only emitted inside a task: tests/integration/test_source_failures.py checks those.)"""
    from llmops.ledger import get_ledger

    ledger_text = (
        json.dumps([r.to_dict() for r in get_ledger().records()]) if (root / "ledger.db").exists() else ""
    )
    found = []
    for where, text in (
        ("ledger", ledger_text),
        ("plaintext lake", _plaintext_lake(root)),
        ("logs", log_text),
    ):
        found += [f"{value!r} in the {where}" for value in PLANTED if value in text]
    return found


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def run_probe(root: Path) -> Tally:
    """Run every case under `root` (a scratch folder) and count the outcomes."""
    os.environ["LLMOPS_LINEAGE_DIR"] = str(root / "lineage")
    capture = _Capture()
    logging.getLogger().addHandler(capture)
    tally = Tally()
    try:
        setup(root)
        ingested = ingest("manual__probe_rows_1")  # the bad rows are part of the first ingest
        _judge_rows(tally)
        for case in SPEC_CASES + PARAM_CASES:
            _judge(tally, case, lambda case=case: case.run(root))
        for name, run, expect in TAMPER_CASES:
            case = Case(name, "tamper", lambda _: None, expect)
            _judge(tally, case, lambda run=run: run(root, ingested))
    finally:
        logging.getLogger().removeHandler(capture)
    tally.leaks = _leaks(root, "\n".join(capture.lines))
    return tally


def main() -> int:
    sys.path.insert(0, str(PROJECT / "include"))
    with tempfile.TemporaryDirectory(prefix="llmops-probe-") as scratch:
        tally = run_probe(Path(scratch))
    print(json.dumps(tally.as_dict(), indent=2))
    for line in tally.silent + tally.unclear + tally.leaks:
        print("  -", line)
    return 0 if not (tally.silent or tally.unclear or tally.leaks or tally.rows_lost) else 1


if __name__ == "__main__":
    sys.exit(main())
