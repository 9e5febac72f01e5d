"""Hostile and clumsy specs: each is refused with the file and field named, before any run.

Every case here was accepted before: a gate that cannot fail, a path out of its folder, a spec that
expands to gigabytes in the DAG processor.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmops.specs import SpecError, load_spec, parse_spec
from llmops.specs.checks import EnvironmentMismatch, check_finetune, check_ingest
from llmops.specs.loader import MAX_SPEC_BYTES

PIPELINES = Path(__file__).resolve().parents[2] / "include" / "pipelines"


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    return yaml.safe_load((PIPELINES / "support_bot.yaml").read_text())


def _files_source(uri: str, pattern: str = "*.csv") -> dict[str, Any]:
    return {
        "name": "drops",
        "kind": "files",
        "uri": uri,
        "pattern": pattern,
        "format": "csv",
        "columns": ["ticket_id", "body"],
        "governance": {
            "data_owner": "ops",
            "purposes": ["customer_support_automation"],
            "lawful_basis": "contract",
        },
    }


def _gate(raw: dict[str, Any], **gate: Any) -> None:
    raw["gates"].append(gate)


HOSTILE: list[tuple[str, Any, str]] = [
    (
        "nan max",
        lambda r: _gate(r, metric="token_f1", max=math.nan),
        "gates[5].max: Input should be a finite number",
    ),
    (
        "-inf min",
        lambda r: _gate(r, metric="token_f1", min=-math.inf),
        "gates[5].min: Input should be a finite number",
    ),
    (
        "inf margin",
        lambda r: _gate(r, metric="token_f1", beat_champion_by=math.inf),
        "beat_champion_by: Input should be a finite",
    ),
    (
        "min above max",
        lambda r: _gate(r, metric="token_f1", min=0.8, max=0.5),
        "gates[5].min: 0.8 is above max 0.5",
    ),
    (
        "negative perplexity max",
        lambda r: _gate(r, metric="eval_perplexity", max=-1),
        "gates[5].max: eval_perplexity is never below 1.0",
    ),
    ("rate above one", lambda r: _gate(r, metric="pii_leakage_rate", max=1.5), "could never fail"),
    (
        "vacuous min",
        lambda r: _gate(r, metric="token_f1", min=0),
        "gates[5].min: token_f1 is never below 0.0; min 0.0 could never fail",
    ),
    ("impossible min", lambda r: _gate(r, metric="golden.faq.rouge_l", min=2), "no model could pass min 2.0"),
    (
        "nan learning rate",
        lambda r: r["training"]["hyperparameters"].update(learning_rate=math.nan),
        "learning_rate: Input should be a finite number",
    ),
    (
        "huge max_length",
        lambda r: r["training"]["hyperparameters"].update(max_length=10**12),
        "max_length: Input should be less than or equal to 131072",
    ),
    (
        "empty conn_id",
        lambda r: r["sources"][0].update(conn_id=""),
        "sources[0].conn_id: String should match pattern",
    ),
    (
        "conn_id with space",
        lambda r: r["sources"][1].update(conn_id="tickets api"),
        "sources[1].conn_id: String should match pattern",
    ),
    (
        "model name ..",
        lambda r: r["registry"].update(model_name=".."),
        "registry.model_name: String should match pattern",
    ),
    (
        "hidden model name",
        lambda r: r["registry"].update(model_name=".hidden"),
        "registry.model_name: String should match pattern",
    ),
    (
        "golden set escaping",
        lambda r: r["evaluation"].update(golden_sets=[{"name": "faq", "uri": "data/../../../etc/passwd"}]),
        "evaluation.golden_sets[0].uri: Value error, 'data/../../../etc/passwd': a '..' segment is not allowed",
    ),
    (
        "files pattern escaping",
        lambda r: r["sources"].append(_files_source("/srv/drops", "../*")),
        "sources[2].pattern: Value error, '../*': a '..' segment",
    ),
    (
        "files pattern absolute",
        lambda r: r["sources"].append(_files_source("/srv/drops", "/etc/*")),
        "sources[2].pattern: Value error, '/etc/*': a pattern is relative",
    ),
    (
        "files uri escaping",
        lambda r: r["sources"].append(_files_source("s3://bucket/../other")),
        "sources[2].uri: Value error",
    ),
    (
        "base model escaping",
        lambda r: r["training"]["base_model"].update(uri="../../models"),
        "training.base_model.uri: Value error",
    ),
    (
        "description too long",
        lambda r: r.update(description="x" * 10_001),
        "description: String should have at most 10000 characters",
    ),
    ("empty owner", lambda r: r.update(owner=""), "owner: String should have at least 1 character"),
]


@pytest.mark.parametrize(("mutate", "expected"), [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_spec_field_is_refused(tmp_path, demo, mutate, expected):
    raw = copy.deepcopy(demo)
    mutate(raw)
    path = tmp_path / "support_bot.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value), str(info.value)


def test_the_demo_gates_stay_valid(demo):
    """The refusals above do not catch the shipped gates (a margin below zero is a tolerance)."""
    assert len(parse_spec(copy.deepcopy(demo)).gates) == 5


# ------------------------------------------------------------------------------------- the YAML itself


def _load_text(tmp_path: Path, text: str | bytes) -> SpecError:
    path = tmp_path / "support_bot.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    return info.value


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    layers = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):  # 9**9 strings once expanded
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        layers.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    error = _load_text(tmp_path, "\n".join(layers) + "\n")
    assert "the aliases expand to 490,329,064 values; a spec may hold at most 50,000" in str(error)


def test_aliases_within_the_budget_load(tmp_path, demo):
    """yaml.safe_dump writes a block used twice as an anchor and an alias: such a spec loads."""
    raw = copy.deepcopy(demo)
    raw["sources"][1]["governance"] = raw["sources"][0]["governance"]  # the same object twice
    text = yaml.safe_dump(raw)
    assert "*id001" in text
    path = tmp_path / "support_bot.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.sources[1].governance == spec.sources[0].governance


def test_duplicate_keys_are_refused_with_both_lines(tmp_path, demo):
    text = yaml.safe_dump(demo) + "registry: {model_name: shadow_model}\n"
    first = yaml.safe_dump(demo).splitlines().index("registry:") + 1
    assert f"duplicate key 'registry' (first at line {first})" in str(_load_text(tmp_path, text))


def test_duplicate_nested_keys_are_refused(tmp_path):
    error = _load_text(tmp_path, "name: support_bot\ntraining:\n  method: sft\n  method: preference\n")
    assert "line 4, column 3: duplicate key 'method' (first at line 3)" in str(error)


def test_non_utf8_is_refused_with_its_line(tmp_path):
    error = _load_text(tmp_path, b"name: support_bot\ndescription: caf\xe9\n")
    assert "not UTF-8 text: byte 0xe9 at line 2" in str(error)


def test_an_oversized_spec_is_refused_unread(tmp_path):
    error = _load_text(tmp_path, "description: " + "x" * MAX_SPEC_BYTES + "\n")
    assert f"a spec may be at most {MAX_SPEC_BYTES:,}" in str(error)


def test_deep_nesting_is_an_error_not_a_crash(tmp_path):
    error = _load_text(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "YAML" in str(error)


# ------------------------------------------------------------------------------- what a spec points at


@pytest.fixture
def demo_connections(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SUPPORT_TICKETS_DB", '{"conn_type": "sqlite", "host": "/tmp/x.db"}')
    monkeypatch.setenv("AIRFLOW_CONN_SUPPORT_TICKETS_API", '{"conn_type": "http", "host": "127.0.0.1"}')


def _with_files_source(demo: dict[str, Any], uri: str) -> Any:
    raw = copy.deepcopy(demo)
    raw["sources"].append(_files_source(uri))
    return parse_spec(raw)


def test_a_files_source_outside_the_data_roots_is_refused(demo, demo_connections, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_DATA_ROOTS", str(tmp_path))
    (tmp_path / "drops").mkdir()
    check_ingest(_with_files_source(demo, str(tmp_path / "drops")))  # inside: fine
    with pytest.raises(EnvironmentMismatch, match=r"sources\[2\].uri: '/etc' is outside the data roots"):
        check_ingest(_with_files_source(demo, "/etc"))


def test_a_symlink_out_of_the_data_roots_is_refused(demo, demo_connections, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_DATA_ROOTS", str(tmp_path))
    (tmp_path / "innocent").symlink_to("/etc")
    with pytest.raises(EnvironmentMismatch, match="is outside the data roots"):
        check_ingest(_with_files_source(demo, str(tmp_path / "innocent")))


def test_a_golden_set_outside_the_data_roots_is_refused(demo, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMOPS_DATA_ROOTS", str(tmp_path))
    raw = copy.deepcopy(demo)
    raw["evaluation"]["golden_sets"] = [{"name": "faq", "uri": "/etc/passwd"}]
    with pytest.raises(EnvironmentMismatch, match=r"evaluation.golden_sets\[0\].uri: '/etc/passwd'"):
        check_finetune(parse_spec(raw))
    raw["evaluation"]["golden_sets"] = [{"name": "faq", "uri": str(tmp_path / "faq.jsonl")}]
    check_finetune(parse_spec(raw))


def test_an_undefined_connection_stops_ingest_naming_the_field(demo, demo_connections, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SUPPORT_TICKETS_API", raising=False)
    with pytest.raises(EnvironmentMismatch) as info:
        check_ingest(parse_spec(copy.deepcopy(demo)))
    assert info.value.problems == [
        "sources[1].conn_id: Airflow connection 'support_tickets_api' is not defined (Admin > Connections, "
        "or env var AIRFLOW_CONN_SUPPORT_TICKETS_API)"
    ]


def test_object_storage_without_a_named_connection_uses_the_sdk_credentials(demo, demo_connections):
    """A files source on s3:// that names no connection may rely on the instance's credentials
    (aws_default need not exist); one that names a connection needs it."""
    raw = copy.deepcopy(demo)
    raw["sources"].append(_files_source("s3://bucket/drops/"))
    check_ingest(parse_spec(raw))
    raw["sources"][2]["conn_id"] = "drops_s3"
    with pytest.raises(EnvironmentMismatch, match=r"sources\[2\].conn_id: Airflow connection 'drops_s3'"):
        check_ingest(parse_spec(raw))
